// BatchNorm: gradient checks in double through the batch statistics (Mode::Train) and with
// constant moving statistics (Mode::Infer), rank 4 and rank 2; forward against loops in double;
// float against double; the moving-statistics update (momentum, biased variance) checked
// numerically; convergence of the moving statistics; train vs inference; a smaller batch than
// planned; a large mean in float; thread-count independence; errors.
#include <catch2/catch.hpp>

#include <minires/layers/batch_norm.hpp>

#include "gradcheck_summary.hpp"
#include "test_util.hpp"

#include <cmath>
#include <cstring>
#include <vector>

using namespace minires;
using minires::test::random_tensor;

namespace {

// A BatchNorm whose init() draws γ, β and the moving statistics at random, so that gradient
// checks and comparisons do not run at γ = 1, β = 0, mean 0, variance 1 only.
template <class T>
class RandomBatchNorm : public BatchNorm<T> {
 public:
  using BatchNorm<T>::BatchNorm;
  void init(Rng& rng) override {
    BatchNorm<T>::init(rng);
    this->gamma.uniform(rng, T(0.5), T(1.5));
    this->beta.uniform(rng, T(-0.5), T(0.5));
    this->moving_mean.uniform(rng, T(-0.5), T(0.5));
    this->moving_variance.uniform(rng, T(0.5), T(2.0));
  }
};

// Per-channel mean and biased variance of x (rank 2 or 4) by loops in double.
template <class T>
void naive_stats(const Tensor<T>& x, std::vector<double>& mean, std::vector<double>& var) {
  const index_t n = x.dim(0), c = x.dim(1), s = x.size() / (n * c);
  mean.assign(static_cast<std::size_t>(c), 0.0);
  var.assign(static_cast<std::size_t>(c), 0.0);
  for (index_t k = 0; k < c; ++k) {
    double sum = 0, sq = 0;
    for (index_t i = 0; i < n; ++i)
      for (index_t p = 0; p < s; ++p) sum += x[(i * c + k) * s + p];
    const double mu = sum / static_cast<double>(n * s);
    for (index_t i = 0; i < n; ++i)
      for (index_t p = 0; p < s; ++p)
        sq += (x[(i * c + k) * s + p] - mu) * (x[(i * c + k) * s + p] - mu);
    mean[static_cast<std::size_t>(k)] = mu;
    var[static_cast<std::size_t>(k)] = sq / static_cast<double>(n * s);
  }
}

// y = γ (x − mean) / sqrt(var + eps) + β by loops in double.
template <class T>
std::vector<double> naive_normalize(const Tensor<T>& x, const std::vector<double>& mean,
                                    const std::vector<double>& var, const Tensor<T>& gamma,
                                    const Tensor<T>& beta, double eps) {
  const index_t n = x.dim(0), c = x.dim(1), s = x.size() / (n * c);
  std::vector<double> y(static_cast<std::size_t>(x.size()));
  for (index_t i = 0; i < n; ++i)
    for (index_t k = 0; k < c; ++k)
      for (index_t p = 0; p < s; ++p) {
        const auto kk = static_cast<std::size_t>(k);
        const index_t j = (i * c + k) * s + p;
        y[static_cast<std::size_t>(j)] =
            gamma[k] * (x[j] - mean[kk]) / std::sqrt(var[kk] + eps) + beta[k];
      }
  return y;
}

template <class T>
double max_abs_diff(const Tensor<T>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    m = std::max(m, std::abs(static_cast<double>(a[static_cast<index_t>(i)]) - b[i]));
  }
  return m;
}

template <class T>
void forward(BatchNorm<T>& bn, const Tensor<T>& x, Tensor<T>& y, Mode mode) {
  const Tensor<T>* xs[] = {&x};
  bn.forward(Span<const Tensor<T>* const>(xs), y, mode);
}

