// im2col / col2im for one NCHW image, with kernel size, stride and zero padding.
//
// The column matrix has C*kh*kw rows and OH*OW columns (row-major, row stride ld >= OH*OW):
//   col[(c*kh + i)*kw + j][oh*OW + ow] = x[c][oh*sh - pad_top + i][ow*sw - pad_left + j]
// and is 0 where that position falls into the padding. col2im is its adjoint: it scatters the
// columns back and accumulates (x += ...), which is the input gradient of a convolution.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>

#include "minires/core/error.hpp"
#include "minires/core/shape.hpp"

namespace minires::kernels {

// Keras' padding modes: 'valid' (none) and 'same' (TensorFlow's rule, extra pad at the end).
enum class Padding { Valid, Same };

// Geometry of a 2-D window operation (convolution or pooling) on one C x H x W image.
struct ConvGeometry {
  index_t channels = 0, height = 0, width = 0;  // input
  index_t kernel_h = 1, kernel_w = 1;
  index_t stride_h = 1, stride_w = 1;
  index_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  index_t out_h = 0, out_w = 0;

  index_t col_rows() const noexcept { return channels * kernel_h * kernel_w; }
  index_t col_cols() const noexcept { return out_h * out_w; }
  index_t in_size() const noexcept { return channels * height * width; }

  // Geometry with explicit zero padding on each side.
  static ConvGeometry explicit_padding(index_t channels, index_t height, index_t width,
                                       index_t kernel_h, index_t kernel_w, index_t stride_h,
                                       index_t stride_w, index_t pad_top, index_t pad_bottom,
                                       index_t pad_left, index_t pad_right) {
    ConvGeometry g;
    g.channels = channels;
    g.height = height;
    g.width = width;
    g.kernel_h = kernel_h;
    g.kernel_w = kernel_w;
    g.stride_h = stride_h;
    g.stride_w = stride_w;
    g.pad_top = pad_top;
    g.pad_bottom = pad_bottom;
    g.pad_left = pad_left;
    g.pad_right = pad_right;
    g.validate_arguments();
    g.out_h = (height + pad_top + pad_bottom - kernel_h) / stride_h + 1;
    g.out_w = (width + pad_left + pad_right - kernel_w) / stride_w + 1;
    return g;
  }

  // Geometry for Keras' 'valid' or 'same' padding:
  //   valid: out = floor((in - k) / s) + 1, no padding;
  //   same:  out = ceil(in / s), pad_total = max((out - 1)*s + k - in, 0),
  //          pad_before = pad_total / 2, pad_after = pad_total - pad_before.
  static ConvGeometry keras(index_t channels, index_t height, index_t width, index_t kernel_h,
                            index_t kernel_w, index_t stride_h, index_t stride_w, Padding padding) {
    if (padding == Padding::Valid) {
      return explicit_padding(channels, height, width, kernel_h, kernel_w, stride_h, stride_w, 0, 0,
                              0, 0);
    }
    if (stride_h < 1 || stride_w < 1) {
      throw ValueError("ConvGeometry: expected strides >= 1, found " + std::to_string(stride_h) +
                       "x" + std::to_string(stride_w));
    }
    const index_t oh = (height + stride_h - 1) / stride_h;
    const index_t ow = (width + stride_w - 1) / stride_w;
    const index_t ph = std::max<index_t>((oh - 1) * stride_h + kernel_h - height, 0);
    const index_t pw = std::max<index_t>((ow - 1) * stride_w + kernel_w - width, 0);
    return explicit_padding(channels, height, width, kernel_h, kernel_w, stride_h, stride_w, ph / 2,
                            ph - ph / 2, pw / 2, pw - pw / 2);
  }

