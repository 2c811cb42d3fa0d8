// Helpers shared by the tests.
#pragma once

#include <minires/minires.hpp>
#include <minires/testing/gradcheck.hpp>

#include <vector>

namespace minires::test {

// n values drawn uniformly from [lo, hi).
template <class T>
std::vector<T> random_vector(Rng& rng, index_t n, double lo = -1.0, double hi = 1.0) {
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<T>(rng.uniform(lo, hi));
  return v;
}

// The values of a tensor as doubles, for the double-precision references.
template <class T>
std::vector<double> to_double(const Tensor<T>& t) {
  return std::vector<double>(t.begin(), t.end());
}

// A tensor of the given shape with values drawn uniformly from [lo, hi).
template <class T>
Tensor<T> random_tensor(Rng& rng, const Shape& shape, double lo = -1.0, double hi = 1.0) {
  Tensor<T> t(shape);
  t.uniform(rng, static_cast<T>(lo), static_cast<T>(hi));
  return t;
}

// Checks loss.backward(d, scale) for the outputs z against central differences of
// scale * loss.forward(z, labels). The gradient buffer starts with random values, which are
// subtracted afterwards: this proves that backward accumulates. `gradient` (optional) receives
// the analytic gradient.
template <class L>
testing::GradCheckResult check_loss_gradient(L& loss, Tensor<double>& z,
                                             const std::vector<std::int32_t>& labels, double scale,
                                             Rng& rng,
                                             const testing::GradCheckOptions& options = {},
                                             Tensor<double>* gradient = nullptr) {
  loss.forward(z, labels);
  Tensor<double> local;
  Tensor<double>& analytic = gradient != nullptr ? *gradient : local;
  analytic = random_tensor<double>(rng, z.shape());
  const Tensor<double> prefill = analytic.clone();
  loss.backward(analytic, scale);
  for (index_t i = 0; i < z.size(); ++i) analytic[i] -= prefill[i];
  auto f = [&] { return scale * loss.forward(z, labels); };
  return testing::check_gradient(f, z.data(), z.size(), analytic.data(), options);
}

}  // namespace minires::test
