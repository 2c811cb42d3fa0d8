// The finite-difference gradient checker on functions whose gradients are known, and on wrong
// gradients, which it must reject.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>
#include <minires/testing/gradcheck.hpp>

#include <cmath>
#include <vector>

using namespace minires;
using testing::check_gradient;

TEST_CASE("gradcheck accepts correct gradients") {
  Rng rng(1);
  std::vector<double> x(50);
  for (auto& v : x) v = rng.uniform(-2, 2);
  const auto n = static_cast<index_t>(x.size());

  // f = sum x_i^2 sin(x_i) + prod-free coupling x_0 x_1
  auto f = [&] {
    double s = x[0] * x[1];
    for (double v : x) s += v * v * std::sin(v);
    return s;
  };
  std::vector<double> g(x.size());
  for (std::size_t i = 0; i < x.size(); ++i)
    g[i] = 2 * x[i] * std::sin(x[i]) + x[i] * x[i] * std::cos(x[i]);
  g[0] += x[1];
  g[1] += x[0];
  const auto r = check_gradient(f, x.data(), n, g.data());
  INFO(r.report());
  CHECK(r.ok());
  CHECK(r.checked == n);
  // Central differences err by h^2 f'''/6 ~ 1e-12 (truncation) plus the rounding of f (a sum
  // of 50 terms of size ~1, ~1e-15) over 2h, ~1e-9: far below 1e-8, where a one-sided
  // difference would be off by h f''/2 ~ 1e-6. (A relative bound would depend on how small
  // the smallest of the 50 gradients happens to be, and on how the compiler rounds the sum.)
  CHECK(r.max_abs_error < 1e-8);

  // log-sum-exp: gradient is softmax
  auto lse = [&] {
    double m = x[0];
    for (double v : x) m = std::max(m, v);
    double s = 0;
    for (double v : x) s += std::exp(v - m);
    return m + std::log(s);
  };
  double m = x[0], s = 0;
  for (double v : x) m = std::max(m, v);
  for (double v : x) s += std::exp(v - m);
  for (std::size_t i = 0; i < x.size(); ++i) g[i] = std::exp(x[i] - m) / s;
  const auto r2 = check_gradient(lse, x.data(), n, g.data());
  INFO(r2.report());
  CHECK(r2.ok());
}

TEST_CASE("gradcheck rejects wrong gradients and names the worst element") {
  std::vector<double> x = {0.5, -1.0, 2.0, 3.0};
  auto f = [&] { return x[0] * x[0] + 3 * x[1] + x[2] * x[3]; };
  std::vector<double> g = {1.0, 3.0, 3.0, 2.0};
  CHECK(check_gradient(f, x.data(), 4, g.data()).ok());
  g[2] = 3.01;  // off by 0.3%
  const auto r = check_gradient(f, x.data(), 4, g.data());
  CHECK_FALSE(r.ok());
  CHECK(r.failed == 1);
  CHECK(r.worst_index == 2);
  CHECK(r.worst_numeric == Approx(3.0).epsilon(1e-8));
  CHECK(r.report().find("1 of 4") != std::string::npos);
  // x is restored after the check
  CHECK(x == std::vector<double>{0.5, -1.0, 2.0, 3.0});
}

TEST_CASE("gradcheck: zero gradients pass on the absolute tolerance; sampling") {
  std::vector<double> x(1000, 1.0);
  auto f = [&] { return 4.0; };
  std::vector<double> g(1000, 0.0);
  testing::GradCheckOptions opt;
  opt.max_checks = 10;
  const auto r = check_gradient(f, x.data(), 1000, g.data(), opt);
  CHECK(r.ok());
  CHECK(r.checked == 10);
  g[0] = 1e-3;
  CHECK_FALSE(check_gradient(f, x.data(), 1000, g.data(), opt).ok());
}

TEST_CASE("compensated_dot keeps the terms a plain sum rounds away") {
  const std::vector<double> a = {1e16, 1.0, -1e16, 0.5};
  const std::vector<double> b = {1.0, 1.0, 1.0, 3.0};
  double plain = 0;
  for (std::size_t i = 0; i < a.size(); ++i) plain += a[i] * b[i];
  CHECK(plain != 2.5);  // 1e16 + 1 rounds to 1e16
  CHECK(testing::compensated_dot(a.data(), b.data(), 4) == 2.5);
  CHECK(testing::compensated_dot(a.data(), b.data(), 0) == 0.0);
}
