// Data-parallel training over MPI, run by CTest under `mpirun -np 2`: every rank runs every
// test case in the same order (the collective calls must match), and each compares the
// distributed result with what one process computes on the whole batch, which every rank
// also computes locally. Only CHECK is used after the first collective call: a REQUIRE that
// failed on one rank alone would leave the other waiting.
//
//   test_mpi            the test cases (Catch2; MPI started by the main below)
//   test_mpi die        rank 1 kills itself in the middle of a run: mpirun must end the job
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <minires/distributed/mpi.hpp>
#include <minires/minires.hpp>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstring>
#include <string>
#include <vector>

#include "synthetic.hpp"

using namespace minires;

namespace {

mpi::Communicator* world = nullptr;

// Largest |a - b| / (|b| + floor) over all parameters (and their gradients when `grads`).
template <class T>
double max_relative_difference(Model<T>& a, Model<T>& b, bool grads, double floor) {
  auto pa = a.params(), pb = b.params();
  double worst = 0;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    const Tensor<T>& x = grads ? *pa[i].grad : *pa[i].value;
    const Tensor<T>& y = grads ? *pb[i].grad : *pb[i].value;
    for (index_t j = 0; j < x.size(); ++j) {
      const double d = std::abs(double(x.data()[j]) - double(y.data()[j]));
      worst = std::max(worst, d / (std::abs(double(y.data()[j])) + floor));
    }
  }
  return worst;
}

template <class T>
double max_state_difference(Model<T>& a, Model<T>& b) {
  auto sa = a.state(), sb = b.state();
  double worst = 0;
  for (std::size_t i = 0; i < sa.size(); ++i)
    for (index_t j = 0; j < sa[i].value->size(); ++j)
      worst = std::max(worst,
                       std::abs(double(sa[i].value->data()[j]) - double(sb[i].value->data()[j])));
  return worst;
}

// One fit() of `steps` steps on the first `samples` line patterns: distributed over the world
// (rank r initialised with seed 10 + r: rank 0's parameters must win) or in one process.
template <class T>
Model<T> train(index_t samples, index_t batch, bool distributed, bool sync_bn, index_t epochs = 1) {
  auto data = test::line_patterns<T>(samples, 5);
  auto m = test::small_resnet<T>();
  m.init(distributed ? 10 + std::uint64_t(world->rank()) : 10);
  SoftmaxCrossEntropy<T> loss;
  SGD<T> opt(SGDOptions{0.1, 0.9});
  FitOptions<T> o(epochs, batch);
  o.seed = 3;
  if (distributed) {
    o.replicas = *world;
    o.sync_batch_norm = sync_bn;
  }
  fit(m, loss, opt, data, o);
  return m;
}

}  // namespace

TEST_CASE("2 ranks with synchronised BatchNorm take the step one process takes") {
  REQUIRE(world->size() == 2);
  // 32 samples in batches of 16 (8 per rank), and 30 in batches of 15 (7 and 8 per rank), two
  // epochs: gradients, parameters and moving statistics as one process, in double up to
  // summation order.
  for (const index_t batch : {index_t(16), index_t(15)}) {
    INFO("global batch " << batch);
    auto dist = train<double>(2 * batch, batch, true, true, 2);
    auto single = train<double>(2 * batch, batch, false, false, 2);
    CHECK(max_relative_difference(dist, single, true, 1e-6) < 1e-9);
    CHECK(max_relative_difference(dist, single, false, 1e-6) < 1e-9);
    CHECK(max_state_difference(dist, single) < 1e-12);
  }
  // In float: the same up to summation order, which differs with the SIMD width (AVX2 or
  // AVX-512 kernels) and which two steps of BatchNorm on 32 samples amplify: 1.1e-5 relative
  // seen on Zen 4. A wrong gradient or statistic differs by more than 1e-2.
  auto dist = train<float>(64, 32, true, true);
  auto single = train<float>(64, 32, false, false);
  CHECK(max_relative_difference(dist, single, false, 1e-3) < 1e-4);
}

