// 2-D convolution (cross-correlation, as Keras/TensorFlow) of NCHW images:
//
//   x: (N, C, H, W)   w: (F, C, kh, kw)   b: (F,)   y: (N, F, OH, OW)
//   y[n,f,oh,ow] = b[f] +
//                  sum_{c,i,j} w[f,c,i,j] * x[n, c, oh*sh - pad_top + i, ow*sw - pad_left + j]
//
// With col = im2col(x[n]) of shape (K, P) = (C*kh*kw, OH*OW) and w viewed as (F, K):
//   forward    y[n]   = w · col + b
//   backward   dw    += dy[n] · colᵀ      db += rowsum(dy[n])      dx[n] += col2im(wᵀ · dy[n])
//
// This file is the dispatcher: conv2d_plan (conv/plan.hpp) picks the algorithm from the geometry
// (pointwise, shifted, im2col or Winograd, one header each under conv/), and
// conv2d_forward/backward run it over a batch.
//
// The batch is split into `slots` contiguous ranges (the caller fixes `slots`, usually the thread
// count planned at setup), run by parallel_for (core/parallel.hpp) on at most `slots` threads
// (one when there is too little work); the products run single-threaded inside a slot, on
// groups of plan.group images. Each slot owns its buffers; in backward, slot 0 accumulates into
// dw/db directly and slots 1.. into zeroed partials that are then added in slot order. The
// arithmetic therefore depends on `slots` only, not on how many threads run them: results are
// bit-identical from run to run.
#pragma once

#include <Eigen/Core>

#include <algorithm>
#include <type_traits>

#include "minires/core/parallel.hpp"
#include "minires/core/shape.hpp"
#include "minires/kernels/conv/im2col_gemm.hpp"
#include "minires/kernels/conv/plan.hpp"
#include "minires/kernels/conv/pointwise.hpp"
#include "minires/kernels/conv/shifted.hpp"
#include "minires/kernels/conv/shifted_amx.hpp"
#include "minires/kernels/conv/winograd.hpp"
#include "minires/kernels/packed_gemm.hpp"

