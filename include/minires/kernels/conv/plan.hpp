// How a 2-D convolution runs, chosen from its geometry alone: the algorithm, the images per
// product (group) and the workspace layout. conv2d.hpp dispatches on the plan; each algorithm
// lives in its own header beside this one:
//   pointwise.hpp     1x1, stride 1, no padding: one matrix product per image on the NCHW data
//   shifted.hpp       stride 1 or 2 with 'same' output size: products on shifted views of
//                     zero-padded planes, no column matrix
//   im2col_gemm.hpp   everything else: im2col columns of a group of images, one product
//   winograd.hpp      3x3, stride 1, wide enough (conv2d_is_winograd): forward, input gradient
//                     and weight gradient by Winograd F(4x4, 3x3)
//   shifted_amx.hpp   under MatmulPrecision::BF16 where AMX is available (amx_available), the
//                     shifted geometries with 32 or more channels: bfloat16 products on the
//                     shifted planes
//   im2col_amx.hpp    the same, for the other fp32 convolutions of 32 or more column rows:
//                     im2col + bfloat16 products
#pragma once

#include <algorithm>

#include <type_traits>

#include "minires/core/precision.hpp"
#include "minires/core/shape.hpp"
#include "minires/kernels/conv/im2col_amx.hpp"
#include "minires/kernels/conv/winograd.hpp"
#include "minires/kernels/im2col.hpp"
#include "minires/kernels/packed_gemm.hpp"

namespace minires::kernels {

// The algorithms of conv2d_forward/backward.
enum class Conv2DAlgorithm { Pointwise, Shifted, Im2col, Winograd, AmxIm2col, AmxShifted };

inline const char* conv2d_algorithm_name(Conv2DAlgorithm a) noexcept {
  switch (a) {
    case Conv2DAlgorithm::Pointwise:
      return "pointwise";
    case Conv2DAlgorithm::Shifted:
      return "shifted";
    case Conv2DAlgorithm::Im2col:
      return "im2col";
    case Conv2DAlgorithm::Winograd:
      return "winograd";
    case Conv2DAlgorithm::AmxIm2col:
      return "amx-im2col";
    case Conv2DAlgorithm::AmxShifted:
      return "amx-shifted";
  }
  return "?";
}

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

// True when the shifted layout (see shifted.hpp) can hold the convolution: stride 1 or 2, output
// the input size divided by the stride (rounded up), at most conv2d_max_shifted_taps taps.
inline bool conv2d_fits_shifted(const ConvGeometry& g) noexcept {
  const auto ceil_div = [](index_t v, index_t d) { return (v + d - 1) / d; };
  return g.stride_h <= 2 && g.stride_w <= 2 && g.out_h == ceil_div(g.height, g.stride_h) &&
         g.out_w == ceil_div(g.width, g.stride_w) &&
         g.kernel_h * g.kernel_w <= conv2d_max_shifted_taps;
}

// True when the fp32 convolution runs "shifted": it fits the layout, has a kernel larger than
// 1x1 (a strided 1x1 convolution's im2col is a cheap subsampling copy), and at most 4/3 as
// many product columns as output pixels (4x4 outputs of a 3x3 kernel would compute 25 columns
// per 16 pixels: im2col is faster there).
inline bool conv2d_is_shifted(const ConvGeometry& g) noexcept {
  if (!conv2d_fits_shifted(g) || g.kernel_h * g.kernel_w == 1 ||
      g.col_rows() < conv2d_min_shifted_rows) {
    return false;
  }
  const ShiftedTaps t(g);
  const index_t cols = (g.out_h + t.reach_h) * (g.out_w + t.reach_w);
  return 3 * cols <= 4 * g.out_h * g.out_w;
}

// How conv2d_forward/backward use their workspace (sizes in elements).
struct Conv2DPlan {
  Conv2DAlgorithm algorithm = Conv2DAlgorithm::Im2col;  // forward and input gradient
  Conv2DAlgorithm weights = Conv2DAlgorithm::Im2col;    // weight gradient
  index_t group = 1;                                    // images per GEMM
  index_t packed_w = 0;                                 // pack_a(w), F x K
  index_t packed_wt = 0;  // pack_a(wᵀ), K x F (shifted: each phase's w_phaseᵀ, C x F*taps)
  index_t col = 0;        // per slot: columns of a group, K x G*P (+ SIMD overrun)
                          // (shifted: the padded planes of x, C x phases x plane)
  index_t dy = 0;         // per slot: the group's output gradient, F x G*P (+ overrun)
                          // (shifted: the padded planes of dy, F x plane)
  index_t dcol = 0;       // per slot: wᵀ · dy, K x G*P (shifted: the product, C x cols, and
                          // before it dypᵀ, cols x round_up(F, SIMD width))
  index_t acc = 0;        // per slot, shifted only: dwᵀ of the slot's images, K x round_up(F)
                          // (AMX: Kp x Fp)
  index_t partial = 0;    // per slot after the first: dw (F x K) then db (F)
  // Shifted convolutions (all 0 otherwise): the padded layout of the header comment.
  index_t row = 0, gap = 0, origin = 0;  // Wp, gap, offset of the first pixel
  index_t image_cols = 0;                // (OH + gap) * Wp: product columns per image
  index_t plane = 0;                     // elements per plane (channel and phase) of a group
  index_t phases = 1;                    // stride_h * stride_w

