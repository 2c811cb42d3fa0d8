// Shifted convolutions: a convolution with stride 1 or 2 whose output is the input size divided
// by the stride ('same' padding, e.g. 3x3 pad 1) needs no column matrix. A group of G images
// is copied into zero-padded planes, one per channel and stride phase (a, b) (the pixels
// x[sh*r + a][sw*s + b]; one phase at stride 1), the images stacked vertically on the output
// grid (OH x OW):
//   Wp  = OW + reach_w   (a row's pixels, then zeros: right padding of this row, left of the next)
//   gap = reach_h        (zero rows after every image)
//   xp[c][phase][origin + (g * (OH + gap) + r) * Wp + s] = x[g][c][sh*r + a][sw*s + b]
// where reach is how far a tap reaches outside the output pixel in the phase grid. Tap (i, j),
// at di = i - pad_top, dj = j - pad_left, reads phase (di mod sh, dj mod sw) moved by
// (dr, dc) = (floor(di / sh), floor(dj / sw)). Column n = (g * (OH + gap) + oh) * Wp + ow of the
// product stands for output pixel (oh, ow) of image g (columns with ow >= OW or oh >= OH are
// computed and dropped), and row (c, i, j) of the column matrix is a pointer into the planes,
// not a copy (gemm_packed_taps):
//   forward    y = w · shifted(xp)                  then copy the valid columns into y
//   backward   dw += dyp · shifted(xp)ᵀ             (gemm_atb_taps on dypᵀ; dyp: dy on the same
//                                                    grid, 0 on the dropped columns)
//              dx[phase] += w_phaseᵀ · shifted⁻(dyp) for each phase: the taps of that phase,
//                                                    reading dy moved by (-dr, -dc) (the adjoint)
// The dropped columns cost (OH + gap) * Wp / (OH * OW) more multiply-adds (1.15 at 14x14 with a
// 3x3 kernel, 1.31 at 7x7; at most 4/3 is allowed), far less than building and reading the
// kh*kw times larger columns.
#pragma once

#include <algorithm>

#include "minires/core/shape.hpp"
#include "minires/kernels/conv/plan.hpp"
#include "minires/kernels/packed_gemm.hpp"

