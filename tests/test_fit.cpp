// The training loop: a small residual net learns a synthetic task; runs are bit-identical for
// the same seed; a training step allocates nothing after the first; a non-finite loss stops
// training with a clear error; callbacks; evaluate and predict.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <new>
#include <numeric>

#include "synthetic.hpp"
#include "test_util.hpp"

#include "allocation_counter.hpp"

using namespace minires;

TEST_CASE("a small residual net learns the synthetic task to >= 99% training accuracy") {
  auto train = test::line_patterns<float>(1024, 1);
  auto val = test::line_patterns<float>(256, 2);
  auto m = test::small_resnet<float>();
  m.init(7);
  SoftmaxCrossEntropy<float> loss;
  Adam<float> opt(AdamOptions{0.01});
  FitOptions o;
  o.epochs = 8;
  o.batch_size = 32;
  o.seed = 3;
  o.validation = val;
  const History h = fit(m, loss, opt, train, o);
  REQUIRE(h.epochs.size() == 8);
  INFO("train acc " << h.epochs.back().train_accuracy << ", val acc "
                    << h.epochs.back().val_accuracy);
  CHECK(h.epochs.front().train_loss > h.epochs.back().train_loss);
  const EvalResult r = evaluate(m, train);
  CHECK(r.accuracy >= 0.99);
  CHECK(h.epochs.back().val_accuracy >= 0.97);
  // the confusion matrix adds up and its diagonal is the accuracy
  index_t total = 0, diag = 0;
  for (index_t i = 0; i < 4; ++i)
    for (index_t j = 0; j < 4; ++j) {
      total += r.confusion[static_cast<std::size_t>(i * 4 + j)];
      if (i == j) diag += r.confusion[static_cast<std::size_t>(i * 4 + j)];
    }
  CHECK(total == 1024);
  CHECK(static_cast<double>(diag) / 1024.0 == Approx(r.accuracy));

  const Tensor<float> probs = predict(m, val.samples());
  REQUIRE(probs.shape() == Shape{256, 4});
  for (index_t i = 0; i < 256; ++i) {
    double s = 0;
    for (index_t k = 0; k < 4; ++k) s += probs(i, k);
    REQUIRE(s == Approx(1.0).epsilon(1e-5));
  }
}

TEST_CASE("the same seed and thread count give bit-identical runs") {
  auto train = test::line_patterns<float>(200, 4);
  auto run = [&](std::uint64_t seed) {
    auto m = test::small_resnet<float>();
    m.init(11);
    SoftmaxCrossEntropy<float> loss;
    RMSprop<float> opt;
    FitOptions o;
    o.epochs = 2;
    o.batch_size = 48;  // a smaller last batch too
    o.seed = seed;
    const History h = fit(m, loss, opt, train, o);
    std::vector<float> w;
    for (auto& p : m.params()) w.insert(w.end(), p.value->begin(), p.value->end());
    for (auto& p : m.state()) w.insert(w.end(), p.value->begin(), p.value->end());
    return std::make_pair(w, h.epochs.back().train_loss);
  };
  const auto a = run(5), b = run(5), c = run(6);
  CHECK(a.first == b.first);
  CHECK(a.second == b.second);
  CHECK(a.first != c.first);  // the shuffling seed matters
}

TEST_CASE("a training step allocates nothing after the first") {
  auto train = test::line_patterns<float>(64, 8);
  auto m = test::small_resnet<float>();
  m.init(1);
  SoftmaxCrossEntropy<float> loss;
  RMSprop<float> opt;
  m.plan(32);
  loss.setup(Shape{32, 4});
  opt.attach(m.params());
  Tensor<float> x(Shape{32, 1, 8, 8});
  std::vector<std::int32_t> labels(32);
  std::vector<index_t> idx(32);
  auto step = [&](index_t first) {
    for (index_t i = 0; i < 32; ++i) idx[static_cast<std::size_t>(i)] = first + i;
    train.get(Span<const index_t>(idx), x, labels.data(), nullptr);
    m.zero_grad();
    const auto& logits = m.forward(x, Mode::Train);
    loss.forward(logits, Span<const std::int32_t>(labels));
    m.backward(loss);
    opt.step();
  };
  step(0);
  const long long before = test::g_allocations.load();
  step(32);
  step(0);
  const long long after = test::g_allocations.load();
  CHECK(after - before == 0);
}

