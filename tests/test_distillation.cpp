// Knowledge distillation: the soft-target kernels against direct loops in long double, the
// Distillation loss against its formula and against finite differences (double), weight 0
// against plain SoftmaxCrossEntropy, the teacher's cache (hits, misses, capacity, targets equal
// to a fresh run's), errors for bad use, and fit() training a student through it, bit for bit
// the same twice.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>
#include <minires/testing/gradcheck.hpp>
#include <minires/train/distillation.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "synthetic.hpp"
#include "test_util.hpp"

using namespace minires;
using minires::test::random_tensor;
using Labels = std::vector<std::int32_t>;

namespace {

constexpr index_t K = 5;

// A teacher with inputs (1, 2, 3) and K classes: flatten, dense.
template <class T>
Model<T> tiny_teacher(std::uint64_t seed) {
  Model<T> m;
  Node x = m.add_input(Shape{1, 2, 3});
  x = m.add(Flatten<T>(), x);
  m.add(Dense<T>(K), x);
  m.init(seed);
  return m;
}

// softmax(z / t) of one row in long double.
std::vector<long double> tempered(const double* z, index_t n, double t) {
  long double m = z[0] / t, s = 0;
  for (index_t k = 0; k < n; ++k) m = std::max<long double>(m, z[k] / t);
  std::vector<long double> p(static_cast<std::size_t>(n));
  for (index_t k = 0; k < n; ++k) s += p[static_cast<std::size_t>(k)] = std::exp(z[k] / t - m);
  for (auto& v : p) v /= s;
  return p;
}

// The loss from its definition, in long double: (1 - w) CE(smoothed y) + w t^2 KL(q || p_t).
double reference_loss(const Tensor<double>& z, const Tensor<double>& teacher_logits,
                      const Labels& labels, double w, double t, double smoothing) {
  const index_t n = z.dim(0);
  long double hard = 0, soft = 0;
  for (index_t r = 0; r < n; ++r) {
    const auto p = tempered(z.data() + r * K, K, 1.0);
    const auto pt = tempered(z.data() + r * K, K, t);
    const auto q = tempered(teacher_logits.data() + r * K, K, t);
    for (index_t k = 0; k < K; ++k) {
      const std::size_t kk = static_cast<std::size_t>(k);
      const long double y =
          (k == labels[static_cast<std::size_t>(r)] ? 1.0L - smoothing : 0.0L) + smoothing / K;
      if (y > 0) hard -= y * std::log(p[kk]);
      soft += q[kk] * (std::log(q[kk]) - std::log(pt[kk]));
    }
  }
  return static_cast<double>(((1 - w) * hard + w * t * t * soft) / n);
}

// The loss with its begin_batch() done before every forward (what fit() does), for the
// gradient checker, which calls forward repeatedly.
struct WithInputs {
  Distillation<double>& loss;
  const Tensor<double>& x;
  double forward(const Tensor<double>& z, const Labels& labels) {
    loss.begin_batch(x);
    return loss.forward(z, Span<const std::int32_t>(labels.data(), labels.size()));
  }
  void backward(Tensor<double>& d, double scale) const { loss.backward(d, scale); }
};

DistillationOptions options(double w, double t, double smoothing = 0.0) {
  DistillationOptions o;
  o.weight = w;
  o.temperature = t;
  o.hard.label_smoothing = smoothing;
  o.hard.keras_clip = false;
  return o;
}

}  // namespace

