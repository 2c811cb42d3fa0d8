// GEMM on raw row-major buffers through Eigen::Map: no copies around Eigen.
//
//   C (M x N) = alpha * op(A) (M x K) * op(B) (K x N) + beta * C
//
// op(X) is X or X^T. lda/ldb/ldc are the row strides (in elements) of the buffers as stored:
// A is M x K (lda >= K) when not transposed, K x M (lda >= M) when transposed; likewise B.
// Inside an OpenMP parallel region Eigen runs the product on the calling thread, so layers can
// parallelise over the batch and call gemm per image without nested parallelism.
#pragma once

#include <Eigen/Core>

#include <string>

#include "minires/core/error.hpp"
#include "minires/core/shape.hpp"

namespace minires::kernels {

enum class Trans { No, Yes };

namespace detail {

template <class T>
using RowMajorMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstStridedMap = Eigen::Map<const RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class T>
using StridedMap = Eigen::Map<RowMajorMatrix<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

template <class T, class OpA, class OpB>
void gemm_eval(const OpA& a, const OpB& b, T alpha, T beta, StridedMap<T>& c) {
  if (beta == T(0)) {
    c.noalias() = alpha * a * b;
  } else {
    if (beta != T(1)) c *= beta;
    c.noalias() += alpha * a * b;
  }
}

inline void check_ld(const char* name, index_t ld, index_t min_ld) {
  if (ld < min_ld) {
    throw ValueError(std::string("gemm: expected ") + name + " >= " + std::to_string(min_ld) +
                     ", found " + std::to_string(ld));
  }
}

}  // namespace detail

template <class T>
void gemm(Trans trans_a, Trans trans_b, index_t M, index_t N, index_t K, T alpha, const T* A,
          index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  if (M < 0 || N < 0 || K < 0) {
    throw ValueError("gemm: expected non-negative sizes, found M=" + std::to_string(M) +
                     " N=" + std::to_string(N) + " K=" + std::to_string(K));
  }
  const bool ta = trans_a == Trans::Yes;
  const bool tb = trans_b == Trans::Yes;
  detail::check_ld("lda", lda, ta ? M : K);
  detail::check_ld("ldb", ldb, tb ? K : N);
  detail::check_ld("ldc", ldc, N);
  if (M == 0 || N == 0) return;

  using detail::ConstStridedMap;
  detail::StridedMap<T> c(C, M, N, Eigen::OuterStride<>(ldc));
  if (K == 0) {  // C = beta * C
    if (beta == T(0)) {
      c.setZero();
    } else {
      c *= beta;
    }
    return;
  }
  const ConstStridedMap<T> a(A, ta ? K : M, ta ? M : K, Eigen::OuterStride<>(lda));
  const ConstStridedMap<T> b(B, tb ? N : K, tb ? K : N, Eigen::OuterStride<>(ldb));
  if (!ta && !tb) {
    detail::gemm_eval(a, b, alpha, beta, c);
  } else if (!ta && tb) {
    detail::gemm_eval(a, b.transpose(), alpha, beta, c);
  } else if (ta && !tb) {
    detail::gemm_eval(a.transpose(), b, alpha, beta, c);
  } else {
    detail::gemm_eval(a.transpose(), b.transpose(), alpha, beta, c);
  }
}

// Convenience overload for densely packed operands (lda/ldb/ldc implied by the shapes).
template <class T>
void gemm(Trans trans_a, Trans trans_b, index_t M, index_t N, index_t K, T alpha, const T* A,
          const T* B, T beta, T* C) {
  gemm(trans_a, trans_b, M, N, K, alpha, A, trans_a == Trans::Yes ? M : K, B,
       trans_b == Trans::Yes ? K : N, beta, C, N);
}

}  // namespace minires::kernels