TEST_CASE("a non-finite loss stops training with the epoch and step; checkpoints stay intact") {
  auto train = test::line_patterns<float>(128, 9);
  auto m = test::small_resnet<float>();
  m.init(1);
  SoftmaxCrossEntropy<float> loss;
  SGD<float> opt(SGDOptions{1e30});  // diverges at once
  const std::string last = "test_fit_nan_last.mrm";
  ModelCheckpoint<float> ckpt(last, "");
  FitOptions o;
  o.epochs = 3;
  o.batch_size = 16;
  // one good epoch first, with a sane learning rate, so a checkpoint exists
  SGD<float> sane(SGDOptions{0.01});
  FitOptions sane_options{1, 16};
  sane_options.callbacks = {ckpt};
  fit(m, loss, sane, train, sane_options);
  std::ifstream f0(last, std::ios::binary);
  const std::string before((std::istreambuf_iterator<char>(f0)), std::istreambuf_iterator<char>());
  REQUIRE(!before.empty());
  try {
    o.callbacks = {ckpt};
    fit(m, loss, opt, train, o);
    FAIL("expected a NumericalError");
  } catch (const NumericalError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("epoch 1, step") != std::string::npos);
    CHECK((msg.find("nan") != std::string::npos || msg.find("inf") != std::string::npos));
  }
  std::ifstream f1(last, std::ios::binary);
  const std::string after((std::istreambuf_iterator<char>(f1)), std::istreambuf_iterator<char>());
  CHECK(after == before);
  std::remove(last.c_str());
}