TEST_CASE("soft cross-entropy kernels: KL(q || softmax(z / t)) and its gradient (p - q)") {
  Rng rng(11);
  const index_t n = 7;
  const Tensor<double> z = random_tensor<double>(rng, Shape{n, K}, -6.0, 6.0);
  const Tensor<double> teacher = random_tensor<double>(rng, Shape{n, K}, -6.0, 6.0);
  for (const double t : {1.0, 2.0, 4.0}) {
    Tensor<double> q(Shape{n, K}), p(Shape{n, K}), loss(Shape{n});
    kernels::tempered_softmax_forward(teacher.data(), q.data(), n, K, t);
    kernels::soft_cross_entropy_forward(z.data(), q.data(), n, K, t, p.data(), loss.data());
    for (index_t r = 0; r < n; ++r) {
      const auto pr = tempered(z.data() + r * K, K, t);
      const auto qr = tempered(teacher.data() + r * K, K, t);
      long double kl = 0;
      for (index_t k = 0; k < K; ++k) {
        const std::size_t kk = static_cast<std::size_t>(k);
        CHECK(q(r, k) == Approx(static_cast<double>(qr[kk])).epsilon(1e-14));
        CHECK(p(r, k) == Approx(static_cast<double>(pr[kk])).epsilon(1e-14));
        kl += qr[kk] * (std::log(qr[kk]) - std::log(pr[kk]));
      }
      CHECK(loss[r] == Approx(static_cast<double>(kl)).epsilon(1e-12).margin(1e-15));
    }
    Tensor<double> dz(Shape{n, K});
    dz.fill(1.0);
    kernels::soft_cross_entropy_backward(p.data(), q.data(), n, K, 0.5, dz.data());
    for (index_t i = 0; i < dz.size(); ++i) CHECK(dz[i] == 1.0 + 0.5 * (p[i] - q[i]));
  }
  // A target with zeros: those classes add nothing (no log 0).
  Tensor<double> q(Shape{1, K}), p(Shape{1, K}), loss(Shape{1});
  q.fill(0.0);
  q[2] = 1.0;
  kernels::soft_cross_entropy_forward(z.data(), q.data(), 1, K, 1.0, p.data(), loss.data());
  CHECK(std::isfinite(loss[0]));
  CHECK(loss[0] == Approx(-std::log(p[2])).epsilon(1e-13));
}

TEST_CASE("Distillation: the loss of its formula, finite-difference gradients, weight 0 is CE") {
  Rng rng(5);
  const index_t n = 6;
  Model<double> teacher = tiny_teacher<double>(3);
  const Tensor<double> x = random_tensor<double>(rng, Shape{n, 1, 2, 3}, -2.0, 2.0);
  const Tensor<double> teacher_logits = teacher.forward(x, Mode::Infer).clone();
  Labels labels = {0, 4, 2, 2, 1, 3};
  testing::GradCheckOptions gc;
  gc.step = 1e-4;
  for (const double w : {0.0, 0.5, 0.9, 1.0}) {
    for (const double t : {1.0, 4.0}) {
      for (const double smoothing : {0.0, 0.1}) {
        Distillation<double> loss(teacher, options(w, t, smoothing));
        loss.setup(Shape{8, K});  // planned for more than the batch
        Tensor<double> z = random_tensor<double>(rng, Shape{n, K}, -3.0, 3.0);
        WithInputs with{loss, x};
        INFO("w " << w << " t " << t << " smoothing " << smoothing);
        CHECK(with.forward(z, labels) ==
              Approx(reference_loss(z, teacher_logits, labels, w, t, smoothing)).epsilon(1e-12));
        const auto r = test::check_loss_gradient(with, z, labels, 1.5, rng, gc);
        INFO(r.report());
        CHECK(r.ok());
      }
    }
  }
  // Weight 0: exactly SoftmaxCrossEntropy, loss and gradient.
  Model<float> float_teacher = tiny_teacher<float>(3);
  Distillation<float> d(float_teacher, options(0.0, 4.0, 0.1));
  SoftmaxCrossEntropyOptions ce_options;
  ce_options.label_smoothing = 0.1;
  ce_options.keras_clip = false;
  SoftmaxCrossEntropy<float> ce(ce_options);
  d.setup(Shape{n, K});
  ce.setup(Shape{n, K});
  const Tensor<float> z = random_tensor<float>(rng, Shape{n, K}, -3.0, 3.0);
  Tensor<float> xf(x.shape());
  for (index_t i = 0; i < x.size(); ++i) xf[i] = static_cast<float>(x[i]);
  d.begin_batch(xf);
  const Span<const std::int32_t> span(labels.data(), labels.size());
  CHECK(d.forward(z, span) == ce.forward(z, span));
  Tensor<float> gd(z.shape()), gc2(z.shape());
  gd.fill(0.f);
  gc2.fill(0.f);
  d.backward(gd, 2.f);
  ce.backward(gc2, 2.f);
  for (index_t i = 0; i < z.size(); ++i) CHECK(gd[i] == gc2[i]);
}

