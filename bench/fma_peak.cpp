// The machine's FP32 fused multiply-add peak, measured: every figure in docs/performance.md is
// given as a fraction of it on the host it ran on.
//
//   build/release/bench/fma_peak [threads] [seconds]
//
// Each thread runs a register-resident loop of independent FMA chains on the widest SIMD batch
// this build targets (xsimd::batch<float>, the width the kernels use). The number of chains is
// chosen from the register file, not from one CPU: enough to cover an FMA latency of up to 5
// cycles on two FMA ports (10 in flight), and few enough to stay in registers (16 vector
// registers with AVX2, 32 with AVX-512). Prints one line of JSON: GFLOP/s counted as 2 per lane
// per FMA, for the given thread count (all threads together; default: the OpenMP thread count).
#include <xsimd/xsimd.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

using Batch = xsimd::batch<float>;
constexpr int kLanes = static_cast<int>(Batch::size);
// 12 chains fit AVX2's 16 registers beside the two operands; AVX-512 has room for more, but 12
// already exceeds the 2 ports x 4-5 cycles of latency of every x86 core we target.
constexpr int kChains = 12;

// Runs `iters` rounds of kChains FMAs; returns a value that depends on all of them.
float fma_loop(long iters, float seed) {
  Batch acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = Batch(seed + float(i));
  const Batch a(0.999999f), b(1e-7f);
  for (long it = 0; it < iters; ++it) {
    for (int i = 0; i < kChains; ++i) acc[i] = xsimd::fma(acc[i], a, b);
  }
  float sum = 0;
  for (int i = 0; i < kChains; ++i) sum += xsimd::hadd(acc[i]);
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
#ifdef _OPENMP
  const int threads = argc > 1 ? std::atoi(argv[1]) : omp_get_max_threads();
#else
  const int threads = 1;
#endif
  const double seconds = argc > 2 ? std::atof(argv[2]) : 1.0;
  if (threads < 1 || seconds <= 0) {
    std::fprintf(stderr, "usage: fma_peak [threads >= 1] [seconds > 0]\n");
    return 2;
  }
  using Clock = std::chrono::steady_clock;
  // Calibrate on one thread: iterations for about `seconds`.
  long iters = 1 << 20;
  volatile float sink = 0;
  for (;;) {
    const auto t0 = Clock::now();
    sink = sink + fma_loop(iters, 1.0f);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (s > 0.05) {
      iters = long(double(iters) * seconds / s) + 1;
      break;
    }
    iters *= 4;
  }
  const auto t0 = Clock::now();
#pragma omp parallel num_threads(threads)
  { sink = sink + fma_loop(iters, 2.0f); }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  const double flop = 2.0 * kLanes * kChains * double(iters) * threads;
  std::printf(
      "{\"system\": \"fma_peak\", \"threads\": %d, \"simd_bits\": %d, \"chains\": %d, "
      "\"seconds\": %.3f, \"gflops\": %.1f}\n",
      threads, kLanes * 32, kChains, s, flop / s * 1e-9);
  return 0;
}
