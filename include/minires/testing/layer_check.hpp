// Gradient check of a whole layer (double precision), dlib test_layer() style.
//
// With random inputs x, random parameters and a random projection r of the output, the loss
// L = sum(f(x) * r) has dL/dy = r. backward() is run once with dy = r into gradients that were
// pre-filled with random values; the pre-fill is subtracted before comparing with central
// differences of L, so the check also proves that backward accumulates (+=) instead of
// overwriting. Every element of every input and every trainable parameter is checked (or an
// evenly spaced subset when options.max_checks is set).
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "minires/layers/layer.hpp"
#include "minires/testing/gradcheck.hpp"

namespace minires::testing {

struct LayerCheckResult {
  // One entry per checked tensor: "input 0", "param kernel", ...
  std::vector<std::pair<std::string, GradCheckResult>> parts;

  bool ok() const {
    for (const auto& p : parts)
      if (!p.second.ok()) return false;
    return !parts.empty();
  }
  double max_rel_error() const {
    double m = 0;
    for (const auto& p : parts) m = std::max(m, p.second.max_rel_error);
    return m;
  }
  std::string report() const {
    std::string s;
    for (const auto& p : parts) s += p.first + ": " + p.second.report() + "\n";
    return s;
  }
};

struct LayerCheckOptions {
  GradCheckOptions grad;
  Mode mode = Mode::Train;
  double input_lo = -1.0, input_hi = 1.0;  // inputs drawn uniformly from [lo, hi)
  std::vector<bool> check_input;           // per input; empty means all
};

// Sets up `layer` for `input_shapes`, initialises it from `rng` and checks all gradients.
inline LayerCheckResult check_layer(Layer<double>& layer, const std::vector<Shape>& input_shapes,
                                    Rng& rng, const LayerCheckOptions& options = {}) {
  layer.setup(Span<const Shape>(input_shapes));
  layer.init(rng);
  const Shape out_shape = layer.output_shape(Span<const Shape>(input_shapes));

  std::vector<Tensor<double>> xs;
  for (const auto& s : input_shapes) {
    xs.emplace_back(s);
    xs.back().uniform(rng, options.input_lo, options.input_hi);
  }
  std::vector<const Tensor<double>*> xptr;
  for (auto& x : xs) xptr.push_back(&x);
  Tensor<double> y(out_shape), r(out_shape);
  r.uniform(rng, -1.0, 1.0);

  auto loss = [&] {
    layer.forward(Span<const Tensor<double>* const>(xptr), y, options.mode);
    return compensated_dot(y.data(), r.data(), y.size());
  };

  // Analytic gradients into randomly pre-filled buffers.
  std::vector<Tensor<double>> dxs, dx_prefill;
  std::vector<Tensor<double>*> dxptr;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    dxs.emplace_back(input_shapes[i]);
    dxs.back().uniform(rng, -1.0, 1.0);
    dx_prefill.push_back(dxs.back().clone());
  }
  for (std::size_t i = 0; i < xs.size(); ++i) {  // after dxs stops growing
    const bool want = options.check_input.empty() || options.check_input[i];
    dxptr.push_back(want ? &dxs[i] : nullptr);
  }
  auto params = layer.params();
  std::vector<Tensor<double>> grad_prefill;
  for (auto& p : params) {
    p.grad->uniform(rng, -1.0, 1.0);
    grad_prefill.push_back(p.grad->clone());
  }
  loss();
  layer.backward(Span<const Tensor<double>* const>(xptr), y, r, Span<Tensor<double>* const>(dxptr));

  LayerCheckResult result;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!dxptr[i]) continue;
    Tensor<double> analytic = dxs[i].clone();
    for (index_t k = 0; k < analytic.size(); ++k) analytic[k] -= dx_prefill[i][k];
    result.parts.emplace_back(
        "input " + std::to_string(i),
        check_gradient(loss, xs[i].data(), xs[i].size(), analytic.data(), options.grad));
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    Tensor<double> analytic = params[i].grad->clone();
    for (index_t k = 0; k < analytic.size(); ++k) analytic[k] -= grad_prefill[i][k];
    result.parts.emplace_back("param " + params[i].name,
                              check_gradient(loss, params[i].value->data(), params[i].value->size(),
                                             analytic.data(), options.grad));
  }
  return result;
}

}  // namespace minires::testing