template <class T>
void backward(BatchNorm<T>& bn, const Tensor<T>& x, const Tensor<T>& y, const Tensor<T>& dy,
              Tensor<T>* dx) {
  const Tensor<T>* xs[] = {&x};
  Tensor<T>* dxs[] = {dx};
  bn.backward(Span<const Tensor<T>* const>(xs), y, dy, Span<Tensor<T>* const>(dxs));
}

template <class T>
void setup(BatchNorm<T>& bn, Shape s, Rng& rng) {
  bn.setup(Span<const Shape>(&s, 1));
  bn.init(rng);
}

const Shape gradient_shapes[] = {
    {2, 3, 4, 5},  // rank 4
    {1, 2, 3, 3},  // batch 1: statistics over H, W only
    {4, 1, 3, 2},  // one channel
    {3, 5, 3, 1},  // odd sizes
    {6, 4},        // rank 2: per feature over the batch
    {2, 3},        // rank 2, two samples
    {1, 3},        // rank 2, one sample: y = β, no gradient through x
};

// A fresh RandomBatchNorm<float> (set up with Rng(3), then prepare(bn)) after one training
// step on x and dy: y, dx, dgamma, dbeta, moving_mean, moving_variance.
template <class Prepare>
std::vector<Tensor<float>> one_step(const Shape& s, const Tensor<float>& x, const Tensor<float>& dy,
                                    Prepare&& prepare) {
  RandomBatchNorm<float> bn;
  Rng r(3);
  setup(bn, s, r);
  prepare(bn);
  std::vector<Tensor<float>> out;
  out.emplace_back(s);
  out.emplace_back(s);
  forward(bn, x, out[0], Mode::Train);
  backward(bn, x, out[0], dy, &out[1]);
  for (const Tensor<float>* t : {&bn.dgamma, &bn.dbeta, &bn.moving_mean, &bn.moving_variance})
    out.push_back(t->clone());
  return out;
}

void check_same_bits(const std::vector<Tensor<float>>& a, const std::vector<Tensor<float>>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("output " << i);
    CHECK(std::memcmp(a[i].data(), b[i].data(), sizeof(float) * a[i].size()) == 0);
  }
}

}  // namespace

TEST_CASE("BatchNorm gradients through the batch statistics match finite differences") {
  Rng rng(31);
  for (const auto& s : gradient_shapes) {
    RandomBatchNorm<double> bn;
    minires::test::require_gradients(bn, {s}, rng, "train " + s.str());
  }
  // A non-default epsilon and momentum change nothing in the gradient's form.
  RandomBatchNorm<double> bn(BatchNormOptions{0.9, 1e-5});
  minires::test::require_gradients(bn, {Shape{3, 2, 2, 3}}, rng, "train eps 1e-5");
}

TEST_CASE("BatchNorm gradients with the moving statistics (inference) match finite differences") {
  Rng rng(32);
  testing::LayerCheckOptions options;
  options.mode = Mode::Infer;
  for (const auto& s : gradient_shapes) {
    RandomBatchNorm<double> bn;
    minires::test::require_gradients(bn, {s}, rng, "infer " + s.str(), options);
  }
}

