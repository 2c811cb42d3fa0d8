// xsimd element-wise kernels against scalar loops, at lengths around the SIMD width and the
// parallel block size (tails included), float and double.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>

#include "test_util.hpp"

#include <cmath>
#include <limits>
#include <vector>

using namespace minires;
using minires::test::random_vector;

namespace {

const index_t lengths[] = {0, 1, 3, 7, 8, 15, 16, 17, 31, 33, 1000, (1 << 16) + 5, (1 << 17) + 13};

}  // namespace

TEMPLATE_TEST_CASE("element-wise kernels match scalar loops", "", float, double) {
  using T = TestType;
  Rng rng(11);
  for (index_t n : lengths) {
    INFO("n = " << n);
    const auto x = random_vector<T>(rng, n), b = random_vector<T>(rng, n),
               dy = random_vector<T>(rng, n);
    auto xz = x;
    if (n > 2) xz[1] = T(0);  // the gradient at exactly 0 is 0

    std::vector<T> y(x.size(), T(9));
    kernels::relu_forward(x.data(), y.data(), n);
    for (index_t i = 0; i < n; ++i) REQUIRE(y[i] == (x[i] > T(0) ? x[i] : T(0)));
    if (n > 0) {  // NaN passes through ReLU, in the SIMD body and in the tail
      auto xn = x;
      xn[0] = xn[static_cast<std::size_t>(n - 1)] = std::numeric_limits<T>::quiet_NaN();
      kernels::relu_forward(xn.data(), y.data(), n);
      REQUIRE(std::isnan(y[0]));
      REQUIRE(std::isnan(y[static_cast<std::size_t>(n - 1)]));
    }

    auto dx = b;  // relu_backward accumulates
    kernels::relu_backward(xz.data(), dy.data(), dx.data(), n);
    for (index_t i = 0; i < n; ++i) REQUIRE(dx[i] == b[i] + (xz[i] > T(0) ? dy[i] : T(0)));

    kernels::add(x.data(), b.data(), y.data(), n);
    for (index_t i = 0; i < n; ++i) REQUIRE(y[i] == x[i] + b[i]);
    auto inplace = x;
    kernels::add(inplace.data(), b.data(), inplace.data(), n);
    REQUIRE(inplace == y);

    auto ax = b;
    kernels::axpy(T(0.75), x.data(), ax.data(), n);
    for (index_t i = 0; i < n; ++i) REQUIRE(ax[i] == Approx(b[i] + T(0.75) * x[i]).margin(1e-6));

    auto sc = x;
    kernels::scale(T(-2), sc.data(), n);
    for (index_t i = 0; i < n; ++i) REQUIRE(sc[i] == T(-2) * x[i]);
  }
}

TEST_CASE("element-wise kernels give the same bits for 1 and 2 threads") {
  Rng rng(12);
  const index_t n = (1 << 18) + 3;
  const auto x = random_vector<float>(rng, n), y0 = random_vector<float>(rng, n);
  auto y1 = y0, y2 = y0;
  const int before = num_threads();
  set_num_threads(1);
  kernels::axpy(0.3f, x.data(), y1.data(), n);
  set_num_threads(2);
  kernels::axpy(0.3f, x.data(), y2.data(), n);
  set_num_threads(before);
  CHECK(y1 == y2);
}
