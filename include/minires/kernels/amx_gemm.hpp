// bfloat16 matrix products on Intel AMX tiles (Sapphire Rapids and later), accumulated in fp32:
//
//   C (Mp x Np, fp32, row stride ldc) (+)= A (Mp x Kp) · B (Kp x Np)
//
// with A and B rounded to bfloat16 (round to nearest even, as vcvtneps2bf16) when they are
// packed, and every product summed in fp32 by tdpbf16ps. Mp, Np and Kp are multiples of
// amx_block (32): the packing functions below pad with zeros. Layouts (bf16 = std::uint16_t):
//   A   row-major, Mp x Kp                                   (amx_pack_rows)
//   B   "VNNI": pairs of rows interleaved, element (k, n) at B[(k / 2) * 2 Np + 2 n + k % 2]
//       (amx_pack_pairs from a row-major K x N matrix; amx_transpose_pairs from the pairs of
//       its transpose)
// The micro-kernel holds a 32 x 32 block of C in four 16 x 16 tiles for the whole K loop, with
// two tiles of A and two of B (the eight tile registers). Each element of C is one K-ordered
// sum, so the result does not depend on threads or blocking.
//
// Compiled when the build targets AMX-BF16 and AVX512-BF16 (-march=native on such a CPU);
// amx_available() also asks Linux for the tile state (arch_prctl), once per process. Without
// either, amx_available() is false and the callers keep their fp32 paths.
#pragma once

#include <cstdint>
#include <cstring>

#include "minires/core/shape.hpp"

#if defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BF16__) && \
    defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__linux__) && defined(__x86_64__)
#define MINIRES_AMX 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#define MINIRES_AMX 0
#endif

namespace minires::kernels {

using bf16_t = std::uint16_t;

// Rows, columns and depth of every padded AMX operand are multiples of this.
inline constexpr index_t amx_block = 32;

// True when this build has the AMX path and the OS lets this process use the tiles.
inline bool amx_available() noexcept {
#if MINIRES_AMX
  static const bool granted = [] {
    constexpr long arch_req_xcomp_perm = 0x1023, xfeature_xtiledata = 18;
    return syscall(SYS_arch_prctl, arch_req_xcomp_perm, xfeature_xtiledata) == 0;
  }();
  return granted;
#else
  return false;
#endif
}

// bf16 elements of a padded Mp x Kp operand, as floats of workspace (two per float).
inline index_t amx_floats(index_t rows, index_t cols) noexcept {
  const auto up = [](index_t v) { return (v + amx_block - 1) / amx_block * amx_block; };
  return up(rows) * up(cols) / 2;
}

inline index_t amx_pad(index_t v) noexcept {
  return (v + amx_block - 1) / amx_block * amx_block;
}

#if MINIRES_AMX

namespace detail {

// Sixteen rows of 64 bytes in all eight tiles (palette 1).
struct alignas(64) AmxTileConfig {
  std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
  AmxTileConfig() noexcept {
    for (int t = 0; t < 8; ++t) {
      colsb[t] = 64;
      rows[t] = 16;
    }
  }
};

inline void amx_configure() noexcept {
  static const AmxTileConfig config;
  _tile_loadconfig(&config);
}

// Lanes [0, n) of 16 floats at p, zeros above.
inline __m512 load16(const float* p, index_t n) noexcept {
  if (n >= 16) return _mm512_loadu_ps(p);
  if (n <= 0) return _mm512_setzero_ps();
  return _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1), p);
}