TEST_CASE("Distillation caches the teacher's targets by the inputs' content") {
  Rng rng(9);
  Model<double> teacher = tiny_teacher<double>(4);
  const Tensor<double> a = random_tensor<double>(rng, Shape{4, 1, 2, 3});
  const Tensor<double> b = random_tensor<double>(rng, Shape{4, 1, 2, 3});
  Distillation<double> loss(teacher, options(0.9, 2.0));
  loss.setup(Shape{4, K});
  loss.begin_batch(a);
  CHECK(loss.teacher_samples() == 4);
  CHECK(loss.cache_hits() == 0);
  CHECK(loss.cached() == 4);
  const Tensor<double> first = loss.targets().clone();

  loss.begin_batch(a);  // all seen: the teacher does not run
  CHECK(loss.teacher_samples() == 4);
  CHECK(loss.cache_hits() == 4);
  for (index_t i = 0; i < first.size(); ++i) CHECK(loss.targets()[i] == first[i]);

  // Two seen samples (a's 1 and 3) and two new ones (b's 0 and 2), in a new order.
  Tensor<double> mixed(Shape{4, 1, 2, 3});
  const index_t s = 6;
  const auto copy = [&](const Tensor<double>& from, index_t i, index_t to) {
    for (index_t j = 0; j < s; ++j) mixed[to * s + j] = from[i * s + j];
  };
  copy(b, 0, 0);
  copy(a, 1, 1);
  copy(b, 2, 2);
  copy(a, 3, 3);
  loss.begin_batch(mixed);
  CHECK(loss.teacher_samples() == 6);
  CHECK(loss.cache_hits() == 6);
  CHECK(loss.cached() == 6);
  Tensor<double> fresh(Shape{4, K});
  kernels::tempered_softmax_forward(teacher.forward(mixed, Mode::Infer).data(), fresh.data(), 4, K,
                                    2.0);
  for (index_t i = 0; i < fresh.size(); ++i)
    CHECK(loss.targets()[i] == Approx(fresh[i]).epsilon(1e-14));

  // No cache: the teacher runs on every sample, every time.
  DistillationOptions none = options(0.9, 2.0);
  none.cache_entries = 0;
  Distillation<double> uncached(teacher, none);
  uncached.setup(Shape{4, K});
  uncached.begin_batch(a);
  uncached.begin_batch(a);
  CHECK(uncached.teacher_samples() == 8);
  CHECK(uncached.cache_hits() == 0);
  CHECK(uncached.cached() == 0);
  for (index_t i = 0; i < first.size(); ++i) CHECK(uncached.targets()[i] == first[i]);

  // A full cache keeps its entries and runs the teacher on the rest.
  DistillationOptions two = options(0.9, 2.0);
  two.cache_entries = 2;
  Distillation<double> small(teacher, two);
  small.setup(Shape{4, K});
  small.begin_batch(a);
  CHECK(small.cached() == 2);
  small.begin_batch(a);
  CHECK(small.cache_hits() == 2);
  CHECK(small.teacher_samples() == 6);
  for (index_t i = 0; i < first.size(); ++i) CHECK(small.targets()[i] == first[i]);
}

