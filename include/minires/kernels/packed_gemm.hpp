// A register-blocked matrix product for convolutions, vectorised with xsimd:
//
//   C (M x N, row stride ldc) = init + A (M x K) · B (K x N, row stride ldb)
//
// where init is 0 or one value per row of C (a convolution's bias). A is packed once into
// blocks of `gemm_mr` rows (pack_a), so the same weights serve every image of a batch. N runs
// along the SIMD lanes: one image's output pixels in a forward convolution (A = weights, B =
// im2col columns) and one image's column rows in the input gradient (A = weightsᵀ, B = output
// gradient). The micro-kernel keeps a gemm_mr x (3 SIMD batches) block of C in registers for the
// whole K loop (24 accumulators with AVX-512), which is what Eigen's general-purpose GEMM cannot
// do on these small, wide products (its blocking is built for large square ones).
//
// Several images at once: with segments (seg_len, seg_stride), column n of B and C belongs to
// image n / seg_len and is stored at C + (n / seg_len) * seg_stride + row * ldc + n % seg_len,
// so one call fills the NCHW outputs of a group of images whose columns B holds side by side
// (this keeps all SIMD lanes busy at 7x7 or 4x4, where one image has 49 or 16 columns).
//
// Contract: every row of B must be readable for round_up(N, simd width) elements (pad ldb);
// the extra lanes feed only columns of C that are never stored. Each element of C is one
// K-ordered sum, so the result does not depend on threads or blocking.
#pragma once

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cstddef>

#include "minires/core/shape.hpp"

namespace minires::kernels {

// Rows of A per packed block (and per micro-kernel call).
inline constexpr index_t gemm_mr = 8;

inline index_t round_up(index_t v, index_t m) noexcept {
  return (v + m - 1) / m * m;
}

// SIMD width of T, in elements.
template <class T>
constexpr index_t simd_width() noexcept {
  return static_cast<index_t>(xsimd::batch<T>::size);
}

// Elements of a packed copy of an M x K matrix.
inline index_t packed_a_size(index_t M, index_t K) noexcept {
  return round_up(M, gemm_mr) * K;
}

// Packs A (M x K, element (i, k) at A[i * row_stride + k * col_stride]: a transposed matrix is
// packed by swapping the strides) into blocks of gemm_mr rows, k-major inside a block:
//   Ap[(blk * K + k) * gemm_mr + r] = A(blk * gemm_mr + r, k), and 0 for rows >= M.
template <class T>
void pack_a(const T* A, index_t row_stride, index_t col_stride, index_t M, index_t K, T* Ap) {
  const index_t blocks = round_up(M, gemm_mr) / gemm_mr;
  for (index_t blk = 0; blk < blocks; ++blk) {
    T* out = Ap + blk * K * gemm_mr;
    for (index_t k = 0; k < K; ++k) {
      for (index_t r = 0; r < gemm_mr; ++r) {
        const index_t i = blk * gemm_mr + r;
        out[k * gemm_mr + r] = i < M ? A[i * row_stride + k * col_stride] : T(0);
      }
    }
  }
}

namespace detail {

// Where the columns of C go: column n at c + (n / len) * stride + n % len (len >= all: plain).
struct Segments {
  index_t len, stride;
};

// Stores `count` (<= width) lanes of v as columns n0.. of row `row`, following the segments.
template <class T>
void store_columns(const xsimd::batch<T>& v, T* c, index_t ldc, index_t row, index_t n0,
                   index_t count, Segments seg) {
  constexpr index_t L = simd_width<T>();
  const index_t s = n0 / seg.len, q = n0 % seg.len;
  if (count == L && q + L <= seg.len) {
    v.store_unaligned(c + s * seg.stride + row * ldc + q);
    return;
  }
  alignas(64) T tmp[L];
  v.store_aligned(tmp);
  for (index_t j = 0; j < count; ++j) {
    const index_t n = n0 + j;
    c[(n / seg.len) * seg.stride + row * ldc + n % seg.len] = tmp[j];
  }
}

// Rows [0, rows) x columns [n0, n0 + cols) of C = init + Ap-block · B, for one block of
// gemm_mr rows and NV SIMD batches of columns (cols <= NV * width; the last may be partial).
template <class T, int NV>
void packed_micro(const T* ap, index_t K, const T* b, index_t ldb, T* c, index_t ldc, index_t rows,
                  index_t n0, index_t cols, const T* row_init, Segments seg) {
  using B = xsimd::batch<T>;
  constexpr index_t L = simd_width<T>();
  constexpr index_t MR = gemm_mr;
  B acc[MR][NV];
  for (index_t r = 0; r < MR; ++r) {
    const B init(row_init != nullptr && r < rows ? row_init[r] : T(0));
    for (int v = 0; v < NV; ++v) acc[r][v] = init;
  }
  for (index_t k = 0; k < K; ++k) {
    B bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = B::load_unaligned(b + k * ldb + v * L);
    const T* a = ap + k * MR;
    for (index_t r = 0; r < MR; ++r) {
      const B ar(a[r]);
      for (int v = 0; v < NV; ++v) acc[r][v] = xsimd::fma(ar, bv[v], acc[r][v]);
    }
  }
  for (index_t r = 0; r < rows; ++r) {
    for (int v = 0; v < NV; ++v) {
      const index_t lo = v * L;
      if (lo < cols) store_columns(acc[r][v], c, ldc, r, n0 + lo, std::min(L, cols - lo), seg);
    }
  }
}

}  // namespace detail

// C (M x N) = init + A · B with A packed by pack_a (M x K). row_init: M values or null (zero).
// seg_len/seg_stride: see the header comment (the defaults store C as one plain matrix).
template <class T>
void gemm_packed_a(const T* Ap, index_t M, index_t K, const T* B, index_t ldb, index_t N, T* C,
                   index_t ldc, const T* row_init = nullptr, index_t seg_len = 0,
                   index_t seg_stride = 0) {
  constexpr index_t L = simd_width<T>();
  constexpr index_t NB = 3 * L;
  const detail::Segments seg{seg_len > 0 ? seg_len : std::max<index_t>(N, 1), seg_stride};
  for (index_t n0 = 0; n0 < N; n0 += NB) {
    const index_t cols = std::min(NB, N - n0);
    const T* b = B + n0;
    for (index_t m0 = 0; m0 < M; m0 += gemm_mr) {
      const T* ap = Ap + m0 * K;
      const index_t rows = std::min(gemm_mr, M - m0);
      const T* init = row_init != nullptr ? row_init + m0 : nullptr;
      T* c = C + m0 * ldc;
      if (cols > 2 * L) {
        detail::packed_micro<T, 3>(ap, K, b, ldb, c, ldc, rows, n0, cols, init, seg);
      } else if (cols > L) {
        detail::packed_micro<T, 2>(ap, K, b, ldb, c, ldc, rows, n0, cols, init, seg);
      } else {
        detail::packed_micro<T, 1>(ap, K, b, ldb, c, ldc, rows, n0, cols, init, seg);
      }
    }
  }
}

}  // namespace minires::kernels
