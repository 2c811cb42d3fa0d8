// Direct convolution loops: the reference the im2col + GEMM kernels are tested and benchmarked
// against (llm.c's matmul_forward_naive). Same layouts and padding geometry as kernels/conv2d.hpp:
//
//   x: (N, C, H, W)   w: (F, C, kh, kw)   b: (F,) or null   y, dy: (N, F, OH, OW)
//   y[n,f,oh,ow] = b[f] + sum_{c,i,j} w[f,c,i,j] * x[n, c, oh*sh - pad_top + i, ow*sw - pad_left +
//   j]
#pragma once

#include "minires/core/shape.hpp"
#include "minires/kernels/im2col.hpp"

namespace minires::kernels::naive {

namespace detail {

// Calls f(x_index, w_index, y_index) for every multiply-add of the convolution of n images.
template <class F>
void for_each_tap(index_t n, const ConvGeometry& g, index_t filters, F&& f) {
  const index_t C = g.channels, H = g.height, W = g.width, OH = g.out_h, OW = g.out_w;
  for (index_t b = 0; b < n; ++b)
    for (index_t k = 0; k < filters; ++k)
      for (index_t oh = 0; oh < OH; ++oh)
        for (index_t ow = 0; ow < OW; ++ow) {
          const index_t yi = ((b * filters + k) * OH + oh) * OW + ow;
          for (index_t c = 0; c < C; ++c)
            for (index_t i = 0; i < g.kernel_h; ++i) {
              const index_t ih = oh * g.stride_h - g.pad_top + i;
              if (ih < 0 || ih >= H) continue;
              for (index_t j = 0; j < g.kernel_w; ++j) {
                const index_t iw = ow * g.stride_w - g.pad_left + j;
                if (iw < 0 || iw >= W) continue;
                f(((b * C + c) * H + ih) * W + iw, ((k * C + c) * g.kernel_h + i) * g.kernel_w + j,
                  yi);
              }
            }
        }
}

}  // namespace detail

// y = conv(x, w) + b (overwrites y).
template <class T>
void conv2d_forward(const T* x, index_t n, const ConvGeometry& g, const T* w, const T* b,
                    index_t filters, T* y) {
  const index_t P = g.out_h * g.out_w;
  for (index_t i = 0; i < n * filters; ++i) {
    const T init = b != nullptr ? b[i % filters] : T(0);
    for (index_t p = 0; p < P; ++p) y[i * P + p] = init;
  }
  detail::for_each_tap(n, g, filters,
                       [&](index_t xi, index_t wi, index_t yi) { y[yi] += w[wi] * x[xi]; });
}

// dx += dL/dx, dw += dL/dw, db += dL/db for dy = dL/dy (dx and db may be null).
template <class T>
void conv2d_backward(const T* x, const T* dy, index_t n, const ConvGeometry& g, const T* w,
                     index_t filters, T* dx, T* dw, T* db) {
  const index_t P = g.out_h * g.out_w;
  if (db != nullptr) {
    for (index_t i = 0; i < n * filters; ++i)
      for (index_t p = 0; p < P; ++p) db[i % filters] += dy[i * P + p];
  }
  detail::for_each_tap(n, g, filters, [&](index_t xi, index_t wi, index_t yi) {
    dw[wi] += dy[yi] * x[xi];
    if (dx != nullptr) dx[xi] += dy[yi] * w[wi];
  });
}

}  // namespace minires::kernels::naive
