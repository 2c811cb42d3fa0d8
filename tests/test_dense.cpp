// Dense: gradient checks in double on the input, kernel and bias (batch 1, odd sizes, no
// bias); forward and backward against direct loops in float and double; a smaller batch than
// planned; initialisation; errors (a rank-4 input asks for Flatten).
#include <catch2/catch.hpp>

#include <minires/layers/dense.hpp>

#include "gradcheck_summary.hpp"
#include "test_util.hpp"

#include <cmath>
#include <type_traits>
#include <vector>

using namespace minires;
using minires::test::random_tensor;
using minires::test::to_double;

namespace {

// y = x · W + b and its gradients, by loops in double; gradients accumulate like the layer's.
struct NaiveDense {
  index_t n, in, units;
  std::vector<double> x, w, b;

  std::vector<double> forward() const {
    std::vector<double> y(static_cast<std::size_t>(n * units));
    for (index_t i = 0; i < n; ++i)
      for (index_t u = 0; u < units; ++u) {
        double s = b.empty() ? 0.0 : b[static_cast<std::size_t>(u)];
        for (index_t k = 0; k < in; ++k) {
          s += x[static_cast<std::size_t>(i * in + k)] * w[static_cast<std::size_t>(k * units + u)];
        }
        y[static_cast<std::size_t>(i * units + u)] = s;
      }
    return y;
  }
  void backward(const std::vector<double>& dy, std::vector<double>& dx, std::vector<double>& dw,
                std::vector<double>& db) const {
    for (index_t i = 0; i < n; ++i)
      for (index_t u = 0; u < units; ++u) {
        const double g = dy[static_cast<std::size_t>(i * units + u)];
        if (!db.empty()) db[static_cast<std::size_t>(u)] += g;
        for (index_t k = 0; k < in; ++k) {
          dw[static_cast<std::size_t>(k * units + u)] +=
              x[static_cast<std::size_t>(i * in + k)] * g;
          dx[static_cast<std::size_t>(i * in + k)] +=
              w[static_cast<std::size_t>(k * units + u)] * g;
        }
      }
  }
};

template <class T>
void check_close(const Tensor<T>& a, const std::vector<double>& b) {
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  REQUIRE(static_cast<std::size_t>(a.size()) == b.size());
  for (std::size_t i = 0; i < b.size(); ++i) {
    CHECK(static_cast<double>(a[static_cast<index_t>(i)]) == Approx(b[i]).margin(tol).epsilon(tol));
  }
}

// Forward and backward of a Dense set up for `planned` on a batch of `batch`, against loops.
template <class T>
void compare_with_naive(Dense<T>& dense, const Shape& planned, index_t batch, Rng& rng) {
  dense.setup(Span<const Shape>(&planned, 1));
  dense.init(rng);
  if (dense.options().use_bias) dense.bias.uniform(rng, T(-1), T(1));
  const Shape in = planned.with_batch(batch);
  const auto x = random_tensor<T>(rng, in);
  Tensor<T> y(Shape{batch, dense.units()});
  const Tensor<T>* xs[] = {&x};
  dense.forward(Span<const Tensor<T>* const>(xs), y, Mode::Train);
  const NaiveDense ref{
      batch, in[1], dense.units(), to_double(x), to_double(dense.kernel), to_double(dense.bias)};
  check_close(y, ref.forward());

  const auto dy = random_tensor<T>(rng, y.shape());
  auto dx = random_tensor<T>(rng, in);
  dense.dkernel.uniform(rng, T(-1), T(1));
  dense.dbias.uniform(rng, T(-1), T(1));
  auto dxd = to_double(dx), dwd = to_double(dense.dkernel), dbd = to_double(dense.dbias);
  Tensor<T>* dxs[] = {&dx};
  dense.backward(Span<const Tensor<T>* const>(xs), y, dy, Span<Tensor<T>* const>(dxs));
  ref.backward(to_double(dy), dxd, dwd, dbd);
  check_close(dx, dxd);
  check_close(dense.dkernel, dwd);
  check_close(dense.dbias, dbd);
}

}  // namespace