TEST_CASE("callbacks: early stopping, interrupt, progress lines, resume at an epoch") {
  auto train = test::line_patterns<float>(96, 10);
  SoftmaxCrossEntropy<float> loss;

  SECTION("early stopping when nothing improves by min_delta") {
    auto m = test::small_resnet<float>();
    m.init(1);
    SGD<float> opt(SGDOptions{0.01});
    EarlyStopping<float> stop(1, Monitor::ValLoss, /*min_delta=*/10.0);
    FitOptions o{10, 32};
    o.validation = train;
    o.callbacks = {stop};
    const History h = fit(m, loss, opt, train, o);
    CHECK(h.stopped_early);
    CHECK(h.epochs.size() == 3);  // epoch 1 sets the best; 2 and 3 do not improve
  }
  SECTION("interrupt stops without finishing the epoch") {
    auto m = test::small_resnet<float>();
    m.init(1);
    RMSprop<float> opt;
    std::atomic<bool> flag{true};
    FitOptions o{3, 32};
    o.interrupt = flag;
    const History h = fit(m, loss, opt, train, o);
    CHECK(h.interrupted);
    CHECK(h.epochs.empty());
  }
  SECTION("plain progress lines when not on a terminal") {
    auto m = test::small_resnet<float>();
    m.init(1);
    RMSprop<float> opt;
    std::FILE* out = std::tmpfile();
    ProgressBar<float> bar(out, /*live=*/false);
    FitOptions o{2, 32};
    o.validation = train;
    o.callbacks = {bar};
    fit(m, loss, opt, train, o);
    std::rewind(out);
    char buf[4096] = {};
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, out);
    std::fclose(out);
    const std::string text(buf, n);
    INFO(text);
    CHECK(text.find("epoch 1/2  loss") != std::string::npos);
    CHECK(text.find("epoch 2/2  loss") != std::string::npos);
    CHECK(text.find("val_acc") != std::string::npos);
    CHECK(text.find('\r') == std::string::npos);
  }
  SECTION("two epochs equal one epoch, a save, a load and one more epoch") {
    // Batches of 40 over 96 samples end each epoch with a partial batch of 16, and validation
    // on 90 samples runs batches of 40, 40 and 10: the stale gradients of the last training
    // step beyond the 10th sample must not leak into the next epoch's first step. With weight
    // averaging, the checkpoint holds the averaged weights in the model and the raw ones in
    // the optimizer, and the resumed run must train the raw ones.
    const double averaging = GENERATE(0.0, 0.8);
    INFO("weight averaging " << averaging);
    const auto val = test::line_patterns<float>(90, 13);
    auto a = test::small_resnet<float>();
    a.init(1);
    RMSprop<float> opt_a;
    opt_a.set_weight_averaging(averaging);
    FitOptions o{2, 40};
    o.seed = 12;
    o.precise_bn_batches = 2;
    o.validation = val;
    fit(a, loss, opt_a, train, o);

    auto b = test::small_resnet<float>();
    b.init(1);
    RMSprop<float> opt_b;
    opt_b.set_weight_averaging(averaging);
    FitOptions first = o;
    first.epochs = 1;
    fit(b, loss, opt_b, train, first);
    save(b, "test_fit_resume.mrm", {}, &opt_b);
    auto c = test::small_resnet<float>();
    c.init(99);
    RMSprop<float> opt_c;
    opt_c.set_weight_averaging(averaging);
    opt_c.attach(c.params());
    load(c, "test_fit_resume.mrm", &opt_c);
    FitOptions rest = o;
    rest.initial_epoch = 1;
    fit(c, loss, opt_c, train, rest);
    std::remove("test_fit_resume.mrm");
    auto pa = a.params(), pc = c.params();
    for (std::size_t i = 0; i < pa.size(); ++i) {
      INFO(pa[i].name);
      CHECK(std::equal(pa[i].value->begin(), pa[i].value->end(), pc[i].value->begin()));
    }
    auto sa = a.state(), sc = c.state();  // the PreciseBN statistics
    for (std::size_t i = 0; i < sa.size(); ++i) {
      INFO(sa[i].name);
      CHECK(std::equal(sa[i].value->begin(), sa[i].value->end(), sc[i].value->begin()));
    }
  }
  SECTION("weight averaging validates the averaged weights; an interrupt leaves them in place") {
    auto data = test::line_patterns<double>(96, 14);
    SoftmaxCrossEntropy<double> dloss;
    FitOptions<double> o{1, 32};
    o.seed = 3;
    o.precise_bn_batches = 3;
    o.validation = data;  // all the data: the statistics depend only on the weights
    auto plain = test::small_resnet<double>();
    plain.init(2);
    SGD<double> plain_opt(SGDOptions{0.05, 0.9});
    fit(plain, dloss, plain_opt, data, o);

    auto m = test::small_resnet<double>();
    m.init(2);
    SGD<double> opt(SGDOptions{0.05, 0.9});
    opt.set_weight_averaging(0.9);
    const History h = fit(m, dloss, opt, data, o);
    REQUIRE(h.epochs.size() == 1);
    // Training is unchanged: the raw weights (now in the optimizer's state) are those of the
    // run without averaging; the model holds something else, the averages.
    const auto raw = plain.params(), avg = m.params();
    const auto state = opt.state();
    for (std::size_t i = 0; i < raw.size(); ++i) {
      INFO(raw[i].name);
      REQUIRE(state[2 * i + 1].name == raw[i].name + "/average");  // after the momentum slot
      CHECK(
          std::equal(raw[i].value->begin(), raw[i].value->end(), state[2 * i + 1].value->begin()));
      CHECK(!std::equal(raw[i].value->begin(), raw[i].value->end(), avg[i].value->begin()));
    }
    // Re-evaluating the returned model (the averages) reproduces the epoch's validation.
    CHECK(evaluate(m, data, 32).loss == Approx(h.epochs[0].val_loss).epsilon(1e-12));
    // An interrupted epoch also returns with the averages in the model.
    std::vector<double> before;
    for (const auto& p : m.params()) before.insert(before.end(), p.value->begin(), p.value->end());
    std::atomic<bool> flag{true};
    FitOptions<double> more = o;
    more.epochs = 2;
    more.initial_epoch = 1;
    more.interrupt = flag;
    CHECK(fit(m, dloss, opt, data, more).interrupted);
    std::vector<double> after;
    for (const auto& p : m.params()) after.insert(after.end(), p.value->begin(), p.value->end());
    CHECK(after == before);
  }
}

