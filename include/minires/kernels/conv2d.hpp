// 2-D convolution (cross-correlation, as Keras/TensorFlow) of NCHW images: shifted
// convolutions (no im2col), im2col + GEMM, or a pointwise product, chosen per geometry.
//
//   x: (N, C, H, W)   w: (F, C, kh, kw)   b: (F,)   y: (N, F, OH, OW)
//   y[n,f,oh,ow] = b[f] +
//                  sum_{c,i,j} w[f,c,i,j] * x[n, c, oh*sh - pad_top + i, ow*sw - pad_left + j]
//
// With col = im2col(x[n]) of shape (K, P) = (C*kh*kw, OH*OW) and w viewed as (F, K):
//   forward    y[n]   = w · col + b
//   backward   dw    += dy[n] · colᵀ      db += rowsum(dy[n])      dx[n] += col2im(wᵀ · dy[n])
//
// General convolutions run on groups of G images (G from conv2d_plan: enough columns to fill
// the SIMD lanes and the micro-kernel, few enough to keep the columns in L2): the group's
// columns sit side by side in one (K, G*P) matrix, w and wᵀ are packed once per call, and
// gemm_packed_a writes each image's output plane in place. The weight gradient is one Eigen
// product per group over G*P columns.
// A pointwise convolution (1x1, stride 1, no padding) has col == x[n]: it skips im2col/col2im and
// is one Eigen GEMM per image directly on the NCHW data.
//
// A convolution with stride 1 or 2 whose output is the input size divided by the stride ('same'
// padding, e.g. 3x3 pad 1) needs no columns at all ("shifted" convolutions). A group of G images
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
//
// The batched kernels split the batch into `slots` contiguous ranges (the caller fixes `slots`,
// usually the thread count planned at setup) and run the slots in one OpenMP parallel region of
// at most `slots` threads (one thread below ~1M multiply-adds); the GEMMs run single-threaded
// inside it. Each slot owns its buffers; in backward, slot 0 accumulates into dw/db directly and
// slots 1.. into zeroed partials that are then added in slot order. The arithmetic therefore
// depends on `slots` only, not on how many threads run them: results are bit-identical from run
// to run.
#pragma once

#include <Eigen/Core>

#include <algorithm>

#include "minires/core/parallel.hpp"
#include "minires/core/shape.hpp"
#include "minires/kernels/gemm.hpp"
#include "minires/kernels/im2col.hpp"
#include "minires/kernels/packed_gemm.hpp"

namespace minires::kernels {

// True when the convolution is a plain matrix product per image (1x1, stride 1, no padding).
inline bool conv2d_is_pointwise(const ConvGeometry& g) noexcept {
  return g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 &&
         g.pad_top == 0 && g.pad_bottom == 0 && g.pad_left == 0 && g.pad_right == 0;
}

// Largest kernel (kh * kw) of a shifted convolution; larger ones take im2col.
inline constexpr index_t conv2d_max_shifted_taps = 64;

// Smallest column count (C * kh * kw) of a shifted convolution: below it (a first layer on one
// channel) copying the product into the output costs more than im2col saves.
inline constexpr index_t conv2d_min_shifted_rows = 32;

// Where each tap of a shifted convolution reads (see the header comment), and how far the taps
// reach around an output pixel in the phase grid.
struct ShiftedTaps {
  index_t count = 0, phases = 1;
  index_t phase[conv2d_max_shifted_taps] = {}, dr[conv2d_max_shifted_taps] = {},
          dc[conv2d_max_shifted_taps] = {};
  index_t reach_h = 0, reach_w = 0;

