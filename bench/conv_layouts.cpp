// The layout study of the performance issue: does a layout with channels in the SIMD lanes make
// the default ResNet's 3x3 convolutions faster than minires' NCHW algorithms (shifted views,
// Winograd)? Forward, 'same' padding, stride 1, batch 128, float, at the model's shapes:
//
//   BM_ConvNCHW      minires' Conv2D as it runs today (the algorithm conv2d_plan picks)
//   BM_ConvBlocked   a direct convolution on nChw{L}c (channels in blocks of the SIMD width L,
//                    oneDNN's and LIBXSMM's layout), the kernel blocked to match
//   BM_ConvNHWC      the same direct convolution on NHWC (XNNPACK's layout: all channels
//                    contiguous per pixel; the block is all C channels)
//   BM_ToBlocked     converting one NCHW activation to padded nChw{L}c and back: what a
//                    convolution pays when only it uses the layout
//
//   build/release/bench/conv_layouts --benchmark_min_time=0.5
//
// The direct kernel is oneDNN's register block: RW output pixels of a row times two SIMD
// batches of filters (2L) in registers, one weight load per filter batch and one broadcast per
// pixel for every (input channel, tap). Inputs are zero-padded by one pixel around each plane,
// so the kernel has no edge cases (the conversion writes the padding). It is a prototype for
// the measurement, not a library path: each run first checks its output against minires' NCHW
// forward (abs 1e-3 on values in [-1, 1]) and reports an error if they differ. Counters:
// FLOP/s, 2 x the direct convolution's multiply-adds (Winograd counted as the product it
// replaces).
#include <benchmark/benchmark.h>

#include <minires/core/parallel.hpp>
#include <minires/layers/conv2d.hpp>

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

using namespace minires;

