// Initializers: Keras 2.0 limits (worked by hand from Keras 2.0's initializers.py), bounds, and
// mean and variance within sampling error (5 standard errors) of the distributions' exact moments,
// including TensorFlow's 2-sigma truncation of he_normal / glorot_normal without Keras 2.2's
// 0.8796 correction.
#include <catch2/catch.hpp>

#include <minires/init/initializers.hpp>

#include "test_util.hpp"

#include <cmath>
#include <string>

using namespace minires;

namespace {

// Moments of a distribution: variance and fourth central moment, both around mean 0.
struct Moments {
  double var, m4;
};

Moments uniform_moments(double limit) {
  return {limit * limit / 3.0, std::pow(limit, 4) / 5.0};
}

// Normal(0, stddev) truncated to ±2 stddev: with φ the standard density, Z = 2Φ(2) − 1,
//   E[z²] = 1 − 2aφ(a)/Z,   E[z⁴] = 3 − (6aφ(a) + 2a³φ(a))/Z,   a = 2.
Moments truncated_normal_moments(double stddev) {
  const double a = 2.0, phi = std::exp(-a * a / 2) / std::sqrt(2 * std::acos(-1.0)),
               z = std::erf(a / std::sqrt(2.0));
  const double e2 = 1 - 2 * a * phi / z, e4 = 3 - (6 * a * phi + 2 * a * a * a * phi) / z;
  return {e2 * stddev * stddev, e4 * std::pow(stddev, 4)};
}

// Draws n values and checks |v| <= bound, the mean and the variance against `m` within 5
// standard errors (the seed is fixed, so this is a deterministic check of the distribution).
template <class T>
void check_distribution(Initializer init, const Fans& fans, double bound, const Moments& m,
                        std::uint64_t seed) {
  const index_t n = 200000;
  Tensor<T> t(Shape{n});
  Rng rng(seed);
  initialize(t, init, fans, rng);
  double sum = 0, sq = 0, max_abs = 0;
  for (T v : t) {
    sum += v;
    sq += static_cast<double>(v) * v;
    max_abs = std::max(max_abs, std::abs(static_cast<double>(v)));
  }
  const double mean = sum / n, var = sq / n - mean * mean;
  INFO(initializer_name(init) << " fans " << fans.fan_in << "/" << fans.fan_out << ": mean " << mean
                              << ", variance " << var << " (expected " << m.var << "), max |v| "
                              << max_abs << " (bound " << bound << ")");
  CHECK(max_abs <= bound * (1 + 1e-7));
  CHECK(max_abs >= 0.99 * bound);  // the whole range is used
  CHECK(std::abs(mean) <= 5 * std::sqrt(m.var / n));
  CHECK(std::abs(var - m.var) <= 5 * std::sqrt((m.m4 - m.var * m.var) / n));
}

}  // namespace

TEST_CASE("glorot_uniform limits with receptive-field fans (Keras 2.0 _compute_fans)") {
  using init::glorot_uniform_limit;
  CHECK(glorot_uniform_limit(conv2d_fans(16, 1, 3, 3)) == Approx(0.1980295).epsilon(1e-6));
  CHECK(glorot_uniform_limit(conv2d_fans(16, 16, 3, 3)) == Approx(0.1443376).epsilon(1e-6));
  CHECK(glorot_uniform_limit(conv2d_fans(32, 16, 3, 3)) == Approx(0.1178511).epsilon(1e-6));
  CHECK(glorot_uniform_limit(conv2d_fans(32, 32, 3, 3)) == Approx(0.1020621).epsilon(1e-6));
  CHECK(glorot_uniform_limit(dense_fans(64, 10)) == Approx(0.2847474).epsilon(1e-6));
  // Fans: conv (F, C, kh, kw) -> fan_in C*kh*kw, fan_out F*kh*kw; a vector of n -> sqrt(n).
  CHECK(conv2d_fans(16, 3, 5, 2).fan_in == 30);
  CHECK(conv2d_fans(16, 3, 5, 2).fan_out == 160);
  CHECK(vector_fans(16).fan_in == 4);
  CHECK(vector_fans(16).fan_out == 4);
  // he: sqrt(2 / fan_in) and sqrt(6 / fan_in); glorot_normal: sqrt(2 / (fan_in + fan_out)).
  CHECK(init::he_normal_stddev(conv2d_fans(16, 16, 3, 3)) == Approx(std::sqrt(2.0 / 144)));
  CHECK(init::he_uniform_limit(dense_fans(64, 10)) == Approx(std::sqrt(6.0 / 64)));
  CHECK(init::glorot_normal_stddev(dense_fans(64, 10)) == Approx(std::sqrt(2.0 / 74)));
  // Keras divides by max(1, fan): tiny fans do not blow the scale up.
  CHECK(init::glorot_uniform_limit(Fans{0.5, 0.5}) == Approx(std::sqrt(3.0)));
}