TEST_CASE("2 ranks with per-rank BatchNorm equal one process normalising each shard alone") {
  // Per-rank statistics (DDP's default) are 'ghost batch' normalisation: the gradient is the
  // sum of each shard's gradient with the shard's own statistics, each scaled by its share.
  // Rebuilt here in one process, it matches; and it differs from full-batch BatchNorm.
  auto dist = train<double>(16, 16, true, false);
  // One process: the same initial model and the gradient of each half with its own statistics
  // (each half in a model of its own: a backward accumulates into every activation gradient),
  // scaled by its share of the batch and added.
  auto data = test::line_patterns<double>(16, 5);
  std::vector<index_t> order(16);
  detail::fill_order(order, true, detail::epoch_seed(3, 0, 1));
  SoftmaxCrossEntropy<double> loss;
  auto ghost = test::small_resnet<double>();
  ghost.init(10);
  ghost.zero_grad();
  for (int half = 0; half < 2; ++half) {
    auto m = test::small_resnet<double>();
    m.init(10);
    Tensor<double> x(Shape{8, 1, 8, 8});
    std::vector<std::int32_t> labels(8);
    data.get(Span<const index_t>(order.data() + 8 * half, 8), x, labels.data(), nullptr);
    m.zero_grad();
    loss.forward(m.forward(x, Mode::Train), Span<const std::int32_t>(labels.data(), 8));
    m.backward(loss);
    auto pm = m.params(), pg = ghost.params();
    for (std::size_t i = 0; i < pm.size(); ++i)
      for (index_t j = 0; j < pm[i].grad->size(); ++j)
        pg[i].grad->data()[j] += 0.5 * pm[i].grad->data()[j];
  }
  // dist took one SGD step from the same start; its gradients are the last step's.
  CHECK(max_relative_difference(dist, ghost, true, 1e-6) < 1e-9);
  auto full = train<double>(16, 16, false, false);
  CHECK(max_relative_difference(dist, full, true, 1e-6) > 1e-6);
}

TEST_CASE("a model without BatchNorm trains on 2 ranks as in one process") {
  auto run = [](bool distributed) {
    auto data = test::line_patterns<double>(40, 6);
    Model<double> m;
    Node x = m.add_input(Shape{1, 8, 8});
    x = m.add(Conv2D<double>(4, 3, Conv2DOptions().same()), x);
    x = m.add(ReLU<double>(), x);
    x = m.add(Flatten<double>(), x);
    m.add(Dense<double>(4), x);
    m.init(distributed ? 20 + std::uint64_t(world->rank()) : 20);
    SoftmaxCrossEntropy<double> loss;
    RMSprop<double> opt(RMSpropOptions{1e-3});
    FitOptions<double> o(3, 20);
    o.seed = 4;
    if (distributed) o.replicas = *world;
    const History h = fit(m, loss, opt, data, o);
    return std::make_pair(std::move(m), h);
  };
  auto [dist, hd] = run(true);
  auto [single, hs] = run(false);
  CHECK(max_relative_difference(dist, single, false, 1e-6) < 1e-9);
  // The reported figures are the whole batch's.
  CHECK(hd.epochs.size() == hs.epochs.size());
  for (std::size_t e = 0; e < std::min(hd.epochs.size(), hs.epochs.size()); ++e) {
    CHECK(hd.epochs[e].train_loss == Approx(hs.epochs[e].train_loss).epsilon(1e-12));
    CHECK(hd.epochs[e].train_accuracy == hs.epochs[e].train_accuracy);
  }
}

TEST_CASE("sharded evaluation and validation give the whole data set's figures") {
  auto data = test::line_patterns<float>(101, 7);
  auto m = test::small_resnet<float>();
  m.init(1);
  EvalOptions one;
  one.batch_size = 16;
  EvalOptions shared = one;
  shared.replicas = world;
  const EvalResult a = evaluate(m, data, one), b = evaluate(m, data, shared);
  CHECK(b.accuracy == a.accuracy);
  CHECK(b.loss == Approx(a.loss).epsilon(1e-6));
  CHECK(b.confusion == a.confusion);
}

TEST_CASE("gradient buckets: whole parameters, one call each, every gradient summed") {
  auto m = test::small_resnet<float>();
  m.init(1);
  auto params = m.params();
  for (auto& p : params) p.grad->fill(float(world->rank() + 1));
  GradientBuckets<float> buckets(params, 100);  // small buckets: several of them
  CHECK(buckets.buckets() > 1);
  buckets.sum(*world);
  bool all_three = true;
  for (auto& p : params)
    for (index_t i = 0; i < p.grad->size(); ++i) all_three = all_three && p.grad->data()[i] == 3.f;
  CHECK(all_three);
}

int main(int argc, char** argv) {
  mpi::Environment env(argc, argv);
  mpi::Communicator comm;
  world = &comm;
  if (argc > 1 && std::strcmp(argv[1], "die") == 0) {
    // A rank that dies in the middle of a run: rank 1 takes part in one sum, then kills
    // itself; rank 0 waits in the next. mpirun must notice and end the job with an error.
    double v = 1;
    comm.sum(&v, 1);
    if (comm.rank() == 1) std::raise(SIGKILL);
    comm.sum(&v, 1);
    return 0;
  }
  set_num_threads(1);
  return Catch::Session().run(argc, argv);
}
