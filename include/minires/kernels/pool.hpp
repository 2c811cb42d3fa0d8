// 2-D max and average pooling on raw NCHW buffers.
//
// The geometry is a ConvGeometry for one C x H x W image (ConvGeometry::keras gives Keras'
// 'valid' and 'same' rules); a batch of `batch` images is batch*C independent H x W planes.
// Padded cells never take part: each window is clipped to the input, so
//   max pooling takes the maximum over the cells inside the input (TF pads with -inf), and
//   average pooling divides by the number of cells inside the input (TF 'same';
//   PyTorch count_include_pad=False); for 'valid' windows that is kh*kw.
// Every window must hold at least one input cell, so each padding must be smaller than the
// window along its axis (always true for the Keras rules).
//
// Max pooling keeps, per output, the index (ih*W + iw, within its plane) of the cell it took:
// the FIRST maximum in row-major order of the window (a later cell replaces it only if strictly
// greater), and a NaN beats every number, so NaN propagates and the first NaN is kept. This is
// the TF CPU / PyTorch CPU rule, except that PyTorch keeps the last of several NaNs. The
// backward pass scatters dy to those indices.
//
// Each call is one OpenMP region over the planes when the work is large; a plane is handled by
// one thread in a fixed order, so results do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "minires/core/error.hpp"
#include "minires/core/parallel.hpp"
#include "minires/core/shape.hpp"
#include "minires/kernels/im2col.hpp"

