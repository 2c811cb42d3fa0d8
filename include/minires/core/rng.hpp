// Rng: a seeded, portable random number generator (xoshiro256** seeded through splitmix64).
// Unlike std::uniform_real_distribution, its output is the same on every platform and standard
// library, so a seed fully determines initialisation and shuffling.
#pragma once

#include <cmath>
#include <cstdint>

#include "minires/core/error.hpp"

namespace minires {

namespace detail {
__extension__ typedef unsigned __int128 uint128;  // GCC/Clang extension, silenced for -Wpedantic
}  // namespace detail

class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) noexcept { this->seed(seed); }

  void seed(std::uint64_t seed) noexcept {
    std::uint64_t x = seed;
    for (auto& s : s_) s = splitmix64(x);
    has_spare_ = false;
  }

  // Next raw 64-bit value.
  std::uint64_t next() noexcept {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }

  // Uniform double in [0, 1) with 53 random bits.
  double uniform() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

  // Uniform double in [lo, hi).
  double uniform(double lo, double hi) noexcept { return lo + (hi - lo) * uniform(); }

  // Uniform integer in [0, n), without modulo bias (Lemire's method).
  std::uint64_t uniform_int(std::uint64_t n) {
    if (n == 0) throw ValueError("Rng::uniform_int: expected n > 0, found 0");
    detail::uint128 m = static_cast<detail::uint128>(next()) * n;
    auto low = static_cast<std::uint64_t>(m);
    if (low < n) {
      const std::uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<detail::uint128>(next()) * n;
        low = static_cast<std::uint64_t>(m);
      }
    }
    return static_cast<std::uint64_t>(m >> 64);
  }

  // Standard normal (Box-Muller; the second value of each pair is kept for the next call).
  double normal() noexcept {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u1 = uniform();
    while (u1 <= 0.0) u1 = uniform();
    const double u2 = uniform();
    const double r = std::sqrt(-2.0 * std::log(u1));
    const double theta = 6.283185307179586476925 * u2;
    spare_ = r * std::sin(theta);
    has_spare_ = true;
    return r * std::cos(theta);
  }

  double normal(double mean, double stddev) noexcept { return mean + stddev * normal(); }

  // Normal truncated to [mean - 2*stddev, mean + 2*stddev] by redrawing (TensorFlow's
  // truncated_normal, used by Keras 2.0's he_normal).
  double truncated_normal(double mean, double stddev) noexcept {
    double z = normal();
    while (z < -2.0 || z > 2.0) z = normal();
    return mean + stddev * z;
  }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t splitmix64(std::uint64_t& x) noexcept {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  std::uint64_t s_[4] = {};
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace minires
