// Shifted convolutions (shifted.hpp: stride 1 or 2, 'same' output size) on AMX tiles in
// bfloat16, for MatmulPrecision::BF16: no column matrix, as in the fp32 shifted path. The group's
// images go into the same zero-padded planes (detail::to_planes' layout, plan.plane elements per
// channel and stride phase), rounded to bfloat16 row by row as they are copied, in two layouts:
//   pairs   channels interleaved in pairs, [phase][c / 2][plane][c % 2]: a tile of 16 channel
//           pairs x 16 columns is one 2-D load at any tap's offset (the B operand, K = channels)
//   rows    [c][phase][plane] (the A operand of the weight gradient, K = columns)
// dy goes into pairs the same way (one phase: dy_pairs), and the weight gradient's B operand
// dyᵀ (K = columns) is transposed from dy_pairs in bf16 (amx_transpose_pairs).
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

// One row of a plane of to_planes' layout, for G channels (1 or 2): pixels q < n of the row are
// in[k][sw * q + b] (W values in the input row), the rest of the plan.row values are zero; a
// null in[k] (a channel past C, a gap row) is all zero.
template <index_t G>
struct PlaneRow {
  const float* in[G] = {};
  index_t W = 0, sw = 1, b = 0, n = 0;

  // Values [q, q + 16) of channel k's row (masked loads: nothing past the input row is read).
  __m512 load(index_t k, index_t q) const noexcept {
    const float* r = in[k];
    if (r == nullptr || q >= n) return _mm512_setzero_ps();
    if (sw == 1) return load16(r + q, n - q);
    const __m512i pick = _mm512_add_epi32(
        _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0),
        _mm512_set1_epi32(static_cast<int>(b)));
    const __m512 lo = load16(r + 2 * q, W - 2 * q), hi = load16(r + 2 * q + 16, W - 2 * q - 16);
    const __m512 v = _mm512_permutex2var_ps(lo, pick, hi);
    return n - q >= 16 ? v : _mm512_maskz_mov_ps(static_cast<__mmask16>((1u << (n - q)) - 1), v);
  }
};

// Images that go into planes of to_planes' layout: C channels of H x W at stride (sh, sw),
// `image` floats apart; x (the convolution's input) or dy (its output gradient, stride 1).
struct PlaneSource {
  index_t image = 0, C = 0, H = 0, W = 0, sh = 1, sw = 1;
  static PlaneSource input(const ConvGeometry& g) noexcept {
    return {g.in_size(), g.channels, g.height, g.width, g.stride_h, g.stride_w};
  }
  static PlaneSource output(const ConvGeometry& g, index_t filters) noexcept {
    return {filters * g.col_cols(), filters, g.out_h, g.out_w, 1, 1};
  }
  index_t phases() const noexcept { return sh * sw; }
};

// Calls emit(c0, p, at, row) for every row of the planes of images x[0..gn) of src, G channels
// at a time (c0, c0 + 1, ...), phase p, the row at origin + at of the plane. The caller zeroes
// the planes before origin and after the group's images.
template <index_t G, class Emit>
void for_plane_rows(const float* x, index_t gn, const PlaneSource& src, const Conv2DPlan& plan,
                    Emit&& emit) {
  const index_t Wp = plan.row, block_rows = plan.image_cols / Wp;  // OH + gap rows per image
  const index_t C = src.C, H = src.H, W = src.W, sh = src.sh, sw = src.sw;
  for (index_t c0 = 0; c0 < C; c0 += G) {
    for (index_t a = 0; a < sh; ++a) {
      const index_t in_rows = (H - a + sh - 1) / sh;
      for (index_t b = 0; b < sw; ++b) {
        PlaneRow<G> row;
        row.W = W;
        row.sw = sw;
        row.b = b;
        row.n = (W - b + sw - 1) / sw;
        for (index_t j = 0; j < gn; ++j) {
          for (index_t r = 0; r < block_rows; ++r) {
            for (index_t k = 0; k < G; ++k) {
              row.in[k] = r < in_rows && c0 + k < C
                              ? x + j * src.image + (c0 + k) * H * W + (a + r * sh) * W
                              : nullptr;
            }
            emit(c0, a * sw + b, j * plan.image_cols + r * Wp, row);
          }
        }
      }
    }
  }
}

inline void zero_bf16(bf16_t* p, index_t n) {
  std::memset(p, 0, sizeof(bf16_t) * static_cast<std::size_t>(n));
}