TEMPLATE_TEST_CASE("random initializers: bounds, mean and variance", "", float, double) {
  using T = TestType;
  const Fans conv = conv2d_fans(32, 16, 3, 3);  // fan_in 144, fan_out 288
  const double glorot_limit = init::glorot_uniform_limit(conv);
  check_distribution<T>(Initializer::GlorotUniform, conv, glorot_limit,
                        uniform_moments(glorot_limit), 1);
  const double he_limit = init::he_uniform_limit(conv);
  check_distribution<T>(Initializer::HeUniform, conv, he_limit, uniform_moments(he_limit), 2);
  const double he_std = init::he_normal_stddev(conv);
  check_distribution<T>(Initializer::HeNormal, conv, 2 * he_std, truncated_normal_moments(he_std),
                        3);
  const double gn_std = init::glorot_normal_stddev(conv);
  check_distribution<T>(Initializer::GlorotNormal, conv, 2 * gn_std,
                        truncated_normal_moments(gn_std), 4);
}

TEST_CASE("he_normal is truncated at 2 sigma without Keras 2.2's correction") {
  // Realised standard deviation = 0.8796 * sqrt(2 / fan_in), not sqrt(2 / fan_in).
  CHECK(std::sqrt(truncated_normal_moments(1.0).var) == Approx(0.87962566103423978).epsilon(1e-12));
  Tensor<double> t(Shape{100000});
  Rng rng(5);
  initialize(t, Initializer::HeNormal, dense_fans(50, 10), rng);
  double sq = 0;
  for (double v : t) sq += v * v;
  const double ratio = std::sqrt(sq / t.size()) / std::sqrt(2.0 / 50);
  CHECK(ratio == Approx(0.8796).margin(0.005));
}

TEST_CASE("zeros and ones fill exactly and draw nothing") {
  Tensor<float> t(Shape{3, 4});
  Rng rng(9), fresh(9);
  initialize(t, Initializer::Ones, dense_fans(3, 4), rng);
  for (float v : t) CHECK(v == 1.0f);
  initialize(t, Initializer::Zeros, dense_fans(3, 4), rng);
  for (float v : t) CHECK(v == 0.0f);
  CHECK(rng.next() == fresh.next());
}

TEST_CASE("initializers are reproducible from the seed") {
  Tensor<float> a(Shape{64}), b(Shape{64});
  Rng r1(77), r2(77);
  initialize(a, Initializer::GlorotUniform, 8.0, 8.0, r1);
  initialize(b, Initializer::GlorotUniform, 8.0, 8.0, r2);
  for (index_t i = 0; i < 64; ++i) CHECK(a[i] == b[i]);
}

TEST_CASE("initializer names and errors") {
  CHECK(std::string(initializer_name(Initializer::GlorotUniform)) == "glorot_uniform");
  CHECK(std::string(initializer_name(Initializer::HeNormal)) == "he_normal");
  Tensor<float> t(Shape{4});
  Rng rng(1);
  CHECK_THROWS_AS(initialize(t, Initializer::HeNormal, 0.0, 4.0, rng), ValueError);
  CHECK_THROWS_WITH(initialize(t, Initializer::HeNormal, 0.0, 4.0, rng),
                    Catch::Contains("he_normal") && Catch::Contains("fan_in 0"));
  CHECK_NOTHROW(initialize(t, Initializer::Zeros, 0.0, 0.0, rng));
}
