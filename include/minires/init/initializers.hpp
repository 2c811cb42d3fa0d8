// Weight initializers with Keras 2.0 semantics (keras@2.0.8 keras/initializers.py).
//
//   glorot_uniform  U(-limit, limit), limit  = sqrt(6 / (fan_in + fan_out))
//   glorot_normal   truncated N(0, stddev),   stddev = sqrt(2 / (fan_in + fan_out))
//   he_normal       truncated N(0, stddev),   stddev = sqrt(2 / fan_in)
//   he_uniform      U(-limit, limit), limit  = sqrt(6 / fan_in)
//   zeros, ones     constants
//
// All are VarianceScaling: scale / max(1, fan) with fan = fan_in, fan_out or their mean.
// "Truncated" is TensorFlow's truncated_normal: draws beyond 2 stddev are redrawn, so the
// realised standard deviation is ~0.8796 * stddev. Keras 2.2.0 divides stddev by 0.8796 to
// compensate; Keras 2.0-2.1 (and minires) do not.
//
// Fans follow Keras' _compute_fans, counting the receptive field of convolution kernels:
//   Dense kernel (in, units)         fan_in = in,           fan_out = units
//   Conv2D kernel (F, C, kh, kw)     fan_in = C * kh * kw,  fan_out = F * kh * kw
//   a vector of n (bias, gamma)      fan_in = fan_out = sqrt(n)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "minires/core/error.hpp"
#include "minires/core/rng.hpp"
#include "minires/core/tensor.hpp"

namespace minires {

enum class Initializer { GlorotUniform, GlorotNormal, HeNormal, HeUniform, Zeros, Ones };

// The Keras name of an initializer ("glorot_uniform", ...).
inline const char* initializer_name(Initializer init) noexcept {
  switch (init) {
    case Initializer::GlorotUniform:
      return "glorot_uniform";
    case Initializer::GlorotNormal:
      return "glorot_normal";
    case Initializer::HeNormal:
      return "he_normal";
    case Initializer::HeUniform:
      return "he_uniform";
    case Initializer::Zeros:
      return "zeros";
    case Initializer::Ones:
      return "ones";
  }
  return "unknown";
}

// Fan-in and fan-out of a weight tensor (doubles: Keras' rule for vectors gives sqrt(n)).
struct Fans {
  double fan_in = 1.0;
  double fan_out = 1.0;
};

inline Fans dense_fans(index_t in, index_t units) {
  return {static_cast<double>(in), static_cast<double>(units)};
}
inline Fans conv2d_fans(index_t filters, index_t channels, index_t kernel_h, index_t kernel_w) {
  const auto receptive_field = static_cast<double>(kernel_h * kernel_w);
  return {static_cast<double>(channels) * receptive_field,
          static_cast<double>(filters) * receptive_field};
}
inline Fans vector_fans(index_t n) {
  const double f = std::sqrt(static_cast<double>(n));
  return {f, f};
}

namespace init {

// limit of glorot_uniform: sqrt(6 / (fan_in + fan_out)) (fan average clamped at 1 as in Keras).
inline double glorot_uniform_limit(const Fans& f) {
  return std::sqrt(3.0 / std::max(1.0, (f.fan_in + f.fan_out) / 2.0));
}
// stddev (before truncation) of glorot_normal: sqrt(2 / (fan_in + fan_out)).
inline double glorot_normal_stddev(const Fans& f) {
  return std::sqrt(1.0 / std::max(1.0, (f.fan_in + f.fan_out) / 2.0));
}
// stddev (before truncation) of he_normal: sqrt(2 / fan_in).
inline double he_normal_stddev(const Fans& f) {
  return std::sqrt(2.0 / std::max(1.0, f.fan_in));
}
// limit of he_uniform: sqrt(6 / fan_in).
inline double he_uniform_limit(const Fans& f) {
  return std::sqrt(6.0 / std::max(1.0, f.fan_in));
}

}  // namespace init

// Fills t with draws from `init` for a tensor with fans `fans`. zeros/ones draw nothing.
template <class T>
void initialize(Tensor<T>& t, Initializer init, const Fans& fans, Rng& rng) {
  const bool random = init != Initializer::Zeros && init != Initializer::Ones;
  if (random && (!(fans.fan_in > 0.0) || !(fans.fan_out > 0.0))) {
    char found[96];
    std::snprintf(found, sizeof found, "fan_in %g, fan_out %g", fans.fan_in, fans.fan_out);
    throw ValueError(std::string("initialize(") + initializer_name(init) +
                     "): expected positive fans, found " + found);
  }
  T* p = t.data();
  const index_t n = t.size();
  auto uniform = [&](double limit) {
    for (index_t i = 0; i < n; ++i) p[i] = static_cast<T>(rng.uniform(-limit, limit));
  };
  auto truncated_normal = [&](double stddev) {
    for (index_t i = 0; i < n; ++i) p[i] = static_cast<T>(rng.truncated_normal(0.0, stddev));
  };
  switch (init) {
    case Initializer::GlorotUniform:
      uniform(init::glorot_uniform_limit(fans));
      break;
    case Initializer::GlorotNormal:
      truncated_normal(init::glorot_normal_stddev(fans));
      break;
    case Initializer::HeNormal:
      truncated_normal(init::he_normal_stddev(fans));
      break;
    case Initializer::HeUniform:
      uniform(init::he_uniform_limit(fans));
      break;
    case Initializer::Zeros:
      t.fill(T(0));
      break;
    case Initializer::Ones:
      t.fill(T(1));
      break;
  }
}

// Convenience overload with explicit fans.
template <class T>
void initialize(Tensor<T>& t, Initializer init, double fan_in, double fan_out, Rng& rng) {
  initialize(t, init, Fans{fan_in, fan_out}, rng);
}

}  // namespace minires
