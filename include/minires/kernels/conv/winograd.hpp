// Winograd convolutions F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016; the transforms of NNPACK and ncnn): a 3x3 stride-1 correlation computed on
// 6x6 input tiles that overlap by 2, each giving a 4x4 output tile, as
//
//   Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A        d: 6x6 input tile, g: 3x3 kernel, Y: 4x4 output
//
// with the 6x6 products summed over the input channels: for each of the 36 transform points
// ξ, one matrix product over the channels,
//
//   M[ξ] (F x tiles) = U[ξ] (F x C) · V[ξ] (C x tiles),   U = G g Gᵀ,  V = Bᵀ d B,
//
// on the packed micro-kernel (gemm_packed_a), followed by Y = Aᵀ M A per tile. That is 36
// multiply-adds per 16 outputs and channel pair instead of 144: 4x fewer, less the partial tiles
// at the edges (7x7 outputs take 2x2 tiles, 64 outputs for 49) and the transforms.
//
// The input gradient of a 3x3 stride-1 convolution is again one: dx = conv(dy, w'), w'[c][f] =
// w[f][c] rotated by 180 degrees, padded by 2 - pad, so it runs on the same code (conv2d.hpp).
// The weight gradient is the transposed algorithm (winograd_weight_grad, below).
//
// Accuracy: the transforms' coefficients (up to 8 in A, 1/24 in G) amplify rounding about
// tenfold over a direct sum. In float, on inputs and weights in [-1, 1], outputs differ from
// the exact sum by up to about 1e-5 x sqrt(9 C) (3e-5 measured at 17 channels, where a direct
// sum is within 2e-6); the tests allow that, and 1e-14 x sqrt(9 C) in double. Training is far
// less sensitive than that (the gradient's own noise is larger by orders of magnitude).
//
// The tiles of a batch (image, tile row, tile column) are processed in blocks of plan.block
// tiles, which may span images: for each input channel the block's 6x6 tiles are gathered
// (zeros outside the image), transformed with the SIMD lanes across tiles, the 36 products run,
// and the output tiles are transformed and scattered into the images. Each output pixel depends
// only on its own tile, so blocking never changes a result.
#pragma once

#include <xsimd/xsimd.hpp>

#include <algorithm>

#include "minires/core/cpu.hpp"
#include "minires/core/parallel.hpp"
#include "minires/core/shape.hpp"
#include "minires/kernels/packed_gemm.hpp"

namespace minires::kernels {

inline constexpr index_t winograd_tile = 4;     // output tile (m)
inline constexpr index_t winograd_alpha = 6;    // input tile (m + 3 - 1)
inline constexpr index_t winograd_points = 36;  // alpha x alpha transform points

// A convolution the Winograd kernels run: `channels` planes in -> `filters` planes out, with
// the 3x3 window at (oh - pad_top, ow - pad_left) for output pixel (oh, ow).
struct WinogradShape {
  index_t channels = 0, height = 0, width = 0, pad_top = 0, pad_left = 0;
  index_t filters = 0, out_h = 0, out_w = 0;

