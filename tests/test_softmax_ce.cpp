// Softmax and the fused softmax cross-entropy: softmax against direct loops, known loss values,
// gradient checks of the loss with respect to the logits (with and without Keras' clip, with
// label smoothing, with clipped rows), Keras 2.0's clip behaviour, huge logits, batches smaller
// than planned, results independent of the thread count, and errors for bad use.
#include <catch2/catch.hpp>

#include <minires/loss/softmax_cross_entropy.hpp>
#include <minires/testing/gradcheck.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "layer_test_util.hpp"

using namespace minires;
using minires::test::random_tensor;
using Labels = std::vector<std::int32_t>;

namespace {

template <class T>
Tensor<T> matrix(index_t rows, index_t cols, const std::vector<double>& v) {
  Tensor<T> t(Shape{rows, cols});
  REQUIRE(static_cast<index_t>(v.size()) == t.size());
  for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<T>(v[static_cast<std::size_t>(i)]);
  return t;
}

// softmax of one row in long double, the reference for float and double.
std::vector<long double> naive_softmax(const double* z, index_t n) {
  long double m = z[0];
  for (index_t k = 0; k < n; ++k) m = std::max<long double>(m, z[k]);
  std::vector<long double> p(static_cast<std::size_t>(n));
  long double s = 0;
  for (index_t k = 0; k < n; ++k) s += p[static_cast<std::size_t>(k)] = std::exp(z[k] - m);
  for (auto& v : p) v /= s;
  return p;
}

template <class T>
SoftmaxCrossEntropy<T> make_loss(const Shape& logits, double smoothing = 0.0, bool clip = true) {
  SoftmaxCrossEntropyOptions o;
  o.label_smoothing = smoothing;
  o.keras_clip = clip;
  SoftmaxCrossEntropy<T> loss(o);
  loss.setup(logits);
  return loss;
}

// The gradient of the loss from zero.
template <class T>
Tensor<T> gradient(const SoftmaxCrossEntropy<T>& loss, const Shape& shape, T scale = T(1)) {
  Tensor<T> d(shape);
  loss.backward(d, scale);
  return d;
}

const double log_eps = -std::log(1e-7);  // 16.11809565095832: Keras' largest per-sample loss

}  // namespace

TEMPLATE_TEST_CASE("softmax matches direct loops and stays finite for huge logits", "", float,
                   double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-7 : 1e-15;
  Rng rng(3);
  for (const Shape& s : {Shape{1, 1}, Shape{5, 10}, Shape{3, 17}, Shape{2, 10}}) {
    const double spread = s == Shape{2, 10} ? 1e4 : 5.0;  // the last one: huge logits
    Tensor<double> z = random_tensor<double>(rng, s, -spread, spread);
    Tensor<T> zt(s), p;
    zt.convert_from(z);
    z.convert_from(zt);  // the reference sees the same (rounded) logits
    softmax(zt, p);
    REQUIRE(p.shape() == s);
    for (index_t r = 0; r < s[0]; ++r) {
      const auto ref = naive_softmax(&z(r, 0), s[1]);
      double sum = 0;
      for (index_t k = 0; k < s[1]; ++k) {
        REQUIRE(std::isfinite(p(r, k)));
        REQUIRE(static_cast<double>(p(r, k)) ==
                Approx(static_cast<double>(ref[static_cast<std::size_t>(k)]))
                    .epsilon(tol * 4)
                    .margin(tol));
        sum += p(r, k);
      }
      CHECK(sum == Approx(1.0).epsilon(tol * s[1]));
    }
  }
  Tensor<T> wrong(Shape{2, 3, 4}), p;
  CHECK_THROWS_AS(softmax(wrong, p), ShapeError);
  CHECK_THROWS_WITH(softmax(wrong, p),
                    Catch::Contains("(batch, classes)") && Catch::Contains("found (2, 3, 4)"));
}