namespace minires::kernels {

namespace detail {

// Copies images x[0..gn) (channels x H x W each, `image` elements apart) into the padded planes
// of the plan, one per channel and stride phase (at xp + (c * sh*sw + phase) * plan.plane),
// zeroing everything else.
template <class T>
void to_planes(const T* x, index_t gn, index_t image, index_t channels, index_t H, index_t W,
               index_t sh, index_t sw, const Conv2DPlan& plan, T* xp) {
  std::fill(xp, xp + channels * sh * sw * plan.plane, T(0));
  for (index_t c = 0; c < channels; ++c) {
    for (index_t a = 0; a < sh; ++a) {
      for (index_t b = 0; b < sw; ++b) {
        const index_t rows = (H - a + sh - 1) / sh, cols = (W - b + sw - 1) / sw;
        for (index_t j = 0; j < gn; ++j) {
          const T* src = x + j * image + c * H * W + a * W + b;
          T* dst = xp + ((c * sh + a) * sw + b) * plan.plane + plan.origin + j * plan.image_cols;
          for (index_t r = 0; r < rows; ++r) {
            const T* in = src + r * sh * W;
            T* out = dst + r * plan.row;
            if (sw == 1) {
              std::copy(in, in + cols, out);
            } else {
              for (index_t q = 0; q < cols; ++q) out[q] = in[q * sw];
            }
          }
        }
      }
    }
  }
}

// Where from_columns writes: gn images of planes H x W, `image` elements apart; the product's
// pixel (r, q) goes to the plane's pixel (sh * r + a, sw * q + b) (one stride phase (a, b)).
struct ColumnsTarget {
  index_t images = 1, image = 0, height = 0, width = 0;
  index_t stride_h = 1, stride_w = 1, phase_h = 0, phase_w = 0;
};

// The valid columns of a product (rows x gn * image_cols, row stride ld: pixel (r, q) of image j
// at column j * image_cols + r * Wp + q) into the planes of y described by t: assigned, or added
// with Accumulate.
template <bool Accumulate, class T>
void from_columns(const T* prod, index_t ld, index_t rows, const ColumnsTarget& t,
                  const Conv2DPlan& plan, T* y) {
  const index_t gn = t.images, image = t.image, H = t.height, W = t.width;
  const index_t sh = t.stride_h, sw = t.stride_w, a = t.phase_h, b = t.phase_w;
  const index_t pr = (H - a + sh - 1) / sh, pc = (W - b + sw - 1) / sw;
  for (index_t j = 0; j < gn; ++j) {
    for (index_t r = 0; r < rows; ++r) {
      const T* src = prod + r * ld + j * plan.image_cols;
      T* dst = y + j * image + r * H * W + a * W + b;
      for (index_t h = 0; h < pr; ++h) {
        const T* s = src + h * plan.row;
        T* d = dst + h * sh * W;
        for (index_t q = 0; q < pc; ++q) {
          if constexpr (Accumulate) {
            d[q * sw] += s[q];
          } else {
            d[q * sw] = s[q];
          }
        }
      }
    }
  }
}

// from_columns adding (accumulate) or assigning.
template <class T>
void from_columns(const T* prod, index_t ld, index_t rows, const ColumnsTarget& t,
                  const Conv2DPlan& plan, T* y, bool accumulate) {
  if (accumulate) {
    from_columns<true>(prod, ld, rows, t, plan, y);
  } else {
    from_columns<false>(prod, ld, rows, t, plan, y);
  }
}

// dst[n * ld_dst + r] = src[r * ld_src + n] for r < rows, n < cols, and 0 for rows <= r < ld_dst:
// the transpose of a rows x cols matrix, its rows padded with zeros to ld_dst.
template <class T>
void transpose_padded(const T* src, index_t ld_src, index_t rows, index_t cols, T* dst,
                      index_t ld_dst) {
  constexpr index_t block = 16;  // columns per pass: 16 rows of dst stay in L1
  for (index_t n0 = 0; n0 < cols; n0 += block) {
    const index_t n1 = std::min(cols, n0 + block);
    for (index_t r = 0; r < rows; ++r)
      for (index_t n = n0; n < n1; ++n) dst[n * ld_dst + r] = src[r * ld_src + n];
    for (index_t n = n0; n < n1; ++n)
      std::fill(dst + n * ld_dst + rows, dst + (n + 1) * ld_dst, T(0));
  }
}

// Offsets of a shifted convolution's taps in the planes. Forward and weight gradient: tap t at
// phase * plane + origin + dr * Wp + dc. Input gradient: the taps grouped by phase,
// order[begin[p] .. begin[p + 1]), each reading dy's plane at origin - dr * Wp - dc.
struct ShiftedOffsets {
  static constexpr index_t max_phases = 4;  // strides up to 2
  index_t forward[conv2d_max_shifted_taps] = {}, order[conv2d_max_shifted_taps] = {},
          adjoint[conv2d_max_shifted_taps] = {}, begin[max_phases + 1] = {};