  // Winograd convolutions (all 0 otherwise).
  index_t wino_block = 0;  // tiles per block
  index_t wino_u = 0;      // the forward's transformed kernel, winograd_packed_size(F, C)
  index_t wino_ut = 0;     // the input gradient's, winograd_packed_size(C, F)
  index_t wino = 0;        // per slot: the larger of winograd_slot_size(block, max(C, F)) and
                           // the weight gradient's work and dUt
  // AMX (all 0 otherwise): the bias as 16-float rows (Fp x 16, shifted only), the forward's and
  // the input gradient's bf16 weights (all shared), and the bf16 buffers of a slot. im2col: w
  // (Fp x Kp), wᵀ (Kp x Fp), conv2d_amx_slot_floats; col, dy as im2col's, dcol max(Fp, Kp) x
  // Gp, acc dwᵀ (Kp x Fp). Shifted: conv2d_amx_shifted_pack's, conv2d_amx_shifted_slot_floats;
  // col and dy none (x and dy go straight into bf16), dcol max(Fp, Cp) x Gp, acc dwᵀ (taps * Cp
  // x Fp).
  index_t amx_bias = 0, amx_w = 0, amx_wt = 0, amx = 0;

  bool shifted() const noexcept { return image_cols > 0; }  // conv2d_is_shifted, as planned