  explicit ShiftedTaps(const ConvGeometry& g) noexcept {
    const auto floor_div = [](index_t v, index_t d) { return (v - ((v % d) + d) % d) / d; };
    count = std::min(g.kernel_h * g.kernel_w, conv2d_max_shifted_taps);
    phases = g.stride_h * g.stride_w;
    for (index_t t = 0; t < count; ++t) {
      const index_t di = t / g.kernel_w - g.pad_top, dj = t % g.kernel_w - g.pad_left;
      dr[t] = floor_div(di, g.stride_h);
      dc[t] = floor_div(dj, g.stride_w);
      phase[t] = (di - dr[t] * g.stride_h) * g.stride_w + (dj - dc[t] * g.stride_w);
      reach_h = std::max({reach_h, dr[t], -dr[t]});
      reach_w = std::max({reach_w, dc[t], -dc[t]});
    }
  }
};

// True when the convolution runs "shifted" (see the header comment): stride 1 or 2, output the
// input size divided by the stride (rounded up), a kernel larger than 1x1 (a strided 1x1
// convolution's im2col is a cheap subsampling copy), and at most 4/3 as many product columns
// as output pixels (4x4 outputs of a 3x3 kernel would compute 25 columns per 16 pixels: im2col
// is faster there).
inline bool conv2d_is_shifted(const ConvGeometry& g) noexcept {
  const auto ceil_div = [](index_t v, index_t d) { return (v + d - 1) / d; };
  const index_t taps = g.kernel_h * g.kernel_w;
  if (g.stride_h > 2 || g.stride_w > 2 || g.out_h != ceil_div(g.height, g.stride_h) ||
      g.out_w != ceil_div(g.width, g.stride_w) || taps == 1 || taps > conv2d_max_shifted_taps ||
      g.col_rows() < conv2d_min_shifted_rows) {
    return false;
  }
  const ShiftedTaps t(g);
  const index_t cols = (g.out_h + t.reach_h) * (g.out_w + t.reach_w);
  return 3 * cols <= 4 * g.out_h * g.out_w;
}

// How conv2d_forward/backward use their workspace (sizes in elements).
struct Conv2DPlan {
  index_t group = 1;      // images per GEMM
  index_t packed_w = 0;   // pack_a(w), F x K
  index_t packed_wt = 0;  // pack_a(wᵀ), K x F (shifted: each phase's w_phaseᵀ, C x F*taps)
  index_t col = 0;        // per slot: columns of a group, K x G*P (+ SIMD overrun)
                          // (shifted: the padded planes of x, C x phases x plane)
  index_t dy = 0;         // per slot: the group's output gradient, F x G*P (+ overrun)
                          // (shifted: the padded planes of dy, F x plane)
  index_t dcol = 0;       // per slot: wᵀ · dy, K x G*P (shifted: the product, C x cols, and
                          // before it dypᵀ, cols x round_up(F, SIMD width))
  index_t acc = 0;        // per slot, shifted only: dwᵀ of the slot's images, K x round_up(F)
  index_t partial = 0;    // per slot after the first: dw (F x K) then db (F)
  // Shifted convolutions (all 0 otherwise): the padded layout of the header comment.
  index_t row = 0, gap = 0, origin = 0;  // Wp, gap, offset of the first pixel
  index_t image_cols = 0;                // (OH + gap) * Wp: product columns per image
  index_t plane = 0;                     // elements per plane (channel and phase) of a group
  index_t phases = 1;                    // stride_h * stride_w

  bool shifted() const noexcept { return image_cols > 0; }  // conv2d_is_shifted, as planned