  ShiftedOffsets(const ConvGeometry& g, const Conv2DPlan& plan) noexcept {
    if (!plan.shifted()) return;
    const ShiftedTaps t(g);
    index_t k = 0;
    for (index_t p = 0; p < t.phases; ++p) {
      begin[p] = k;
      for (index_t q = 0; q < t.count; ++q) {
        if (t.phase[q] != p) continue;
        order[k] = q;
        adjoint[k++] = plan.origin - t.dr[q] * plan.row - t.dc[q];
      }
    }
    begin[t.phases] = k;
    for (index_t q = 0; q < t.count; ++q)
      forward[q] = t.phase[q] * plan.plane + plan.origin + t.dr[q] * plan.row + t.dc[q];
  }
};

}  // namespace detail

// Packs, per stride phase p with taps order[begin[p] .. begin[p+1]) (nt of them), w_pᵀ (C x F*nt,
// element (c, f * nt + u) = w[f][c][order[begin[p] + u]]), the phases' blocks one after another
// in wtp (plan.packed_wt elements): the left operand of the input gradient.
template <class T>
void conv2d_shifted_pack_wt(const T* w, const ConvGeometry& g, index_t filters,
                            const Conv2DPlan& plan, const detail::ShiftedOffsets& offsets, T* wtp) {
  const index_t K = g.col_rows(), kt = g.kernel_h * g.kernel_w;
  T* out = wtp;
  for (index_t p = 0; p < plan.phases; ++p) {
    const index_t* taps = offsets.order + offsets.begin[p];
    const index_t nt = offsets.begin[p + 1] - offsets.begin[p];
    pack_a_with(
        g.channels, filters * nt,
        [&](index_t c, index_t k) { return w[(k / nt) * K + c * kt + taps[k % nt]]; }, out);
    out += packed_a_size(g.channels, filters * nt);
  }
}

// Forward of a group of gn images x (g.in_size() apart) into y (filters * P apart): wp is
// pack_a(w); col the slot's workspace (plan.col + plan.dy + plan.dcol elements).
template <class T>
void conv2d_shifted_forward_group(const T* x, index_t gn, const ConvGeometry& g, const T* wp,
                                  const T* b, index_t filters, const Conv2DPlan& plan,
                                  const detail::ShiftedOffsets& offsets, T* y, T* col) {
  const index_t in_size = g.in_size(), out_size = filters * g.col_cols();
  const index_t cols = gn * plan.image_cols;
  T* prod = col + plan.col + plan.dy;
  detail::to_planes(x, gn, in_size, g.channels, g.height, g.width, g.stride_h, g.stride_w, plan,
                    col);
  gemm_packed_taps(wp, filters, g.channels, g.kernel_h * g.kernel_w, offsets.forward, col,
                   plan.phases * plan.plane, cols, prod, cols, b);
  detail::from_columns<false>(prod, cols, filters, {gn, out_size, g.out_h, g.out_w}, plan, y);
}

// Gradients of a group of gn images: dwt (K x round_up(F, SIMD width), dwᵀ) += the group's
// weight gradient, dx (may be null) += its input gradient (= when not accumulate_dx: only where
// conv2d_writes_dx, every phase then being written). wtp: conv2d_shifted_pack_wt; work: the
// slot's workspace (plan.col + plan.dy + plan.dcol elements).
template <class T>
void conv2d_shifted_backward_group(const T* x, const T* dy, index_t gn, const ConvGeometry& g,
                                   const T* wtp, index_t filters, const Conv2DPlan& plan,
                                   const detail::ShiftedOffsets& offsets, T* dx, T* dwt, T* work,
                                   bool accumulate_dx = true) {
  const index_t in_size = g.in_size(), out_size = filters * g.col_cols();
  const index_t kt = g.kernel_h * g.kernel_w, fpad = round_up(filters, simd_width<T>());
  const index_t pcols = gn * plan.image_cols;
  T* col = work;
  T* dyg = col + plan.col;
  T* dcol = dyg + plan.dy;
  detail::to_planes(x, gn, in_size, g.channels, g.height, g.width, g.stride_h, g.stride_w, plan,
                    col);
  detail::to_planes(dy, gn, out_size, filters, g.out_h, g.out_w, 1, 1, plan, dyg);
  detail::transpose_padded(dyg + plan.origin, plan.plane, filters, pcols, dcol, fpad);
  gemm_atb_taps(dcol, fpad, pcols, col, plan.phases * plan.plane, g.channels, kt, offsets.forward,
                dwt);
  if (dx == nullptr) return;
  const T* wt = wtp;
  for (index_t p = 0; p < plan.phases; ++p) {
    const index_t nt = offsets.begin[p + 1] - offsets.begin[p];
    if (nt == 0) continue;  // no tap reads this phase (1x3 at stride 2: odd rows)
    gemm_packed_taps(wt, g.channels, filters, nt, offsets.adjoint + offsets.begin[p], dyg,
                     plan.plane, pcols, dcol, pcols);
    const detail::ColumnsTarget phase{gn,         in_size,    g.height,       g.width,
                                      g.stride_h, g.stride_w, p / g.stride_w, p % g.stride_w};
    detail::from_columns(dcol, pcols, g.channels, phase, plan, dx, accumulate_dx);
    wt += packed_a_size(g.channels, filters * nt);
  }
}

}  // namespace minires::kernels