TEST_CASE("Distillation: errors for bad options, a missing begin_batch, a mismatched teacher") {
  Model<float> teacher = tiny_teacher<float>(1);
  CHECK_THROWS_AS(Distillation<float>(teacher, options(-0.1, 4.0)), ValueError);
  CHECK_THROWS_AS(Distillation<float>(teacher, options(1.5, 4.0)), ValueError);
  CHECK_THROWS_AS(Distillation<float>(teacher, options(0.5, 0.0)), ValueError);
  CHECK_THROWS_AS(Distillation<float>(teacher, options(0.5, std::nan(""))), ValueError);
  CHECK_THROWS_WITH(Distillation<float>(teacher, options(2.0, 4.0)),
                    Catch::Contains("expected weight in [0, 1], found 2"));

  Distillation<float> loss(teacher, options(0.5, 4.0));
  Tensor<float> x(Shape{2, 1, 2, 3});
  x.fill(0.25f);
  CHECK_THROWS_AS(loss.begin_batch(x), ShapeError);  // before setup()
  loss.setup(Shape{2, K});
  Tensor<float> z(Shape{2, K});
  z.fill(0.f);
  const Labels labels = {0, 1};
  const Span<const std::int32_t> span(labels.data(), labels.size());
  CHECK_THROWS_WITH(loss.forward(z, span),
                    Catch::Contains("expected begin_batch() with the inputs of this batch"));
  Tensor<float> dz(Shape{2, K});
  CHECK_THROWS_AS(loss.backward(dz), ValueError);  // before any forward
  loss.begin_batch(x);
  CHECK(std::isfinite(loss.forward(z, span)));
  CHECK_THROWS_AS(loss.forward(z, span), ValueError);  // the targets were used
  Tensor<float> too_many(Shape{3, 1, 2, 3});
  too_many.fill(0.f);
  CHECK_THROWS_AS(loss.begin_batch(too_many), ShapeError);

  // A teacher with another number of classes.
  Model<float> other;
  Node in = other.add_input(Shape{1, 2, 3});
  in = other.add(Flatten<float>(), in);
  other.add(Dense<float>(K + 1), in);
  other.init(2);
  Distillation<float> mismatched(other, options(0.5, 4.0));
  mismatched.setup(Shape{2, K});
  CHECK_THROWS_WITH(mismatched.begin_batch(x), Catch::Contains("teacher's output of shape"));
}

TEST_CASE("fit() trains a student through Distillation, bit for bit the same twice") {
  auto train = test::line_patterns<float>(1024, 1);
  Model<float> teacher = test::small_resnet<float>();
  teacher.init(7);
  {
    SoftmaxCrossEntropy<float> ce;
    Adam<float> opt(AdamOptions{0.01});
    FitOptions o(8, 32);  // as test_fit: enough steps for BatchNorm's moving statistics
    o.seed = 3;
    fit(teacher, ce, opt, train, o);
  }
  const double teacher_accuracy = evaluate(teacher, train).accuracy;
  REQUIRE(teacher_accuracy >= 0.95);

  const auto run = [&](History* history, std::int64_t* teacher_samples) {
    Model<float> student = test::small_resnet<float>();
    student.init(8);
    Distillation<float> loss(teacher, DistillationOptions{});
    Adam<float> opt(AdamOptions{0.01});
    FitOptions o(4, 32);
    o.seed = 4;
    *history = fit(student, loss, opt, train, o);
    *teacher_samples = loss.teacher_samples();
    std::vector<float> w;
    for (const auto& p : student.params()) w.insert(w.end(), p.value->begin(), p.value->end());
    return w;
  };
  History h1, h2;
  std::int64_t s1 = 0, s2 = 0;
  const std::vector<float> w1 = run(&h1, &s1), w2 = run(&h2, &s2);
  CHECK(w1 == w2);
  CHECK(h1.epochs.back().train_loss == h2.epochs.back().train_loss);
  CHECK(s1 == 1024);  // no augmentation: the teacher ran once per sample
  CHECK(h1.epochs.front().train_loss > h1.epochs.back().train_loss);
  CHECK(h1.epochs.back().train_accuracy >= 0.9);
}
