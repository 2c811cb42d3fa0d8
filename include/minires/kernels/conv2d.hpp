// 2-D convolution (cross-correlation, as Keras/TensorFlow) of NCHW images by im2col + GEMM.
//
//   x: (N, C, H, W)   w: (F, C, kh, kw)   b: (F,)   y: (N, F, OH, OW)
//   y[n,f,oh,ow] = b[f] + sum_{c,i,j} w[f,c,i,j] * x[n, c, oh*sh - pad_top + i, ow*sw - pad_left +
//   j]
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

// How conv2d_forward/backward use their workspace (sizes in elements).
struct Conv2DPlan {
  index_t group = 1;      // images per GEMM
  index_t packed_w = 0;   // pack_a(w), F x K
  index_t packed_wt = 0;  // pack_a(wᵀ), K x F
  index_t col = 0;        // per slot: columns of a group, K x G*P (+ SIMD overrun)
  index_t dy = 0;         // per slot: the group's output gradient, F x G*P (+ overrun)
  index_t dcol = 0;       // per slot: wᵀ · dy, K x G*P
  index_t partial = 0;    // per slot after the first: dw (F x K) then db (F)

  index_t slot_size() const noexcept { return col + dy + dcol; }
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
  // At least 192 columns (8 SIMD batches of 16 floats), at most 16 images and ~1 MB of columns.
  constexpr index_t min_cols = 192, max_group = 16, max_col_bytes = 1 << 20;
  const index_t by_cache = std::max<index_t>(1, max_col_bytes / (index_t(sizeof(T)) * K * P));
  p.group = std::max<index_t>(1, std::min({(min_cols + P - 1) / P, max_group, by_cache}));
  const index_t overrun = simd_width<T>();
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
  const bool pointwise = conv2d_is_pointwise(g);
  T* wp = work;
  if (!pointwise) pack_a(w, K, 1, filters, K, wp);
  T* slot_work = work + plan.packed_w + plan.packed_wt;
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
      const index_t gn = std::min(plan.group, end - i), cols = gn * P;
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
  const bool pointwise = conv2d_is_pointwise(g);
  const index_t w_size = filters * K, partial_size = plan.partial;
  T* wtp = work + plan.packed_w;
  if (!pointwise && dx != nullptr) pack_a(w, 1, K, K, filters, wtp);  // wᵀ: (k, f) at w[f*K + k]
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