namespace {

constexpr index_t batch = 128;
using B = xsimd::batch<float>;
constexpr index_t L = kernels::simd_width<float>();
// Pixels per register block: RW x 2 accumulators plus 2 weights and a broadcast in the
// register file (6 x 2 + 3 = 15 of 16 with AVX2, 12 x 2 + 3 = 27 of 32 with AVX-512).
constexpr index_t RW = kernels::simd_registers >= 32 ? 12 : 6;

// Where one layout keeps its data; channel c of pixel (h, w) of image n is at
//   n * image + (c / cblock) * block + (h + pad) * row + (w + pad) * pixel + c % cblock.
struct Layout {
  index_t cblock, image, block, row, pixel, pad;
  index_t at(index_t n, index_t c, index_t h, index_t w) const {
    return n * image + (c / cblock) * block + (h + pad) * row + (w + pad) * pixel + c % cblock;
  }
};

Layout blocked(index_t channels, index_t hw, index_t pad) {
  const index_t side = hw + 2 * pad, block = side * side * L;
  return {L, channels / L * block, block, side * L, L, pad};
}
Layout nhwc(index_t channels, index_t hw, index_t pad) {
  const index_t side = hw + 2 * pad;
  return {channels, side * side * channels, 0, side * channels, channels, pad};
}

// Kernel w (F, C, 3, 3) for a layout of `cblock` input channels per block: for filter batch
// v (L filters), input block cb, tap t and channel ci of the block, L filters contiguous at
// ((v * C / cblock + cb) * 9 + t) * cblock * L + ci * L.
std::vector<float> pack_kernel(const Tensor<float>& w, index_t F, index_t C, index_t cblock) {
  std::vector<float> out(static_cast<std::size_t>(F * C * 9));
  for (index_t f = 0; f < F; ++f)
    for (index_t c = 0; c < C; ++c)
      for (index_t t = 0; t < 9; ++t) {
        const index_t v = f / L, cb = c / cblock, ci = c % cblock;
        out[static_cast<std::size_t>(((v * (C / cblock) + cb) * 9 + t) * cblock * L + ci * L +
                                     f % L)] = w.data()[(f * C + c) * 9 + t];
      }
  return out;
}

// Output pixels [w0, w0 + NW) of row h, filters [v * L, (v + 2) * L), image n.
template <int NW>
void direct_block(const float* x, const Layout& in, const float* wp, index_t C, const Layout& out,
                  float* y, index_t n, index_t v, index_t h, index_t w0) {
  B acc[NW][2];
  for (int r = 0; r < NW; ++r) acc[r][0] = acc[r][1] = B(0.f);
  const index_t blocks = C / in.cblock, vstride = blocks * 9 * in.cblock * L;
  for (index_t cb = 0; cb < blocks; ++cb) {
    for (index_t t = 0; t < 9; ++t) {
      const float* xs = x + n * in.image + cb * in.block + (h + t / 3) * in.row +
                        (w0 + t % 3) * in.pixel;  // pad 1: tap (i, j) reads (h + i - 1 + 1)
      const float* w = wp + ((v * blocks + cb) * 9 + t) * in.cblock * L;
      for (index_t ci = 0; ci < in.cblock; ++ci) {
        const B w0v = B::load_unaligned(w + ci * L), w1v = B::load_unaligned(w + vstride + ci * L);
        for (int r = 0; r < NW; ++r) {
          const B xb(xs[r * in.pixel + ci]);
          acc[r][0] = xsimd::fma(xb, w0v, acc[r][0]);
          acc[r][1] = xsimd::fma(xb, w1v, acc[r][1]);
        }
      }
    }
  }
  // Both layouts keep L consecutive filters of a pixel contiguous.
  for (int r = 0; r < NW; ++r)
    for (int q = 0; q < 2; ++q) acc[r][q].store_unaligned(y + out.at(n, (v + q) * L, h, w0 + r));
}

// Rows split evenly: every row of a map shorter than RW is one block of W pixels.
void direct_conv(const float* x, const Layout& in, const float* wp, index_t C, index_t F,
                 index_t HW, const Layout& out, float* y) {
  const index_t pieces = (HW + RW - 1) / RW, width = (HW + pieces - 1) / pieces;
  parallel_for(batch, 1, [&](index_t n0, index_t n1) {
    for (index_t n = n0; n < n1; ++n)
      for (index_t v = 0; v < F / L; v += 2)
        for (index_t h = 0; h < HW; ++h)
          for (index_t w0 = 0; w0 < HW; w0 += width) {
            switch (std::min(width, HW - w0)) {
#define MINIRES_CASE(k)                                 \
  case k:                                               \
    direct_block<k>(x, in, wp, C, out, y, n, v, h, w0); \
    break;
              MINIRES_CASE(1)
              MINIRES_CASE(2)
              MINIRES_CASE(3)
              MINIRES_CASE(4)
              MINIRES_CASE(5)
              MINIRES_CASE(6)
              MINIRES_CASE(7)
              MINIRES_CASE(8)
              MINIRES_CASE(9)
              MINIRES_CASE(10)
              MINIRES_CASE(11)
              MINIRES_CASE(12)
#undef MINIRES_CASE
              default:
                break;
            }
          }
  });
}

struct Fixture {
  index_t C, F, HW;
  Conv2D<float> conv;
  Tensor<float> x, y;
  double flops;

  explicit Fixture(const benchmark::State& s)
      : C(s.range(0)), F(s.range(1)), HW(s.range(2)), conv(F, 3, Conv2DOptions().same()) {
    const Shape in{batch, C, HW, HW};
    conv.setup(Span<const Shape>(&in, 1));
    Rng rng(1);
    conv.init(rng);
    x = Tensor<float>(in);
    x.uniform(rng, -1.f, 1.f);
    y = Tensor<float>(Shape{batch, F, HW, HW});
    const Tensor<float>* xs[] = {&x};
    conv.forward(Span<const Tensor<float>* const>(xs), y, Mode::Train);
    flops = 2.0 * double(batch * F * HW * HW) * double(C * 9);
  }