// C (32 x 32 at c, row stride ldc floats) = init + Σ_{s < steps} A_s · B_s, where step s
// multiplies the 32 x 32 bf16 block of A at a + a_step(s) (row stride lda elements) by the
// 32 x 32 block of B at b + b_step(s) (VNNI pairs, row stride ldb elements). init: the tiles
// at c (accumulate), zero, or 16-float rows at bias (one per row of C, repeated). The one
// micro-kernel: amx_gemm below and the shifted convolutions (conv/shifted_amx.hpp) are loops of
// calls to it.
template <class AStep, class BStep>
inline void amx_block_product(const bf16_t* a, index_t lda, AStep a_step, const bf16_t* b,
                              index_t ldb, BStep b_step, index_t steps, float* c, index_t ldc,
                              bool accumulate, const float* bias) {
  const index_t cs = ldc * 4, as = lda * 2, bs = ldb * 2;
  if (accumulate) {
    _tile_loadd(0, c, cs);
    _tile_loadd(1, c + 16, cs);
    _tile_loadd(2, c + 16 * ldc, cs);
    _tile_loadd(3, c + 16 * ldc + 16, cs);
  } else if (bias != nullptr) {
    _tile_loadd(0, bias, 64);
    _tile_loadd(1, bias, 64);
    _tile_loadd(2, bias + 256, 64);
    _tile_loadd(3, bias + 256, 64);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (index_t s = 0; s < steps; ++s) {
    const bf16_t* as0 = a + a_step(s);
    const bf16_t* bs0 = b + b_step(s);
    _tile_loadd(4, as0, as);
    _tile_loadd(5, as0 + 16 * lda, as);
    _tile_loadd(6, bs0, bs);
    _tile_loadd(7, bs0 + 32, bs);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, cs);
  _tile_stored(1, c + 16, cs);
  _tile_stored(2, c + 16 * ldc, cs);
  _tile_stored(3, c + 16 * ldc + 16, cs);
}

}  // namespace detail

