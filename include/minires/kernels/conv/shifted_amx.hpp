// Shifted convolutions (shifted.hpp: stride 1 or 2, 'same' output size) on AMX tiles in
// bfloat16, for MatmulPrecision::BF16: no column matrix, as in the fp32 shifted path. The group's
// images are copied into the same zero-padded planes (detail::to_planes, plan.plane elements per
// channel and stride phase), then rounded to bfloat16 in two layouts:
//   pairs   channels interleaved in pairs, [phase][c / 2][plane][c % 2]: a tile of 16 channel
//           pairs x 16 columns is one 2-D load at any tap's offset (the B operand, K = channels)
//   rows    [c][phase][plane] (the A operand of the weight gradient, K = columns)
// With Cp, Fp the channels and filters rounded up to 32, taps t of phase p(t) at offset o(t):
//   forward    out (Fp x cols) = Σ_t w_t (Fp x Cp) · pairs_p(t)[o(t) + n]    then y = out + b
//   backward   dwt_t (Cp x Fp) += rows_p(t)[o(t) + n] · dyᵀ                  dw = dwtᵀ
//              dx[phase p] += Σ_{t of p} w_tᵀ (Cp x Fp) · dy_pairs[o'(t) + n]  (the adjoint, as
//                                                                               the fp32 path)
// Every product sums in fp32; the operands are rounded to bfloat16 once each.
#pragma once

#include <algorithm>
#include <cstring>

#include "minires/core/shape.hpp"
#include "minires/kernels/amx_gemm.hpp"
#include "minires/kernels/conv/plan.hpp"
#include "minires/kernels/conv/shifted.hpp"

namespace minires::kernels {

#if MINIRES_AMX

namespace detail {

// The taps of a shifted convolution as the AMX path reads them: phase, forward offset and
// adjoint offset in a plane of the plan's layout.
struct AmxShiftedTaps {
  index_t count = 0, phase[conv2d_max_shifted_taps] = {}, forward[conv2d_max_shifted_taps] = {},
          adjoint[conv2d_max_shifted_taps] = {};
  AmxShiftedTaps(const ConvGeometry& g, const Conv2DPlan& plan) noexcept {
    const ShiftedTaps t(g);
    count = t.count;
    for (index_t q = 0; q < t.count; ++q) {
      phase[q] = t.phase[q];
      forward[q] = plan.origin + t.dr[q] * plan.row + t.dc[q];
      adjoint[q] = plan.origin - t.dr[q] * plan.row - t.dc[q];
    }
  }
};

// n floats to bf16 (round to nearest even).
inline void to_bf16(const float* x, index_t n, bf16_t* out) {
  index_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512i v = reinterpret_cast<__m512i>(
        _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i)));
    _mm512_storeu_si512(out + i, v);
  }
  if (i < n) {
    const __m512i v = reinterpret_cast<__m512i>(
        _mm512_cvtne2ps_pbh(load16(x + i + 16, n - i - 16), load16(x + i, n - i)));
    alignas(64) bf16_t tail[32];
    _mm512_store_si512(tail, v);
    std::memcpy(out + i, tail, sizeof(bf16_t) * static_cast<std::size_t>(n - i));
  }
}

// C (32 x 32 at c, row stride ldc floats) = init + Σ_{s < steps} A_s · B_s, where step s
// multiplies the 32 x 32 bf16 block of A at a + a_step(s) (row stride lda elements) by the
// 32 x 32 block of B at b + b_step(s) (VNNI pairs, row stride ldb elements). init: the tiles
// at c (accumulate), zero, or 16-float rows at bias (one per row of C, repeated).
template <class AStep, class BStep>
inline void amx_block_product(const bf16_t* a, index_t lda, AStep a_step, const bf16_t* b,
                              index_t ldb, BStep b_step, index_t steps, float* c, index_t ldc,
                              bool accumulate, const float* bias) {
  const index_t cs = ldc * 4, as = lda * 2, bs = ldb * 2;
  if (accumulate) {
    _tile_loadd(0, c, cs);
    _tile_loadd(1, c + 16, cs);
    _tile_loadd(2, c + 16 * ldc, cs);
    _tile_loadd(3, c + 16 * ldc + 16, cs);
  } else if (bias != nullptr) {
    _tile_loadd(0, bias, 64);
    _tile_loadd(1, bias, 64);
    _tile_loadd(2, bias + 256, 64);
    _tile_loadd(3, bias + 256, 64);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (index_t s = 0; s < steps; ++s) {
    const bf16_t* as0 = a + a_step(s);
    const bf16_t* bs0 = b + b_step(s);
    _tile_loadd(4, as0, as);
    _tile_loadd(5, as0 + 16 * lda, as);
    _tile_loadd(6, bs0, bs);
    _tile_loadd(7, bs0 + 32, bs);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, cs);
  _tile_stored(1, c + 16, cs);
  _tile_stored(2, c + 16 * ldc, cs);
  _tile_stored(3, c + 16 * ldc + 16, cs);
}

}  // namespace detail

