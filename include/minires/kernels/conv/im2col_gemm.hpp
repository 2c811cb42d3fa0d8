// General convolutions (any kernel, stride and padding) by im2col + a packed matrix product, on
// groups of G images (G from conv2d_plan: enough columns to fill the SIMD lanes and the
// micro-kernel, few enough to keep the columns in L2). The group's columns sit side by side in
// one (K, G*P) matrix, K = C*kh*kw, P = OH*OW:
//   forward    y[n]   = w · col + b           (gemm_packed_a writes each image's plane in place)
//   backward   dw    += dy · colᵀ              (one Eigen product over the group's G*P columns)
//              dx[n] += col2im(wᵀ · dy[n])
#pragma once

#include <algorithm>

#include "minires/core/shape.hpp"
#include "minires/kernels/conv/plan.hpp"
#include "minires/kernels/gemm.hpp"
#include "minires/kernels/im2col.hpp"
#include "minires/kernels/packed_gemm.hpp"

namespace minires::kernels {

// Forward of a group of gn images x (g.in_size() apart) into y (filters * P apart): wp is
// pack_a(w) (F x K); col: the slot's column buffer (plan.col elements).
template <class T>
void conv2d_im2col_forward_group(const T* x, index_t gn, const ConvGeometry& g, const T* wp,
                                 const T* b, index_t filters, T* y, T* col) {
  const index_t in_size = g.in_size(), P = g.col_cols(), K = g.col_rows();
  const index_t cols = gn * P;
  for (index_t j = 0; j < gn; ++j) im2col(x + j * in_size, g, col + j * P, cols);
  gemm_packed_a(wp, filters, K, col, cols, cols, y, P, b, P, filters * P);
}

// Gradients of a group of gn images: dw (F x K) += dy · colᵀ, dx (may be null) += col2im(wᵀ ·
// dy). wtp: pack_a(wᵀ) (K x F); work: the slot's workspace (plan.col + plan.dy + plan.dcol).
template <class T>
void conv2d_im2col_backward_group(const T* x, const T* dy, index_t gn, const ConvGeometry& g,
                                  const T* wtp, index_t filters, const Conv2DPlan& plan, T* dx,
                                  T* dw, T* work) {
  const index_t in_size = g.in_size(), P = g.col_cols(), K = g.col_rows();
  const index_t out_size = filters * P, cols = gn * P;
  T* col = work;
  T* dyg = col + plan.col;
  T* dcol = dyg + plan.dy;
  // The group's columns and output gradient, images side by side: (K | F) x (gn * P).
  for (index_t j = 0; j < gn; ++j) {
    im2col(x + j * in_size, g, col + j * P, cols);
    const T* dyj = dy + j * out_size;
    for (index_t f = 0; f < filters; ++f) {
      std::copy(dyj + f * P, dyj + (f + 1) * P, dyg + f * cols + j * P);
    }
  }
  gemm(Trans::No, Trans::Yes, filters, K, cols, T(1), dyg, cols, col, cols, T(1), dw, K);
  if (dx == nullptr) return;
  gemm_packed_a(wtp, K, filters, dyg, cols, cols, dcol, cols);
  for (index_t j = 0; j < gn; ++j) col2im(dcol + j * P, g, dx + j * in_size, cols);
}

}  // namespace minires::kernels