TEST_CASE("Dense gradients match finite differences") {
  Rng rng(21);
  struct Case {
    const char* name;
    Shape input;
    index_t units;
    DenseOptions options;
  };
  const Case cases[] = {
      {"batch 1, one feature, one unit", {1, 1}, 1, {}},
      {"batch 1", {1, 7}, 3, {}},
      {"odd sizes", {5, 13}, 7, {}},
      {"no bias", {3, 6}, 4, DenseOptions().no_bias()},
      {"he_normal kernel, more units than features",
       {4, 3},
       9,
       DenseOptions().kernel_init(Initializer::HeNormal)},
  };
  for (const auto& c : cases) {
    Dense<double> dense(c.units, c.options);
    minires::test::require_gradients(dense, {c.input}, rng, c.name);
  }
}

TEMPLATE_TEST_CASE("Dense forward and backward match loops", "", float, double) {
  using T = TestType;
  Rng rng(22);
  Dense<T> a(10);
  compare_with_naive(a, Shape{6, 37}, 6, rng);
  Dense<T> b(5, DenseOptions().no_bias());
  compare_with_naive(b, Shape{3, 64}, 3, rng);
  // A smaller batch than planned reuses the buffers.
  Dense<T> c(7);
  compare_with_naive(c, Shape{32, 20}, 5, rng);
  compare_with_naive(c, Shape{32, 20}, 1, rng);
}

TEST_CASE("Dense parameters and Keras 2.0 initialisation") {
  Rng rng(23);
  Dense<float> dense(10);
  const Shape in{4, 64};
  dense.setup(Span<const Shape>(&in, 1));
  dense.init(rng);
  CHECK(dense.kernel.shape() == Shape{64, 10});
  CHECK(dense.bias.shape() == Shape{10});
  CHECK(dense.output_shape(Span<const Shape>(&in, 1)) == Shape{4, 10});
  const auto p = dense.params();
  REQUIRE(p.size() == 2);
  CHECK(p[0].name == "kernel");
  CHECK(p[0].grad == &dense.dkernel);
  CHECK(p[1].name == "bias");
  CHECK(p[1].grad == &dense.dbias);
  // glorot_uniform: fan_in 64, fan_out 10 -> limit 0.2847474.
  float max_abs = 0;
  for (float w : dense.kernel) max_abs = std::max(max_abs, std::abs(w));
  CHECK(max_abs <= 0.2847474f);
  CHECK(max_abs > 0.9f * 0.2847474f);
  for (float b : dense.bias) CHECK(b == 0.0f);

  Dense<float> nb(3, DenseOptions().no_bias());
  nb.setup(Span<const Shape>(&in, 1));
  CHECK(nb.params().size() == 1);
  CHECK(nb.param_count() == 64 * 3);
  CHECK(dense.config() == "units=10 use_bias=true");
  CHECK(nb.config() == "units=3 use_bias=false");
}

TEST_CASE("Dense reports bad use with the expected and found values") {
  using Catch::Contains;
  CHECK_THROWS_AS(Dense<float>(0), ValueError);
  CHECK_THROWS_WITH(Dense<float>(0), Contains("units >= 1") && Contains("found 0"));

  Dense<float> dense(10);
  auto setup = [&](Shape s) { dense.setup(Span<const Shape>(&s, 1)); };
  CHECK_THROWS_AS(setup({8, 16, 7, 7}), ShapeError);
  CHECK_THROWS_WITH(setup({8, 16, 7, 7}),
                    Contains("rank-2") && Contains("(8, 16, 7, 7)") && Contains("Flatten"));
  CHECK_THROWS_WITH(setup({8}), Contains("rank-2") && Contains("(8,)"));
  Rng rng(1);
  CHECK_THROWS_WITH(dense.init(rng), Contains("setup() before init()"));

  setup({8, 64});
  CHECK_THROWS_AS(setup({8, 32}), ShapeError);
  CHECK_THROWS_WITH(setup({8, 32}), Contains("64 features") && Contains("(8, 32)"));
  Tensor<float> x(Shape{8, 63}), y(Shape{8, 10});
  const Tensor<float>* xs[] = {&x};
  CHECK_THROWS_WITH(dense.forward(Span<const Tensor<float>* const>(xs), y, Mode::Train),
                    Contains("(8, 64)") && Contains("(8, 63)"));
  Tensor<float> x9(Shape{9, 64}), y9(Shape{9, 10});
  const Tensor<float>* x9s[] = {&x9};
  CHECK_THROWS_WITH(dense.forward(Span<const Tensor<float>* const>(x9s), y9, Mode::Train),
                    Contains("(8, 64)") && Contains("(9, 64)"));
}
