// Optimizer update rules on raw buffers (xsimd, tails in scalar code, fixed parallel blocks).
// p: parameters, g: gradients, n: element count. Each element is updated independently, so the
// result does not depend on the thread count.
#pragma once

#include <cmath>

#include "minires/kernels/elementwise.hpp"

namespace minires::kernels {

// RMSprop, Keras 2.0 form (epsilon outside the square root):
//   g' = g + wd*p;  a = rho*a + (1 - rho)*g'^2;  p -= lr * g' / (sqrt(a) + eps)
template <class T>
void rmsprop_update(T* p, const T* g, T* a, index_t n, T lr, T rho, T eps, T wd) {
  using B = xsimd::batch<T>;
  detail::for_blocks(n, [&](index_t begin, index_t end) {
    const B vlr(lr), vrho(rho), vone_rho(T(1) - rho), veps(eps), vwd(wd);
    detail::simd_loop<T>(
        begin, end,
        [&](index_t i) {
          const B pi = B::load_unaligned(p + i);
          const B gi = xsimd::fma(vwd, pi, B::load_unaligned(g + i));
          const B ai = xsimd::fma(vone_rho, gi * gi, vrho * B::load_unaligned(a + i));
          ai.store_unaligned(a + i);
          (pi - vlr * gi / (xsimd::sqrt(ai) + veps)).store_unaligned(p + i);
        },
        [&](index_t i) {
          const T gi = std::fma(wd, p[i], g[i]);
          a[i] = std::fma(T(1) - rho, gi * gi, rho * a[i]);
          p[i] = p[i] - lr * gi / (std::sqrt(a[i]) + eps);
        });
  });
}

// SGD with momentum, Keras 2.0 form:
//   g' = g + wd*p;  v = momentum*v - lr*g';  p += v            (plain)
//                                           p += momentum*v - lr*g'  (Nesterov)
// With momentum 0 this is p -= lr*g' (v stays 0).
template <class T>
void sgd_update(T* p, const T* g, T* v, index_t n, T lr, T momentum, bool nesterov, T wd) {
  using B = xsimd::batch<T>;
  detail::for_blocks(n, [&](index_t begin, index_t end) {
    const B vlr(lr), vm(momentum), vwd(wd);
    detail::simd_loop<T>(
        begin, end,
        [&](index_t i) {
          const B pi = B::load_unaligned(p + i);
          const B gi = xsimd::fma(vwd, pi, B::load_unaligned(g + i));
          const B vi = vm * B::load_unaligned(v + i) - vlr * gi;
          vi.store_unaligned(v + i);
          (nesterov ? pi + vm * vi - vlr * gi : pi + vi).store_unaligned(p + i);
        },
        [&](index_t i) {
          const T gi = std::fma(wd, p[i], g[i]);
          v[i] = momentum * v[i] - lr * gi;
          p[i] = nesterov ? p[i] + momentum * v[i] - lr * gi : p[i] + v[i];
        });
  });
}

// Adam, Keras 2.0 form, with the bias correction folded into the step size lr_t:
//   lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
//   p *= (1 - decoupled_wd)        (AdamW: decoupled_wd = lr * weight_decay; else 0)
//   g' = g + wd*p                  (coupled L2; 0 for AdamW)
//   m = beta1*m + (1 - beta1)*g';  v = beta2*v + (1 - beta2)*g'^2
//   p -= lr_t * m / (sqrt(v) + eps)
template <class T>
void adam_update(T* p, const T* g, T* m, T* v, index_t n, T lr_t, T beta1, T beta2, T eps, T wd,
                 T decoupled_wd) {
  using B = xsimd::batch<T>;
  detail::for_blocks(n, [&](index_t begin, index_t end) {
    const B vlr(lr_t), vb1(beta1), vb2(beta2), v1b1(T(1) - beta1), v1b2(T(1) - beta2), veps(eps),
        vwd(wd), vkeep(T(1) - decoupled_wd);
    detail::simd_loop<T>(
        begin, end,
        [&](index_t i) {
          const B pi = vkeep * B::load_unaligned(p + i);
          const B gi = xsimd::fma(vwd, pi, B::load_unaligned(g + i));
          const B mi = xsimd::fma(v1b1, gi, vb1 * B::load_unaligned(m + i));
          const B vi = xsimd::fma(v1b2, gi * gi, vb2 * B::load_unaligned(v + i));
          mi.store_unaligned(m + i);
          vi.store_unaligned(v + i);
          (pi - vlr * mi / (xsimd::sqrt(vi) + veps)).store_unaligned(p + i);
        },
        [&](index_t i) {
          const T pi = (T(1) - decoupled_wd) * p[i];
          const T gi = std::fma(wd, pi, g[i]);
          m[i] = std::fma(T(1) - beta1, gi, beta1 * m[i]);
          v[i] = std::fma(T(1) - beta2, gi * gi, beta2 * v[i]);
          p[i] = pi - lr_t * m[i] / (std::sqrt(v[i]) + eps);
        });
  });
}

}  // namespace minires::kernels
