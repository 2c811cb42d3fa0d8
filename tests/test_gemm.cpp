// kernels::gemm against a naive triple loop: all four transpose combinations, alpha/beta,
// padded leading dimensions, odd sizes, float and double.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>

#include "test_util.hpp"

#include <cmath>
#include <type_traits>
#include <vector>

using namespace minires;
using kernels::Trans;
using minires::test::random_vector;

namespace {

template <class T>
void naive_gemm(bool ta, bool tb, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
                const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  for (index_t i = 0; i < M; ++i) {
    for (index_t j = 0; j < N; ++j) {
      double acc = 0;
      for (index_t k = 0; k < K; ++k) {
        const T a = ta ? A[k * lda + i] : A[i * lda + k];
        const T b = tb ? B[j * ldb + k] : B[k * ldb + j];
        acc += static_cast<double>(a) * static_cast<double>(b);
      }
      C[i * ldc + j] = static_cast<T>(alpha * acc + (beta == T(0) ? 0.0 : beta * C[i * ldc + j]));
    }
  }
}

}  // namespace

TEMPLATE_TEST_CASE("gemm matches a naive reference", "", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-4 : 1e-12;
  Rng rng(123);
  const index_t sizes[][3] = {{1, 1, 1},    {3, 5, 7},     {17, 1, 33},  {1, 19, 4},
                              {64, 48, 31}, {65, 129, 17}, {128, 3, 300}};
  const T alphas[] = {T(1), T(-0.5)};
  const T betas[] = {T(0), T(1), T(0.25)};
  for (const auto& mnk : sizes) {
    const index_t M = mnk[0], N = mnk[1], K = mnk[2];
    for (int ta = 0; ta < 2; ++ta) {
      for (int tb = 0; tb < 2; ++tb) {
        for (T alpha : alphas) {
          for (T beta : betas) {
            for (index_t pad : {0, 3}) {  // leading dimensions larger than the rows
              const index_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
              const auto A = random_vector<T>(rng, (ta ? K : M) * lda);
              const auto B = random_vector<T>(rng, (tb ? N : K) * ldb);
              auto C = random_vector<T>(rng, M * ldc);
              auto R = C;
              kernels::gemm(ta ? Trans::Yes : Trans::No, tb ? Trans::Yes : Trans::No, M, N, K,
                            alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
              naive_gemm(ta != 0, tb != 0, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta,
                         R.data(), ldc);
              INFO("M=" << M << " N=" << N << " K=" << K << " ta=" << ta << " tb=" << tb
                        << " alpha=" << alpha << " beta=" << beta << " pad=" << pad);
              for (index_t i = 0; i < M; ++i) {
                for (index_t j = 0; j < N; ++j) {
                  REQUIRE(C[i * ldc + j] == Approx(R[i * ldc + j]).margin(tol).epsilon(tol));
                }
                for (index_t j = N; j < ldc; ++j) {  // padding columns are never written
                  REQUIRE(C[i * ldc + j] == R[i * ldc + j]);
                }
              }
            }
          }
        }
      }
    }
  }
}

TEST_CASE("gemm: beta = 0 ignores NaN in C, K = 0 scales C") {
  std::vector<float> A(6, 1.f), B(6, 1.f), C(4, std::nanf(""));
  kernels::gemm(Trans::No, Trans::No, 2, 2, 3, 1.f, A.data(), B.data(), 0.f, C.data());
  for (float c : C) CHECK(c == 3.f);
  kernels::gemm(Trans::No, Trans::No, 2, 2, 0, 1.f, A.data(), B.data(), 2.f, C.data());
  for (float c : C) CHECK(c == 6.f);
}

TEST_CASE("gemm: bad sizes and leading dimensions throw") {
  std::vector<float> A(6), B(6), C(4);
  CHECK_THROWS_AS(kernels::gemm(Trans::No, Trans::No, -1, 2, 3, 1.f, A.data(), 3, B.data(), 2, 0.f,
                                C.data(), 2),
                  ValueError);
  CHECK_THROWS_WITH(
      kernels::gemm(Trans::No, Trans::No, 2, 2, 3, 1.f, A.data(), 2, B.data(), 2, 0.f, C.data(), 2),
      Catch::Contains("lda >= 3") && Catch::Contains("found 2"));
  CHECK_THROWS_AS(
      kernels::gemm(Trans::No, Trans::No, 2, 2, 3, 1.f, A.data(), 3, B.data(), 2, 0.f, C.data(), 1),
      Error);
}

TEST_CASE("gemm gives the same bits for the same thread count") {
  Rng rng(5);
  const index_t n = 256;
  const auto A = random_vector<float>(rng, n * n), B = random_vector<float>(rng, n * n);
  std::vector<float> C1(n * n), C2(n * n);
  kernels::gemm(Trans::No, Trans::Yes, n, n, n, 1.f, A.data(), B.data(), 0.f, C1.data());
  kernels::gemm(Trans::No, Trans::Yes, n, n, n, 1.f, A.data(), B.data(), 0.f, C2.data());
  CHECK(C1 == C2);
}