TEST_CASE("BatchNorm training forward matches loops; inference uses the moving statistics") {
  Rng rng(33);
  for (const Shape s : {Shape{4, 3, 5, 7}, Shape{9, 6}}) {
    INFO(s.str());
    RandomBatchNorm<double> bn;
    setup(bn, s, rng);
    const auto x = random_tensor<double>(rng, s, -2.0, 3.0);
    Tensor<double> y(s);
    std::vector<double> mean, var;
    naive_stats(x, mean, var);

    forward(bn, x, y, Mode::Train);
    CHECK(max_abs_diff(y, naive_normalize(x, mean, var, bn.gamma, bn.beta, 1e-3)) < 1e-12);
    for (std::size_t k = 0; k < mean.size(); ++k) {
      CHECK(bn.batch_mean()[static_cast<index_t>(k)] == Approx(mean[k]).epsilon(1e-13));
      CHECK(bn.batch_variance()[static_cast<index_t>(k)] == Approx(var[k]).epsilon(1e-13));
    }

    // Inference normalises with the moving statistics, not with the batch's.
    std::vector<double> mm(bn.moving_mean.begin(), bn.moving_mean.end());
    std::vector<double> mv(bn.moving_variance.begin(), bn.moving_variance.end());
    forward(bn, x, y, Mode::Infer);
    CHECK(max_abs_diff(y, naive_normalize(x, mm, mv, bn.gamma, bn.beta, 1e-3)) < 1e-12);
    CHECK(max_abs_diff(y, naive_normalize(x, mean, var, bn.gamma, bn.beta, 1e-3)) > 0.1);
    // ... and leaves them unchanged.
    CHECK(std::vector<double>(bn.moving_mean.begin(), bn.moving_mean.end()) == mm);
    CHECK(std::vector<double>(bn.moving_variance.begin(), bn.moving_variance.end()) == mv);
  }
}

TEST_CASE("BatchNorm moving statistics: momentum update with the biased batch variance") {
  Rng rng(34);
  for (const double momentum : {0.99, 0.9}) {
    BatchNorm<double> bn(BatchNormOptions{momentum, 1e-3});
    setup(bn, Shape{2, 3}, rng);
    // Two samples: biased variance ((a − b)/2)², half the unbiased one.
    Tensor<double> x(Shape{2, 3}), y(Shape{2, 3});
    const double a[] = {1.0, -2.0, 0.5}, b[] = {3.0, 4.0, 0.5};
    for (index_t k = 0; k < 3; ++k) {
      x(0, k) = a[k];
      x(1, k) = b[k];
    }
    forward(bn, x, y, Mode::Train);
    for (index_t k = 0; k < 3; ++k) {
      const double mean = (a[k] + b[k]) / 2, var = (a[k] - b[k]) * (a[k] - b[k]) / 4;
      CHECK(bn.moving_mean[k] == Approx(momentum * 0.0 + (1 - momentum) * mean).epsilon(1e-14));
      CHECK(bn.moving_variance[k] == Approx(momentum * 1.0 + (1 - momentum) * var).epsilon(1e-14));
    }
    // A second batch moves them again from where they are.
    const double m1[] = {bn.moving_mean[0], bn.moving_mean[1], bn.moving_mean[2]};
    const double v1[] = {bn.moving_variance[0], bn.moving_variance[1], bn.moving_variance[2]};
    const auto x2 = random_tensor<double>(rng, Shape{2, 3});
    forward(bn, x2, y, Mode::Train);
    std::vector<double> mean, var;
    naive_stats(x2, mean, var);
    for (index_t k = 0; k < 3; ++k) {
      const auto kk = static_cast<std::size_t>(k);
      CHECK(bn.moving_mean[k] ==
            Approx(momentum * m1[k] + (1 - momentum) * mean[kk]).epsilon(1e-14));
      CHECK(bn.moving_variance[k] ==
            Approx(momentum * v1[k] + (1 - momentum) * var[kk]).epsilon(1e-14));
    }
  }
}

