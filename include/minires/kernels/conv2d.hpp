// 2-D convolution (cross-correlation, as Keras/TensorFlow) of NCHW images by im2col + GEMM.
//
//   x: (N, C, H, W)   w: (F, C, kh, kw)   b: (F,)   y: (N, F, OH, OW)
//   y[n,f,oh,ow] = b[f] + sum_{c,i,j} w[f,c,i,j] * x[n, c, oh*sh - pad_top + i, ow*sw - pad_left +
//   j]
//
// Per image, with col = im2col(x[n]) of shape (K, P) = (C*kh*kw, OH*OW) and w viewed as (F, K):
//   forward    y[n]   = w · col + b
//   backward   dw    += dy[n] · colᵀ      db += rowsum(dy[n])      dx[n] += col2im(wᵀ · dy[n])
// A pointwise convolution (1x1, stride 1, no padding) has col == x[n]: it skips im2col/col2im and
// is one GEMM per image directly on the NCHW data.
//
// The batched kernels split the batch into `slots` contiguous ranges (the caller fixes `slots`,
// usually the thread count planned at setup) and run the slots in one OpenMP parallel region of
// at most `slots` threads (one thread below ~1M multiply-adds); Eigen's GEMM runs
// single-threaded inside it. Each slot owns a column
// buffer; in backward, slot 0 accumulates into dw/db directly and slots 1.. into zeroed partials
// that are then added in slot order. The arithmetic therefore depends on `slots` only, not on
// how many threads run them: results are bit-identical from run to run.
#pragma once

#include <Eigen/Core>

#include <algorithm>

#include "minires/core/parallel.hpp"
#include "minires/core/shape.hpp"
#include "minires/kernels/gemm.hpp"
#include "minires/kernels/im2col.hpp"

namespace minires::kernels {

// True when the convolution is a plain matrix product per image (1x1, stride 1, no padding).
inline bool conv2d_is_pointwise(const ConvGeometry& g) noexcept {
  return g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 &&
         g.pad_top == 0 && g.pad_bottom == 0 && g.pad_left == 0 && g.pad_right == 0;
}

// Elements of one slot's column buffer (0 for a pointwise convolution).
inline index_t conv2d_col_size(const ConvGeometry& g) noexcept {
  return conv2d_is_pointwise(g) ? 0 : g.col_rows() * g.col_cols();
}

// Elements of one slot's partial gradients: dw (F x K) followed by db (F).
inline index_t conv2d_partial_size(const ConvGeometry& g, index_t filters) noexcept {
  return filters * (g.col_rows() + 1);
}

// ---- One image ---------------------------------------------------------------------------------

// y = w · col(x) + b for one image. x: (C, H, W), y: (F, OH, OW), b may be null, col: scratch of
// conv2d_col_size(g) elements.
template <class T>
void conv2d_forward_image(const T* x, const ConvGeometry& g, const T* w, const T* b,
                          index_t filters, T* y, T* col) {
  const index_t K = g.col_rows(), P = g.col_cols();
  const T* cols = x;
  if (!conv2d_is_pointwise(g)) {
    im2col(x, g, col, P);
    cols = col;
  }
  if (b != nullptr) {
    for (index_t f = 0; f < filters; ++f) std::fill(y + f * P, y + (f + 1) * P, b[f]);
  }
  gemm(Trans::No, Trans::No, filters, P, K, T(1), w, K, cols, P, b != nullptr ? T(1) : T(0), y, P);
}

// Gradients of one image, accumulated: dw += dy · colᵀ, db += rowsum(dy), dx += col2im(wᵀ · dy).
// dx and db may be null. col: scratch of conv2d_col_size(g) elements.
template <class T>
void conv2d_backward_image(const T* x, const T* dy, const ConvGeometry& g, const T* w,
                           index_t filters, T* dx, T* dw, T* db, T* col) {
  const index_t K = g.col_rows(), P = g.col_cols();
  if (db != nullptr) {
    using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
    for (index_t f = 0; f < filters; ++f) db[f] += Eigen::Map<const Vec>(dy + f * P, P).sum();
  }
  if (conv2d_is_pointwise(g)) {
    gemm(Trans::No, Trans::Yes, filters, K, P, T(1), dy, P, x, P, T(1), dw, K);
    if (dx != nullptr) gemm(Trans::Yes, Trans::No, K, P, filters, T(1), w, K, dy, P, T(1), dx, P);
    return;
  }
  im2col(x, g, col, P);
  gemm(Trans::No, Trans::Yes, filters, K, P, T(1), dy, P, col, P, T(1), dw, K);
  if (dx != nullptr) {
    gemm(Trans::Yes, Trans::No, K, P, filters, T(1), w, K, dy, P, T(0), col, P);
    col2im(col, g, dx, P);
  }
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

// y = conv(x, w) + b for a batch of n images. col: slots * conv2d_col_size(g) elements.
template <class T>
void conv2d_forward(const T* x, index_t n, const ConvGeometry& g, const T* w, const T* b,
                    index_t filters, T* y, T* col, int slots) {
  const index_t in_size = g.in_size(), out_size = filters * g.col_cols();
  const index_t col_size = conv2d_col_size(g);
  const int team = detail::slot_team(slots, n, g, filters);
#pragma omp parallel for schedule(static) num_threads(team) if (team > 1)
  for (int s = 0; s < slots; ++s) {
    for (index_t i = detail::slot_begin(n, slots, s); i < detail::slot_begin(n, slots, s + 1);
         ++i) {
      conv2d_forward_image(x + i * in_size, g, w, b, filters, y + i * out_size, col + s * col_size);
    }
  }
}

// Gradients of a batch of n images, accumulated into dw (F x K), db (F, may be null) and dx
// (may be null). col: slots * conv2d_col_size(g) elements; partial: (slots - 1) *
// conv2d_partial_size(g, filters) elements.
template <class T>
void conv2d_backward(const T* x, const T* dy, index_t n, const ConvGeometry& g, const T* w,
                     index_t filters, T* dx, T* dw, T* db, T* col, T* partial, int slots) {
  const index_t in_size = g.in_size(), out_size = filters * g.col_cols();
  const index_t col_size = conv2d_col_size(g);
  const index_t w_size = filters * g.col_rows(), partial_size = conv2d_partial_size(g, filters);
  const int team = detail::slot_team(slots, n, g, filters);
  constexpr index_t block = 4096;  // elements per reduction work item
  const index_t reduce_blocks = (partial_size + block - 1) / block;
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
      for (index_t i = detail::slot_begin(n, slots, s); i < detail::slot_begin(n, slots, s + 1);
           ++i) {
        conv2d_backward_image(x + i * in_size, dy + i * out_size, g, w, filters,
                              dx != nullptr ? dx + i * in_size : nullptr, dws, dbs,
                              col + s * col_size);
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
