// Helpers shared by the tests.
#pragma once

#include <minires/minires.hpp>

#include <vector>

namespace minires::test {

// n values drawn uniformly from [lo, hi).
template <class T>
std::vector<T> random_vector(Rng& rng, index_t n, double lo = -1.0, double hi = 1.0) {
  std::vector<T> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<T>(rng.uniform(lo, hi));
  return v;
}

// A tensor of the given shape with values drawn uniformly from [lo, hi).
template <class T>
Tensor<T> random_tensor(Rng& rng, const Shape& shape, double lo = -1.0, double hi = 1.0) {
  Tensor<T> t(shape);
  t.uniform(rng, static_cast<T>(lo), static_cast<T>(hi));
  return t;
}

}  // namespace minires::test