namespace minires::kernels {

namespace detail {

inline void check_pool_geometry(const ConvGeometry& g) {
  if (g.pad_top >= g.kernel_h || g.pad_bottom >= g.kernel_h || g.pad_left >= g.kernel_w ||
      g.pad_right >= g.kernel_w) {
    throw ValueError("pooling: expected each padding smaller than the " +
                     std::to_string(g.kernel_h) + "x" + std::to_string(g.kernel_w) +
                     " window, found padding (top " + std::to_string(g.pad_top) + ", bottom " +
                     std::to_string(g.pad_bottom) + ", left " + std::to_string(g.pad_left) +
                     ", right " + std::to_string(g.pad_right) + ")");
  }
  if (g.height * g.width > std::numeric_limits<std::int32_t>::max()) {
    throw ValueError("pooling: expected at most 2^31-1 cells per plane, found " +
                     std::to_string(g.height) + "x" + std::to_string(g.width));
  }
}

// Calls body(p) for each plane p in [0, planes): one parallel region when the work is large.
template <class Body>
void for_each_plane(index_t planes, index_t work_per_plane, Body&& body) {
  parallel_for(planes, parallel_grain(work_per_plane), [&](index_t p0, index_t p1) {
    for (index_t p = p0; p < p1; ++p) body(p);
  });
}

// Calls body(o, h0, h1, w0, w1) for each output cell o = oh*OW + ow of one plane, in row-major
// order, with its window clipped to the input: rows [h0, h1), columns [w0, w1).
template <class Body>
void for_each_window(const ConvGeometry& g, Body&& body) {
  for (index_t oh = 0; oh < g.out_h; ++oh) {
    const index_t top = oh * g.stride_h - g.pad_top;
    const index_t h0 = std::max<index_t>(top, 0);
    const index_t h1 = std::min(top + g.kernel_h, g.height);
    for (index_t ow = 0; ow < g.out_w; ++ow) {
      const index_t left = ow * g.stride_w - g.pad_left;
      const index_t w0 = std::max<index_t>(left, 0);
      const index_t w1 = std::min(left + g.kernel_w, g.width);
      body(oh * g.out_w + ow, h0, h1, w0, w1);
    }
  }
}

// The common 2x2 window with stride 2 and no padding, on which the tight loops below replace
// the general window walk (same cells, same order, same results).
inline bool is_pool_2x2(const ConvGeometry& g) noexcept {
  return g.kernel_h == 2 && g.kernel_w == 2 && g.stride_h == 2 && g.stride_w == 2 &&
         g.pad_top == 0 && g.pad_bottom == 0 && g.pad_left == 0 && g.pad_right == 0;
}

}  // namespace detail

// x: (batch, C, H, W) -> y: (batch, C, OH, OW), argmax: (batch, C, OH, OW) plane indices.
template <class T>
void max_pool2d_forward(const T* x, const ConvGeometry& g, index_t batch, T* y,
                        std::int32_t* argmax) {
  detail::check_pool_geometry(g);
  const index_t in_plane = g.height * g.width, out_plane = g.out_h * g.out_w;
  detail::for_each_plane(batch * g.channels, out_plane * g.kernel_h * g.kernel_w, [&](index_t p) {
    const T* xp = x + p * in_plane;
    T* yp = y + p * out_plane;
    std::int32_t* ap = argmax + p * out_plane;
    if (detail::is_pool_2x2(g)) {
      const index_t W = g.width;
      for (index_t oh = 0; oh < g.out_h; ++oh) {
        for (index_t ow = 0; ow < g.out_w; ++ow) {
          const index_t cells[4] = {2 * oh * W + 2 * ow, 2 * oh * W + 2 * ow + 1,
                                    (2 * oh + 1) * W + 2 * ow, (2 * oh + 1) * W + 2 * ow + 1};
          index_t best = cells[0];
          T m = xp[best];
          for (int c = 1; c < 4; ++c) {
            const T v = xp[cells[c]];
            if (v > m || (std::isnan(v) && !std::isnan(m))) {
              m = v;
              best = cells[c];
            }
          }
          yp[oh * g.out_w + ow] = m;
          ap[oh * g.out_w + ow] = static_cast<std::int32_t>(best);
        }
      }
      return;
    }
    detail::for_each_window(g, [&](index_t o, index_t h0, index_t h1, index_t w0, index_t w1) {
      index_t best = h0 * g.width + w0;
      T m = xp[best];
      for (index_t ih = h0; ih < h1; ++ih) {
        for (index_t iw = w0; iw < w1; ++iw) {
          const index_t i = ih * g.width + iw;
          const T v = xp[i];
          if (v > m || (std::isnan(v) && !std::isnan(m))) {
            m = v;
            best = i;
          }
        }
      }
      yp[o] = m;
      ap[o] = static_cast<std::int32_t>(best);
    });
  });
}

// dx[argmax] += dy, plane by plane.   dy, argmax: (batch, C, OH, OW); dx: (batch, C, H, W).
// With accumulate false, dx is written: each plane is zeroed (by the thread that then scatters
// into it, while it is in cache) and dx's earlier contents are never read.
template <class T>
void max_pool2d_backward(const T* dy, const std::int32_t* argmax, const ConvGeometry& g,
                         index_t batch, T* dx, bool accumulate = true) {
  const index_t in_plane = g.height * g.width, out_plane = g.out_h * g.out_w;
  detail::for_each_plane(batch * g.channels, out_plane, [&](index_t p) {
    const T* dyp = dy + p * out_plane;
    const std::int32_t* ap = argmax + p * out_plane;
    T* dxp = dx + p * in_plane;
    if (!accumulate) std::fill(dxp, dxp + in_plane, T(0));
    for (index_t o = 0; o < out_plane; ++o) dxp[ap[o]] += dyp[o];
  });
}

// y = mean of the window's input cells.   x: (batch, C, H, W) -> y: (batch, C, OH, OW).
template <class T>
void avg_pool2d_forward(const T* x, const ConvGeometry& g, index_t batch, T* y) {
  detail::check_pool_geometry(g);
  const index_t in_plane = g.height * g.width, out_plane = g.out_h * g.out_w;
  detail::for_each_plane(batch * g.channels, out_plane * g.kernel_h * g.kernel_w, [&](index_t p) {
    const T* xp = x + p * in_plane;
    T* yp = y + p * out_plane;
    if (detail::is_pool_2x2(g)) {
      const index_t W = g.width;
      for (index_t oh = 0; oh < g.out_h; ++oh) {
        const T* r0 = xp + 2 * oh * W;
        const T* r1 = r0 + W;
        T* yr = yp + oh * g.out_w;
        for (index_t ow = 0; ow < g.out_w; ++ow) {
          T sum = T(0);
          sum += r0[2 * ow];
          sum += r0[2 * ow + 1];
          sum += r1[2 * ow];
          sum += r1[2 * ow + 1];
          yr[ow] = sum / T(4);
        }
      }
      return;
    }
    detail::for_each_window(g, [&](index_t o, index_t h0, index_t h1, index_t w0, index_t w1) {
      T sum = T(0);
      for (index_t ih = h0; ih < h1; ++ih) {
        for (index_t iw = w0; iw < w1; ++iw) sum += xp[ih * g.width + iw];
      }
      yp[o] = sum / static_cast<T>((h1 - h0) * (w1 - w0));
    });
  });
}

// dx[window] += dy / (cells in the window), plane by plane. With accumulate false, dx is
// written: each plane is zeroed first, as in max_pool2d_backward.
template <class T>
void avg_pool2d_backward(const T* dy, const ConvGeometry& g, index_t batch, T* dx,
                         bool accumulate = true) {
  detail::check_pool_geometry(g);
  const index_t in_plane = g.height * g.width, out_plane = g.out_h * g.out_w;
  detail::for_each_plane(batch * g.channels, out_plane * g.kernel_h * g.kernel_w, [&](index_t p) {
    const T* dyp = dy + p * out_plane;
    T* dxp = dx + p * in_plane;
    if (!accumulate) std::fill(dxp, dxp + in_plane, T(0));
    if (detail::is_pool_2x2(g)) {
      const index_t W = g.width;
      for (index_t oh = 0; oh < g.out_h; ++oh) {
        T* r0 = dxp + 2 * oh * W;
        T* r1 = r0 + W;
        const T* dyr = dyp + oh * g.out_w;
        for (index_t ow = 0; ow < g.out_w; ++ow) {
          const T share = dyr[ow] / T(4);
          r0[2 * ow] += share;
          r0[2 * ow + 1] += share;
          r1[2 * ow] += share;
          r1[2 * ow + 1] += share;
        }
      }
      return;
    }
    detail::for_each_window(g, [&](index_t o, index_t h0, index_t h1, index_t w0, index_t w1) {
      const T share = dyp[o] / static_cast<T>((h1 - h0) * (w1 - w0));
      for (index_t ih = h0; ih < h1; ++ih) {
        for (index_t iw = w0; iw < w1; ++iw) dxp[ih * g.width + iw] += share;
      }
    });
  });
}

}  // namespace minires::kernels
