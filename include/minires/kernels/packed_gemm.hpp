// A register-blocked matrix product for convolutions, vectorised with xsimd:
//
//   C (M x N, row stride ldc) = init + A (M x K) · B (K x N, row stride ldb)
//
// where init is 0 or one value per row of C (a convolution's bias). A is packed once into
// blocks of `gemm_mr` rows (pack_a), so the same weights serve every image of a batch. N runs
// along the SIMD lanes: one image's output pixels in a forward convolution (A = weights, B =
// im2col columns) and one image's column rows in the input gradient (A = weightsᵀ, B = output
// gradient). The micro-kernel keeps a gemm_mr x (3 SIMD batches) block of C in registers for the
// whole K loop (24 accumulators with AVX-512, 12 with AVX2: gemm_mr below), which is what Eigen's
// general-purpose GEMM cannot do on these small, wide products (its blocking is built for large
// square ones).
//
// Several images at once: with segments (seg_len, seg_stride), column n of B and C belongs to
// image n / seg_len and is stored at C + (n / seg_len) * seg_stride + row * ldc + n % seg_len,
// so one call fills the NCHW outputs of a group of images whose columns B holds side by side
// (this keeps all SIMD lanes busy at 7x7 or 4x4, where one image has 49 or 16 columns).
//
// Implicit convolutions (gemm_packed_taps): row k = (c, t) of B is not stored as a matrix but
// read at b + c * channel_stride + tap_offset[t], a shifted view of a zero-padded image plane
// (the "shifted convolutions" of kernels/conv2d.hpp), so no im2col copy is made.
//
// Contract: every row of B must be readable for round_up(N, simd width) elements (pad ldb);
// the extra lanes feed only columns of C that are never stored. Each element of C is one
// K-ordered sum, so the result does not depend on threads or blocking.
//
// gemm_atb_taps is the other product of a convolution's backward pass, the weight gradient:
//   C (M x K) += A (M x N) · Bᵀ,  C[m][k] += sum_n A[m][n] * B_k[n],
// summed over the long N (the output pixels of a group of images) with the SIMD lanes along M,
// from A transposed, and B_k again any row pointer (a shifted view).
#pragma once

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cstddef>

#include "minires/core/shape.hpp"