TEMPLATE_TEST_CASE("Cross-entropy known values", "", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-12;
  SECTION("uniform logits over 10 classes give log(10), gradient (1/10 - y)/N") {
    for (const bool clip : {true, false}) {
      for (const double smoothing : {0.0, 0.1}) {
        auto loss = make_loss<T>(Shape{4, 10}, smoothing, clip);
        Tensor<T> z(Shape{4, 10});
        z.fill(T(0.5));
        CHECK(loss.forward(z, Labels{0, 3, 9, 3}) == Approx(std::log(10.0)).epsilon(tol));
        if (smoothing == 0.0) {
          const Tensor<T> d = gradient(loss, z.shape());
          CHECK(d(1, 3) == Approx((0.1 - 1) / 4).epsilon(tol));
          CHECK(d(1, 2) == Approx(0.1 / 4).epsilon(tol));
        }
      }
    }
  }
  SECTION("logits (1, 2, 3): -log softmax, batch mean, label smoothing as in PyTorch") {
    auto loss = make_loss<T>(Shape{2, 3});
    const Tensor<T> z = matrix<T>(2, 3, {1, 2, 3, 1, 2, 3});
    const double l2 = std::log(1 + std::exp(-1.0) + std::exp(-2.0));  // 0.40760596444
    CHECK(loss.forward(z, Labels{2, 0}) == Approx((l2 + 2 + l2) / 2).epsilon(tol));
    CHECK(loss.sample_losses()[0] == Approx(l2).epsilon(tol));
    CHECK(loss.sample_losses()[1] == Approx(2 + l2).epsilon(tol));
    // nn.CrossEntropyLoss(label_smoothing=0.1)(tensor([[1., 2., 3.]]), tensor([2])) = 0.5076060
    auto smooth = make_loss<T>(Shape{1, 3}, 0.1);
    const Tensor<T> z1 = matrix<T>(1, 3, {1, 2, 3});
    CHECK(smooth.forward(z1, Labels{2}) == Approx(0.5076059644).epsilon(tol + 1e-10));
    // gradient (p - y) / N with y = (0.1/3, 0.1/3, 0.9 + 0.1/3)
    const Tensor<T> d = gradient(smooth, z1.shape());
    const auto p = naive_softmax(std::vector<double>{1, 2, 3}.data(), 3);
    const double y[] = {0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3};
    for (index_t k = 0; k < 3; ++k) {
      CHECK(d(0, k) ==
            Approx(static_cast<double>(p[static_cast<std::size_t>(k)]) - y[k]).epsilon(tol));
    }
  }
}

TEST_CASE("Cross-entropy gradient check with respect to the logits") {
  const index_t N = 6, K = 10;
  Rng rng(42);
  const Labels labels{0, 9, 3, 3, 1, 2};
  // Ordinary logits, and logits whose rows 4 and 5 saturate: row 4 confidently wrong (p_label
  // ~1e-13), row 5 confidently right (p_label rounds to 1, the others ~1e-17). With the clip
  // those rows are constant (zero gradient); without it their gradients are ~1e-13 or less and
  // pass on the absolute tolerance, so their relative errors mean nothing and are not reported.
  const Tensor<double> ordinary = random_tensor<double>(rng, Shape{N, K}, -3.0, 3.0);
  Tensor<double> saturated = ordinary.clone();
  for (index_t k = 0; k < K; ++k) {
    saturated(4, k) = k == 7 ? 30.0 : 0.0;
    saturated(5, k) = k == 2 ? 40.0 : 0.0;
  }
  // The loss is smooth away from the clip boundaries (all logits here are far from them), so a
  // step of 1e-4 costs ~1e-8 of truncation error and removes most of the rounding noise.
  testing::GradCheckOptions options;
  options.step = 1e-4;
  double worst = 0;
  for (const Tensor<double>* logits : {&ordinary, static_cast<const Tensor<double>*>(&saturated)}) {
    Tensor<double> z = logits->clone();
    for (const bool clip : {true, false}) {
      for (const double smoothing : {0.0, 0.1}) {
        for (const double scale : {1.0, 2.5}) {
          auto loss = make_loss<double>(z.shape(), smoothing, clip);
          Tensor<double> analytic;
          const auto r = test::check_loss_gradient(loss, z, labels, scale, rng, options, &analytic);
          INFO((logits == &ordinary ? "ordinary" : "saturated")
               << " logits, keras_clip " << clip << " smoothing " << smoothing << " scale " << scale
               << ": " << r.report());
          REQUIRE(r.ok());
          if (logits == &ordinary) {
            std::printf(
                "gradcheck SoftmaxCrossEntropy keras_clip=%d label_smoothing=%.1f "
                "scale=%.1f   max rel error %.2e, max abs error %.2e\n",
                clip, smoothing, scale, r.max_rel_error, r.max_abs_error);
            worst = std::max(worst, r.max_rel_error);
          } else if (clip) {
            for (index_t k = 0; k < K; ++k) {
              CHECK(analytic(4, k) == 0.0);  // the clipped rows pass no gradient
              CHECK(analytic(5, k) == 0.0);
            }
          }
        }
      }
    }
  }
  std::printf("largest gradcheck rel error: SoftmaxCrossEntropy %.2e\n", worst);
}

