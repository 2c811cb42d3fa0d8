// What a model says about itself: the Keras-style summary table, the architecture description
// saved with its weights, and the per-layer profile report. Free functions over a model's public
// inspection API (size, name, layer, inputs, output_shape, output, parameter counts), used by
// Model's summary(), architecture() and profile_report().
#pragma once

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "minires/core/shape.hpp"
#include "minires/graph/node.hpp"

namespace minires {

// One layer's share of a profile (Model::set_profiling).
struct LayerTime {
  std::string name, type;
  double forward_s = 0, backward_s = 0;  // totals since profiling was enabled
  long forward_calls = 0, backward_calls = 0;
};

namespace detail {

// "(None, 4, 28, 28)" for the sample shape (4, 28, 28).
inline std::string batch_str(const Shape& sample) {
  std::string s = "(None";
  for (int i = 0; i < sample.rank(); ++i) s += ", " + std::to_string(sample[i]);
  return s + ")";
}

inline std::string with_commas(index_t v) {
  std::string s = std::to_string(v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3)
    s.insert(static_cast<std::size_t>(i), ",");
  return s;
}

// One line per node: name, type, configuration, inputs, output shape; then the output node.
template <class M>
std::string architecture_text(const M& m) {
  std::string s;
  for (std::size_t i = 0; i < m.size(); ++i) {
    const Node n{static_cast<int>(i)};
    const auto* layer = m.layer(n);
    s += m.name(n) + " " + (layer ? layer->type() : "Input") + " " +
         (layer ? layer->config() : std::string()) + " <-";
    for (Node in : m.inputs(n)) s += " " + m.name(in);
    s += " " + batch_str(m.output_shape(n)) + "\n";
  }
  if (m.size() > 0) s += "output " + m.name(m.output()) + "\n";
  return s;
}

// The Keras-style summary table.
template <class M>
std::string summary_table(const M& m) {
  const int w_name = 34, w_shape = 22, w_params = 10;
  auto pad = [](std::string s, int w) {
    if (static_cast<int>(s.size()) < w) s.resize(static_cast<std::size_t>(w), ' ');
    return s + " ";
  };
  std::string line(w_name + w_shape + w_params + 34, '_');
  std::string eq(line.size(), '=');
  std::string s = line + "\n" + pad("Layer (type)", w_name) + pad("Output Shape", w_shape) +
                  pad("Param #", w_params) + "Connected to\n" + eq + "\n";
  for (std::size_t i = 0; i < m.size(); ++i) {
    const Node n{static_cast<int>(i)};
    const auto* layer = m.layer(n);
    const std::string type = layer ? layer->type() : "InputLayer";
    std::string from;
    for (Node in : m.inputs(n)) from += (from.empty() ? "" : ", ") + m.name(in);
    const index_t count = layer ? layer->param_count() + layer->state_count() : 0;
    s += pad(m.name(n) + " (" + type + ")", w_name) + pad(batch_str(m.output_shape(n)), w_shape) +
         pad(std::to_string(count), w_params) + from;
    while (!s.empty() && s.back() == ' ') s.pop_back();  // no trailing blanks without inputs
    s += "\n";
  }
  const index_t trainable = m.trainable_count(), fixed = m.non_trainable_count();
  s += eq + "\nTotal params: " + with_commas(trainable + fixed) +
       "\nTrainable params: " + with_commas(trainable) +
       "\nNon-trainable params: " + with_commas(fixed) + "\n" + line + "\n";
  return s;
}

// The profile as a table: milliseconds per call forward and backward, and each layer's share
// of the total, slowest first.
inline std::string profile_table(std::vector<LayerTime> rows) {
  double total = 0;
  for (const auto& r : rows) total += r.forward_s + r.backward_s;
  std::stable_sort(rows.begin(), rows.end(), [](const LayerTime& a, const LayerTime& b) {
    return a.forward_s + a.backward_s > b.forward_s + b.backward_s;
  });
  auto ms = [](double s, long calls) { return calls > 0 ? 1e3 * s / double(calls) : 0.0; };
  std::string s;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%-28s %-20s %12s %12s %7s\n", "layer", "type", "fwd ms/call",
                "bwd ms/call", "share");
  s += buf;
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "%-28s %-20s %12.3f %12.3f %6.1f%%\n", r.name.c_str(),
                  r.type.c_str(), ms(r.forward_s, r.forward_calls),
                  ms(r.backward_s, r.backward_calls),
                  total > 0 ? 100.0 * (r.forward_s + r.backward_s) / total : 0.0);
    s += buf;
  }
  return s;
}

}  // namespace detail
}  // namespace minires