TEST_CASE("recompute_batch_norm_statistics: every BatchNorm averages its batch statistics") {
  auto data = test::line_patterns<double>(96, 11);
  auto m = test::small_resnet<double>();
  m.init(5);
  // Two models from the same weights: one recomputes over 3 batches of 32 (all the data, in a
  // seeded order); the other is fed the same batches by hand with averaging switched on.
  auto ref = test::small_resnet<double>();
  ref.init(5);
  REQUIRE(recompute_batch_norm_statistics(m, data, 10, 32, 99) == 3);  // capped at whole batches
  std::vector<BatchNorm<double>*> norms;
  for (std::size_t i = 0; i < ref.size(); ++i)
    if (auto* bn = dynamic_cast<BatchNorm<double>*>(ref.layer(Node{static_cast<int>(i)})))
      norms.push_back(bn);
  REQUIRE(norms.size() == 3);  // stem and the basic block's two
  std::vector<index_t> order(96);
  std::iota(order.begin(), order.end(), index_t(0));
  Rng rng(99);
  for (index_t i = 95; i > 0; --i)
    std::swap(order[static_cast<std::size_t>(i)],
              order[static_cast<std::size_t>(rng.uniform_int(static_cast<std::uint64_t>(i + 1)))]);
  for (auto* bn : norms) bn->set_averaging(true);
  Tensor<double> x(Shape{32, 1, 8, 8});
  std::vector<std::int32_t> labels(32);
  for (index_t b = 0; b < 3; ++b) {
    data.get(Span<const index_t>(order.data() + b * 32, 32), x, labels.data(), nullptr);
    ref.forward(x, Mode::Train);
  }
  const auto got = m.state(), want = ref.state();
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO(got[i].name);
    for (index_t k = 0; k < got[i].value->size(); ++k)
      CHECK((*got[i].value)[k] == Approx((*want[i].value)[k]).epsilon(1e-12));
  }
  // The parameters are untouched (same init, no step).
  const auto p = m.params(), q = ref.params();
  for (std::size_t i = 0; i < p.size(); ++i)
    CHECK(std::equal(p[i].value->begin(), p[i].value->end(), q[i].value->begin()));
  CHECK_THROWS_AS(recompute_batch_norm_statistics(m, data, 0, 32, 1), ValueError);
}

TEST_CASE(
    "fit with precise_bn_batches recomputes the statistics after each epoch, deterministically") {
  auto train = test::line_patterns<float>(256, 12);
  auto run = [&](index_t precise) {
    auto m = test::small_resnet<float>();
    m.init(3);
    SoftmaxCrossEntropy<float> loss;
    Adam<float> opt(AdamOptions{0.01});
    FitOptions o;
    o.epochs = 2;
    o.batch_size = 32;
    o.seed = 4;
    o.precise_bn_batches = precise;
    fit(m, loss, opt, train, o);
    std::pair<std::vector<float>, std::vector<float>> r;  // moving statistics, parameters
    for (const auto& t : m.state()) r.first.insert(r.first.end(), t.value->begin(), t.value->end());
    for (const auto& t : m.params())
      r.second.insert(r.second.end(), t.value->begin(), t.value->end());
    return r;
  };
  const auto a = run(4), b = run(4), plain = run(0);
  CHECK(a == b);
  // Training itself uses batch statistics: the parameters agree, the moving statistics differ.
  REQUIRE(!a.first.empty());
  CHECK(a.second == plain.second);
  CHECK(a.first != plain.first);
}

TEST_CASE("evaluate with flip test-time augmentation averages image and mirror probabilities") {
  auto data = test::line_patterns<double>(50, 13);
  auto m = test::small_resnet<double>();
  m.init(6);
  EvalOptions o;
  o.batch_size = 16;  // a partial last batch
  o.flip = true;
  const EvalResult r = evaluate(m, data, o);
  // Naive reference: predict on the images and on their mirror images.
  const Tensor<double>& x = data.samples();
  Tensor<double> mirrored(x.shape());
  for (index_t i = 0; i < 50; ++i)
    for (index_t row = 0; row < 8; ++row)
      for (index_t col = 0; col < 8; ++col) mirrored(i, 0, row, col) = x(i, 0, row, 7 - col);
  const Tensor<double> p = predict(m, x), q = predict(m, mirrored);
  double loss = 0;
  index_t correct = 0;
  for (index_t i = 0; i < 50; ++i) {
    index_t best = 0;
    for (index_t k = 1; k < 4; ++k)
      if (p(i, k) + q(i, k) > p(i, best) + q(i, best)) best = k;
    const auto label = data.labels()[static_cast<std::size_t>(i)];
    correct += best == label;
    loss -= std::log((p(i, label) + q(i, label)) / 2);
  }
  CHECK(r.accuracy == Approx(static_cast<double>(correct) / 50));
  CHECK(r.loss == Approx(loss / 50).epsilon(1e-12));
  index_t total = 0;
  for (auto c : r.confusion) total += c;
  CHECK(total == 50);
  // Without flipping, evaluate is the plain forward pass (the loss of p alone).
  o.flip = false;
  double plain = 0;
  for (index_t i = 0; i < 50; ++i)
    plain -= std::log(p(i, data.labels()[static_cast<std::size_t>(i)]));
  CHECK(evaluate(m, data, o).loss == Approx(plain / 50).epsilon(1e-12));
  // Flipping needs images.
  TensorDataset<double> flat(Tensor<double>(Shape{4, 64}), std::vector<std::int32_t>(4, 0), 4);
  Model<double> dense;
  dense.add(Dense<double>(4), dense.add_input(Shape{64}));
  dense.init(1);
  o.flip = true;
  CHECK_THROWS_AS(evaluate(dense, flat, o), ShapeError);
}