// The forward's bf16 weights, wa (Fp x taps * Cp): element (f, t * Cp + c) = w[f][c][t]; and
// the input gradient's, one block per phase p with nt taps u (in AmxShiftedTaps order within
// the phase): (Cp x nt * Fp), element (c, u * Fp + f) = w[f][c][t_u].
inline void conv2d_amx_shifted_pack(const float* w, const ConvGeometry& g, index_t filters,
                                    const Conv2DPlan& plan, bool transposed, bf16_t* out) {
  const index_t C = g.channels, kt = g.kernel_h * g.kernel_w, K = g.col_rows();
  const index_t Cp = amx_pad(C), Fp = amx_pad(filters);
  if (!transposed) {
    amx_pack_rows_with(filters, kt * Cp, out, [&](index_t f, index_t k) {
      const index_t t = k / Cp, c = k % Cp;
      return c < C ? w[f * K + c * kt + t] : 0.0f;
    });
    return;
  }
  const ShiftedTaps taps(g);
  for (index_t p = 0; p < plan.phases; ++p) {
    index_t tap[conv2d_max_shifted_taps], nt = 0;
    for (index_t t = 0; t < taps.count; ++t)
      if (taps.phase[t] == p) tap[nt++] = t;
    if (nt == 0) continue;
    amx_pack_rows_with(C, nt * Fp, out, [&](index_t c, index_t k) {
      const index_t u = k / Fp, f = k % Fp;
      return f < filters ? w[f * K + c * kt + tap[u]] : 0.0f;
    });
    out += Cp * nt * Fp;
  }
}

// Forward of a group of gn images into y; wa: conv2d_amx_shifted_pack(transposed = false);
// bias_rows: Fp x 16 floats (b[f] repeated), or null for no bias; fx: the slot's fp32 planes
// (plan.col); out: Fp x Gp floats; bf: conv2d_amx_shifted_slot_floats floats.
inline void conv2d_amx_shifted_forward_group(const float* x, index_t gn, const ConvGeometry& g,
                                             const bf16_t* wa, const float* bias_rows,
                                             index_t filters, const Conv2DPlan& plan,
                                             const detail::AmxShiftedTaps& taps, float* y,
                                             float* fx, float* out, float* bf) {
  const index_t C = g.channels, Cp = amx_pad(C), Fp = amx_pad(filters), PL = plan.plane;
  const index_t cols = gn * plan.image_cols, Gp = amx_pad(cols), ph = plan.phases;
  detail::to_planes(x, gn, g.in_size(), C, g.height, g.width, g.stride_h, g.stride_w, plan, fx);
  auto* pairs = reinterpret_cast<bf16_t*>(bf);  // [phase][Cp / 2][PL][2]
  for (index_t p = 0; p < ph; ++p) amx_pack_pairs(fx + p * PL, ph * PL, C, PL, pairs + p * Cp * PL);
  detail::amx_configure();
  const index_t lda = taps.count * Cp, cblocks = Cp / amx_block;
  for (index_t n0 = 0; n0 < Gp; n0 += amx_block) {
    for (index_t m0 = 0; m0 < Fp; m0 += amx_block) {
      // Step s: tap s / cblocks, channels (s % cblocks) * 32.
      detail::amx_block_product(
          wa + m0 * lda, lda, [&](index_t s) { return (s / cblocks) * Cp + (s % cblocks) * 32; },
          pairs, 2 * PL,
          [&](index_t s) {
            const index_t t = s / cblocks, c0 = (s % cblocks) * 32;
            return taps.phase[t] * Cp * PL + (c0 / 2) * 2 * PL + 2 * (taps.forward[t] + n0);
          },
          taps.count * cblocks, out + m0 * Gp + n0, Gp, false,
          bias_rows != nullptr ? bias_rows + m0 * 16 : nullptr);
    }
  }
  detail::from_columns<false>(out, Gp, filters, {gn, filters * g.col_cols(), g.out_h, g.out_w},
                              plan, y);
}

