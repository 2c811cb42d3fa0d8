// Layer benchmarks at the shapes of the Fashion-MNIST ResNet, batch 128, float:
//   Conv2D forward and backward (im2col + GEMM) against direct convolution loops (naive),
//   BatchNorm forward (training) and backward.
//
//   build/release/bench/bench_layers --benchmark_filter=Conv2D --benchmark_repetitions=5
//
// Conv arguments: Cin, Cout, HW (square input), k (square kernel; 3x3 uses 'same' padding),
// threads (set with minires::set_num_threads). Counters: FLOP/s with FLOPs = 2 * MACs; a
// forward is N*Cout*HW*HW*Cin*k*k MACs, a backward with the input gradient twice that (dkernel
// and dx). BatchNorm reports bytes/s: x read and y written (forward), x, dy, dx read and dx
// written (backward).
#include <benchmark/benchmark.h>

#include <minires/kernels/naive/conv2d.hpp>
#include <minires/layers/batch_norm.hpp>
#include <minires/layers/conv2d.hpp>

#include <utility>
#include <vector>

using namespace minires;

namespace {

constexpr index_t batch = 128;

void set_flops(benchmark::State& state, double flops_per_iteration) {
  state.counters["FLOP/s"] =
      benchmark::Counter(flops_per_iteration, benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::OneK::kIs1000);
}

// Cin, Cout, HW, k.
constexpr int64_t conv_shapes[][4] = {{1, 4, 28, 3},   {4, 64, 14, 1},  {64, 4, 14, 1},
                                      {4, 4, 14, 1},   {32, 32, 28, 3}, {64, 64, 14, 3},
                                      {128, 128, 7, 3}};

void conv_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"Cin", "Cout", "HW", "k", "threads"});
  for (const auto& s : conv_shapes)
    for (int64_t threads : {1, 2}) b->Args({s[0], s[1], s[2], s[3], threads});
}

void naive_conv_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"Cin", "Cout", "HW", "k"});
  for (const auto& s : conv_shapes) b->Args({s[0], s[1], s[2], s[3]});
}

// A set-up, initialised Conv2D<float> with a random input batch, output and output gradient.
struct ConvFixture {
  Conv2D<float> conv;
  Tensor<float> x, y, dy, dx;
  double macs = 0;

  explicit ConvFixture(const benchmark::State& state)
      : conv(state.range(1), state.range(3),
             state.range(3) > 1 ? Conv2DOptions().same() : Conv2DOptions()) {
    const index_t c = state.range(0), hw = state.range(2);
    const Shape in{batch, c, hw, hw};
    conv.setup(Span<const Shape>(&in, 1));
    Rng rng(1);
    conv.init(rng);
    const Shape out = conv.output_shape(Span<const Shape>(&in, 1));
    x = Tensor<float>(in);
    y = Tensor<float>(out);
    dy = Tensor<float>(out);
    dx = Tensor<float>(in);
    x.uniform(rng, -1.f, 1.f);
    dy.uniform(rng, -1.f, 1.f);
    macs = static_cast<double>(out.size()) * static_cast<double>(conv.geometry().col_rows());
  }
};

void BM_Conv2DForward(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(4)));
  ConvFixture f(state);
  const Tensor<float>* xs[] = {&f.x};
  for (auto _ : state) {
    f.conv.forward(Span<const Tensor<float>* const>(xs), f.y, Mode::Train);
    benchmark::DoNotOptimize(f.y.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * f.macs);
}

void BM_Conv2DBackward(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(4)));
  ConvFixture f(state);
  const Tensor<float>* xs[] = {&f.x};
  Tensor<float>* dxs[] = {&f.dx};
  f.conv.forward(Span<const Tensor<float>* const>(xs), f.y, Mode::Train);
  for (auto _ : state) {
    f.conv.backward(Span<const Tensor<float>* const>(xs), f.y, f.dy,
                    Span<Tensor<float>* const>(dxs));
    benchmark::DoNotOptimize(f.dx.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, 4.0 * f.macs);
}

// Direct loops (single-threaded): the baseline the im2col + GEMM path is measured against.
void BM_Conv2DForwardNaive(benchmark::State& state) {
  ConvFixture f(state);
  for (auto _ : state) {
    kernels::naive::conv2d_forward(f.x.data(), batch, f.conv.geometry(), f.conv.kernel.data(),
                                   f.conv.bias.data(), f.conv.filters(), f.y.data());
    benchmark::DoNotOptimize(f.y.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * f.macs);
}

void BM_Conv2DBackwardNaive(benchmark::State& state) {
  ConvFixture f(state);
  for (auto _ : state) {
    kernels::naive::conv2d_backward(f.x.data(), f.dy.data(), batch, f.conv.geometry(),
                                    f.conv.kernel.data(), f.conv.filters(), f.dx.data(),
                                    f.conv.dkernel.data(), f.conv.dbias.data());
    benchmark::DoNotOptimize(f.dx.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, 4.0 * f.macs);
}

BENCHMARK(BM_Conv2DForward)->Apply(conv_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv2DBackward)->Apply(conv_args)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv2DForwardNaive)
    ->Apply(naive_conv_args)
    ->Iterations(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv2DBackwardNaive)
    ->Apply(naive_conv_args)
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// BatchNorm over a 128xCxHWxHW activation (the ResNet's shapes); arguments: C, HW, threads.
struct BatchNormFixture {
  BatchNorm<float> bn;
  Tensor<float> x, y, dy, dx;

  BatchNormFixture(index_t channels, index_t hw) {
    const Shape in{batch, channels, hw, hw};
    bn.setup(Span<const Shape>(&in, 1));
    Rng rng(2);
    bn.init(rng);
    x = Tensor<float>(in);
    y = Tensor<float>(in);
    dy = Tensor<float>(in);
    dx = Tensor<float>(in);
    x.uniform(rng, -1.f, 3.f);
    dy.uniform(rng, -1.f, 1.f);
  }
  int64_t bytes() const { return x.size() * static_cast<int64_t>(sizeof(float)); }
};

void BM_BatchNormForwardTrain(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(2)));
  BatchNormFixture f(state.range(0), state.range(1));
  const Tensor<float>* xs[] = {&f.x};
  for (auto _ : state) {
    f.bn.forward(Span<const Tensor<float>* const>(xs), f.y, Mode::Train);
    benchmark::DoNotOptimize(f.y.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 2 * f.bytes());
}

void BM_BatchNormBackward(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(2)));
  BatchNormFixture f(state.range(0), state.range(1));
  const Tensor<float>* xs[] = {&f.x};
  Tensor<float>* dxs[] = {&f.dx};
  f.bn.forward(Span<const Tensor<float>* const>(xs), f.y, Mode::Train);
  for (auto _ : state) {
    f.bn.backward(Span<const Tensor<float>* const>(xs), f.y, f.dy, Span<Tensor<float>* const>(dxs));
    benchmark::DoNotOptimize(f.dx.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 4 * f.bytes());
}

void batch_norm_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"C", "HW", "threads"});
  for (const auto& s : {std::pair<int64_t, int64_t>{32, 28}, {32, 14}, {64, 7}, {128, 4}})
    for (int64_t threads : {1, 2}) b->Args({s.first, s.second, threads});
}

BENCHMARK(BM_BatchNormForwardTrain)->Apply(batch_norm_args)->UseRealTime();
BENCHMARK(BM_BatchNormBackward)->Apply(batch_norm_args)->UseRealTime();

}  // namespace