TEST_CASE("evaluate with shifted views averages the probabilities of all ten views") {
  auto data = test::line_patterns<double>(37, 21);
  auto m = test::small_resnet<double>();
  m.init(9);
  EvalOptions o;
  o.batch_size = 16;
  o.flip = true;
  o.shift = 2;
  const EvalResult r = evaluate(m, data, o);
  // Naive reference: each view built pixel by pixel, edges repeated; predictions averaged.
  const Tensor<double>& x = data.samples();
  auto view = [&](index_t dy, index_t dx, bool flip) {
    Tensor<double> v(x.shape());
    for (index_t i = 0; i < 37; ++i)
      for (index_t row = 0; row < 8; ++row)
        for (index_t col = 0; col < 8; ++col) {
          const index_t c = flip ? 7 - col : col;
          const index_t sr = std::min<index_t>(7, std::max<index_t>(0, row - dy));
          const index_t sc = std::min<index_t>(7, std::max<index_t>(0, c - dx));
          v(i, 0, row, col) = x(i, 0, sr, sc);
        }
    return predict(m, v);
  };
  Tensor<double> sum(Shape{37, 4});
  for (bool flip : {false, true}) {
    for (auto d : {std::pair<index_t, index_t>{0, 0}, {-2, 0}, {2, 0}, {0, -2}, {0, 2}}) {
      const Tensor<double> p = view(d.first, d.second, flip);
      for (index_t i = 0; i < sum.size(); ++i) sum.data()[i] += p.data()[i] / 10;
    }
  }
  double loss = 0;
  index_t correct = 0;
  for (index_t i = 0; i < 37; ++i) {
    index_t best = 0;
    for (index_t k = 1; k < 4; ++k)
      if (sum(i, k) > sum(i, best)) best = k;
    const auto label = data.labels()[static_cast<std::size_t>(i)];
    correct += best == label;
    loss -= std::log(sum(i, label));
  }
  CHECK(r.accuracy == Approx(static_cast<double>(correct) / 37));
  CHECK(r.loss == Approx(loss / 37).epsilon(1e-12));
  // Shifts without flips: five views, and a different loss.
  o.flip = false;
  CHECK(evaluate(m, data, o).loss != Approx(r.loss).epsilon(1e-9));
  // A shift must leave part of the image: [0, 8) here.
  o.shift = 8;
  CHECK_THROWS_AS(evaluate(m, data, o), ValueError);
  o.shift = -1;
  CHECK_THROWS_AS(evaluate(m, data, o), ValueError);
}

TEST_CASE("a resumed ModelCheckpoint keeps the stored best epoch until a better one") {
  auto m = test::small_resnet<float>();
  m.init(1);
  SGD<float> opt;
  opt.attach(m.params());
  const std::string last = "test_fit_resumed_last.mrm", best = "test_fit_resumed_best.mrm";
  ModelCheckpoint<float> ckpt(last, best);
  ckpt.set_best(0.9, 3);  // the stored run's best: 0.9 at epoch 3
  EpochStats worse;
  worse.epoch = 5;
  worse.val_accuracy = 0.5;
  ckpt.on_epoch_end(worse, m, opt);
  CHECK(ckpt.best_epoch() == 3);
  CHECK(read_metadata(last).at("best_epoch") == "3");
  CHECK_FALSE(std::ifstream(best).good());  // not an improvement: best.mrm is not written
  EpochStats better = worse;
  better.epoch = 6;
  better.val_accuracy = 0.95;
  ckpt.on_epoch_end(better, m, opt);
  CHECK(ckpt.best_epoch() == 6);
  CHECK(read_metadata(best).at("best_epoch") == "6");
  std::remove(last.c_str());
  std::remove(best.c_str());
}
