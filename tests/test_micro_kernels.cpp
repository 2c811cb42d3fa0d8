// The convolution micro-kernels (kernels/packed_gemm.hpp) checked directly against naive products
// in double: gemm_packed_a (plain and segmented output), gemm_packed_taps (rows read through
// offsets, as the shifted convolutions do) and gemm_atb_taps (the weight-gradient product), over
// sizes that hit every register-block shape, the partial blocks and the SIMD tails; and the
// convolution planner's choice of algorithm.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>

#include "test_util.hpp"

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

using namespace minires;
using minires::test::random_vector;

namespace {

template <class T>
double tolerance(index_t K) {
  return (std::is_same_v<T, float> ? 2e-6 : 1e-14) * double(std::max<index_t>(K, 1)) + 1e-6;
}

// Sizes around the SIMD width L and the register block (gemm_mr rows, gemm_nv * L columns).
template <class T>
std::vector<index_t> column_counts() {
  const index_t L = kernels::simd_width<T>(), NB = kernels::gemm_nv * L;
  return {1, L - 1, L, L + 1, 2 * L + 3, NB, NB + 1, 2 * NB + L - 1, 100};
}
std::vector<index_t> row_counts() {
  const index_t mr = kernels::gemm_mr;
  return {1, mr - 1, mr, mr + 1, 3 * mr + 2};
}

}  // namespace