  index_t tiles_h() const noexcept { return (out_h + winograd_tile - 1) / winograd_tile; }
  index_t tiles_w() const noexcept { return (out_w + winograd_tile - 1) / winograd_tile; }
  index_t tiles() const noexcept { return tiles_h() * tiles_w(); }  // per image
  index_t in_size() const noexcept { return channels * height * width; }
  index_t out_size() const noexcept { return filters * out_h * out_w; }
};

// Tiles per block (a multiple of the micro-kernel's column panel): V and M of a block, 36 x
// (channels + filters) values per tile, take about half of the L2 cache; from 1 to 8 panels.
template <class T>
index_t winograd_block(index_t channels, index_t filters) noexcept {
  const index_t panel = gemm_nv * simd_width<T>();
  const index_t per_tile = winograd_points * (channels + filters) * index_t(sizeof(T));
  const index_t panels = l2_cache_bytes() / 2 / (per_tile * panel);
  return panel * std::clamp<index_t>(panels, 1, 8);
}

// Elements of a slot's Winograd scratch for blocks of `block` tiles and up to `planes` input or
// output planes: V (36 x planes x ld), M (36 x planes x ld) and the gathered tiles (36 x ld).
template <class T>
index_t winograd_slot_size(index_t block, index_t planes) noexcept {
  const index_t ld = round_up(block, simd_width<T>());
  return 2 * winograd_points * planes * ld + winograd_points * ld;
}

// Elements of the transformed, packed kernel of a `filters` x `channels` convolution.
inline index_t winograd_packed_size(index_t filters, index_t channels) noexcept {
  return winograd_points * packed_a_size(filters, channels);
}

namespace detail {

// The 1-D transforms, on scalars or SIMD batches.
// r = Bᵀ d (6 -> 6)
template <class V>
inline void winograd_bt(const V* d, V* r) {
  const V four(4), five(5), two(2);
  r[0] = four * d[0] - five * d[2] + d[4];
  r[1] = (d[3] + d[4]) - four * (d[1] + d[2]);
  r[2] = (d[4] - d[3]) + four * (d[1] - d[2]);
  r[3] = (d[4] - d[2]) + two * (d[3] - d[1]);
  r[4] = (d[4] - d[2]) - two * (d[3] - d[1]);
  r[5] = four * d[1] - five * d[3] + d[5];
}

// o = Aᵀ m (6 -> 4)
template <class V>
inline void winograd_at(const V* m, V* o) {
  const V two(2), four(4), eight(8);
  const V s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  o[0] = m[0] + s12 + s34;
  o[1] = d12 + two * d34;
  o[2] = s12 + four * s34;
  o[3] = d12 + eight * d34 + m[5];
}

// m = A y (4 -> 6): the transpose of winograd_at, for output gradients.
template <class V>
inline void winograd_a(const V* y, V* m) {
  const V two(2), four(4), eight(8);
  const V s02 = y[0] + y[2], s13 = y[1] + y[3];
  const V q02 = y[0] + four * y[2], q13 = two * y[1] + eight * y[3];
  m[0] = y[0];
  m[1] = s02 + s13;
  m[2] = s02 - s13;
  m[3] = q02 + q13;
  m[4] = q02 - q13;
  m[5] = y[3];
}

// g = Gᵀ u (6 -> 3): the transpose of winograd_g, for the kernel's gradient.
inline void winograd_gt(const double* u, double* g) {
  g[0] = u[0] / 4 - (u[1] + u[2]) / 6 + (u[3] + u[4]) / 24;
  g[1] = (u[2] - u[1]) / 6 + (u[3] - u[4]) / 12;
  g[2] = (u[3] + u[4] - u[1] - u[2]) / 6 + u[5];
}

// u = G g (3 -> 6), in double: the kernel is transformed once per call.
inline void winograd_g(const double* g, double* u) {
  u[0] = g[0] / 4;
  u[1] = -(g[0] + g[1] + g[2]) / 6;
  u[2] = -(g[0] - g[1] + g[2]) / 6;
  u[3] = g[0] / 24 + g[1] / 12 + g[2] / 6;
  u[4] = g[0] / 24 - g[1] / 12 + g[2] / 6;
  u[5] = g[2];
}

}  // namespace detail

// U[ξ] = G g Gᵀ for every (row i, column k) of an M x K kernel matrix, each packed by pack_a's
// layout into up + ξ * packed_a_size(M, K). kernel(i, k) returns a pointer to the 3x3 kernel
// of that pair and `rotate` reads it rotated by 180 degrees (the input gradient's w'). Blocks
// of gemm_mr rows are transformed in parallel (each writes only its own packed block).
template <class T, class Kernel>
void winograd_pack_kernel(index_t M, index_t K, Kernel kernel, bool rotate, T* up) {
  const index_t stride = packed_a_size(M, K), blocks = (M + gemm_mr - 1) / gemm_mr;
  parallel_for(blocks, parallel_grain(gemm_mr * K * 400), [&](index_t b0, index_t b1) {
    for (index_t p = 0; p < winograd_points; ++p)  // the blocks' padding rows stay 0
      std::fill(up + p * stride + b0 * K * gemm_mr, up + p * stride + b1 * K * gemm_mr, T(0));
    for (index_t i = b0 * gemm_mr; i < std::min(M, b1 * gemm_mr); ++i) {
      for (index_t k = 0; k < K; ++k) {
        const T* w = kernel(i, k);
        double g[9], t[18], u[36];
        for (int q = 0; q < 9; ++q) g[q] = double(w[rotate ? 8 - q : q]);
        // t (6x3) = G g: columns of g transformed; then u (6x6) = t Gᵀ: rows of t transformed.
        for (int c = 0; c < 3; ++c) {
          const double col[3] = {g[c], g[3 + c], g[6 + c]};
          double out[6];
          detail::winograd_g(col, out);
          for (int r = 0; r < 6; ++r) t[r * 3 + c] = out[r];
        }
        for (int r = 0; r < 6; ++r) detail::winograd_g(t + r * 3, u + r * 6);
        const index_t at = ((i / gemm_mr) * K + k) * gemm_mr + i % gemm_mr;
        for (index_t p = 0; p < winograd_points; ++p) up[p * stride + at] = T(u[p]);
      }
    }
  });
}

// V[ξ][c][t] = (Bᵀ d B)[ξ] for the tb tiles t0.. of the batch (s.tiles() per image, images
// s.in_size() apart in x) and every input channel c, at V + (ξ * C + c) * ld + t. D: 36 x ld
// scratch for one channel's gathered tiles; tmp: 36 SIMD batches.
template <class T>
void winograd_input_transform(const T* x, const WinogradShape& s, index_t t0, index_t tb,
                              index_t ld, T* V, T* D) {
  using B = xsimd::batch<T>;
  constexpr index_t L = simd_width<T>();
  constexpr index_t A = winograd_alpha, TM = winograd_tile;
  const index_t C = s.channels, H = s.height, W = s.width;
  const index_t tw = s.tiles_w(), tpi = s.tiles();
  alignas(64) T tmp[winograd_points * L];
  for (index_t c = 0; c < C; ++c) {
    for (index_t t = 0; t < tb; ++t) {
      const index_t g = t0 + t, img = g / tpi, r = g % tpi;
      const index_t top = (r / tw) * TM - s.pad_top, left = (r % tw) * TM - s.pad_left;
      const T* plane = x + img * s.in_size() + c * H * W;
      if (top >= 0 && left >= 0 && top + A <= H && left + A <= W) {
        for (index_t i = 0; i < A; ++i)
          for (index_t j = 0; j < A; ++j) D[(i * A + j) * ld + t] = plane[(top + i) * W + left + j];
      } else {
        for (index_t i = 0; i < A; ++i) {
          const index_t h = top + i;
          for (index_t j = 0; j < A; ++j) {
            const index_t w = left + j;
            D[(i * A + j) * ld + t] = h >= 0 && h < H && w >= 0 && w < W ? plane[h * W + w] : T(0);
          }
        }
      }
    }
    for (index_t t = 0; t < tb; t += L) {
      // Columns: tmp[i][j] = (Bᵀ d)[i][j]; then rows: V[i][j] = (tmp B)[i][j] = Bᵀ tmp[i][:].
      for (index_t j = 0; j < A; ++j) {
        B d[A], r[A];
        for (index_t i = 0; i < A; ++i) d[i] = B::load_unaligned(D + (i * A + j) * ld + t);
        detail::winograd_bt(d, r);
        for (index_t i = 0; i < A; ++i) r[i].store_aligned(tmp + (i * A + j) * L);
      }
      for (index_t i = 0; i < A; ++i) {
        B d[A], r[A];
        for (index_t j = 0; j < A; ++j) d[j] = B::load_aligned(tmp + (i * A + j) * L);
        detail::winograd_bt(d, r);
        for (index_t j = 0; j < A; ++j) r[j].store_unaligned(V + ((i * A + j) * C + c) * ld + t);
      }
    }
  }
}

// y (+)= the convolution of images [0, n) (s.in_size() apart; outputs s.out_size() apart) with
// the packed kernel up (winograd_pack_kernel, filters x channels) plus bias (may be null; only
// when assigning). work: winograd_slot_size(block, max(channels, filters)) elements.
template <bool Accumulate, class T>
void winograd_conv(const T* x, index_t n, const WinogradShape& s, const T* up, const T* bias,
                   index_t block, T* y, T* work) {
  using B = xsimd::batch<T>;
  constexpr index_t L = simd_width<T>();
  constexpr index_t A = winograd_alpha, P = winograd_points, TM = winograd_tile;
  const index_t C = s.channels, F = s.filters;
  const index_t tw = s.tiles_w(), tpi = s.tiles(), total = n * tpi;
  const index_t ld = round_up(block, L), planes = std::max(C, F);
  const index_t up_stride = packed_a_size(F, C);
  T* V = work;                     // V[ξ][c][t]: (ξ * C + c) * ld + t
  T* M = V + P * planes * ld;      // M[ξ][f][t]: (ξ * F + f) * ld + t
  T* D = M + P * planes * ld;      // gathered tiles of one channel: D[k][t], k = 6 * row + col
  alignas(64) T tmp[P * L];        // one transform's intermediate, 36 batches of lanes
  alignas(64) T out[TM * TM * L];  // output tiles of L lanes
  for (index_t t0 = 0; t0 < total; t0 += block) {
    const index_t tb = std::min(block, total - t0);
    winograd_input_transform(x, s, t0, tb, ld, V, D);
    // The 36 products over the channels.
    for (index_t p = 0; p < P; ++p)
      gemm_packed_a(up + p * up_stride, F, C, V + p * C * ld, ld, tb, M + p * F * ld, ld);
    // Output transform and scatter, filter by filter.
    for (index_t f = 0; f < F; ++f) {
      for (index_t t = 0; t < tb; t += L) {
        for (index_t j = 0; j < A; ++j) {  // columns: tmp[i][j] = (Aᵀ m)[i][j], i < 4
          B m[A], o[TM];
          for (index_t i = 0; i < A; ++i)
            m[i] = B::load_unaligned(M + ((i * A + j) * F + f) * ld + t);
          detail::winograd_at(m, o);
          for (index_t i = 0; i < TM; ++i) o[i].store_aligned(tmp + (i * A + j) * L);
        }
        const B b0(bias != nullptr ? bias[f] : T(0));
        for (index_t i = 0; i < TM; ++i) {  // rows: out[i][j] = Aᵀ tmp[i][:]
          B m[A], o[TM];
          for (index_t j = 0; j < A; ++j) m[j] = B::load_aligned(tmp + (i * A + j) * L);
          detail::winograd_at(m, o);
          for (index_t j = 0; j < TM; ++j) (o[j] + b0).store_aligned(out + (i * TM + j) * L);
        }
        for (index_t l = 0; l < std::min(L, tb - t); ++l) {
          const index_t g = t0 + t + l, img = g / tpi, r = g % tpi;
          const index_t oh0 = (r / tw) * TM, ow0 = (r % tw) * TM;
          T* dst = y + img * s.out_size() + f * s.out_h * s.out_w;
          const index_t rows = std::min(TM, s.out_h - oh0), cols = std::min(TM, s.out_w - ow0);
          for (index_t i = 0; i < rows; ++i) {
            T* row = dst + (oh0 + i) * s.out_w + ow0;
            for (index_t j = 0; j < cols; ++j) {
              if constexpr (Accumulate) {
                row[j] += out[(i * TM + j) * L + l];
              } else {
                row[j] = out[(i * TM + j) * L + l];
              }
            }
          }
        }
      }
    }
  }
}

// The weight gradient. With M[ξ] = U[ξ] V[ξ] and Y = Aᵀ M A per tile:
//   dM = A dY Aᵀ (4x4 -> 6x6),   dU[ξ] (F x C) += Σ_tiles dM[ξ] (F x tiles) · V[ξ]ᵀ,
//   dg = Gᵀ dU G (6x6 -> 3x3),
// 36 multiply-adds per tile and channel pair instead of 144 (as the forward). The products run
// on gemm_atb_taps with the SIMD lanes along the filters, so dM is stored tile-major:
// dMt[ξ][t][f]; dU is accumulated transposed, dUt[ξ][c][f], over all blocks of a call, and
// transformed once at the end (winograd_add_weight_grad).

// Elements of the weight gradient's scratch: V (36 x C x ld), dMt (36 x block x fpad) and the
// gathered tiles (36 x ld); dUt (winograd_grad_u_size) comes separately.
template <class T>
index_t winograd_weight_grad_work(index_t block, index_t channels, index_t filters) noexcept {
  const index_t ld = round_up(block, simd_width<T>());
  return winograd_points * (channels * ld + block * round_up(filters, simd_width<T>()) + ld);
}

// Elements of dUt: 36 x C x round_up(F, SIMD width).
template <class T>
index_t winograd_grad_u_size(index_t channels, index_t filters) noexcept {
  return winograd_points * channels * round_up(filters, simd_width<T>());
}

// dut (winograd_grad_u_size, accumulated) += the transformed weight gradient of images [0, n):
// x (s.in_size() apart) the forward's input, dy (s.out_size() apart) its output gradient.
// work: winograd_weight_grad_work(block, C, F) elements.
template <class T>
void winograd_weight_grad(const T* x, const T* dy, index_t n, const WinogradShape& s, index_t block,
                          T* dut, T* work) {
  using B = xsimd::batch<T>;
  constexpr index_t L = simd_width<T>();
  constexpr index_t A = winograd_alpha, P = winograd_points, TM = winograd_tile;
  const index_t C = s.channels, F = s.filters, OH = s.out_h, OW = s.out_w;
  const index_t tw = s.tiles_w(), tpi = s.tiles(), total = n * tpi;
  const index_t ld = round_up(block, L), fpad = round_up(F, L);
  T* V = work;             // V[ξ][c][t]: (ξ * C + c) * ld + t
  T* dM = V + P * C * ld;  // dMt[ξ][t][f]: (ξ * block + t) * fpad + f
  T* D = dM + P * block * fpad;
  alignas(64) T yt[TM * TM * L];  // one tile of L filters: yt[k][l], k = 4 * row + col
  alignas(64) T tmp[P * L];
  const index_t offset0 = 0;
  for (index_t t0 = 0; t0 < total; t0 += block) {
    const index_t tb = std::min(block, total - t0);
    winograd_input_transform(x, s, t0, tb, ld, V, D);
    // Output-gradient transform, tile by tile, the SIMD lanes across filters.
    for (index_t t = 0; t < tb; ++t) {
      const index_t g = t0 + t, img = g / tpi, r = g % tpi;
      const index_t oh0 = (r / tw) * TM, ow0 = (r % tw) * TM;
      const index_t rows = std::min(TM, OH - oh0), cols = std::min(TM, OW - ow0);
      const T* src = dy + img * s.out_size() + oh0 * OW + ow0;
      for (index_t f0 = 0; f0 < fpad; f0 += L) {
        const index_t lanes = std::min(L, F - f0);
        if (lanes < L || rows < TM || cols < TM) std::fill(yt, yt + TM * TM * L, T(0));
        for (index_t l = 0; l < lanes; ++l) {
          const T* plane = src + (f0 + l) * OH * OW;
          for (index_t i = 0; i < rows; ++i)
            for (index_t j = 0; j < cols; ++j) yt[(i * TM + j) * L + l] = plane[i * OW + j];
        }
        for (index_t j = 0; j < TM; ++j) {  // columns: tmp[i][j] = (A y)[i][j], i < 6
          B y[TM], m[A];
          for (index_t i = 0; i < TM; ++i) y[i] = B::load_aligned(yt + (i * TM + j) * L);
          detail::winograd_a(y, m);
          for (index_t i = 0; i < A; ++i) m[i].store_aligned(tmp + (i * A + j) * L);
        }
        for (index_t i = 0; i < A; ++i) {  // rows: dM[i][j] = A tmp[i][:]
          B y[TM], m[A];
          for (index_t j = 0; j < TM; ++j) y[j] = B::load_aligned(tmp + (i * A + j) * L);
          detail::winograd_a(y, m);
          for (index_t j = 0; j < A; ++j)
            m[j].store_unaligned(dM + ((i * A + j) * block + t) * fpad + f0);
        }
      }
    }
    // dUt[ξ] (C x fpad) += V[ξ] (C x tb) · dMt[ξ] (tb x fpad).
    for (index_t p = 0; p < P; ++p) {
      gemm_atb_taps(dM + p * block * fpad, fpad, tb, V + p * C * ld, ld, C, 1, &offset0,
                    dut + p * C * fpad);
    }
  }
}

// dw (F x C x 3 x 3) += Gᵀ dU G for dut as winograd_weight_grad left it.
template <class T>
void winograd_add_weight_grad(const T* dut, index_t filters, index_t channels, T* dw) {
  const index_t fpad = round_up(filters, simd_width<T>());
  for (index_t f = 0; f < filters; ++f) {
    for (index_t c = 0; c < channels; ++c) {
      double u[36], t[18], g[9];
      for (index_t p = 0; p < winograd_points; ++p)
        u[p] = double(dut[(p * channels + c) * fpad + f]);
      // t (3x6) = Gᵀ u: columns of u; then g (3x3) = t G: rows of t.
      for (int j = 0; j < 6; ++j) {
        const double col[6] = {u[j], u[6 + j], u[12 + j], u[18 + j], u[24 + j], u[30 + j]};
        double out[3];
        detail::winograd_gt(col, out);
        for (int i = 0; i < 3; ++i) t[i * 6 + j] = out[i];
      }
      for (int i = 0; i < 3; ++i) detail::winograd_gt(t + i * 6, g + i * 3);
      T* dst = dw + (f * channels + c) * 9;
      for (int q = 0; q < 9; ++q) dst[q] += T(g[q]);
    }
  }
}

}  // namespace minires::kernels