// The planes of images x[0..gn) of src as a B operand (K = channels): bf16 channel pairs
// [phase][Cp / 2][plane][2] (what to_planes then amx_pack_pairs of each phase give).
inline void to_pairs(const float* x, index_t gn, const PlaneSource& src, const Conv2DPlan& plan,
                     bf16_t* pairs) {
  const index_t C = src.C, Cp = amx_pad(C), PL = plan.plane, ph = src.phases();
  const index_t used = plan.origin + gn * plan.image_cols, Wp = plan.row;
  for (index_t p = 0; p < ph; ++p) {
    for (index_t i = 0; i < Cp / 2; ++i) {
      bf16_t* plane = pairs + p * Cp * PL + i * 2 * PL;
      if (2 * i >= C) {
        zero_bf16(plane, 2 * PL);
      } else {
        zero_bf16(plane, 2 * plan.origin);
        zero_bf16(plane + 2 * used, 2 * (PL - used));
      }
    }
  }
  for_plane_rows<2>(x, gn, src, plan,
                    [&](index_t c0, index_t p, index_t at, const PlaneRow<2>& row) {
                      bf16_t* o = pairs + p * Cp * PL + c0 * PL + 2 * (plan.origin + at);
                      for (index_t q = 0; q < Wp; q += 16)
                        amx_store_pairs(row.load(0, q), row.load(1, q), Wp - q, o + 2 * q);
                    });
}

// x's planes as the weight gradient's A operand: bf16 rows [Cp][phase][plane] (to_planes then
// rounding to bf16, channels C .. Cp zero), from images x[0..gn).
inline void to_rows(const float* x, index_t gn, const ConvGeometry& g, const Conv2DPlan& plan,
                    bf16_t* rows) {
  const index_t C = g.channels, Cp = amx_pad(C), PL = plan.plane, ph = plan.phases;
  const index_t used = plan.origin + gn * plan.image_cols, Wp = plan.row;
  for (index_t k = 0; k < Cp * ph; ++k) {
    bf16_t* plane = rows + k * PL;
    if (k < C * ph) {
      zero_bf16(plane, plan.origin);
      zero_bf16(plane + used, PL - used);
    } else {  // channels past C
      zero_bf16(plane, PL);
    }
  }
  for_plane_rows<1>(x, gn, PlaneSource::input(g), plan,
                    [&](index_t c, index_t p, index_t at, const PlaneRow<1>& row) {
                      bf16_t* o = rows + (c * ph + p) * PL + plan.origin + at;
                      for (index_t q = 0; q < Wp; q += 16) {
                        const __m256i v =
                            reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(row.load(0, q)));
                        const index_t m = std::min<index_t>(16, Wp - q);
                        _mm256_mask_storeu_epi16(o + q, static_cast<__mmask16>((1u << m) - 1), v);
                      }
                    });
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
// bias_rows: Fp x 16 floats (b[f] repeated), or null for no bias; out: Fp x Gp floats; bf:
// conv2d_amx_shifted_slot_floats floats.
inline void conv2d_amx_shifted_forward_group(const float* x, index_t gn, const ConvGeometry& g,
                                             const bf16_t* wa, const float* bias_rows,
                                             index_t filters, const Conv2DPlan& plan,
                                             const detail::AmxShiftedTaps& taps, float* y,
                                             float* out, float* bf) {
  const index_t C = g.channels, Cp = amx_pad(C), Fp = amx_pad(filters), PL = plan.plane;
  const index_t cols = gn * plan.image_cols, Gp = amx_pad(cols);
  auto* pairs = reinterpret_cast<bf16_t*>(bf);  // [phase][Cp / 2][PL][2]
  detail::to_pairs(x, gn, detail::PlaneSource::input(g), plan, pairs);
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
// null) += the input gradient (= when not accumulate_dx: only where conv2d_writes_dx); wt:
// conv2d_amx_shifted_pack(transposed = true); out: Cp x Gp floats; bf as the forward.
inline void conv2d_amx_shifted_backward_group(const float* x, const float* dy, index_t gn,
                                              const ConvGeometry& g, const bf16_t* wt,
                                              index_t filters, const Conv2DPlan& plan,
                                              const detail::AmxShiftedTaps& taps, float* dx,
                                              float* dwt, float* out, float* bf,
                                              bool accumulate_dx = true) {
  const index_t C = g.channels, Cp = amx_pad(C), Fp = amx_pad(filters), PL = plan.plane;
  const index_t cols = gn * plan.image_cols, Gp = amx_pad(cols), ph = plan.phases;
  const index_t in_size = g.in_size();
  auto* rows = reinterpret_cast<bf16_t*>(bf);  // [Cp][phase][PL]
  bf16_t* dy_pairs = rows + Cp * ph * PL;      // [Fp / 2][PL][2]
  bf16_t* dyt = dy_pairs + Fp * PL;            // [Gp / 2][Fp][2]
  detail::to_rows(x, gn, g, plan, rows);
  detail::to_pairs(dy, gn, detail::PlaneSource::output(g, filters), plan, dy_pairs);
  amx_transpose_pairs(dy_pairs + 2 * plan.origin, PL, Fp, Gp, dyt);
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
    detail::from_columns(out, Gp, C, phase, plan, dx, accumulate_dx);
    wp += Cp * lda;
  }
}

#endif  // MINIRES_AMX

}  // namespace minires::kernels