  // Workspace: packed_w, packed_wt, wino_u, wino_ut, amx_bias, amx_w, amx_wt, then per slot
  // col, dy, dcol, acc, wino, amx, then the partial gradients of slots 1...
  index_t shared_size() const noexcept {
    return packed_w + packed_wt + wino_u + wino_ut + amx_bias + amx_w + amx_wt;
  }
  index_t slot_size() const noexcept { return col + dy + dcol + acc + wino + amx; }
  index_t size(int slots) const noexcept {
    return shared_size() + slots * slot_size() + (slots - 1) * partial;
  }
};

namespace detail {

// The shifted layout's geometry (conv/shifted.hpp) in p: phases, row, gap, origin, columns per
// image, and a group of images with about target_cols product columns (at most max_group).
inline void plan_shifted_layout(const ConvGeometry& g, index_t target_cols, index_t max_group,
                                Conv2DPlan& p) {
  const ShiftedTaps taps(g);
  p.phases = taps.phases;
  p.row = g.out_w + taps.reach_w;
  p.gap = taps.reach_h;
  p.origin = (p.gap + 1) * p.row;
  p.image_cols = (g.out_h + p.gap) * p.row;
  p.group = std::clamp<index_t>((target_cols + p.image_cols - 1) / p.image_cols, 1, max_group);
}

// The plan of the direct algorithms (pointwise, shifted, im2col).
template <class T>
Conv2DPlan conv2d_direct_plan(const ConvGeometry& g, index_t filters) {
  Conv2DPlan p;
  const index_t K = g.col_rows(), P = g.col_cols();
  p.partial = filters * (K + 1);
  if (conv2d_is_pointwise(g)) {
    p.algorithm = Conv2DAlgorithm::Pointwise;
    return p;
  }
  const index_t overrun = simd_width<T>();
  if (conv2d_is_shifted(g)) {
    p.algorithm = Conv2DAlgorithm::Shifted;
    // About 768 product columns per group (16 blocks of the micro-kernel), at most 16 images.
    plan_shifted_layout(g, 768, 16, p);
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

}  // namespace detail

// True when the forward and input gradient run by Winograd F(4x4, 3x3): a 3x3 kernel at stride
// 1 (padding up to 2 on each side, so the input gradient is one too) where the transforms are
// small beside the products. Per tile, the products cost 36 C F multiply-adds on SIMD lanes and
// the transforms about 36 (C + F) scalar moves (gathering and scattering the NCHW tiles) plus
// vector arithmetic, so Winograd pays when C F / (C + F) is large against the SIMD width: 3 x
// width measured (2026-12-01, AVX2 Zen 3, one thread, forward + backward against the shifted
// path: 32 -> 32 1.05x slower, 64 -> 64 1.15-1.3x faster, 128 -> 128 1.4-1.8x faster), that
// is 64 -> 64 and up with 8 lanes, 128 -> 128 and up with 16.
template <class T>
bool conv2d_is_winograd(const ConvGeometry& g, index_t filters) noexcept {
  return g.kernel_h == 3 && g.kernel_w == 3 && g.stride_h == 1 && g.stride_w == 1 &&
         g.pad_top <= 2 && g.pad_bottom <= 2 && g.pad_left <= 2 && g.pad_right <= 2 &&
         g.channels * filters >= 3 * simd_width<T>() * (g.channels + filters);
}

// The forward's and the input gradient's Winograd problems.
inline WinogradShape winograd_forward_shape(const ConvGeometry& g, index_t filters) noexcept {
  return {g.channels, g.height, g.width, g.pad_top, g.pad_left, filters, g.out_h, g.out_w};
}
inline WinogradShape winograd_input_grad_shape(const ConvGeometry& g, index_t filters) noexcept {
  return {filters, g.out_h, g.out_w, 2 - g.pad_top, 2 - g.pad_left, g.channels, g.height, g.width};
}

// True when the backward's input-gradient path writes every element of dx of its images by
// itself, so that it can write dx instead of adding to it (conv2d_backward's accumulate_dx):
// the shifted paths (fp32 and AMX), when every stride phase of the input has a tap (kernel >=
// stride along both axes; a 1x3 kernel at stride 2 reads no odd rows).
inline bool conv2d_writes_dx(const ConvGeometry& g, const Conv2DPlan& plan) noexcept {
  // The input gradient runs on plan.weights' path, except under Winograd (its own).
  const bool shifted =
      plan.algorithm != Conv2DAlgorithm::Winograd &&
      (plan.weights == Conv2DAlgorithm::Shifted || plan.weights == Conv2DAlgorithm::AmxShifted);
  return shifted && g.kernel_h >= g.stride_h && g.kernel_w >= g.stride_w;
}

// True when the convolution runs on AMX tiles in bfloat16 (shifted_amx.hpp, im2col_amx.hpp):
// asked for, fp32, an AMX build and CPU, and at least 32 column rows (a first layer on one
// channel would be mostly padding).
template <class T>
bool conv2d_is_amx(const ConvGeometry& g, MatmulPrecision precision) noexcept {
  return precision == MatmulPrecision::BF16 && std::is_same_v<T, float> &&
         g.col_rows() >= amx_block && amx_available();
}

namespace detail {

// The plan of the AMX algorithms (conv2d_is_amx): shifted where the layout holds the geometry
// and there are 32 channels or more (fewer would be mostly padding in the channel blocks), else
// im2col. Unlike fp32, the shifted path also takes small images (4x4) and 1x1 kernels at stride
// 1: the dropped columns cost little on the tiles, copying im2col's columns much more. A
// strided 1x1 kernel reads one stride phase of the planes: im2col's subsampling copy is less.
inline Conv2DPlan conv2d_amx_plan(const ConvGeometry& g, index_t filters) {
  const index_t K = g.col_rows(), P = g.col_cols(), C = g.channels;
  const index_t Fp = amx_pad(filters), Cp = amx_pad(C), Kp = amx_pad(K);
  Conv2DPlan a;
  a.partial = filters * (K + 1);
  const bool strided_1x1 = g.kernel_h * g.kernel_w == 1 && g.stride_h * g.stride_w > 1;
  if (conv2d_fits_shifted(g) && C >= amx_block && !strided_1x1) {
    a.algorithm = a.weights = Conv2DAlgorithm::AmxShifted;
    a.amx_bias = Fp * 16;
    // About 512 product columns per group (16 blocks of the micro-kernel), at most 16 images.
    plan_shifted_layout(g, 512, 16, a);
    const index_t taps = g.kernel_h * g.kernel_w;  // all of them (conv2d_fits_shifted)
    const index_t Gp = amx_pad(a.group * a.image_cols);
    // Tiles read 32 columns from a tap's offset (up to origin + reach below and right).
    a.plane = amx_pad(a.origin + Gp + (a.gap + 1) * a.row + amx_block);
    a.amx_w = Fp * taps * Cp / 2;
    a.amx_wt = Cp * taps * Fp / 2;
    a.col = 0;  // x and dy go straight into bf16 (to_pairs, to_rows)
    a.dcol = std::max(Fp, Cp) * Gp;
    a.acc = taps * Cp * Fp;
    a.amx = conv2d_amx_shifted_slot_floats(C, filters, a.phases, a.plane, a.group * a.image_cols);
    return a;
  }
  a.algorithm = a.weights = Conv2DAlgorithm::AmxIm2col;
  // At least 256 columns (8 blocks of the micro-kernel), at most 16 images and ~1 MB of fp32
  // columns.
  constexpr index_t min_cols = 256, max_group = 16, max_col_bytes = 1 << 20;
  const index_t by_cache = std::max<index_t>(1, max_col_bytes / (index_t(sizeof(float)) * K * P));
  a.group = std::max<index_t>(1, std::min({(min_cols + P - 1) / P, max_group, by_cache}));
  const index_t cols = a.group * P;
  a.amx_w = amx_floats(filters, K);
  a.amx_wt = amx_floats(K, filters);
  a.col = K * cols;
  a.dy = filters * cols;
  a.dcol = std::max(Fp, Kp) * amx_pad(cols);
  a.acc = Kp * Fp;
  a.amx = conv2d_amx_slot_floats(K, filters, cols);
  return a;
}

}  // namespace detail

template <class T>
Conv2DPlan conv2d_plan(const ConvGeometry& g, index_t filters,
                       MatmulPrecision precision = MatmulPrecision::Highest) {
  if (conv2d_is_amx<T>(g, precision)) return detail::conv2d_amx_plan(g, filters);
  Conv2DPlan p = detail::conv2d_direct_plan<T>(g, filters);
  p.weights = p.algorithm;
  if (!conv2d_is_winograd<T>(g, filters)) return p;
  // Winograd throughout: none of the direct algorithm's buffers.
  Conv2DPlan w;
  w.algorithm = w.weights = Conv2DAlgorithm::Winograd;
  w.partial = p.partial;
  const index_t C = g.channels, b = winograd_block<T>(C, filters);
  w.wino_block = b;
  w.wino_u = winograd_packed_size(filters, C);
  w.wino_ut = winograd_packed_size(C, filters);
  w.wino =
      std::max(winograd_slot_size<T>(b, std::max(C, filters)),
               winograd_weight_grad_work<T>(b, C, filters) + winograd_grad_u_size<T>(C, filters));
  return w;
}

// Elements of workspace conv2d_forward/backward need for `slots` slots.
template <class T>
index_t conv2d_workspace_size(const ConvGeometry& g, index_t filters, int slots,
                              MatmulPrecision precision = MatmulPrecision::Highest) {
  return conv2d_plan<T>(g, filters, precision).size(slots);
}

}  // namespace minires::kernels