namespace minires::kernels {

namespace detail {

// Images [begin, end) of slot s when n images are split into `slots` contiguous ranges.
inline index_t slot_begin(index_t n, int slots, int s) noexcept {
  return n * s / slots;
}

// Slots per parallel chunk: all of them (one thread) when a slot's share of the work is too
// small to be worth a thread, else 1.
inline index_t slot_grain(int slots, index_t n, const ConvGeometry& g, index_t filters,
                          index_t simd) noexcept {
  if (n < 2) return slots;
  const index_t vector_fmas = n * filters * g.col_rows() * g.col_cols() / simd / slots;
  return std::min<index_t>(slots, parallel_grain(vector_fmas));
}

inline bool is_amx(Conv2DAlgorithm a) noexcept {
  return a == Conv2DAlgorithm::AmxIm2col || a == Conv2DAlgorithm::AmxShifted;
}

// The AMX algorithms (conv/im2col_amx.hpp, conv/shifted_amx.hpp), planned only for float in an
// AMX build. The bf16 weights sit at the end of the shared workspace: the forward's (amx_w),
// then the input gradient's (amx_wt).
template <class T>
void conv2d_amx_forward(const T* x, index_t n, const ConvGeometry& g, const T* w, const T* b,
                        index_t filters, T* y, T* work, int slots, const Conv2DPlan& plan) {
#if MINIRES_AMX
  if constexpr (std::is_same_v<T, float>) {
    const index_t in_size = g.in_size(), out_size = filters * g.col_cols(), K = g.col_rows();
    const bool shifted = plan.algorithm == Conv2DAlgorithm::AmxShifted;
    auto* wb = reinterpret_cast<bf16_t*>(work + plan.shared_size() - plan.amx_w - plan.amx_wt);
    T* bias_rows = nullptr;  // shifted: b[f] repeated in row f of Fp x 16 (padded filters 0)
    if (shifted) {
      conv2d_amx_shifted_pack(w, g, filters, plan, false, wb);
      if (b != nullptr) {
        bias_rows = work + plan.shared_size() - plan.amx_w - plan.amx_wt - plan.amx_bias;
        std::fill(bias_rows, bias_rows + plan.amx_bias, T(0));
        for (index_t f = 0; f < filters; ++f)
          std::fill(bias_rows + f * 16, bias_rows + (f + 1) * 16, b[f]);
      }
    } else {
      amx_pack_rows(w, K, 1, filters, K, wb);
    }
    const AmxShiftedTaps taps(g, plan);  // used when shifted
    T* slot_work = work + plan.shared_size();
    parallel_for(
        slots, slot_grain(slots, n, g, filters, simd_width<T>()), [&](index_t s0, index_t s1) {
          for (index_t s = s0; s < s1; ++s) {
            const index_t begin = slot_begin(n, slots, int(s)),
                          end = slot_begin(n, slots, int(s) + 1);
            T* col = slot_work + s * plan.slot_size();
            T* out = col + plan.col + plan.dy;
            T* bf = out + plan.dcol + plan.acc + plan.wino;
            for (index_t i = begin; i < end; i += plan.group) {
              const index_t gn = std::min(plan.group, end - i);
              if (shifted) {
                conv2d_amx_shifted_forward_group(x + i * in_size, gn, g, wb, bias_rows, filters,
                                                 plan, taps, y + i * out_size, out, bf);
              } else {
                conv2d_amx_forward_group(x + i * in_size, gn, g, wb, b, filters, y + i * out_size,
                                         col, out, bf);
              }
            }
          }
        });
    return;
  }
#endif
  (void)x, (void)n, (void)g, (void)w, (void)b, (void)filters, (void)y, (void)work, (void)slots,
      (void)plan;
  throw Error("conv2d_forward: the AMX plan needs float and an AMX build");
}

// The AMX input gradient's bf16 weights into the shared workspace.
template <class T>
void conv2d_amx_pack_wt(const T* w, const ConvGeometry& g, index_t filters, const Conv2DPlan& plan,
                        T* work) {
#if MINIRES_AMX
  if constexpr (std::is_same_v<T, float>) {
    auto* to = reinterpret_cast<bf16_t*>(work + plan.shared_size() - plan.amx_wt);
    if (plan.algorithm == Conv2DAlgorithm::AmxShifted) {
      conv2d_amx_shifted_pack(w, g, filters, plan, true, to);
    } else {
      amx_pack_rows(w, 1, g.col_rows(), g.col_rows(), filters, to);  // wᵀ
    }
    return;
  }
#endif
  (void)w, (void)g, (void)filters, (void)plan, (void)work;
}

// One slot's images [begin, end) of the AMX backward, accumulating into dws/dbs (this slot's
// dw and db) and dx (written instead when not accumulate_dx: only where conv2d_writes_dx);
// conv2d_amx_pack_wt has packed the input gradient's weights.
template <class T>
void conv2d_amx_backward_slot(const T* x, const T* dy, index_t begin, index_t end,
                              const ConvGeometry& g, index_t filters, const Conv2DPlan& plan,
                              T* work, T* dx, T* dws, T* dbs, T* sw, bool accumulate_dx) {
#if MINIRES_AMX
  if constexpr (std::is_same_v<T, float>) {
    const index_t in_size = g.in_size(), P = g.col_cols(), K = g.col_rows();
    const index_t out_size = filters * P, Fp = amx_pad(filters), Cp = amx_pad(g.channels);
    const index_t kt = g.kernel_h * g.kernel_w;
    const bool shifted = plan.algorithm == Conv2DAlgorithm::AmxShifted;
    const auto* wt = reinterpret_cast<const bf16_t*>(work + plan.shared_size() - plan.amx_wt);
    const AmxShiftedTaps taps(g, plan);  // used when shifted
    T* col = sw;
    T* dyg = col + plan.col;
    T* out = dyg + plan.dy;
    T* dwt = out + plan.dcol;
    T* bf = dwt + plan.acc + plan.wino;
    std::fill(dwt, dwt + plan.acc, T(0));
    using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
    for (index_t i = begin; i < end; i += plan.group) {
      const index_t gn = std::min(plan.group, end - i);
      if (dbs != nullptr) {
        for (index_t j = 0; j < gn; ++j)
          for (index_t f = 0; f < filters; ++f)
            dbs[f] += Eigen::Map<const Vec>(dy + (i + j) * out_size + f * P, P).sum();
      }
      T* dxi = dx != nullptr ? dx + i * in_size : nullptr;
      if (shifted) {
        conv2d_amx_shifted_backward_group(x + i * in_size, dy + i * out_size, gn, g, wt, filters,
                                          plan, taps, dxi, dwt, out, bf, accumulate_dx);
      } else {
        conv2d_amx_backward_group(x + i * in_size, dy + i * out_size, gn, g, wt, filters, dxi, dwt,
                                  col, dyg, out, bf);
      }
    }
    // dw (F x K, k = c * kt + t) += dwtᵀ: rows k (im2col) or t * Cp + c (shifted).
    for (index_t f = 0; f < filters; ++f) {
      for (index_t k = 0; k < K; ++k) {
        const index_t row = shifted ? (k % kt) * Cp + k / kt : k;
        dws[f * K + k] += dwt[row * Fp + f];
      }
    }
    return;
  }
#endif
  (void)x, (void)dy, (void)begin, (void)end, (void)g, (void)filters, (void)plan, (void)work,
      (void)dx, (void)dws, (void)dbs, (void)sw, (void)accumulate_dx;
  throw Error("conv2d_backward: the AMX plan needs float and an AMX build");
}

}  // namespace detail

// y = conv(x, w) + b for a batch of n images (b may be null). work: conv2d_workspace_size(g,
// filters, slots, precision) elements.
template <class T>
void conv2d_forward(const T* x, index_t n, const ConvGeometry& g, const T* w, const T* b,
                    index_t filters, T* y, T* work, int slots,
                    MatmulPrecision precision = MatmulPrecision::Highest) {
  const index_t in_size = g.in_size(), out_size = filters * g.col_cols();
  const Conv2DPlan plan = conv2d_plan<T>(g, filters, precision);
  if (detail::is_amx(plan.algorithm)) {
    detail::conv2d_amx_forward(x, n, g, w, b, filters, y, work, slots, plan);
    return;
  }
  const index_t C = g.channels;
  T* wp = work;
  T* wu = work + plan.packed_w + plan.packed_wt;  // Winograd: U = G w Gᵀ, packed
  if (plan.algorithm == Conv2DAlgorithm::Winograd) {
    winograd_pack_kernel(
        filters, C, [&](index_t f, index_t c) { return w + (f * C + c) * 9; }, false, wu);
  } else if (plan.algorithm != Conv2DAlgorithm::Pointwise) {
    pack_a(w, g.col_rows(), 1, filters, g.col_rows(), wp);
  }
  T* slot_work = work + plan.shared_size();
  const detail::ShiftedOffsets offsets(g, plan);  // used when shifted
  const auto run_slot = [&](int s) {
    const index_t begin = detail::slot_begin(n, slots, s),
                  end = detail::slot_begin(n, slots, s + 1);
    T* col = slot_work + s * plan.slot_size();
    if (plan.algorithm == Conv2DAlgorithm::Winograd) {
      winograd_conv<false>(x + begin * in_size, end - begin, winograd_forward_shape(g, filters), wu,
                           b, plan.wino_block, y + begin * out_size,
                           col + plan.col + plan.dy + plan.dcol + plan.acc);
      return;
    }
    for (index_t i = begin; i < end; i += plan.group) {
      const index_t gn = std::min(plan.group, end - i);
      const T* xi = x + i * in_size;
      T* yi = y + i * out_size;
      switch (plan.algorithm) {
        case Conv2DAlgorithm::Pointwise:
          for (index_t j = 0; j < gn; ++j)
            conv2d_pointwise_forward_image(xi + j * in_size, g, w, b, filters, yi + j * out_size);
          break;
        case Conv2DAlgorithm::Shifted:
          conv2d_shifted_forward_group(xi, gn, g, wp, b, filters, plan, offsets, yi, col);
          break;
        case Conv2DAlgorithm::Im2col:
        case Conv2DAlgorithm::Winograd:  // (handled above)
        case Conv2DAlgorithm::AmxIm2col:
        case Conv2DAlgorithm::AmxShifted:
          conv2d_im2col_forward_group(xi, gn, g, wp, b, filters, yi, col);
          break;
      }
    }
  };
  parallel_for(slots, detail::slot_grain(slots, n, g, filters, simd_width<T>()),
               [&](index_t s0, index_t s1) {
                 for (index_t s = s0; s < s1; ++s) run_slot(int(s));
               });
}

// Gradients of a batch of n images, accumulated into dw (F x K), db (F, may be null) and dx
// (may be null; written instead when not accumulate_dx: by the shifted paths directly where
// conv2d_writes_dx, else each slot zeroes its images' dx before adding to it). work:
// conv2d_workspace_size(g, filters, slots, precision) elements.
template <class T>
void conv2d_backward(const T* x, const T* dy, index_t n, const ConvGeometry& g, const T* w,
                     index_t filters, T* dx, T* dw, T* db, T* work, int slots,
                     MatmulPrecision precision = MatmulPrecision::Highest,
                     bool accumulate_dx = true) {
  const index_t in_size = g.in_size(), P = g.col_cols(), K = g.col_rows();
  const index_t out_size = filters * P;
  const Conv2DPlan plan = conv2d_plan<T>(g, filters, precision);
  const index_t w_size = filters * K, partial_size = plan.partial;
  const index_t fpad = round_up(filters, simd_width<T>());
  const index_t C = g.channels;
  T* wtp = work + plan.packed_w;
  T* wut = work + plan.packed_w + plan.packed_wt + plan.wino_u;  // Winograd: G w' Gᵀ, packed
  const detail::ShiftedOffsets offsets(g, plan);                 // used when shifted
  const bool winograd = plan.algorithm == Conv2DAlgorithm::Winograd;
  // Whether the input gradient is written (not added) by the algorithm itself; where it is
  // asked to be written and cannot be, the slots zero their images' dx first.
  const bool writes_dx = conv2d_writes_dx(g, plan);
  const bool add_dx = accumulate_dx || !writes_dx;
  if (dx != nullptr) {
    if (winograd) {  // w'[c][f] = w[f][c] rotated by 180 degrees
      winograd_pack_kernel(
          C, filters, [&](index_t c, index_t f) { return w + (f * C + c) * 9; }, true, wut);
    } else if (plan.algorithm == Conv2DAlgorithm::Shifted) {
      conv2d_shifted_pack_wt(w, g, filters, plan, offsets, wtp);
    } else if (plan.algorithm == Conv2DAlgorithm::Im2col) {
      pack_a(w, 1, K, K, filters, wtp);  // wᵀ: (k, f) at w[f*K + k]
    } else if (detail::is_amx(plan.algorithm)) {
      detail::conv2d_amx_pack_wt(w, g, filters, plan, work);
    }
  }
  T* slot_work = work + plan.shared_size();
  T* partial = slot_work + slots * plan.slot_size();
  using Vec = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  const auto run_slot = [&](int s) {
    T* dws = dw;
    T* dbs = db;
    if (s > 0) {
      dws = partial + (s - 1) * partial_size;
      dbs = db != nullptr ? dws + w_size : nullptr;
      std::fill(dws, dws + partial_size, T(0));
    }
    T* sw = slot_work + s * plan.slot_size();
    T* dwt = sw + plan.col + plan.dy + plan.dcol;  // shifted: dwᵀ of this slot's images
    const bool shifted = plan.weights == Conv2DAlgorithm::Shifted;
    if (shifted) std::fill(dwt, dwt + plan.acc, T(0));
    const index_t begin = detail::slot_begin(n, slots, s),
                  end = detail::slot_begin(n, slots, s + 1);
    if (dx != nullptr && !accumulate_dx && !writes_dx) {
      std::fill(dx + begin * in_size, dx + end * in_size, T(0));
    }
    if (detail::is_amx(plan.weights)) {
      detail::conv2d_amx_backward_slot(x, dy, begin, end, g, filters, plan, work, dx, dws, dbs, sw,
                                       add_dx);
      return;
    }
    if (winograd) {
      T* wino = sw + plan.col + plan.dy + plan.dcol + plan.acc;
      if (dbs != nullptr) {
        for (index_t i = begin; i < end; ++i)
          for (index_t f = 0; f < filters; ++f)
            dbs[f] += Eigen::Map<const Vec>(dy + i * out_size + f * P, P).sum();
      }
      // The weight gradient: dUt accumulated over the slot's images, then dw += Gᵀ dU G.
      const WinogradShape fs = winograd_forward_shape(g, filters);
      T* dut = wino + winograd_weight_grad_work<T>(plan.wino_block, C, filters);
      std::fill(dut, dut + winograd_grad_u_size<T>(C, filters), T(0));
      winograd_weight_grad(x + begin * in_size, dy + begin * out_size, end - begin, fs,
                           plan.wino_block, dut, wino);
      winograd_add_weight_grad(dut, filters, C, dws);
      if (dx != nullptr) {
        winograd_conv<true>(
            dy + begin * out_size, end - begin, winograd_input_grad_shape(g, filters), wut,
            static_cast<const T*>(nullptr), plan.wino_block, dx + begin * in_size, wino);
      }
      return;
    }
    for (index_t i = begin; i < end; i += plan.group) {
      const index_t gn = std::min(plan.group, end - i);
      const T* xi = x + i * in_size;
      const T* dyi = dy + i * out_size;
      T* dxi = dx != nullptr ? dx + i * in_size : nullptr;
      if (dbs != nullptr) {
        for (index_t j = 0; j < gn; ++j)
          for (index_t f = 0; f < filters; ++f)
            dbs[f] += Eigen::Map<const Vec>(dyi + j * out_size + f * P, P).sum();
      }
      switch (plan.weights) {
        case Conv2DAlgorithm::Pointwise:
          for (index_t j = 0; j < gn; ++j) {
            conv2d_pointwise_backward_image(xi + j * in_size, dyi + j * out_size, g, w, filters,
                                            dxi != nullptr ? dxi + j * in_size : nullptr, dws);
          }
          break;
        case Conv2DAlgorithm::Shifted:
          conv2d_shifted_backward_group(xi, dyi, gn, g, wtp, filters, plan, offsets, dxi, dwt, sw,
                                        add_dx);
          break;
        case Conv2DAlgorithm::Im2col:
        case Conv2DAlgorithm::Winograd:  // (handled above)
        case Conv2DAlgorithm::AmxIm2col:
        case Conv2DAlgorithm::AmxShifted:
          conv2d_im2col_backward_group(xi, dyi, gn, g, wtp, filters, plan, dxi, dws, sw);
          break;
      }
    }
    if (shifted) {  // dw (F x K) += dwtᵀ
      for (index_t f = 0; f < filters; ++f)
        for (index_t k = 0; k < K; ++k) dws[f * K + k] += dwt[k * fpad + f];
    }
  };
  parallel_for(slots, detail::slot_grain(slots, n, g, filters, simd_width<T>()),
               [&](index_t s0, index_t s1) {
                 for (index_t s = s0; s < s1; ++s) run_slot(int(s));
               });
  if (slots < 2) return;
  // dw/db (slot 0) += partial[1] + partial[2] + ..., in slot order, in blocks of elements.
  constexpr index_t block = 4096;
  const index_t blocks = (partial_size + block - 1) / block;
  parallel_for(blocks, parallel_grain(block * (slots - 1)), [&](index_t b0, index_t b1) {
    const index_t lo = b0 * block, hi = std::min(partial_size, b1 * block);
    for (int s = 1; s < slots; ++s) {
      const T* p = partial + (s - 1) * partial_size;
      for (index_t k = lo; k < std::min(hi, w_size); ++k) dw[k] += p[k];
      if (db != nullptr) {
        for (index_t k = std::max(lo, w_size); k < hi; ++k) db[k - w_size] += p[k];
      }
    }
  });
}

}  // namespace minires::kernels