namespace minires::kernels {

// Vector registers of the instruction set this build targets: the micro-kernels size their
// register blocks to it (accumulators + operands must fit, or every FMA spills to the stack).
// AVX-512 and AArch64 have 32; AVX2, AVX and SSE have 16.
inline constexpr int simd_registers =
#if defined(__AVX512F__) || defined(__aarch64__)
    32;
#else
    16;
#endif

// Rows of A per packed block (and per micro-kernel call), and SIMD batches of columns per
// micro-kernel call: a gemm_mr x gemm_nv block of accumulators, plus gemm_nv loads of B and one
// broadcast of A, in the register file (8 x 3 + 3 + 1 = 28 of 32; 4 x 3 + 3 + 1 = 16 of 16).
inline constexpr index_t gemm_mr = simd_registers >= 32 ? 8 : 4;
inline constexpr int gemm_nv = 3;

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

// Packs the M x K matrix whose element (i, k) is at(i, k) into blocks of gemm_mr rows, k-major
// inside a block:
//   Ap[(blk * K + k) * gemm_mr + r] = at(blk * gemm_mr + r, k), and 0 for rows >= M.
template <class T, class At>
void pack_a_with(index_t M, index_t K, At at, T* Ap) {
  const index_t blocks = round_up(M, gemm_mr) / gemm_mr;
  for (index_t blk = 0; blk < blocks; ++blk) {
    T* out = Ap + blk * K * gemm_mr;
    for (index_t k = 0; k < K; ++k) {
      for (index_t r = 0; r < gemm_mr; ++r) {
        const index_t i = blk * gemm_mr + r;
        out[k * gemm_mr + r] = i < M ? at(i, k) : T(0);
      }
    }
  }
}

// Packs A (M x K, element (i, k) at A[i * row_stride + k * col_stride]: a transposed matrix is
// packed by swapping the strides).
template <class T>
void pack_a(const T* A, index_t row_stride, index_t col_stride, index_t M, index_t K, T* Ap) {
  pack_a_with(
      M, K, [&](index_t i, index_t k) { return A[i * row_stride + k * col_stride]; }, Ap);
}

namespace detail {

// Where the columns of C go: column n at c + (n / len) * stride + n % len. A plain matrix has
// stride 0 and len >= all columns.
struct Segments {
  index_t len, stride;
};

// Stores `count` (<= width) lanes of v as columns n0.. of row `row`, following the segments.
template <class T>
void store_columns(const xsimd::batch<T>& v, T* c, index_t ldc, index_t row, index_t n0,
                   index_t count, Segments seg) {
  constexpr index_t L = simd_width<T>();
  if (seg.stride == 0) {  // one plain matrix: no division on the hot path
    if (count == L) {
      v.store_unaligned(c + row * ldc + n0);
      return;
    }
  } else {
    const index_t s = n0 / seg.len, q = n0 % seg.len;
    if (count == L && q + L <= seg.len) {
      v.store_unaligned(c + s * seg.stride + row * ldc + q);
      return;
    }
  }
  alignas(64) T tmp[L];
  v.store_aligned(tmp);
  for (index_t j = 0; j < count; ++j) {
    const index_t n = n0 + j;
    c[(n / seg.len) * seg.stride + row * ldc + n % seg.len] = tmp[j];
  }
}

// The rows of B, visited in k order by for_each(n0, f): f(pointer to row k, column n0).
// A stored matrix: row k at b + k * ldb.
template <class T>
struct MatrixRows {
  const T* b;
  index_t ldb, K;
  template <class F>
  void for_each(index_t n0, F&& f) const {
    for (index_t k = 0; k < K; ++k) f(b + k * ldb + n0);
  }
};

// Shifted views: row k = c * taps + t at b + c * channel_stride + tap_offset[t].
template <class T>
struct TapRows {
  const T* b;
  index_t channel_stride, channels, taps;
  const index_t* tap_offset;
  template <class F>
  void for_each(index_t n0, F&& f) const {
    for (index_t c = 0; c < channels; ++c) {
      const T* bc = b + c * channel_stride + n0;
      for (index_t t = 0; t < taps; ++t) f(bc + tap_offset[t]);
    }
  }
  const T* row(index_t k) const noexcept {
    return b + (k / taps) * channel_stride + tap_offset[k % taps];
  }
};

// Rows [0, rows) x columns [n0, n0 + cols) of C = init + Ap-block · B, for one block of
// gemm_mr rows and NV SIMD batches of columns (cols <= NV * width; the last may be partial).
template <class T, int NV, class Rows>
void packed_micro(const T* ap, const Rows& brows, T* c, index_t ldc, index_t rows, index_t n0,
                  index_t cols, const T* row_init, Segments seg) {
  using B = xsimd::batch<T>;
  constexpr index_t L = simd_width<T>();
  constexpr index_t MR = gemm_mr;
  B acc[MR][NV];
  for (index_t r = 0; r < MR; ++r) {
    const B init(row_init != nullptr && r < rows ? row_init[r] : T(0));
    for (int v = 0; v < NV; ++v) acc[r][v] = init;
  }
  const T* a = ap;
  brows.for_each(n0, [&](const T* b) {
    B bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = B::load_unaligned(b + v * L);
    for (index_t r = 0; r < MR; ++r) {
      const B ar(a[r]);
      for (int v = 0; v < NV; ++v) acc[r][v] = xsimd::fma(ar, bv[v], acc[r][v]);
    }
    a += MR;
  });
  for (index_t r = 0; r < rows; ++r) {
    for (int v = 0; v < NV; ++v) {
      const index_t lo = v * L;
      if (lo < cols) store_columns(acc[r][v], c, ldc, r, n0 + lo, std::min(L, cols - lo), seg);
    }
  }
}

// C (M x N) = init + A · B for A packed (M x K) and B given by its rows (MatrixRows, TapRows).
template <class T, class Rows>
void gemm_packed_rows(const T* Ap, index_t M, index_t K, const Rows& brows, index_t N, T* C,
                      index_t ldc, const T* row_init, Segments seg) {
  constexpr index_t L = simd_width<T>();
  constexpr index_t NB = gemm_nv * L;
  static_assert(gemm_nv == 3, "the dispatch below handles 1 to 3 batches");
  for (index_t n0 = 0; n0 < N; n0 += NB) {
    const index_t cols = std::min(NB, N - n0);
    for (index_t m0 = 0; m0 < M; m0 += gemm_mr) {
      const T* ap = Ap + m0 * K;
      const index_t rows = std::min(gemm_mr, M - m0);
      const T* init = row_init != nullptr ? row_init + m0 : nullptr;
      T* c = C + m0 * ldc;
      if (cols > 2 * L) {
        packed_micro<T, 3>(ap, brows, c, ldc, rows, n0, cols, init, seg);
      } else if (cols > L) {
        packed_micro<T, 2>(ap, brows, c, ldc, rows, n0, cols, init, seg);
      } else {
        packed_micro<T, 1>(ap, brows, c, ldc, rows, n0, cols, init, seg);
      }
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
  const detail::Segments seg = seg_len > 0 && seg_len < N
                                   ? detail::Segments{seg_len, seg_stride}
                                   : detail::Segments{std::max<index_t>(N, 1), 0};
  detail::gemm_packed_rows(Ap, M, K, detail::MatrixRows<T>{B, ldb, K}, N, C, ldc, row_init, seg);
}

// C (M x N, row stride ldc) = init + A · B with A packed by pack_a (M x channels * taps) and
// row c * taps + t of B at b + c * channel_stride + tap_offset[t] (readable for round_up(N,
// simd width) elements).
template <class T>
void gemm_packed_taps(const T* Ap, index_t M, index_t channels, index_t taps,
                      const index_t* tap_offset, const T* b, index_t channel_stride, index_t N,
                      T* C, index_t ldc, const T* row_init = nullptr) {
  const detail::TapRows<T> rows{b, channel_stride, channels, taps, tap_offset};
  detail::gemm_packed_rows(Ap, M, channels * taps, rows, N, C, ldc, row_init,
                           detail::Segments{std::max<index_t>(N, 1), 0});
}

namespace detail {

// ct[j * ld + m] += sum over n in [n0, n1) of at[n * ld + m] * bk[j][n], for rows j < ks (<= KB)
// and the first MV SIMD batches of columns m (the caller offsets ct and at to its block; bk[j]
// for j >= ks repeats a valid row and is not stored). The KB x MV block stays in registers
// over the whole n range.
template <class T, int MV, int KB>
void atb_micro(const T* at, index_t ld, index_t n0, index_t n1, const T* const* bk, index_t ks,
               T* ct) {
  using V = xsimd::batch<T>;
  constexpr index_t L = simd_width<T>();
  V acc[KB][MV];
  for (index_t j = 0; j < KB; ++j)
    for (int v = 0; v < MV; ++v)
      acc[j][v] = j < ks ? V::load_unaligned(ct + j * ld + v * L) : V(T(0));
  for (index_t n = n0; n < n1; ++n) {
    V a[MV];
    for (int v = 0; v < MV; ++v) a[v] = V::load_unaligned(at + n * ld + v * L);
    for (index_t j = 0; j < KB; ++j) {
      const V bj(bk[j][n]);
      for (int v = 0; v < MV; ++v) acc[j][v] = xsimd::fma(bj, a[v], acc[j][v]);
    }
  }
  for (index_t j = 0; j < ks; ++j)
    for (int v = 0; v < MV; ++v) acc[j][v].store_unaligned(ct + j * ld + v * L);
}

// Columns [m0, m0 + MV * width) of Ct over n in [n0, n1), every row k, KB rows at a time.
template <class T, int MV, int KB>
void atb_columns(const T* at, index_t ld, index_t n0, index_t n1, const TapRows<T>& brows,
                 index_t K, T* ct) {
  for (index_t k0 = 0; k0 < K; k0 += KB) {
    const index_t ks = std::min<index_t>(KB, K - k0);
    const T* bk[KB];
    for (index_t j = 0; j < KB; ++j) bk[j] = brows.row(k0 + std::min(j, ks - 1));
    atb_micro<T, MV, KB>(at, ld, n0, n1, bk, ks, ct + k0 * ld);
  }
}

}  // namespace detail

// The weight gradient of a shifted convolution, C (M x K) += A (M x N) · Bᵀ, computed as its
// transpose with the SIMD lanes along M:
//   Ct[k * ld + m] += sum_n At[n * ld + m] * B_k[n]      for m < ld, k < channels * taps
// with row k of B at b + (k / taps) * channel_stride + tap_offset[k % taps] (N elements read),
// At = Aᵀ (N x ld) and ld = round_up(M, simd width) (At is 0 in columns m >= M, and so are the
// extra columns of Ct). A block of up to 4 SIMD batches of m times 6 to 16 rows k (2 x 6 or
// 1 x 12 with 16 vector registers) stays in registers over 64 consecutive n (one broadcast of
// B_k[n] per row, MV loads of At per n): the 64 rows of At and the B rows they meet stay in L1
// while every k passes over them, instead of streaming all of A and B from L2 once per block, and
// no horizontal sums are needed. Each Ct[k][m] adds its terms in n order.
template <class T>
void gemm_atb_taps(const T* At, index_t ld, index_t N, const T* b, index_t channel_stride,
                   index_t channels, index_t taps, const index_t* tap_offset, T* Ct) {
  constexpr index_t L = simd_width<T>(), NC = 64;
  const detail::TapRows<T> brows{b, channel_stride, channels, taps, tap_offset};
  const index_t K = channels * taps, vecs = ld / L;
  for (index_t n0 = 0; n0 < N; n0 += NC) {
    const index_t n1 = std::min(N, n0 + NC);
    if constexpr (simd_registers >= 32) {
      for (index_t v0 = 0; v0 < vecs; v0 += 4) {
        const T* at = At + v0 * L;
        T* ct = Ct + v0 * L;
        switch (std::min<index_t>(4, vecs - v0)) {
          case 4:
            detail::atb_columns<T, 4, 6>(at, ld, n0, n1, brows, K, ct);
            break;
          case 3:
            detail::atb_columns<T, 3, 8>(at, ld, n0, n1, brows, K, ct);
            break;
          case 2:
            detail::atb_columns<T, 2, 12>(at, ld, n0, n1, brows, K, ct);
            break;
          default:
            detail::atb_columns<T, 1, 16>(at, ld, n0, n1, brows, K, ct);
            break;
        }
      }
    } else {  // 16 registers: 2 x 6 and 1 x 12 blocks (12 accumulators, 14-15 registers)
      for (index_t v0 = 0; v0 < vecs; v0 += 2) {
        if (vecs - v0 >= 2) {
          detail::atb_columns<T, 2, 6>(At + v0 * L, ld, n0, n1, brows, K, Ct + v0 * L);
        } else {
          detail::atb_columns<T, 1, 12>(At + v0 * L, ld, n0, n1, brows, K, Ct + v0 * L);
        }
      }
    }
  }
}

}  // namespace minires::kernels