TEST_CASE("BatchNorm averaging: the moving statistics become the plain mean of the batches'") {
  Rng rng(37);
  const Shape s{4, 3, 2, 2};
  BatchNorm<double> bn;
  setup(bn, s, rng);
  Tensor<double> y(s);
  forward(bn, random_tensor<double>(rng, s), y, Mode::Train);  // momentum state before
  bn.set_averaging(true);
  CHECK(bn.averaging());
  std::vector<double> sum_mean(3, 0.0), sum_var(3, 0.0);
  for (int b = 1; b <= 3; ++b) {
    const auto x = random_tensor<double>(rng, s, -2.0 * b, 3.0 * b);
    forward(bn, x, y, Mode::Train);
    std::vector<double> mean, var;
    naive_stats(x, mean, var);
    for (std::size_t k = 0; k < 3; ++k) {
      sum_mean[k] += mean[k];
      sum_var[k] += var[k];
      INFO("batch " << b << " channel " << k);
      CHECK(bn.moving_mean[static_cast<index_t>(k)] == Approx(sum_mean[k] / b).epsilon(1e-13));
      CHECK(bn.moving_variance[static_cast<index_t>(k)] == Approx(sum_var[k] / b).epsilon(1e-13));
    }
  }
  // Off again: the momentum update (0.99) resumes from the averages.
  bn.set_averaging(false);
  const double m0 = bn.moving_mean[0];
  const auto x = random_tensor<double>(rng, s);
  forward(bn, x, y, Mode::Train);
  std::vector<double> mean, var;
  naive_stats(x, mean, var);
  CHECK(bn.moving_mean[0] == Approx(0.99 * m0 + 0.01 * mean[0]).epsilon(1e-13));
  // Inference leaves the averages alone.
  bn.set_averaging(true);
  forward(bn, x, y, Mode::Train);
  const double m1 = bn.moving_mean[1];
  forward(bn, random_tensor<double>(rng, s), y, Mode::Infer);
  CHECK(bn.moving_mean[1] == m1);
}

TEST_CASE("BatchNorm moving statistics converge to a fixed batch's; inference then matches") {
  Rng rng(35);
  const Shape s{8, 4, 3, 3};
  BatchNorm<float> bn;
  setup(bn, s, rng);
  const auto x = random_tensor<float>(rng, s, -1.0, 5.0);
  Tensor<float> y_train(s), y_infer(s);
  for (int step = 0; step < 3000; ++step)
    forward(bn, x, y_train, Mode::Train);  // 0.99^3000 ≈ 1e-13
  std::vector<double> mean, var;
  naive_stats(x, mean, var);
  for (index_t k = 0; k < 4; ++k) {
    const auto kk = static_cast<std::size_t>(k);
    CHECK(bn.moving_mean[k] == Approx(mean[kk]).epsilon(1e-5));
    CHECK(bn.moving_variance[k] == Approx(var[kk]).epsilon(1e-5));
  }
  forward(bn, x, y_infer, Mode::Infer);
  for (index_t i = 0; i < s.size(); ++i) CHECK(y_infer[i] == Approx(y_train[i]).margin(1e-4));
}

TEST_CASE("BatchNorm in float matches double; a smaller batch than planned") {
  // Sums run in segments of at most 512 values: one image's run (S = 300), several images' runs
  // together (S = 42: all 5 images; S = 16: 32 images a segment, here 2 segments; S = 49: 10
  // images, 4 segments; S = 1: 512 images), an image's run split (S = 625 = 512 + 113).
  Rng rng(36);
  for (const Mode mode : {Mode::Train, Mode::Infer}) {
    for (const Shape s : {Shape{5, 4, 6, 7}, Shape{17, 5}, Shape{4, 2, 15, 20}, Shape{40, 3, 4, 4},
                          Shape{33, 2, 7, 7}, Shape{3, 2, 25, 25}, Shape{600, 3}}) {
      INFO(s.str() << (mode == Mode::Train ? " train" : " infer"));
      RandomBatchNorm<double> bd;
      RandomBatchNorm<float> bf;
      Rng r1(5), r2(5);
      setup(bd, s.with_batch(s[0] + 3), r1);  // planned for a larger batch
      setup(bf, s.with_batch(s[0] + 3), r2);
      auto xd = random_tensor<double>(rng, s, -2.0, 2.0);
      auto dyd = random_tensor<double>(rng, s);
      Tensor<float> xf(s), dyf(s);
      xf.convert_from(xd);
      dyf.convert_from(dyd);
      xd.convert_from(xf);  // the same values in both precisions
      dyd.convert_from(dyf);
      Tensor<double> yd(s), dxd(s);
      Tensor<float> yf(s), dxf(s);
      forward(bd, xd, yd, mode);
      forward(bf, xf, yf, mode);
      backward(bd, xd, yd, dyd, &dxd);
      backward(bf, xf, yf, dyf, &dxf);
      std::vector<double> mean, var;
      naive_stats(xd, mean, var);
      if (mode == Mode::Train) {
        CHECK(max_abs_diff(yd, naive_normalize(xd, mean, var, bd.gamma, bd.beta, 1e-3)) < 1e-12);
      }
      CHECK(max_abs_diff(yf, std::vector<double>(yd.begin(), yd.end())) < 2e-6);
      CHECK(max_abs_diff(dxf, std::vector<double>(dxd.begin(), dxd.end())) < 2e-6);
      CHECK(max_abs_diff(bf.dgamma, std::vector<double>(bd.dgamma.begin(), bd.dgamma.end())) <
            1e-4);
      CHECK(max_abs_diff(bf.dbeta, std::vector<double>(bd.dbeta.begin(), bd.dbeta.end())) < 1e-4);
    }
  }
}

