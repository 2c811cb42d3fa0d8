// Layer gradient checks for the layer tests: runs testing::check_layer (double precision, every
// input and parameter element), fails the test with the checker's report when any gradient is
// wrong, and prints at exit the largest relative error seen per label, e.g.
//   gradcheck Conv2D: 11 layer checks, largest relative error 1.1e-07 (stride 2, same: input 0,
//   element 17: analytic 3.1e-02 vs numeric 3.1e-02)
// (the largest relative error is usually at a small gradient element, where the finite
// difference's rounding error, ~1e-16 * |loss| / step, weighs most).
#pragma once

#include <catch2/catch.hpp>

#include <minires/testing/layer_check.hpp>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace minires::test {

class GradcheckSummary {
 public:
  static GradcheckSummary& instance() {
    static GradcheckSummary s;
    return s;
  }
  void record(const std::string& label, const std::string& where,
              const testing::LayerCheckResult& r) {
    Entry& e = entries_[label];
    ++e.checks;
    for (const auto& part : r.parts) {
      if (part.second.max_rel_error >= e.max_rel) {
        char values[96];
        std::snprintf(values, sizeof values, ", element %lld: analytic %.3e vs numeric %.3e",
                      static_cast<long long>(part.second.worst_index), part.second.worst_analytic,
                      part.second.worst_numeric);
        e.max_rel = part.second.max_rel_error;
        e.where = where + ": " + part.first + values;
      }
    }
  }
  ~GradcheckSummary() {
    for (const auto& [label, e] : entries_) {
      std::printf("gradcheck %s: %d layer checks, largest relative error %.2e (%s)\n",
                  label.c_str(), e.checks, e.max_rel, e.where.c_str());
    }
  }

 private:
  struct Entry {
    int checks = 0;
    double max_rel = 0.0;
    std::string where;
  };
  std::map<std::string, Entry> entries_;
};

// check_layer with the checker's default tolerances unless `options` says otherwise; `label`
// groups the summary line (the layer type), `where` names the case in failure messages.
inline testing::LayerCheckResult require_gradients(Layer<double>& layer,
                                                   const std::vector<Shape>& input_shapes, Rng& rng,
                                                   const std::string& where,
                                                   const testing::LayerCheckOptions& options = {}) {
  const auto r = testing::check_layer(layer, input_shapes, rng, options);
  INFO(layer.type() << " " << where << "\n" << r.report());
  REQUIRE(r.ok());
  GradcheckSummary::instance().record(layer.type(), where, r);
  return r;
}

}  // namespace minires::test