// Gradients of a group of gn images: dwt (taps * Cp x Fp) += the weight gradient, dx (may be
// null) += the input gradient; wt: conv2d_amx_shifted_pack(transposed = true); fx, fdy: the
// slot's fp32 planes of x and dy (plan.col, plan.dy); out: Cp x Gp floats; bf as the forward.
inline void conv2d_amx_shifted_backward_group(const float* x, const float* dy, index_t gn,
                                              const ConvGeometry& g, const bf16_t* wt,
                                              index_t filters, const Conv2DPlan& plan,
                                              const detail::AmxShiftedTaps& taps, float* dx,
                                              float* dwt, float* fx, float* fdy, float* out,
                                              float* bf) {
  const index_t C = g.channels, Cp = amx_pad(C), Fp = amx_pad(filters), PL = plan.plane;
  const index_t cols = gn * plan.image_cols, Gp = amx_pad(cols), ph = plan.phases;
  const index_t in_size = g.in_size(), out_size = filters * g.col_cols();
  detail::to_planes(x, gn, in_size, C, g.height, g.width, g.stride_h, g.stride_w, plan, fx);
  detail::to_planes(dy, gn, out_size, filters, g.out_h, g.out_w, 1, 1, plan, fdy);
  auto* rows = reinterpret_cast<bf16_t*>(bf);  // [Cp][phase][PL]
  bf16_t* dy_pairs = rows + Cp * ph * PL;      // [Fp / 2][PL][2]
  bf16_t* dyt = dy_pairs + Fp * PL;            // [Gp / 2][Fp][2]
  detail::to_bf16(fx, C * ph * PL, rows);
  std::memset(rows + C * ph * PL, 0, sizeof(bf16_t) * static_cast<std::size_t>((Cp - C) * ph * PL));
  amx_pack_pairs_t(fdy + plan.origin, PL, Gp, filters, dyt);
  detail::amx_configure();
  // dwt_t (Cp x Fp) += rows_p(t)[o(t) + n] · dyᵀ, over the columns in steps of 32.
  for (index_t t = 0; t < taps.count; ++t) {
    const bf16_t* a = rows + taps.phase[t] * PL + taps.forward[t];
    for (index_t c0 = 0; c0 < Cp; c0 += amx_block) {
      for (index_t f0 = 0; f0 < Fp; f0 += amx_block) {
        detail::amx_block_product(
            a + c0 * ph * PL, ph * PL, [](index_t s) { return s * 32; }, dyt + 2 * f0, 2 * Fp,
            [&](index_t s) { return s * 32 * Fp; }, Gp / amx_block, dwt + (t * Cp + c0) * Fp + f0,
            Fp, true, nullptr);
      }
    }
  }
  if (dx == nullptr) return;
  amx_pack_pairs(fdy, PL, filters, PL, dy_pairs);
  const index_t fblocks = Fp / amx_block;
  const bf16_t* wp = wt;
  for (index_t p = 0; p < ph; ++p) {
    index_t tap[conv2d_max_shifted_taps], nt = 0;
    for (index_t t = 0; t < taps.count; ++t)
      if (taps.phase[t] == p) tap[nt++] = t;
    if (nt == 0) continue;  // no tap reads this phase (1x3 at stride 2: odd rows)
    const index_t lda = nt * Fp;
    for (index_t n0 = 0; n0 < Gp; n0 += amx_block) {
      for (index_t m0 = 0; m0 < Cp; m0 += amx_block) {
        detail::amx_block_product(
            wp + m0 * lda, lda, [&](index_t s) { return (s / fblocks) * Fp + (s % fblocks) * 32; },
            dy_pairs, 2 * PL,
            [&](index_t s) {
              const index_t u = s / fblocks, f0 = (s % fblocks) * 32;
              return (f0 / 2) * 2 * PL + 2 * (taps.adjoint[tap[u]] + n0);
            },
            nt * fblocks, out + m0 * Gp + n0, Gp, false, nullptr);
      }
    }
    const detail::ColumnsTarget phase{gn,         in_size,    g.height,       g.width,
                                      g.stride_h, g.stride_w, p / g.stride_w, p % g.stride_w};
    detail::from_columns<true>(out, Gp, C, phase, plan, dx);
    wp += Cp * lda;
  }
}

#endif  // MINIRES_AMX

}  // namespace minires::kernels
