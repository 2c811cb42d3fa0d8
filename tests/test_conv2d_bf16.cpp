// MatmulPrecision::BF16: the AMX bfloat16 convolutions (kernels/conv/im2col_amx.hpp) against
// the direct loops evaluated in double on bfloat16-rounded operands, and the fp32 fallback where
// the build or the CPU has no AMX.
#include <catch2/catch.hpp>

#include <minires/kernels/amx_gemm.hpp>
#include <minires/kernels/naive/conv2d.hpp>
#include <minires/layers/conv2d.hpp>

#include "test_util.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

using namespace minires;

namespace {

// Sets the process-wide precision for one scope.
struct PrecisionScope {
  explicit PrecisionScope(MatmulPrecision p) { set_matmul_precision(p); }
  ~PrecisionScope() { set_matmul_precision(MatmulPrecision::Highest); }
  PrecisionScope(const PrecisionScope&) = delete;
  PrecisionScope& operator=(const PrecisionScope&) = delete;
};

// x rounded to bfloat16, to nearest even (vcvtneps2bf16 on finite, normal values).
double bf16_round(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  float r;
  std::memcpy(&r, &u, sizeof r);
  return r;
}

std::vector<double> rounded(const Tensor<float>& t) {
  std::vector<double> r(static_cast<std::size_t>(t.size()));
  for (index_t i = 0; i < t.size(); ++i) r[static_cast<std::size_t>(i)] = bf16_round(t[i]);
  return r;
}

// Largest |a - b| over the largest |b|: the products' fp32 sums against exact ones.
double rel_diff(const Tensor<float>& a, const std::vector<double>& b) {
  REQUIRE(static_cast<std::size_t>(a.size()) == b.size());
  double m = 0, scale = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    m = std::max(m, std::abs(double(a[static_cast<index_t>(i)]) - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return m / scale;
}

struct Bf16Case {
  const char* name;
  Shape input;  // one image
  index_t filters, kernel;
  Conv2DOptions options;
  const char* algorithm;  // with AMX
};

}  // namespace

TEST_CASE("AMX bf16 products match exact sums of the rounded operands") {
  using namespace minires::kernels;
  if (!amx_available()) {
    // Without AMX the planner must never pick the AMX path.
    const ConvGeometry g = ConvGeometry::keras(32, 7, 7, 3, 3, 1, 1, Padding::Same);
    CHECK(conv2d_plan<float>(g, 32, MatmulPrecision::BF16).algorithm != Conv2DAlgorithm::AmxIm2col);
    CHECK(conv2d_plan<float>(g, 32, MatmulPrecision::BF16).algorithm !=
          Conv2DAlgorithm::AmxShifted);
    return;
  }
#if MINIRES_AMX
  Rng rng(7);
  const index_t shapes[][3] = {{32, 768, 288}, {50, 37, 71}, {1, 1, 1}, {64, 33, 640}};
  for (const auto& s : shapes) {
    const index_t M = s[0], N = s[1], K = s[2];
    const index_t Mp = amx_pad(M), Np = amx_pad(N), Kp = amx_pad(K);
    Tensor<float> a(Shape{M, K}), b(Shape{K, N}), bt(Shape{N, K});
    a.uniform(rng, -1.0f, 1.0f);
    b.uniform(rng, -1.0f, 1.0f);
    for (index_t k = 0; k < K; ++k)
      for (index_t n = 0; n < N; ++n) bt[n * K + k] = b[k * N + n];
    std::vector<bf16_t> ap(static_cast<std::size_t>(Mp * Kp)),
        bp(static_cast<std::size_t>(Kp * Np)), btp(bp.size()), btpairs(bp.size());
    std::vector<float> c(static_cast<std::size_t>(Mp * Np), 5.0f), ct(c.size(), 1.0f);
    amx_pack_rows(a.data(), K, 1, M, K, ap.data());
    amx_pack_pairs(b.data(), N, K, N, bp.data());
    amx_pack_pairs(bt.data(), K, N, K, btpairs.data());                // bᵀ's pairs
    amx_transpose_pairs(btpairs.data(), Kp, Np, Kp, btp.data());       // b's, from them
    amx_gemm(ap.data(), bp.data(), Mp, Np, Kp, c.data(), Np, false);   // overwrites the 5s
    amx_gemm(ap.data(), btp.data(), Mp, Np, Kp, ct.data(), Np, true);  // adds to the 1s
    const auto ar = rounded(a), br = rounded(b);
    double err = 0, pad = 0;
    for (index_t i = 0; i < Mp; ++i) {
      for (index_t n = 0; n < Np; ++n) {
        const float got = c[static_cast<std::size_t>(i * Np + n)];
        const float got_t = ct[static_cast<std::size_t>(i * Np + n)];
        if (i >= M || n >= N) {  // padding: zero products
          pad = std::max({pad, std::abs(double(got)), std::abs(double(got_t) - 1.0)});
          continue;
        }
        double r = 0;
        for (index_t k = 0; k < K; ++k)
          r += ar[static_cast<std::size_t>(i * K + k)] * br[static_cast<std::size_t>(k * N + n)];
        err = std::max({err, std::abs(got - r), std::abs(got_t - 1.0 - r)});
      }
    }
    INFO("M=" << M << " N=" << N << " K=" << K);
    CHECK(err <= 1e-6 * double(K));
    CHECK(pad == 0.0);
  }
#endif
}

TEST_CASE("Conv2D under MatmulPrecision::BF16 matches direct loops on rounded operands") {
  const std::vector<Bf16Case> cases = {
      {"3x3 same 32->32 @14", Shape{1, 32, 14, 14}, 32, 3, Conv2DOptions().same().no_bias(),
       "amx-shifted"},
      {"3x3 same 40->24 @7 (channels and filters padded)", Shape{1, 40, 7, 7}, 24, 3,
       Conv2DOptions().same(), "amx-shifted"},
      {"3x3 stride 2 32->64 @14", Shape{1, 32, 14, 14}, 64, 3, Conv2DOptions().strides(2).same(),
       "amx-shifted"},
      {"3x3 stride 2 48->16 @13 (odd size)", Shape{1, 48, 13, 13}, 16, 3,
       Conv2DOptions().strides(2).same(), "amx-shifted"},
      {"5x5 same 32->32 @14", Shape{1, 32, 14, 14}, 32, 5, Conv2DOptions().same(), "amx-shifted"},
      {"1x1 stride 2 32->64 @7", Shape{1, 32, 7, 7}, 64, 1, Conv2DOptions().strides(2),
       "amx-im2col"},
      {"1x1 stride 1 32->40 @5", Shape{1, 32, 5, 5}, 40, 1, Conv2DOptions(), "amx-shifted"},
      {"3x3 stride 3 32->32 @9", Shape{1, 32, 9, 9}, 32, 3, Conv2DOptions().strides(3),
       "amx-im2col"},
      {"3x3 valid 5->7 @9 (45 rows, 7 filters)", Shape{1, 5, 9, 9}, 7, 3, Conv2DOptions(),
       "amx-im2col"},
      {"3x3 same 128->128 @4", Shape{1, 128, 4, 4}, 128, 3, Conv2DOptions().same(), "amx-shifted"},
      {"3x3 same 3->8 @6 (27 rows: fp32)", Shape{1, 3, 6, 6}, 8, 3, Conv2DOptions().same(),
       "(fp32)"},
  };
  for (const auto& c : cases) {
    SECTION(c.name) {
      const index_t batch = 9;  // groups of several images, and a short last group
      Rng rng(11);
      Conv2D<float> conv(c.filters, c.kernel, c.options);
      const Shape in = c.input.with_batch(batch);
      {
        PrecisionScope bf16(MatmulPrecision::BF16);
        conv.setup(Span<const Shape>(&in, 1));
      }
      // The setting is read at setup: the layer keeps it after the scope.
      const kernels::ConvGeometry& g = conv.geometry();
      const bool amx = kernels::amx_available() && g.col_rows() >= kernels::amx_block;
      if (amx) CHECK(std::string(conv.algorithm()) == c.algorithm);
      CHECK((std::string(conv.algorithm()).rfind("amx-", 0) == 0) == amx);
      conv.init(rng);
      if (conv.options().use_bias) conv.bias.uniform(rng, -1.0f, 1.0f);
      const Shape out = conv.output_shape(Span<const Shape>(&in, 1));
      const auto x = minires::test::random_tensor<float>(rng, in);
      Tensor<float> y(out);
      const Tensor<float>* xs[] = {&x};
      conv.forward(Span<const Tensor<float>* const>(xs), y, Mode::Train);

      // The reference: exact sums of the operands the path multiplies (bf16 under AMX).
      const auto as_used = [&](const Tensor<float>& t) {
        return amx ? rounded(t) : minires::test::to_double(t);
      };
      const double tol = 1e-5;
      const auto xd = as_used(x), wd = as_used(conv.kernel);
      const auto bd = minires::test::to_double(conv.bias);
      const double* b = conv.options().use_bias ? bd.data() : nullptr;
      std::vector<double> yd(static_cast<std::size_t>(out.size()));
      kernels::naive::conv2d_forward(xd.data(), batch, g, wd.data(), b, conv.filters(), yd.data());
      CHECK(rel_diff(y, yd) <= tol);

      // Backward into pre-filled gradients (the layer accumulates).
      const auto dy = minires::test::random_tensor<float>(rng, out);
      auto dx = minires::test::random_tensor<float>(rng, in);
      conv.dkernel.uniform(rng, -1.0f, 1.0f);
      if (b != nullptr) conv.dbias.uniform(rng, -1.0f, 1.0f);
      const auto dx0 = minires::test::to_double(dx), dw0 = minires::test::to_double(conv.dkernel),
                 db0 = minires::test::to_double(conv.dbias);
      Tensor<float>* dxs[] = {&dx};
      conv.backward(Span<const Tensor<float>* const>(xs), y, dy, Span<Tensor<float>* const>(dxs));
      // The gradients alone (exact sums), then the pre-filled values added.
      std::vector<double> dxd(dx0.size(), 0.0), dwd(dw0.size(), 0.0), dbd(db0.size(), 0.0);
      const auto dyd = as_used(dy);
      kernels::naive::conv2d_backward(xd.data(), dyd.data(), batch, g, wd.data(), conv.filters(),
                                      dxd.data(), dwd.data(), b != nullptr ? dbd.data() : nullptr);
      const auto plus = [](std::vector<double> v, const std::vector<double>& base) {
        for (std::size_t i = 0; i < v.size(); ++i) v[i] += base[i];
        return v;
      };
      CHECK(rel_diff(dx, plus(dxd, dx0)) <= tol);
      CHECK(rel_diff(conv.dkernel, plus(dwd, dw0)) <= tol);
      if (b != nullptr) {
        // The bias gradient sums dy in fp32 on every path.
        const auto dyf = minires::test::to_double(dy);
        std::vector<double> dbf(db0.size(), 0.0), dxs_unused(dx0.size(), 0.0),
            dws_unused(dw0.size(), 0.0);
        kernels::naive::conv2d_backward(xd.data(), dyf.data(), batch, g, wd.data(), conv.filters(),
                                        dxs_unused.data(), dws_unused.data(), dbf.data());
        CHECK(rel_diff(conv.dbias, plus(dbf, db0)) <= tol);
      }
    }
  }
}