TEMPLATE_TEST_CASE("gemm_packed_a matches a naive product (bias rows, segments, tails)", "", float,
                   double) {
  using T = TestType;
  Rng rng(11);
  const index_t L = kernels::simd_width<T>();
  for (index_t M : row_counts()) {
    for (index_t N : column_counts<T>()) {
      for (index_t K : {index_t(1), index_t(7), index_t(75)}) {
        for (bool bias : {false, true}) {
          INFO("M=" << M << " N=" << N << " K=" << K << " bias=" << bias);
          const index_t ldb = kernels::round_up(N, L) + 3;  // readable past N, as required
          const auto A = random_vector<T>(rng, M * K);
          const auto B = random_vector<T>(rng, K * ldb);
          const auto init = random_vector<T>(rng, M);
          std::vector<T> Ap(static_cast<std::size_t>(kernels::packed_a_size(M, K)));
          kernels::pack_a(A.data(), K, 1, M, K, Ap.data());
          // Plain output with a padded row stride; the padding must stay untouched.
          const index_t ldc = N + 5;
          std::vector<T> C(static_cast<std::size_t>(M * ldc), T(-7));
          kernels::gemm_packed_a(Ap.data(), M, K, B.data(), ldb, N, C.data(), ldc,
                                 bias ? init.data() : nullptr);
          // Segmented output: columns of 3 "images" of len columns each, planes seg_stride apart.
          const index_t len = (N + 2) / 3, stride = M * len + 4;
          std::vector<T> S(static_cast<std::size_t>(3 * stride), T(-7));
          kernels::gemm_packed_a(Ap.data(), M, K, B.data(), ldb, N, S.data(), len,
                                 bias ? init.data() : nullptr, len, stride);
          for (index_t i = 0; i < M; ++i) {
            for (index_t j = 0; j < N; ++j) {
              double ref = bias ? double(init[i]) : 0.0;
              for (index_t k = 0; k < K; ++k) ref += double(A[i * K + k]) * double(B[k * ldb + j]);
              REQUIRE(std::abs(double(C[i * ldc + j]) - ref) <= tolerance<T>(K));
              REQUIRE(S[(j / len) * stride + i * len + j % len] == C[i * ldc + j]);
            }
            for (index_t j = N; j < ldc; ++j) REQUIRE(C[i * ldc + j] == T(-7));
          }
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("gemm_packed_taps reads its rows through the tap offsets", "", float, double) {
  using T = TestType;
  Rng rng(12);
  const index_t L = kernels::simd_width<T>();
  // Row (c, t) of B at b + c * channel_stride + offset[t]: a 3x3 neighbourhood on a padded plane.
  const index_t wp = 9;
  const index_t offsets[] = {0, 1, 2, wp, wp + 1, wp + 2, 2 * wp, 2 * wp + 1, 2 * wp + 2};
  for (index_t M : row_counts()) {
    for (index_t N : column_counts<T>()) {
      for (index_t channels : {index_t(1), index_t(5)}) {
        INFO("M=" << M << " N=" << N << " channels=" << channels);
        const index_t taps = 9, K = channels * taps;
        const index_t channel_stride = kernels::round_up(N, L) + 2 * wp + 3;
        const auto A = random_vector<T>(rng, M * K);
        const auto b = random_vector<T>(rng, channels * channel_stride);
        std::vector<T> Ap(static_cast<std::size_t>(kernels::packed_a_size(M, K)));
        kernels::pack_a(A.data(), K, 1, M, K, Ap.data());
        std::vector<T> C(static_cast<std::size_t>(M * N));
        kernels::gemm_packed_taps(Ap.data(), M, channels, taps, offsets, b.data(), channel_stride,
                                  N, C.data(), N);
        for (index_t i = 0; i < M; ++i) {
          for (index_t j = 0; j < N; ++j) {
            double ref = 0;
            for (index_t c = 0; c < channels; ++c)
              for (index_t t = 0; t < taps; ++t)
                ref += double(A[i * K + c * taps + t]) *
                       double(b[c * channel_stride + offsets[t] + j]);
            REQUIRE(std::abs(double(C[i * N + j]) - ref) <= tolerance<T>(K));
          }
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("gemm_atb_taps accumulates the transposed weight-gradient product", "", float,
                   double) {
  using T = TestType;
  Rng rng(13);
  const index_t L = kernels::simd_width<T>();
  const index_t offsets[] = {0, 1, 4, 6};
  // ld = round_up(M): 1 to 6 SIMD batches of m hit every block shape of both register files.
  for (index_t M : {index_t(1), L, 2 * L + 1, 3 * L, 4 * L, 5 * L + 2, 6 * L}) {
    for (index_t N : {index_t(1), index_t(63), index_t(64), index_t(65), index_t(200)}) {
      for (index_t channels : {index_t(1), index_t(3), index_t(5)}) {
        INFO("M=" << M << " N=" << N << " channels=" << channels);
        const index_t taps = 4, K = channels * taps, ld = kernels::round_up(M, L);
        const index_t channel_stride = N + 7;
        // At (N x ld) is Aᵀ, zero in the columns m >= M.
        std::vector<T> At(static_cast<std::size_t>(N * ld), T(0));
        for (index_t n = 0; n < N; ++n)
          for (index_t m = 0; m < M; ++m) At[n * ld + m] = T(rng.uniform(-1, 1));
        const auto b = random_vector<T>(rng, channels * channel_stride);
        auto Ct = random_vector<T>(rng, K * ld);  // accumulates onto these
        const auto Ct0 = Ct;
        kernels::gemm_atb_taps(At.data(), ld, N, b.data(), channel_stride, channels, taps, offsets,
                               Ct.data());
        for (index_t k = 0; k < K; ++k) {
          const T* bk = b.data() + (k / taps) * channel_stride + offsets[k % taps];
          for (index_t m = 0; m < ld; ++m) {
            double ref = double(Ct0[k * ld + m]);
            for (index_t n = 0; n < N; ++n) ref += double(At[n * ld + m]) * double(bk[n]);
            REQUIRE(std::abs(double(Ct[k * ld + m]) - ref) <= tolerance<T>(N));
          }
        }
      }
    }
  }
}

TEST_CASE("pack_a lays out blocks of gemm_mr rows, k-major, zero-padded") {
  const index_t M = kernels::gemm_mr + 3, K = 5, mr = kernels::gemm_mr;
  std::vector<float> A(static_cast<std::size_t>(M * K));
  for (index_t i = 0; i < M * K; ++i) A[static_cast<std::size_t>(i)] = float(i + 1);
  std::vector<float> Ap(static_cast<std::size_t>(kernels::packed_a_size(M, K)), -1.0f);
  REQUIRE(Ap.size() == static_cast<std::size_t>(2 * mr * K));
  kernels::pack_a(A.data(), K, 1, M, K, Ap.data());
  for (index_t blk = 0; blk < 2; ++blk)
    for (index_t k = 0; k < K; ++k)
      for (index_t r = 0; r < mr; ++r) {
        const index_t i = blk * mr + r;
        CHECK(Ap[static_cast<std::size_t>((blk * K + k) * mr + r)] ==
              (i < M ? A[static_cast<std::size_t>(i * K + k)] : 0.0f));
      }
}

TEST_CASE("The register blocks fit the register file of the target") {
  // Accumulators, the B loads and one broadcast of A must fit, or every FMA spills.
  CHECK(kernels::gemm_mr * kernels::gemm_nv + kernels::gemm_nv + 1 <= kernels::simd_registers);
}

TEST_CASE("conv2d_plan picks the algorithm from the geometry") {
  using kernels::Conv2DAlgorithm;
  const auto algorithm = [](index_t C, index_t size, index_t k, index_t stride, bool same) {
    Conv2D<float> conv(8, k, k,
                       same ? Conv2DOptions().same().strides(stride, stride)
                            : Conv2DOptions().strides(stride, stride));
    const Shape in{2, C, size, size};
    conv.setup(Span<const Shape>(&in, 1));
    return std::string(conv.algorithm());
  };
  CHECK(algorithm(16, 8, 1, 1, false) == "pointwise");
  CHECK(algorithm(32, 14, 3, 1, true) == "shifted");  // the default model's 14x14 and 7x7 stages
  CHECK(algorithm(32, 7, 3, 1, true) == "shifted");
  CHECK(algorithm(32, 28, 3, 2, true) == "shifted");  // stride 2, 'same'
  CHECK(algorithm(32, 4, 3, 1, true) == "im2col");    // 25 product columns per 16 pixels
  CHECK(algorithm(1, 28, 3, 1, true) == "im2col");    // 9 column rows: too few to pay
  CHECK(algorithm(32, 28, 1, 2, true) == "im2col");   // strided 1x1: a cheap subsampling copy
  CHECK(algorithm(8, 10, 3, 1, false) == "im2col");   // 'valid'
  // Winograd where C F / (C + F) >= 3 x the SIMD width (128 -> 128: 64, enough on every host).
  Conv2D<float> wide(128, 3, Conv2DOptions().same());
  const Shape in{2, 128, 7, 7};
  wide.setup(Span<const Shape>(&in, 1));
  CHECK(std::string(wide.algorithm()) == "winograd");
}

namespace {

// y[n][f][oh][ow] = init + bias[f] + sum_{c,i,j} w[f][c][i][j] x[n][c][oh - pt + i][ow - pl + j]
// (w rotated by 180 degrees when `rotate`), in double.
template <class T>
std::vector<double> naive_conv3x3(const std::vector<T>& x, index_t n,
                                  const kernels::WinogradShape& s, const std::vector<T>& w,
                                  bool rotate, const T* bias, const std::vector<T>& init) {
  std::vector<double> y(static_cast<std::size_t>(n * s.out_size()));
  for (index_t b = 0; b < n; ++b)
    for (index_t f = 0; f < s.filters; ++f)
      for (index_t oh = 0; oh < s.out_h; ++oh)
        for (index_t ow = 0; ow < s.out_w; ++ow) {
          const index_t at = ((b * s.filters + f) * s.out_h + oh) * s.out_w + ow;
          double acc = double(init[static_cast<std::size_t>(at)]) + (bias ? double(bias[f]) : 0.0);
          for (index_t c = 0; c < s.channels; ++c)
            for (index_t i = 0; i < 3; ++i)
              for (index_t j = 0; j < 3; ++j) {
                const index_t h = oh - s.pad_top + i, v = ow - s.pad_left + j;
                if (h < 0 || h >= s.height || v < 0 || v >= s.width) continue;
                const index_t q = rotate ? 8 - (i * 3 + j) : i * 3 + j;
                acc += double(w[static_cast<std::size_t>((f * s.channels + c) * 9 + q)]) *
                       double(x[static_cast<std::size_t>(
                           ((b * s.channels + c) * s.height + h) * s.width + v)]);
              }
          y[static_cast<std::size_t>(at)] = acc;
        }
  return y;
}

// The shapes both Winograd tests run: borders, channel and filter counts that leave partial
// blocks, many small images.
struct WinogradCase {
  const char* name;
  kernels::WinogradShape s;
  index_t n;
};
template <class T>
std::vector<WinogradCase> winograd_cases() {
  const index_t L = kernels::simd_width<T>();
  return {
      {"same, odd sizes", {3, 9, 10, 1, 1, 5, 9, 10}, 3},
      {"valid", {2, 8, 7, 0, 0, 4, 6, 5}, 2},
      {"padding 2 (an input gradient of a valid convolution)", {3, 5, 5, 2, 2, 2, 7, 7}, 2},
      {"one channel, 4x4, many images", {1, 4, 4, 1, 1, 1, 4, 4}, 7},
      {"4x4, many images, filters past a SIMD batch", {5, 4, 4, 1, 1, L + 3, 4, 4}, 7},
      {"partial row blocks", {17, 6, 6, 1, 1, kernels::gemm_mr * 2 + 1, 6, 6}, 2},
      {"1x1 output", {4, 3, 3, 0, 0, 3, 1, 1}, 5},
  };
}

}  // namespace

TEMPLATE_TEST_CASE("winograd_conv matches a direct 3x3 convolution", "", float, double) {
  using T = TestType;
  Rng rng(14);
  const index_t L = kernels::simd_width<T>(), panel = kernels::gemm_nv * L;
  for (const auto& c : winograd_cases<T>()) {
    const auto& s = c.s;
    for (index_t block : {panel, kernels::winograd_block<T>(s.channels, s.filters)}) {
      for (bool accumulate : {false, true}) {
        for (bool rotate : {false, true}) {
          INFO(c.name << ", block " << block << (accumulate ? ", accumulating" : "")
                      << (rotate ? ", rotated kernel" : ""));
          const auto x = random_vector<T>(rng, c.n * s.in_size());
          const auto w = random_vector<T>(rng, s.filters * s.channels * 9);
          const auto bias = random_vector<T>(rng, s.filters);
          auto y = accumulate ? random_vector<T>(rng, c.n * s.out_size())
                              : std::vector<T>(static_cast<std::size_t>(c.n * s.out_size()), T(0));
          const auto y0 = y;
          std::vector<T> up(
              static_cast<std::size_t>(kernels::winograd_packed_size(s.filters, s.channels)));
          kernels::winograd_pack_kernel(
              s.filters, s.channels,
              [&](index_t f, index_t ch) { return w.data() + (f * s.channels + ch) * 9; }, rotate,
              up.data());
          std::vector<T> work(static_cast<std::size_t>(
              kernels::winograd_slot_size<T>(block, std::max(s.channels, s.filters))));
          const T* b = accumulate ? nullptr : bias.data();
          if (accumulate) {
            kernels::winograd_conv<true>(x.data(), c.n, s, up.data(), b, block, y.data(),
                                         work.data());
          } else {
            kernels::winograd_conv<false>(x.data(), c.n, s, up.data(), b, block, y.data(),
                                          work.data());
          }
          const auto ref = naive_conv3x3(x, c.n, s, w, rotate, b, y0);
          double worst = 0;
          for (std::size_t i = 0; i < ref.size(); ++i)
            worst = std::max(worst, std::abs(double(y[i]) - ref[i]));
          // Values in [-1, 1] summed over 9 C terms; the transforms' coefficients amplify float
          // rounding about tenfold over a direct sum (see winograd.hpp).
          const double terms = double(9 * s.channels);
          CHECK(worst <= (std::is_same_v<T, float> ? 1e-5 : 1e-14) * std::sqrt(terms));
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("winograd_weight_grad matches a direct weight gradient", "", float, double) {
  using T = TestType;
  Rng rng(15);
  const index_t L = kernels::simd_width<T>(), panel = kernels::gemm_nv * L;
  for (const auto& c : winograd_cases<T>()) {
    const auto& s = c.s;
    for (index_t block : {panel, kernels::winograd_block<T>(s.channels, s.filters)}) {
      INFO(c.name << ", block " << block);
      const auto x = random_vector<T>(rng, c.n * s.in_size());
      const auto dy = random_vector<T>(rng, c.n * s.out_size());
      auto dw = random_vector<T>(rng, s.filters * s.channels * 9);
      const auto dw0 = dw;
      std::vector<T> work(static_cast<std::size_t>(
          kernels::winograd_weight_grad_work<T>(block, s.channels, s.filters)));
      std::vector<T> dut(
          static_cast<std::size_t>(kernels::winograd_grad_u_size<T>(s.channels, s.filters)), T(0));
      // Two calls (the images split 1 : n - 1) accumulate into one dUt.
      kernels::winograd_weight_grad(x.data(), dy.data(), 1, s, block, dut.data(), work.data());
      kernels::winograd_weight_grad(x.data() + s.in_size(), dy.data() + s.out_size(), c.n - 1, s,
                                    block, dut.data(), work.data());
      kernels::winograd_add_weight_grad(dut.data(), s.filters, s.channels, dw.data());
      double worst = 0;
      for (index_t f = 0; f < s.filters; ++f)
        for (index_t ch = 0; ch < s.channels; ++ch)
          for (index_t i = 0; i < 3; ++i)
            for (index_t j = 0; j < 3; ++j) {
              const auto at = static_cast<std::size_t>((f * s.channels + ch) * 9 + i * 3 + j);
              double ref = double(dw0[at]);
              for (index_t b = 0; b < c.n; ++b)
                for (index_t oh = 0; oh < s.out_h; ++oh)
                  for (index_t ow = 0; ow < s.out_w; ++ow) {
                    const index_t h = oh - s.pad_top + i, v = ow - s.pad_left + j;
                    if (h < 0 || h >= s.height || v < 0 || v >= s.width) continue;
                    ref += double(dy[static_cast<std::size_t>(
                               ((b * s.filters + f) * s.out_h + oh) * s.out_w + ow)]) *
                           double(x[static_cast<std::size_t>(
                               ((b * s.channels + ch) * s.height + h) * s.width + v)]);
                  }
              worst = std::max(worst, std::abs(double(dw[at]) - ref));
            }
      // Values in [-1, 1] summed over n x OH x OW terms, with the forward's amplification.
      const double terms = double(c.n * s.out_h * s.out_w);
      CHECK(worst <= (std::is_same_v<T, float> ? 1e-5 : 1e-14) * std::sqrt(terms));
    }
  }
}