TEMPLATE_TEST_CASE(
    "Keras 2.0 clip: the loss saturates at -log(1e-7) and clipped samples pass no "
    "gradient",
    "", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-12;
  // Row 0: confidently wrong, p_0 = e^-30/(2 + e^-30) ~ 4.7e-14 < 1e-7. Row 1: uniform.
  const Tensor<T> z = matrix<T>(2, 3, {0, 30, 30, 0, 0, 0});
  const Labels labels{0, 1};

  auto keras = make_loss<T>(z.shape());
  const T l = keras.forward(z, labels);
  CHECK(keras.sample_losses()[0] == Approx(log_eps).epsilon(tol));  // 16.118095
  CHECK(l == Approx((log_eps + std::log(3.0)) / 2).epsilon(tol));
  const Tensor<T> d = gradient(keras, z.shape());
  for (index_t k = 0; k < 3; ++k) {
    CHECK(d(0, k) == T(0));
    CHECK(d(1, k) == Approx((1.0 / 3 - (k == 1)) / 2).epsilon(tol));
  }

  auto torch = make_loss<T>(z.shape(), 0.0, false);
  const T lt = torch.forward(z, labels);
  CHECK(torch.sample_losses()[0] == Approx(30 + std::log(2 + std::exp(-30.0))).epsilon(tol));
  CHECK(lt == Approx((30 + std::log(2.0) + std::log(3.0)) / 2).epsilon(tol));
  const Tensor<T> dt = gradient(torch, z.shape());
  const auto p0 = naive_softmax(std::vector<double>{0, 30, 30}.data(), 3);
  for (index_t k = 0; k < 3; ++k) {
    CHECK(dt(0, k) == Approx((static_cast<double>(p0[static_cast<std::size_t>(k)]) - (k == 0)) / 2)
                          .epsilon(tol)
                          .margin(1e-12));
    CHECK(dt(1, k) == d(1, k));
  }

  // Confidently right: p_label rounds above 1 - 1e-7 (in float 1 - 1e-7 is 1 - 2^-23) and is
  // clipped; the loss is -log(1 - 1e-7) in T and the sample passes no gradient.
  auto right = make_loss<T>(Shape{1, 3});
  const Tensor<T> zr = matrix<T>(1, 3, {40, 0, 0});
  CHECK(right.forward(zr, Labels{0}) == Approx(-std::log(T(1) - T(1e-7))).epsilon(1e-6));
  const Tensor<T> dr = gradient(right, zr.shape());
  for (index_t k = 0; k < 3; ++k) CHECK(dr(0, k) == T(0));
}

TEMPLATE_TEST_CASE("Huge logits stay finite", "", float, double) {
  using T = TestType;
  const Tensor<T> z = matrix<T>(3, 4,
                                {1e4, 0, -1e4, 5e3,       //
                                 -1e4, -1e4, -1e4, -1e4,  //
                                 1e4, 1e4, -1e4, 0});
  const Labels labels{2, 3, 1};
  for (const bool clip : {true, false}) {
    for (const double smoothing : {0.0, 0.2}) {
      auto loss = make_loss<T>(z.shape(), smoothing, clip);
      const T l = loss.forward(z, labels);
      CHECK(std::isfinite(l));
      if (smoothing == 0.0) {
        // row 0: -log p_2 = 2e4 unclipped; row 1: log 4; row 2: log 2 (two tied maxima)
        const double expected = clip ? (log_eps + std::log(4.0) + std::log(2.0)) / 3
                                     : (2e4 + std::log(4.0) + std::log(2.0)) / 3;
        CHECK(l == Approx(expected).epsilon(1e-6));
      }
      const Tensor<T> d = gradient(loss, z.shape());
      for (index_t i = 0; i < z.size(); ++i) {
        CHECK(std::isfinite(loss.probs()[i]));
        CHECK(std::isfinite(d[i]));
      }
    }
  }
}

TEST_CASE("Cross-entropy with a batch smaller than planned") {
  Rng rng(8);
  const Tensor<double> z = random_tensor<double>(rng, Shape{3, 10}, -2.0, 2.0);
  const Labels labels{4, 0, 9};
  auto planned = make_loss<double>(Shape{8, 10});
  auto exact = make_loss<double>(Shape{3, 10});
  Tensor<double> d(Shape{3, 10});
  const long long allocations = tensor_allocations();
  const double l = planned.forward(z, labels);
  planned.backward(d, 2.0);
  CHECK(tensor_allocations() == allocations);
  CHECK(l == exact.forward(z, labels));
  CHECK(planned.probs().shape() == Shape{3, 10});
  const Tensor<double> d_exact = gradient(exact, z.shape(), 2.0);
  CHECK(test::same_values(d, d_exact));
  // the mean is over the 3 rows given: each row's gradient sums to 0 and row 0 is (p - y)*2/3
  CHECK(d(0, 4) == Approx((planned.probs()(0, 4) - 1) * 2 / 3).epsilon(1e-14));
}