 private:
  void validate_arguments() const {
    if (channels < 1 || height < 1 || width < 1) {
      throw ShapeError("ConvGeometry: expected a non-empty C x H x W input, found " +
                       std::to_string(channels) + "x" + std::to_string(height) + "x" +
                       std::to_string(width));
    }
    if (kernel_h < 1 || kernel_w < 1 || stride_h < 1 || stride_w < 1) {
      throw ValueError("ConvGeometry: expected kernel and stride >= 1, found kernel " +
                       std::to_string(kernel_h) + "x" + std::to_string(kernel_w) + ", stride " +
                       std::to_string(stride_h) + "x" + std::to_string(stride_w));
    }
    if (pad_top < 0 || pad_bottom < 0 || pad_left < 0 || pad_right < 0) {
      throw ValueError("ConvGeometry: expected padding >= 0");
    }
    if (kernel_h > height + pad_top + pad_bottom || kernel_w > width + pad_left + pad_right) {
      throw ShapeError("ConvGeometry: kernel " + std::to_string(kernel_h) + "x" +
                       std::to_string(kernel_w) + " is larger than the padded input " +
                       std::to_string(height + pad_top + pad_bottom) + "x" +
                       std::to_string(width + pad_left + pad_right));
    }
  }
};

namespace detail {

// Range of output columns ow whose input column iw = ow*s - pad + j lies inside [0, W).
inline void valid_range(index_t W, index_t OW, index_t s, index_t pad, index_t j, index_t& lo,
                        index_t& hi) noexcept {
  // iw >= 0  <=>  ow >= ceil((pad - j) / s)
  const index_t a = pad - j;
  lo = a <= 0 ? 0 : (a + s - 1) / s;
  // iw <= W - 1  <=>  ow <= floor((W - 1 + pad - j) / s)
  const index_t b = W - 1 + pad - j;
  hi = b < 0 ? 0 : std::min(OW, b / s + 1);
  if (lo > hi) lo = hi;
}

}  // namespace detail

namespace detail {

// Stride 1 with the output as wide as the input (OW == W, e.g. 'same' padding): the column row
// of tap (i, j) is the image shifted by d = (i - pad_top) * W + (j - pad_left) elements,
//   row[q] = x[q + d]  for q in [q_lo, q_hi)  (output rows whose input row exists),
// except the ow < pad_left - j and ow >= W - (j - pad_left) entries of each output row, which
// fall into the left/right padding. One long copy per tap instead of one per output row. (Not to
// be confused with the shifted convolutions of kernels/conv2d.hpp, which build no columns at all.)
struct TapCopy {
  index_t d, q_lo, q_hi, left, right;  // left/right: padded entries at each row's ends
};

inline bool is_tap_copy_conv(const ConvGeometry& g) noexcept {
  return g.stride_h == 1 && g.stride_w == 1 && g.out_w == g.width;
}

inline TapCopy tap_copy(const ConvGeometry& g, index_t i, index_t j) noexcept {
  const index_t W = g.width, OH = g.out_h;
  const index_t di = i - g.pad_top, dj = j - g.pad_left;
  TapCopy t;
  t.d = di * W + dj;
  const index_t oh_lo = std::clamp<index_t>(-di, 0, OH);
  const index_t oh_hi = std::clamp<index_t>(g.height - di, oh_lo, OH);
  t.q_lo = oh_lo * W;
  t.q_hi = oh_hi * W;
  t.left = std::clamp<index_t>(-dj, 0, W);
  t.right = std::clamp<index_t>(dj, 0, W);
  return t;
}

}  // namespace detail

// x: (C, H, W) -> col: (C*kh*kw, OH*OW) with row stride ld (ld >= OH*OW).
template <class T>
void im2col(const T* x, const ConvGeometry& g, T* col, index_t ld) {
  const index_t H = g.height, W = g.width, OH = g.out_h, OW = g.out_w;
  const index_t sh = g.stride_h, sw = g.stride_w;
  if (detail::is_tap_copy_conv(g)) {
    const index_t P = OH * OW;
    for (index_t c = 0; c < g.channels; ++c) {
      const T* xc = x + c * H * W;
      for (index_t i = 0; i < g.kernel_h; ++i) {
        for (index_t j = 0; j < g.kernel_w; ++j) {
          T* row = col + ((c * g.kernel_h + i) * g.kernel_w + j) * ld;
          const detail::TapCopy t = detail::tap_copy(g, i, j);
          std::fill(row, row + t.q_lo, T(0));
          // [q_lo + left, q_hi - right) stays inside x[c]; the entries that wrap around a row
          // end inside it are the padded ones, zeroed below.
          const index_t lo = t.q_lo + t.left, hi = t.q_hi - t.right;
          if (hi > lo) {
            std::memcpy(row + lo, xc + lo + t.d, static_cast<std::size_t>(hi - lo) * sizeof(T));
          }
          std::fill(row + t.q_hi, row + P, T(0));
          for (index_t q = t.q_lo; q < t.q_hi; q += W) {
            std::fill(row + q, row + q + t.left, T(0));
            std::fill(row + q + W - t.right, row + q + W, T(0));
          }
        }
      }
    }
    return;
  }
  for (index_t c = 0; c < g.channels; ++c) {
    const T* xc = x + c * H * W;
    for (index_t i = 0; i < g.kernel_h; ++i) {
      for (index_t j = 0; j < g.kernel_w; ++j) {
        T* row = col + ((c * g.kernel_h + i) * g.kernel_w + j) * ld;
        index_t lo, hi;
        detail::valid_range(W, OW, sw, g.pad_left, j, lo, hi);
        for (index_t oh = 0; oh < OH; ++oh) {
          T* out = row + oh * OW;
          const index_t ih = oh * sh - g.pad_top + i;
          if (ih < 0 || ih >= H) {
            std::fill(out, out + OW, T(0));
            continue;
          }
          const index_t base = ih * W - g.pad_left + j;  // x[c][ih][ow*sw - pl + j]
          std::fill(out, out + lo, T(0));
          if (sw == 1) {
            if (hi > lo) {
              std::memcpy(out + lo, xc + base + lo, static_cast<std::size_t>(hi - lo) * sizeof(T));
            }
          } else {
            for (index_t ow = lo; ow < hi; ++ow) out[ow] = xc[base + ow * sw];
          }
          std::fill(out + hi, out + OW, T(0));
        }
      }
    }
  }
}

// col: (C*kh*kw, OH*OW) with row stride ld -> x: (C, H, W), accumulating (x += ...).
// With a stride-1, full-width geometry (see TapCopy) the padded entries of col are
// overwritten with zeros so that each tap is one long contiguous addition.
template <class T>
void col2im(T* col, const ConvGeometry& g, T* x, index_t ld) {
  const index_t H = g.height, W = g.width, OH = g.out_h, OW = g.out_w;
  const index_t sh = g.stride_h, sw = g.stride_w;
  if (detail::is_tap_copy_conv(g)) {
    for (index_t c = 0; c < g.channels; ++c) {
      T* xc = x + c * H * W;
      for (index_t i = 0; i < g.kernel_h; ++i) {
        for (index_t j = 0; j < g.kernel_w; ++j) {
          T* row = col + ((c * g.kernel_h + i) * g.kernel_w + j) * ld;
          const detail::TapCopy t = detail::tap_copy(g, i, j);
          for (index_t q = t.q_lo; q < t.q_hi; q += W) {
            std::fill(row + q, row + q + t.left, T(0));
            std::fill(row + q + W - t.right, row + q + W, T(0));
          }
          T* dst = xc + t.d;  // the zeroed entries add nothing to their wrapped-around targets
          for (index_t q = t.q_lo + t.left; q < t.q_hi - t.right; ++q) dst[q] += row[q];
        }
      }
    }
    return;
  }
  for (index_t c = 0; c < g.channels; ++c) {
    T* xc = x + c * H * W;
    for (index_t i = 0; i < g.kernel_h; ++i) {
      for (index_t j = 0; j < g.kernel_w; ++j) {
        const T* row = col + ((c * g.kernel_h + i) * g.kernel_w + j) * ld;
        index_t lo, hi;
        detail::valid_range(W, OW, sw, g.pad_left, j, lo, hi);
        for (index_t oh = 0; oh < OH; ++oh) {
          const index_t ih = oh * sh - g.pad_top + i;
          if (ih < 0 || ih >= H) continue;
          const T* in = row + oh * OW;
          const index_t base = ih * W - g.pad_left + j;
          for (index_t ow = lo; ow < hi; ++ow) xc[base + ow * sw] += in[ow];
        }
      }
    }
  }
}

}  // namespace minires::kernels
