// Convolutions by im2col + bfloat16 products on AMX tiles (kernels/amx_gemm.hpp), for
// MatmulPrecision::BF16 on CPUs with AMX. The columns of a group of G images sit side by side
// in one (K, G*P) matrix as in im2col_gemm.hpp (K = C*kh*kw, P = OH*OW, Gp = amx_pad(G*P)):
//   forward    out (Fp x Gp)   = bf16(w) · bf16(col)            then y[n] = out's columns + b
//   backward   dwt (Kp x Fp)  += bf16(col) · bf16(dy)ᵀ           dw = dwtᵀ at the end of a slot
//              dcol (Kp x Gp)  = bf16(wᵀ) · bf16(dy),            dx[n] += col2im(dcol)
// Every product sums in fp32; only the operands are rounded.
#pragma once

#include <algorithm>
#include <cstring>

#include "minires/core/shape.hpp"
#include "minires/kernels/amx_gemm.hpp"
#include "minires/kernels/im2col.hpp"

namespace minires::kernels {

// Floats of the bf16 buffers one slot needs (the columns in pair or row layout, then dy in
// pair layout and transposed), for groups of `cols` columns.
inline index_t conv2d_amx_slot_floats(index_t K, index_t filters, index_t cols) noexcept {
  return amx_floats(K, cols) + 2 * amx_floats(filters, cols);
}

// Floats of the AMX shifted path's bf16 slot buffers (conv/shifted_amx.hpp): x as pairs or
// rows, dy as pairs, and dyᵀ, for planes of `plane` elements and groups of `cols` columns.
inline index_t conv2d_amx_shifted_slot_floats(index_t channels, index_t filters, index_t phases,
                                              index_t plane, index_t cols) noexcept {
  const index_t Cp = amx_pad(channels), Fp = amx_pad(filters);
  return Cp * phases * plane / 2 + Fp * plane / 2 + amx_pad(cols) * Fp / 2;
}

#if MINIRES_AMX

// Forward of a group of gn images x into y: wb = amx_pack_rows(w) (Fp x Kp); col: K x cols
// floats; out: max(Fp, Kp) x Gp floats; bf: conv2d_amx_slot_floats floats.
inline void conv2d_amx_forward_group(const float* x, index_t gn, const ConvGeometry& g,
                                     const bf16_t* wb, const float* b, index_t filters, float* y,
                                     float* col, float* out, float* bf) {
  const index_t in_size = g.in_size(), P = g.col_cols(), K = g.col_rows();
  const index_t cols = gn * P, Gp = amx_pad(cols), Fp = amx_pad(filters);
  for (index_t j = 0; j < gn; ++j) im2col(x + j * in_size, g, col + j * P, cols);
  auto* bcol = reinterpret_cast<bf16_t*>(bf);
  amx_pack_pairs(col, cols, K, cols, bcol);
  amx_gemm(wb, bcol, Fp, Gp, amx_pad(K), out, Gp, false);
  for (index_t j = 0; j < gn; ++j) {
    for (index_t f = 0; f < filters; ++f) {
      const float* o = out + f * Gp + j * P;
      float* yf = y + (j * filters + f) * P;
      const float bias = b != nullptr ? b[f] : 0.0f;
      for (index_t p = 0; p < P; ++p) yf[p] = o[p] + bias;
    }
  }
}

// Gradients of a group of gn images: dwt (Kp x Fp) += col · dyᵀ; dx (may be null) +=
// col2im(wᵀ · dy) with wtb = amx_pack_rows(wᵀ) (Kp x Fp). col, dyg: K x cols and F x cols
// floats; out: Kp x Gp floats; bf: conv2d_amx_slot_floats floats.
inline void conv2d_amx_backward_group(const float* x, const float* dy, index_t gn,
                                      const ConvGeometry& g, const bf16_t* wtb, index_t filters,
                                      float* dx, float* dwt, float* col, float* dyg, float* out,
                                      float* bf) {
  const index_t in_size = g.in_size(), P = g.col_cols(), K = g.col_rows();
  const index_t out_size = filters * P, cols = gn * P;
  const index_t Gp = amx_pad(cols), Fp = amx_pad(filters), Kp = amx_pad(K);
  for (index_t j = 0; j < gn; ++j) {
    im2col(x + j * in_size, g, col + j * P, cols);
    const float* dyj = dy + j * out_size;
    for (index_t f = 0; f < filters; ++f) {
      std::copy(dyj + f * P, dyj + (f + 1) * P, dyg + f * cols + j * P);
    }
  }
  auto* acol = reinterpret_cast<bf16_t*>(bf);                       // Kp x Gp, rows
  auto* dyv = reinterpret_cast<bf16_t*>(bf + amx_floats(K, cols));  // Fp x Gp, pairs
  bf16_t* dyt = dyv + 2 * amx_floats(filters, cols);                // Gp x Fp, pairs
  amx_pack_rows(col, cols, 1, K, cols, acol);
  amx_pack_pairs(dyg, cols, filters, cols, dyv);
  amx_transpose_pairs(dyv, Gp, Fp, Gp, dyt);
  amx_gemm(acol, dyt, Kp, Fp, Gp, dwt, Fp, true);
  if (dx == nullptr) return;
  amx_gemm(wtb, dyv, Kp, Gp, Fp, out, Gp, false);
  for (index_t j = 0; j < gn; ++j) col2im(out + j * P, g, dx + j * in_size, Gp);
}

#endif  // MINIRES_AMX

}  // namespace minires::kernels
