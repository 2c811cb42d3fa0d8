// Kernel benchmarks: GEMM through minires' Eigen::Map wrapper against Eigen called directly,
// and im2col/col2im at the convolution shapes of the Fashion-MNIST models (batch 128).
//
//   build/release/bench/bench_kernels --benchmark_filter=Gemm --benchmark_repetitions=5
//
// The second benchmark argument is the thread count. Counters: FLOP/s (2*M*N*K per GEMM) and
// bytes/s (bytes read + written by im2col/col2im).
#include <benchmark/benchmark.h>

#include <minires/minires.hpp>

#include <vector>

using namespace minires;

namespace {

void set_flops(benchmark::State& state, double flops_per_iteration) {
  state.counters["FLOP/s"] =
      benchmark::Counter(flops_per_iteration, benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::OneK::kIs1000);
}

void BM_GemmMinires(benchmark::State& state) {
  const index_t n = state.range(0);
  set_num_threads(static_cast<int>(state.range(1)));
  Rng rng(1);
  Tensor<float> a(Shape{n, n}), b(Shape{n, n}), c(Shape{n, n});
  a.uniform(rng, -1.f, 1.f);
  b.uniform(rng, -1.f, 1.f);
  for (auto _ : state) {
    kernels::gemm(kernels::Trans::No, kernels::Trans::No, n, n, n, 1.f, a.data(), b.data(), 0.f,
                  c.data());
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * n * n * n);
}

// The same product written directly against Eigen, for the wrapper's overhead.
void BM_GemmEigenDirect(benchmark::State& state) {
  const Eigen::Index n = state.range(0);
  set_num_threads(static_cast<int>(state.range(1)));
  using M = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  M a = M::Random(n, n), b = M::Random(n, n), c(n, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, 2.0 * n * n * n);
}

BENCHMARK(BM_GemmMinires)
    ->ArgNames({"n", "threads"})
    ->Args({1024, 1})
    ->Args({1024, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GemmEigenDirect)
    ->ArgNames({"n", "threads"})
    ->Args({1024, 1})
    ->Args({1024, 2})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Convolution shapes, batch 128: channels, size, kernel ('same' padding, stride 1).
constexpr int64_t conv_shapes[][3] = {{1, 28, 3}, {32, 28, 3}, {64, 14, 3}, {128, 7, 3}};

void conv_args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"C", "HW", "k"});
  for (const auto& s : conv_shapes) b->Args({s[0], s[1], s[2]});
}

void BM_Im2col(benchmark::State& state) {
  const index_t C = state.range(0), HW = state.range(1), k = state.range(2), batch = 128;
  const auto g = kernels::ConvGeometry::keras(C, HW, HW, k, k, 1, 1, kernels::Padding::Same);
  Rng rng(2);
  Tensor<float> x(Shape{batch, C, HW, HW}), col(Shape{g.col_rows(), g.col_cols()});
  x.uniform(rng, -1.f, 1.f);
  for (auto _ : state) {
    for (index_t n = 0; n < batch; ++n) {
      kernels::im2col(x.data() + n * g.in_size(), g, col.data(), g.col_cols());
      benchmark::DoNotOptimize(col.data());
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * batch * (g.in_size() + col.size()) *
                          static_cast<int64_t>(sizeof(float)));
}

void BM_Col2im(benchmark::State& state) {
  const index_t C = state.range(0), HW = state.range(1), k = state.range(2), batch = 128;
  const auto g = kernels::ConvGeometry::keras(C, HW, HW, k, k, 1, 1, kernels::Padding::Same);
  Rng rng(3);
  Tensor<float> dx(Shape{batch, C, HW, HW}), col(Shape{g.col_rows(), g.col_cols()});
  col.uniform(rng, -1.f, 1.f);
  for (auto _ : state) {
    for (index_t n = 0; n < batch; ++n) {
      kernels::col2im(col.data(), g, dx.data() + n * g.in_size(), g.col_cols());
    }
    benchmark::DoNotOptimize(dx.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * batch * (2 * g.in_size() + col.size()) *
                          static_cast<int64_t>(sizeof(float)));
}

BENCHMARK(BM_Im2col)->Apply(conv_args)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Col2im)->Apply(conv_args)->Unit(benchmark::kMillisecond);

// Element-wise: ReLU backward over a 128x64x14x14 activation (bytes: x, dy, dx read; dx written).
void BM_ReluBackward(benchmark::State& state) {
  const index_t n = 128 * 64 * 14 * 14;
  set_num_threads(static_cast<int>(state.range(0)));
  Rng rng(4);
  Tensor<float> x(Shape{n}), dy(Shape{n}), dx(Shape{n});
  x.uniform(rng, -1.f, 1.f);
  dy.uniform(rng, -1.f, 1.f);
  for (auto _ : state) {
    kernels::relu_backward(x.data(), dy.data(), dx.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 4 * n * static_cast<int64_t>(sizeof(float)));
}
BENCHMARK(BM_ReluBackward)->ArgNames({"threads"})->Arg(1)->Arg(2)->UseRealTime();

}  // namespace
