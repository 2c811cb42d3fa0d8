// Pointwise convolutions (1x1, stride 1, no padding): col == x[n], so each image is one matrix
// product on its NCHW data, no im2col or col2im:
//   forward    y[n] = w · x[n] + b          (F x P) = (F x C) · (C x P)
//   backward   dw += dy[n] · x[n]ᵀ          dx[n] += wᵀ · dy[n]
#pragma once

#include "minires/core/shape.hpp"
#include "minires/kernels/gemm.hpp"
#include "minires/kernels/im2col.hpp"

namespace minires::kernels {

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

}  // namespace minires::kernels