  // NCHW index of (n, c, h, w).
  index_t nchw_at(index_t n, index_t c, index_t h, index_t w, index_t channels) const {
    return ((n * channels + c) * HW + h) * HW + w;
  }
};

void to_layout(const Fixture& f, const float* x, index_t C, const Layout& to, float* y) {
  parallel_for(batch, 1, [&](index_t n0, index_t n1) {
    for (index_t n = n0; n < n1; ++n)
      for (index_t c = 0; c < C; ++c)
        for (index_t h = 0; h < f.HW; ++h)
          for (index_t w = 0; w < f.HW; ++w) y[to.at(n, c, h, w)] = x[f.nchw_at(n, c, h, w, C)];
  });
}

void from_layout(const Fixture& f, const float* x, index_t C, const Layout& from, float* y) {
  parallel_for(batch, 1, [&](index_t n0, index_t n1) {
    for (index_t n = n0; n < n1; ++n)
      for (index_t c = 0; c < C; ++c)
        for (index_t h = 0; h < f.HW; ++h)
          for (index_t w = 0; w < f.HW; ++w) y[f.nchw_at(n, c, h, w, C)] = x[from.at(n, c, h, w)];
  });
}

void set_flops(benchmark::State& state, double flops) {
  state.counters["FLOP/s"] = benchmark::Counter(
      flops, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::OneK::kIs1000);
}

void BM_ConvNCHW(benchmark::State& state) {
  set_num_threads(int(state.range(3)));
  Fixture f(state);
  const Tensor<float>* xs[] = {&f.x};
  for (auto _ : state) {
    f.conv.forward(Span<const Tensor<float>* const>(xs), f.y, Mode::Train);
    benchmark::DoNotOptimize(f.y.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel(f.conv.algorithm());
  set_flops(state, f.flops);
}

void run_direct(benchmark::State& state, bool is_blocked) {
  set_num_threads(int(state.range(3)));
  Fixture f(state);
  if (f.C % L != 0 || f.F % (2 * L) != 0) {
    state.SkipWithError("channels must be a multiple of the SIMD width, filters of twice it");
    return;
  }
  const Layout in = is_blocked ? blocked(f.C, f.HW, 1) : nhwc(f.C, f.HW, 1);
  const Layout out = is_blocked ? blocked(f.F, f.HW, 0) : nhwc(f.F, f.HW, 0);
  Tensor<float> xl(Shape{batch * in.image}), yl(Shape{batch * out.image}),
      back(Shape{batch, f.F, f.HW, f.HW});
  to_layout(f, f.x.data(), f.C, in, xl.data());
  const std::vector<float> wp = pack_kernel(f.conv.kernel, f.F, f.C, in.cblock);
  direct_conv(xl.data(), in, wp.data(), f.C, f.F, f.HW, out, yl.data());
  from_layout(f, yl.data(), f.F, out, back.data());
  double worst = 0;
  for (index_t i = 0; i < f.y.size(); ++i)
    worst = std::max(worst, double(std::abs(back.data()[i] - f.y.data()[i])));
  if (worst > 1e-3) {
    state.SkipWithError("the direct convolution differs from minires' NCHW forward");
    return;
  }
  for (auto _ : state) {
    direct_conv(xl.data(), in, wp.data(), f.C, f.F, f.HW, out, yl.data());
    benchmark::DoNotOptimize(yl.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, f.flops);
}

void BM_ConvBlocked(benchmark::State& state) {
  run_direct(state, true);
}
void BM_ConvNHWC(benchmark::State& state) {
  run_direct(state, false);
}

// NCHW -> padded nChw{L}c of the input, and the output (F channels) back to NCHW.
void BM_ToBlocked(benchmark::State& state) {
  set_num_threads(int(state.range(3)));
  Fixture f(state);
  const Layout in = blocked(f.C, f.HW, 1), out = blocked(f.F, f.HW, 0);
  Tensor<float> xl(Shape{batch * in.image}), yl(Shape{batch * out.image}),
      back(Shape{batch, f.F, f.HW, f.HW});
  for (auto _ : state) {
    to_layout(f, f.x.data(), f.C, in, xl.data());
    from_layout(f, yl.data(), f.F, out, back.data());
    benchmark::DoNotOptimize(back.data());
    benchmark::ClobberMemory();
  }
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"C", "F", "HW", "threads"});
  for (const auto& s : {std::array<int64_t, 3>{32, 32, 28},
                        {32, 32, 14},
                        {64, 64, 7},
                        {128, 128, 4},
                        {64, 64, 14},
                        {128, 128, 7}})
    for (int64_t t : {1, 2}) b->Args({s[0], s[1], s[2], t});
}

}  // namespace

BENCHMARK(BM_ConvNCHW)->Apply(shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConvBlocked)->Apply(shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ConvNHWC)->Apply(shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ToBlocked)->Apply(shapes)->UseRealTime()->Unit(benchmark::kMillisecond);