// out (Mp x Kp bf16, Mp = amx_pad(M), Kp = amx_pad(K)) = the M x K matrix whose element (i, k)
// is a[i * row_stride + k * col_stride], zero-padded.
inline void amx_pack_rows(const float* a, index_t row_stride, index_t col_stride, index_t M,
                          index_t K, bf16_t* out) {
  const index_t Mp = amx_pad(M), Kp = amx_pad(K);
  alignas(64) float row[amx_block];
  for (index_t i = 0; i < Mp; ++i) {
    bf16_t* o = out + i * Kp;
    for (index_t k0 = 0; k0 < Kp; k0 += amx_block) {
      __m512 lo, hi;
      if (i >= M) {
        lo = hi = _mm512_setzero_ps();
      } else if (col_stride == 1) {
        lo = detail::load16(a + i * row_stride + k0, K - k0);
        hi = detail::load16(a + i * row_stride + k0 + 16, K - k0 - 16);
      } else {
        for (index_t k = 0; k < amx_block; ++k)
          row[k] = k0 + k < K ? a[i * row_stride + (k0 + k) * col_stride] : 0.0f;
        lo = _mm512_load_ps(row);
        hi = _mm512_load_ps(row + 16);
      }
      _mm512_storeu_si512(o + k0, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
    }
  }
}

// out (Mp x Kp bf16) = the M x K matrix whose element (i, k) is at(i, k), zero-padded.
template <class At>
void amx_pack_rows_with(index_t M, index_t K, bf16_t* out, At at) {
  const index_t Mp = amx_pad(M), Kp = amx_pad(K);
  alignas(64) float row[amx_block];
  for (index_t i = 0; i < Mp; ++i) {
    for (index_t k0 = 0; k0 < Kp; k0 += amx_block) {
      for (index_t k = 0; k < amx_block; ++k) row[k] = i < M && k0 + k < K ? at(i, k0 + k) : 0.0f;
      const __m512i v = reinterpret_cast<__m512i>(
          _mm512_cvtne2ps_pbh(_mm512_load_ps(row + 16), _mm512_load_ps(row)));
      _mm512_storeu_si512(out + i * Kp + k0, v);
    }
  }
}

namespace detail {

// out[2 q] = bf16(v0[q]), out[2 q + 1] = bf16(v1[q]) for q < count (16 at most; nothing past
// out + 2 count is written): 16 VNNI pairs from two vectors of floats.
inline void amx_store_pairs(__m512 v0, __m512 v1, index_t count, bf16_t* out) noexcept {
  // Interleaves the low 16 (v0) and high 16 (v1) bf16 of a vector.
  alignas(64) static constexpr std::uint16_t order[32] = {
      0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i both = _mm512_permutexvar_epi16(
      _mm512_load_si512(order), reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(v1, v0)));
  if (count >= 16) {
    _mm512_storeu_si512(out, both);
  } else {
    const auto mask = static_cast<__mmask32>((std::uint64_t(1) << (2 * count)) - 1);
    _mm512_mask_storeu_epi16(out, mask, both);
  }
}

// out[2 q] = bf16(r0[q]), out[2 q + 1] = bf16(r1[q]) for q < n (r1 null: zeros): one row of
// VNNI pairs from two rows of floats.
inline void amx_pairs_row(const float* r0, const float* r1, index_t n, bf16_t* out) {
  for (index_t q = 0; q < n; q += 16) {
    const __m512 v0 = load16(r0 + q, n - q);
    const __m512 v1 = r1 != nullptr ? load16(r1 + q, n - q) : _mm512_setzero_ps();
    amx_store_pairs(v0, v1, n - q, out + 2 * q);
  }
}

}  // namespace detail

// out (VNNI, Kp/2 x Np x 2 bf16) = the K x N row-major matrix b (row stride ldb), zero-padded.
inline void amx_pack_pairs(const float* b, index_t ldb, index_t K, index_t N, bf16_t* out) {
  const index_t Kp = amx_pad(K), Np = amx_pad(N);
  for (index_t p = 0; p < Kp / 2; ++p) {
    const index_t k = 2 * p;
    bf16_t* o = out + p * 2 * Np;
    if (k < K) {
      detail::amx_pairs_row(b + k * ldb, k + 1 < K ? b + (k + 1) * ldb : nullptr, N, o);
      std::memset(o + 2 * N, 0, sizeof(bf16_t) * static_cast<std::size_t>(2 * (Np - N)));
    } else {
      std::memset(o, 0, sizeof(bf16_t) * static_cast<std::size_t>(2 * Np));
    }
  }
}

// out (VNNI, Np/2 x Kp x 2 bf16) = the transpose of columns [0, Np) of the Kp x N matrix whose
// VNNI pairs are at in (Kp/2 pair rows of ldn pairs, amx_pack_pairs' layout): element (n, k) of
// out is element (k, n) of in. Np: a multiple of 16; in's rows hold at least Np pairs.
inline void amx_transpose_pairs(const bf16_t* in, index_t ldn, index_t Kp, index_t Np,
                                bf16_t* out) {
  // In each 64-bit lane, (k, n) (k+1, n) (k, n+1) (k+1, n+1) -> (k, n) (k, n+1) (k+1, n)
  // (k+1, n+1): out's words at (n / 2, k) and (n / 2, k + 1), side by side.
  alignas(64) static constexpr std::uint16_t order[32] = {
      0,  2,  1,  3,  4,  6,  5,  7,  8,  10, 9,  11, 12, 14, 13, 15,
      16, 18, 17, 19, 20, 22, 21, 23, 24, 26, 25, 27, 28, 30, 29, 31};
  const __m512i idx = _mm512_load_si512(order);
  // Lane l goes to out's pair row n / 2 + l: l * 2 Kp bf16, l * Kp / 2 64-bit words further.
  const long long h = Kp / 2;
  const __m512i rows = _mm512_set_epi64(7 * h, 6 * h, 5 * h, 4 * h, 3 * h, 2 * h, h, 0);
  for (index_t p = 0; p < Kp / 2; ++p) {
    const bf16_t* r = in + p * 2 * ldn;
    for (index_t n = 0; n < Np; n += 16) {
      const __m512i v = _mm512_permutexvar_epi16(idx, _mm512_loadu_si512(r + 2 * n));
      _mm512_i64scatter_epi64(out + (n / 2) * 2 * Kp + 4 * p, rows, v, 8);
    }
  }
}

// C (Mp x Np fp32, row stride ldc) = (accumulate ? C : 0) + A · B, A packed by amx_pack_rows
// (Mp x Kp), B by amx_pack_pairs or amx_transpose_pairs (Kp x Np).
inline void amx_gemm(const bf16_t* A, const bf16_t* B, index_t Mp, index_t Np, index_t Kp, float* C,
                     index_t ldc, bool accumulate) {
  detail::amx_configure();
  for (index_t n0 = 0; n0 < Np; n0 += amx_block) {
    for (index_t m0 = 0; m0 < Mp; m0 += amx_block) {
      // Step s: depth k = 32 s, the columns of A at k and the pair rows of B at k / 2.
      detail::amx_block_product(
          A + m0 * Kp, Kp, [](index_t s) { return s * amx_block; }, B + 2 * n0, 2 * Np,
          [Np](index_t s) { return s * amx_block * Np; }, Kp / amx_block, C + m0 * ldc + n0, ldc,
          accumulate, nullptr);
    }
  }
}

#endif  // MINIRES_AMX

}  // namespace minires::kernels