TEST_CASE("BatchNorm in float keeps the variance of data with a large mean") {
  // x = 1000 + U(-1, 1): E[x²] − E[x]² in float would lose every digit of the variance.
  Rng rng(37);
  const Shape s{16, 2, 8, 8};
  BatchNorm<float> bn;
  setup(bn, s, rng);
  Tensor<float> x(s), y(s);
  for (auto& v : x) v = static_cast<float>(1000.0 + rng.uniform(-1.0, 1.0));
  forward(bn, x, y, Mode::Train);
  std::vector<double> mean, var;
  naive_stats(x, mean, var);
  for (index_t k = 0; k < 2; ++k) {
    const auto kk = static_cast<std::size_t>(k);
    CHECK(bn.batch_mean()[k] == Approx(mean[kk]).epsilon(1e-10));
    CHECK(bn.batch_variance()[k] == Approx(var[kk]).epsilon(1e-6));
  }
  CHECK(max_abs_diff(y, naive_normalize(x, mean, var, bn.gamma, bn.beta, 1e-3)) < 1e-4);
}

TEST_CASE("BatchNorm results do not depend on the thread count") {
  Rng rng(38);
  const Shape s{4, 16, 32, 32};  // large enough for the parallel path
  const auto x = random_tensor<float>(rng, s);
  const auto dy = random_tensor<float>(rng, s);
  const int threads = num_threads();
  // Set up at the default count, run with t threads.
  const auto a = one_step(s, x, dy, [](BatchNorm<float>&) { set_num_threads(1); });
  set_num_threads(threads);
  const auto b = one_step(s, x, dy, [](BatchNorm<float>&) { set_num_threads(2); });
  set_num_threads(threads);
  check_same_bits(a, b);
}

TEST_CASE("BatchNorm with a statistics group of one process computes as without, bit for bit") {
  // The synchronised path (phases with sums over the group between them) on a group of one:
  // the same sums in the same order, so the same bits, with and without a fused ReLU; and its
  // gradient through the batch statistics checked against finite differences.
  Rng rng(39);
  SingleProcess one;
  const Shape s{4, 16, 32, 32};
  const auto x = random_tensor<float>(rng, s);
  const auto dy = random_tensor<float>(rng, s);
  for (bool relu : {false, true}) {
    auto run = [&](Collective* group) {
      return one_step(s, x, dy, [&](BatchNorm<float>& bn) {
        bn.set_fused_relu(relu);
        CHECK(bn.set_statistics_group(group));
      });
    };
    INFO((relu ? "fused ReLU" : "no ReLU"));
    check_same_bits(run(nullptr), run(&one));
  }
  SingleProcess group;
  for (const auto& shape : gradient_shapes) {
    RandomBatchNorm<double> bn;
    bn.set_statistics_group(&group);
    minires::test::require_gradients(bn, {shape}, rng, "group of one " + shape.str());
  }
}