TEST_CASE("Cross-entropy does not depend on the thread count") {
  Rng rng(10);
  const Shape s{4096, 10};  // large enough for the parallel path
  const Tensor<float> z = random_tensor<float>(rng, s, -4.0, 4.0);
  Labels labels(4096);
  for (auto& v : labels) v = static_cast<std::int32_t>(rng.uniform_int(10));
  auto loss = make_loss<float>(s, 0.1);
  const int threads = num_threads();
  set_num_threads(1);
  const float l1 = loss.forward(z, labels);
  const Tensor<float> d1 = gradient(loss, s);
  set_num_threads(2);
  const float l2 = loss.forward(z, labels);
  const Tensor<float> d2 = gradient(loss, s);
  set_num_threads(threads);
  CHECK(l1 == l2);
  CHECK(std::equal(d1.begin(), d1.end(), d2.begin()));
}

TEST_CASE("Cross-entropy rejects bad use") {
  SoftmaxCrossEntropyOptions bad;
  bad.label_smoothing = 1.5;
  CHECK_THROWS_AS(SoftmaxCrossEntropy<float>(bad), ValueError);
  CHECK_THROWS_WITH(SoftmaxCrossEntropy<float>(bad),
                    Catch::Contains("label_smoothing in [0, 1]") && Catch::Contains("1.5"));
  bad.label_smoothing = 0;
  bad.epsilon = 0;
  CHECK_THROWS_WITH(SoftmaxCrossEntropy<float>(bad),
                    Catch::Contains("epsilon in (0, 0.5)") && Catch::Contains("found 0"));

  SoftmaxCrossEntropy<double> loss;
  Tensor<double> z(Shape{4, 10}), d(Shape{4, 10});
  {
    SoftmaxCrossEntropy<double> unplanned;  // the first forward plans for its own shape
    CHECK(unplanned.forward(z, Labels{0, 1, 2, 3}) > 0);
    CHECK_THROWS_WITH(unplanned.forward(Tensor<double>(Shape{5, 10}), Labels{0, 1, 2, 3, 4}),
                      Catch::Contains("any batch up to 4"));
  }
  CHECK_THROWS_AS(loss.setup(Shape{4, 10, 1, 1}), ShapeError);
  CHECK_THROWS_WITH(loss.setup(Shape{4, 10, 1, 1}),
                    Catch::Contains("(batch, classes)") && Catch::Contains("found (4, 10, 1, 1)"));
  loss.setup(Shape{4, 10});
  CHECK_THROWS_AS(loss.backward(d), ValueError);  // before any forward

  CHECK_THROWS_AS(loss.forward(z, Labels{0, 1, 10, 3}), ValueError);
  CHECK_THROWS_WITH(loss.forward(z, Labels{0, 1, 10, 3}),
                    Catch::Contains("label 10 at position 2") && Catch::Contains("10 classes"));
  CHECK_THROWS_WITH(loss.forward(z, Labels{0, -1, 1, 3}),
                    Catch::Contains("label -1 at position 1"));
  CHECK_THROWS_AS(loss.forward(z, Labels{0, 1, 2}), ShapeError);
  CHECK_THROWS_WITH(loss.forward(z, Labels{0, 1, 2}),
                    Catch::Contains("expected 4 labels") && Catch::Contains("found 3"));
  Tensor<double> z_rank4(Shape{4, 10, 1, 1}), z_wide(Shape{4, 11}), z_big(Shape{5, 10});
  CHECK_THROWS_AS(loss.forward(z_rank4, Labels{0, 1, 2, 3}), ShapeError);
  CHECK_THROWS_WITH(
      loss.forward(z_rank4, Labels{0, 1, 2, 3}),
      Catch::Contains("expected logits of rank 2") && Catch::Contains("found shape (4, 10, 1, 1)"));
  CHECK_THROWS_WITH(
      loss.forward(z_wide, Labels{0, 1, 2, 3}),
      Catch::Contains("set up for logits (4, 10)") && Catch::Contains("found (4, 11)"));
  CHECK_THROWS_WITH(loss.forward(z_big, Labels{0, 1, 2, 3, 4}),
                    Catch::Contains("any batch up to 4") && Catch::Contains("found (5, 10)"));

  loss.forward(z, Labels{0, 1, 2, 3});
  Tensor<double> d_bad(Shape{3, 10});
  CHECK_THROWS_AS(loss.backward(d_bad), ShapeError);
  CHECK_THROWS_WITH(loss.backward(d_bad), Catch::Contains("expected dlogits of shape (4, 10)") &&
                                              Catch::Contains("found (3, 10)"));
}
