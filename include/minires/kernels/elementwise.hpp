// Element-wise kernels on raw buffers, vectorised with xsimd. Each handles any length: the body
// runs in full SIMD batches and the tail (n not a multiple of the SIMD width) in scalar code.
// Long arrays run in parallel (core/parallel.hpp) in chunks of whole blocks of 1024 elements, so
// every element takes the same SIMD or scalar path for any thread count; each element is computed
// independently, so results are identical for any number of threads.
#pragma once

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "minires/core/parallel.hpp"
#include "minires/core/shape.hpp"

namespace minires::kernels {

namespace detail {

// Elements per block: chunk boundaries fall on whole blocks (a multiple of every SIMD width).
inline constexpr index_t elementwise_block = 1 << 10;

// Calls body(begin, end) over [0, n) in chunks of whole blocks, in parallel when n is large.
template <class Body>
void for_blocks(index_t n, Body&& body) {
  const index_t blocks = (n + elementwise_block - 1) / elementwise_block;
  parallel_for(blocks, parallel_grain(elementwise_block), [&](index_t b0, index_t b1) {
    body(b0 * elementwise_block, std::min(n, b1 * elementwise_block));
  });
}

// Runs simd(i) for each full batch starting at i in [begin, end) and scalar(i) for the tail.
template <class T, class Simd, class Scalar>
void simd_loop(index_t begin, index_t end, Simd&& simd, Scalar&& scalar) {
  constexpr index_t width = static_cast<index_t>(xsimd::batch<T>::size);
  index_t i = begin;
  for (; i + width <= end; i += width) simd(i);
  for (; i < end; ++i) scalar(i);
}

// max(v, 0) with NaN passing through (v < 0 is false for NaN): the ReLU of every kernel that
// applies one (relu_forward, add_relu, BatchNorm with a fused ReLU).
template <class T>
inline T relu(T v) {
  return v < T(0) ? T(0) : v;
}
template <class T, class A>
inline xsimd::batch<T, A> relu(const xsimd::batch<T, A>& v) {
  const xsimd::batch<T, A> zero(T(0));
  return xsimd::select(v < zero, zero, v);
}

}  // namespace detail

// y = max(x, 0); NaN passes through (as in TensorFlow and PyTorch), so divergence stays visible
template <class T>
void relu_forward(const T* x, T* y, index_t n) {
  using B = xsimd::batch<T>;
  detail::for_blocks(n, [&](index_t begin, index_t end) {
    detail::simd_loop<T>(
        begin, end,
        [&](index_t i) { detail::relu(B::load_unaligned(x + i)).store_unaligned(y + i); },
        [&](index_t i) { y[i] = detail::relu(x[i]); });
  });
}

// dx += dy * [x > 0]   (the gradient is 0 at x == 0, as in TensorFlow and PyTorch);
// accumulate false: dx = dy * [x > 0] (dx is only written)
template <class T>
void relu_backward(const T* x, const T* dy, T* dx, index_t n, bool accumulate = true) {
  using B = xsimd::batch<T>;
  detail::for_blocks(n, [&](index_t begin, index_t end) {
    const B zero(T(0));
    detail::simd_loop<T>(
        begin, end,
        [&](index_t i) {
          const B g =
              xsimd::select(B::load_unaligned(x + i) > zero, B::load_unaligned(dy + i), zero);
          (accumulate ? B::load_unaligned(dx + i) + g : g).store_unaligned(dx + i);
        },
        [&](index_t i) {
          const T g = x[i] > T(0) ? dy[i] : T(0);
          dx[i] = accumulate ? dx[i] + g : g;
        });
  });
}

// y = x
template <class T>
void copy(const T* x, T* y, index_t n) {
  detail::for_blocks(n,
                     [&](index_t begin, index_t end) { std::copy(x + begin, x + end, y + begin); });
}

// y = a + b   (y may alias a or b)
template <class T>
void add(const T* a, const T* b, T* y, index_t n) {
  using B = xsimd::batch<T>;
  detail::for_blocks(n, [&](index_t begin, index_t end) {
    detail::simd_loop<T>(
        begin, end,
        [&](index_t i) {
          (B::load_unaligned(a + i) + B::load_unaligned(b + i)).store_unaligned(y + i);
        },
        [&](index_t i) { y[i] = a[i] + b[i]; });
  });
}

// y = max(a + b, 0), NaN passing as in relu_forward   (y may alias a or b)
template <class T>
void add_relu(const T* a, const T* b, T* y, index_t n) {
  using B = xsimd::batch<T>;
  detail::for_blocks(n, [&](index_t begin, index_t end) {
    detail::simd_loop<T>(
        begin, end,
        [&](index_t i) {
          detail::relu(B::load_unaligned(a + i) + B::load_unaligned(b + i)).store_unaligned(y + i);
        },
        [&](index_t i) { y[i] = detail::relu(a[i] + b[i]); });
  });
}

// y += alpha * x
template <class T>
void axpy(T alpha, const T* x, T* y, index_t n) {
  using B = xsimd::batch<T>;
  detail::for_blocks(n, [&](index_t begin, index_t end) {
    const B a(alpha);
    detail::simd_loop<T>(
        begin, end,
        [&](index_t i) {
          xsimd::fma(a, B::load_unaligned(x + i), B::load_unaligned(y + i)).store_unaligned(y + i);
        },
        [&](index_t i) { y[i] = std::fma(alpha, x[i], y[i]); });
  });
}

// x *= alpha
template <class T>
void scale(T alpha, T* x, index_t n) {
  using B = xsimd::batch<T>;
  detail::for_blocks(n, [&](index_t begin, index_t end) {
    const B a(alpha);
    detail::simd_loop<T>(
        begin, end, [&](index_t i) { (a * B::load_unaligned(x + i)).store_unaligned(x + i); },
        [&](index_t i) { x[i] *= alpha; });
  });
}

// x = value (in parallel for long arrays: zeroing a step's activation gradients is a large
// share of a small model's memory traffic)
template <class T>
void fill(T* x, index_t n, T value) {
  detail::for_blocks(n, [&](index_t begin, index_t end) { std::fill(x + begin, x + end, value); });
}

}  // namespace minires::kernels