TEST_CASE("BatchNorm parameters, state and Keras defaults") {
  Rng rng(39);
  BatchNorm<float> bn;
  CHECK(std::string(bn.type()) == "BatchNormalization");
  CHECK(bn.options().momentum == 0.99);
  CHECK(bn.options().epsilon == 1e-3);
  CHECK(bn.config() == "momentum=0.99 epsilon=0.001");
  CHECK(BatchNorm<float>(BatchNormOptions{0.9, 1e-5}).config() == "momentum=0.9 epsilon=1e-05");
  setup(bn, Shape{2, 3, 4, 4}, rng);
  const auto p = bn.params();
  REQUIRE(p.size() == 2);
  CHECK(p[0].name == "gamma");
  CHECK(p[0].grad == &bn.dgamma);
  CHECK(p[1].name == "beta");
  CHECK(p[1].grad == &bn.dbeta);
  const auto st = bn.state();
  REQUIRE(st.size() == 2);
  CHECK(st[0].name == "moving_mean");
  CHECK(st[0].value == &bn.moving_mean);
  CHECK(st[0].grad == nullptr);
  CHECK(st[1].name == "moving_variance");
  for (index_t k = 0; k < 3; ++k) {
    CHECK(bn.gamma[k] == 1.0f);
    CHECK(bn.beta[k] == 0.0f);
    CHECK(bn.moving_mean[k] == 0.0f);
    CHECK(bn.moving_variance[k] == 1.0f);
  }
  // With the initial moving statistics, inference is y = x / sqrt(1 + ε).
  const auto x = random_tensor<float>(rng, Shape{2, 3, 4, 4});
  Tensor<float> y(x.shape());
  forward(bn, x, y, Mode::Infer);
  for (index_t i = 0; i < x.size(); ++i)
    CHECK(y[i] == Approx(x[i] / std::sqrt(1.001)).epsilon(1e-6));
}

TEST_CASE("BatchNorm reports bad use with the expected and found values") {
  using Catch::Contains;
  CHECK_THROWS_AS(BatchNorm<float>(BatchNormOptions{1.5, 1e-3}), ValueError);
  CHECK_THROWS_WITH(BatchNorm<float>(BatchNormOptions{1.5, 1e-3}),
                    Contains("momentum in [0, 1]") && Contains("1.5"));
  CHECK_THROWS_WITH(BatchNorm<float>(BatchNormOptions{0.99, 0.0}),
                    Contains("epsilon > 0") && Contains("found 0"));

  Rng rng(1);
  BatchNorm<float> bn;
  CHECK_THROWS_WITH(bn.init(rng), Contains("setup() before init()"));
  auto set = [&](Shape s) { bn.setup(Span<const Shape>(&s, 1)); };
  CHECK_THROWS_AS(set({2, 3, 4}), ShapeError);
  CHECK_THROWS_WITH(set({2, 3, 4}),
                    Contains("rank-2") && Contains("rank-4") && Contains("(2, 3, 4)"));
  set({2, 3, 4, 4});
  CHECK_THROWS_AS(set({2, 5, 4, 4}), ShapeError);
  CHECK_THROWS_WITH(set({2, 5, 4, 4}), Contains("3 channels") && Contains("(2, 5, 4, 4)"));

  Tensor<float> x(Shape{2, 3, 4, 4}), y(Shape{2, 3, 4, 4}), dx(Shape{2, 3, 4, 4});
  CHECK_THROWS_WITH(backward(bn, x, y, y, &dx), Contains("forward() before backward()"));
  Tensor<float> x5(Shape{2, 3, 5, 4}), y5(Shape{2, 3, 5, 4});
  CHECK_THROWS_WITH(forward(bn, x5, y5, Mode::Train),
                    Contains("(2, 3, 4, 4)") && Contains("(2, 3, 5, 4)"));
  Tensor<float> y_wrong(Shape{2, 3, 4, 5});
  CHECK_THROWS_WITH(forward(bn, x, y_wrong, Mode::Train),
                    Contains("(2, 3, 4, 4)") && Contains("(2, 3, 4, 5)"));
}