  index_t slot_size() const noexcept { return col + dy + dcol + acc; }
  index_t size(int slots) const noexcept {
    return packed_w + packed_wt + slots * slot_size() + (slots - 1) * partial;
  }
};

template <class T>
Conv2DPlan conv2d_plan(const ConvGeometry& g, index_t filters) {
  Conv2DPlan p;
  const index_t K = g.col_rows(), P = g.col_cols();
  p.partial = filters * (K + 1);
  if (conv2d_is_pointwise(g)) return p;
  const index_t overrun = simd_width<T>();
  if (conv2d_is_shifted(g)) {
    // About 768 product columns per group (16 blocks of the micro-kernel), at most 16 images.
    constexpr index_t target_cols = 768, max_group = 16;
    const ShiftedTaps taps(g);
    p.phases = taps.phases;
    p.row = g.out_w + taps.reach_w;
    p.gap = taps.reach_h;
    p.origin = (p.gap + 1) * p.row;
    p.image_cols = (g.out_h + p.gap) * p.row;
    p.group = std::clamp<index_t>((target_cols + p.image_cols - 1) / p.image_cols, 1, max_group);
    const index_t cols = p.group * p.image_cols;
    // Reads reach origin + cols + gap * Wp + reach_w + a micro-kernel block (3 SIMD batches).
    p.plane = p.origin + cols + (p.gap + 1) * p.row + 3 * overrun;
    p.packed_w = packed_a_size(filters, K);
    p.packed_wt = packed_a_size(g.channels, filters * g.kernel_h * g.kernel_w);
    p.col = g.channels * p.phases * p.plane;
    p.dy = filters * p.plane;
    p.dcol = std::max(round_up(filters, overrun), g.channels) * cols;
    p.acc = K * round_up(filters, overrun);
    return p;
  }
  // At least 192 columns (8 SIMD batches of 16 floats), at most 16 images and ~1 MB of columns.
  constexpr index_t min_cols = 192, max_group = 16, max_col_bytes = 1 << 20;
  const index_t by_cache = std::max<index_t>(1, max_col_bytes / (index_t(sizeof(T)) * K * P));
  p.group = std::max<index_t>(1, std::min({(min_cols + P - 1) / P, max_group, by_cache}));
  p.packed_w = packed_a_size(filters, K);
  p.packed_wt = packed_a_size(K, filters);
  p.col = K * p.group * P + overrun;
  p.dy = filters * p.group * P + overrun;
  p.dcol = K * p.group * P;
  return p;
}

// Elements of workspace conv2d_forward/backward need for `slots` slots.
template <class T>
index_t conv2d_workspace_size(const ConvGeometry& g, index_t filters, int slots) {
  return conv2d_plan<T>(g, filters).size(slots);
}
// ---- Pointwise convolutions: one Eigen GEMM per image on the NCHW data --------------------

// y = w · x + b for one image of a pointwise convolution. x: (C, P), y: (F, P), b may be null.
template <class T>
void conv2d_pointwise_forward_image(const T* x, const ConvGeometry& g, const T* w, const T* b,
                                    index_t filters, T* y) {
  const index_t K = g.col_rows(), P = g.col_cols();
  if (b != nullptr) {
    for (index_t f = 0; f < filters; ++f) std::fill(y + f * P, y + (f + 1) * P, b[f]);
  }
  gemm(Trans::No, Trans::No, filters, P, K, T(1), w, K, x, P, b != nullptr ? T(1) : T(0), y, P);
}

// dw += dy · xᵀ, dx += wᵀ · dy for one image of a pointwise convolution (dx may be null).
template <class T>
void conv2d_pointwise_backward_image(const T* x, const T* dy, const ConvGeometry& g, const T* w,
                                     index_t filters, T* dx, T* dw) {
  const index_t K = g.col_rows(), P = g.col_cols();
  gemm(Trans::No, Trans::Yes, filters, K, P, T(1), dy, P, x, P, T(1), dw, K);
  if (dx != nullptr) gemm(Trans::Yes, Trans::No, K, P, filters, T(1), w, K, dy, P, T(1), dx, P);
}

// ---- Shifted convolutions: stride 1 or 2, 'same' size, on zero-padded planes -----------------

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

// ---- A batch, in parallel ----------------------------------------------------------------------

namespace detail {

// Images [begin, end) of slot s when n images are split into `slots` contiguous ranges.
inline index_t slot_begin(index_t n, int slots, int s) noexcept {
  return n * s / slots;
}

// Multiply-adds below which a batch runs on one thread: a parallel region costs microseconds,
// and far more when the cores are shared with other processes.
inline constexpr index_t conv2d_parallel_min_macs = index_t(1) << 20;

// Threads for a region running `slots` slots over n images: at most `slots`, at most the current
// setting, and 1 when there is too little work.
inline int slot_team(int slots, index_t n, const ConvGeometry& g, index_t filters) noexcept {
  if (n < 2 || n * filters * g.col_rows() * g.col_cols() < conv2d_parallel_min_macs) return 1;
  return std::max(1, std::min(slots, num_threads()));
}

}  // namespace detail

// y = conv(x, w) + b for a batch of n images (b may be null). work: conv2d_workspace_size(g,
// filters, slots) elements.
template <class T>
void conv2d_forward(const T* x, index_t n, const ConvGeometry& g, const T* w, const T* b,
                    index_t filters, T* y, T* work, int slots) {
  const index_t in_size = g.in_size(), P = g.col_cols(), K = g.col_rows();
  const index_t out_size = filters * P;
  const Conv2DPlan plan = conv2d_plan<T>(g, filters);
  const bool pointwise = conv2d_is_pointwise(g), shifted = plan.shifted();
  T* wp = work;
  if (!pointwise) pack_a(w, K, 1, filters, K, wp);
  T* slot_work = work + plan.packed_w + plan.packed_wt;
  const detail::ShiftedOffsets offsets(g, plan);  // used when shifted
  const int team = detail::slot_team(slots, n, g, filters);
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (int s = 0; s < slots; ++s) {
    const index_t end = detail::slot_begin(n, slots, s + 1);
    T* col = slot_work + s * plan.slot_size();
    for (index_t i = detail::slot_begin(n, slots, s); i < end; i += plan.group) {
      if (pointwise) {
        conv2d_pointwise_forward_image(x + i * in_size, g, w, b, filters, y + i * out_size);
        continue;
      }
      const index_t gn = std::min(plan.group, end - i);
      if (shifted) {
        const index_t cols = gn * plan.image_cols;
        T* prod = col + plan.col + plan.dy;
        detail::to_planes(x + i * in_size, gn, in_size, g.channels, g.height, g.width, g.stride_h,
                          g.stride_w, plan, col);
        gemm_packed_taps(wp, filters, g.channels, g.kernel_h * g.kernel_w, offsets.forward, col,
                         plan.phases * plan.plane, cols, prod, cols, b);
        detail::from_columns<false>(prod, cols, filters, {gn, out_size, g.out_h, g.out_w}, plan,
                                    y + i * out_size);
        continue;
      }
      const index_t cols = gn * P;
      for (index_t j = 0; j < gn; ++j) im2col(x + (i + j) * in_size, g, col + j * P, cols);
      gemm_packed_a(wp, filters, K, col, cols, cols, y + i * out_size, P, b, P, out_size);
    }
  }
}

// Gradients of a batch of n images, accumulated into dw (F x K), db (F, may be null) and dx
// (may be null). work: conv2d_workspace_size(g, filters, slots) elements.
template <class T>
void conv2d_backward(const T* x, const T* dy, index_t n, const ConvGeometry& g, const T* w,
                     index_t filters, T* dx, T* dw, T* db, T* work, int slots) {
  const index_t in_size = g.in_size(), P = g.col_cols(), K = g.col_rows();
  const index_t out_size = filters * P;
  const Conv2DPlan plan = conv2d_plan<T>(g, filters);
  const bool pointwise = conv2d_is_pointwise(g), shifted = plan.shifted();
  const index_t w_size = filters * K, partial_size = plan.partial;
  const index_t kt = g.kernel_h * g.kernel_w;
  T* wtp = work + plan.packed_w;
  const detail::ShiftedOffsets offsets(g, plan);  // used when shifted
  if (shifted && dx != nullptr) {
    // Per phase p with taps order[begin[p] .. begin[p+1]) (n of them): w_pᵀ, C x F*n, element
    // (c, f * n + u) = w[f][c][order[begin[p] + u]]; the phases' blocks one after another.
    T* out = wtp;
    for (index_t p = 0; p < plan.phases; ++p) {
      const index_t* taps = offsets.order + offsets.begin[p];
      const index_t nt = offsets.begin[p + 1] - offsets.begin[p];
      pack_a_with(
          g.channels, filters * nt,
          [&](index_t c, index_t k) { return w[(k / nt) * K + c * kt + taps[k % nt]]; }, out);
      out += packed_a_size(g.channels, filters * nt);
    }
  } else if (!pointwise && dx != nullptr) {
    pack_a(w, 1, K, K, filters, wtp);  // wᵀ: (k, f) at w[f*K + k]
  }
  T* slot_work = work + plan.packed_w + plan.packed_wt;
  T* partial = slot_work + slots * plan.slot_size();
  const int team = detail::slot_team(slots, n, g, filters);
  constexpr index_t block = 4096;  // elements per reduction work item
  const index_t reduce_blocks = (partial_size + block - 1) / block;
  using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
#pragma omp parallel num_threads(team) if (team > 1)
  {
#pragma omp for schedule(static)
    for (int s = 0; s < slots; ++s) {
      T* dws = dw;
      T* dbs = db;
      if (s > 0) {
        dws = partial + (s - 1) * partial_size;
        dbs = db != nullptr ? dws + w_size : nullptr;
        std::fill(dws, dws + partial_size, T(0));
      }
      T* col = slot_work + s * plan.slot_size();
      T* dyg = col + plan.col;
      T* dcol = dyg + plan.dy;
      T* dwt = dcol + plan.dcol;  // shifted: dwᵀ of this slot's images (K x fpad)
      const index_t fpad = round_up(filters, simd_width<T>());
      if (shifted) std::fill(dwt, dwt + plan.acc, T(0));
      const index_t end = detail::slot_begin(n, slots, s + 1);
      for (index_t i = detail::slot_begin(n, slots, s); i < end; i += plan.group) {
        const index_t gn = std::min(plan.group, end - i), cols = gn * P;
        if (dbs != nullptr) {
          for (index_t j = 0; j < gn; ++j) {
            const T* dyj = dy + (i + j) * out_size;
            for (index_t f = 0; f < filters; ++f)
              dbs[f] += Eigen::Map<const Vec>(dyj + f * P, P).sum();
          }
        }
        if (pointwise) {
          conv2d_pointwise_backward_image(x + i * in_size, dy + i * out_size, g, w, filters,
                                          dx != nullptr ? dx + i * in_size : nullptr, dws);
          continue;
        }
        if (shifted) {
          const index_t pcols = gn * plan.image_cols;
          detail::to_planes(x + i * in_size, gn, in_size, g.channels, g.height, g.width, g.stride_h,
                            g.stride_w, plan, col);
          detail::to_planes(dy + i * out_size, gn, out_size, filters, g.out_h, g.out_w, 1, 1, plan,
                            dyg);
          detail::transpose_padded(dyg + plan.origin, plan.plane, filters, pcols, dcol, fpad);
          gemm_atb_taps(dcol, fpad, pcols, col, plan.phases * plan.plane, g.channels, kt,
                        offsets.forward, dwt);
          if (dx != nullptr) {
            const T* wt = wtp;
            for (index_t p = 0; p < plan.phases; ++p) {
              const index_t nt = offsets.begin[p + 1] - offsets.begin[p];
              if (nt == 0) continue;  // no tap reads this phase (1x3 at stride 2: odd rows)
              gemm_packed_taps(wt, g.channels, filters, nt, offsets.adjoint + offsets.begin[p], dyg,
                               plan.plane, pcols, dcol, pcols);
              const detail::ColumnsTarget phase{
                  gn,         in_size,    g.height,       g.width,
                  g.stride_h, g.stride_w, p / g.stride_w, p % g.stride_w};
              detail::from_columns<true>(dcol, pcols, g.channels, phase, plan, dx + i * in_size);
              wt += packed_a_size(g.channels, filters * nt);
            }
          }
          continue;
        }
        // The group's columns and output gradient, images side by side: (K | F) x (gn * P).
        for (index_t j = 0; j < gn; ++j) {
          im2col(x + (i + j) * in_size, g, col + j * P, cols);
          const T* dyj = dy + (i + j) * out_size;
          for (index_t f = 0; f < filters; ++f) {
            std::copy(dyj + f * P, dyj + (f + 1) * P, dyg + f * cols + j * P);
          }
        }
        gemm(Trans::No, Trans::Yes, filters, K, cols, T(1), dyg, cols, col, cols, T(1), dws, K);
        if (dx != nullptr) {
          gemm_packed_a(wtp, K, filters, dyg, cols, cols, dcol, cols);
          for (index_t j = 0; j < gn; ++j) col2im(dcol + j * P, g, dx + (i + j) * in_size, cols);
        }
      }
      if (shifted) {  // dw (F x K) += dwtᵀ
        for (index_t f = 0; f < filters; ++f)
          for (index_t k = 0; k < K; ++k) dws[f * K + k] += dwt[k * fpad + f];
      }
    }
    // dw/db (slot 0) += partial[1] + partial[2] + ..., in slot order.
#pragma omp for schedule(static)
    for (index_t blk = 0; blk < reduce_blocks; ++blk) {
      const index_t lo = blk * block, hi = std::min(partial_size, lo + block);
      for (int s = 1; s < slots; ++s) {
        const T* p = partial + (s - 1) * partial_size;
        for (index_t k = lo; k < std::min(hi, w_size); ++k) dw[k] += p[k];
        if (db != nullptr) {
          for (index_t k = std::max(lo, w_size); k < hi; ++k) db[k - w_size] += p[k];
        }
      }
    }
  }
}

}  // namespace minires::kernels
