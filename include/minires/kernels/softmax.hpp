// Softmax and the fused softmax cross-entropy on raw row-major (rows, classes) buffers.
//
//   p_k   = exp(z_k - m) / sum_j exp(z_j - m),  m = max_j z_j      (stable for any finite z)
//   log p_k = (z_k - m) - log sum_j exp(z_j - m)
//
// Targets are class indices, optionally smoothed: y_k = (1 - s)[k == label] + s/K.
// Cross-entropy of one row: L = -sum_k y_k log p_k. With a clip epsilon e > 0 the loss is the
// one Keras 2.0 computes, L = -sum_k y_k log clip(p_k, e, 1 - e), and classes whose p_k lies
// outside [e, 1 - e] pass no gradient (tf.clip_by_value has zero gradient there). Its gradient
// with respect to the logits, U = the classes inside the clip, is
//   dL/dz_k = p_k * sum_{j in U} y_j - [k in U] y_k
// which is p - y when nothing is clipped (always, for e = 0) and, for one-hot targets, 0 for
// the whole row when p_label is clipped. (Keras also renormalises p before the clip; its
// Jacobian cancels in this gradient and changes the loss only by rounding.)
//
// Soft targets at a temperature t (knowledge distillation, Hinton et al. 2015): targets q are
// distributions (rows summing to 1), p = softmax(z / t) and the loss of a row is
//   L = KL(q || p) = sum_k q_k (log q_k - log p_k)      (terms with q_k = 0 count 0)
//   dL/dz_k = (p_k - q_k) / t
// The teacher's targets themselves are tempered_softmax_forward(teacher logits, t).
//
// Rows are independent: large calls run them in one OpenMP region, each row on one thread in a
// fixed order, so results do not depend on the thread count. Non-finite logits give NaN.
#pragma once

#include <cmath>
#include <cstdint>

#include "minires/core/parallel.hpp"
#include "minires/core/shape.hpp"

namespace minires::kernels {

namespace detail {

template <class Body>
void for_each_row(index_t rows, index_t cols, Body&& body) {
  parallel_for(rows, parallel_grain(cols), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) body(r);
  });
}

// The shift of a row's softmax: log p_k = (z_k - max) - log_sum. Subtracting the max first
// keeps log p accurate for huge logits (z_k - lse would lose the digits of lse's fraction).
template <class T>
struct LogSoftmaxShift {
  T max, log_sum;
};

// p = softmax(z * inv_t) over one row of n values (p may alias z); returns the shift of
// log p_k = (z_k * inv_t - max) - log_sum.
template <class T>
LogSoftmaxShift<T> tempered_softmax_row(const T* z, T inv_t, T* p, index_t n) {
  T m = z[0] * inv_t;
  for (index_t k = 1; k < n; ++k) m = z[k] * inv_t > m ? z[k] * inv_t : m;
  T sum = T(0);
  for (index_t k = 0; k < n; ++k) {
    p[k] = std::exp(z[k] * inv_t - m);
    sum += p[k];
  }
  const T inv = T(1) / sum;
  for (index_t k = 0; k < n; ++k) p[k] *= inv;
  return {m, std::log(sum)};
}

// p = softmax(z) over one row of n values (p may alias z): the tempered row at t = 1 (z * 1 is
// exact, so nothing is rounded differently).
template <class T>
LogSoftmaxShift<T> softmax_row(const T* z, T* p, index_t n) {
  return tempered_softmax_row(z, T(1), p, n);
}

// The smoothed one-hot target y_k of a row whose label is `label`.
template <class T>
struct SmoothedTarget {
  T off, on;  // y_k for k != label, and for k == label
  SmoothedTarget(T label_smoothing, index_t classes)
      : off(label_smoothing / static_cast<T>(classes)), on(T(1) - label_smoothing + off) {}
  T operator()(index_t k, std::int32_t label) const noexcept { return k == label ? on : off; }
};

}  // namespace detail

// p = softmax(z) row by row.   z, p: (rows, cols), cols >= 1; p may alias z.
template <class T>
void softmax_forward(const T* z, T* p, index_t rows, index_t cols) {
  detail::for_each_row(rows, cols,
                       [&](index_t r) { detail::softmax_row(z + r * cols, p + r * cols, cols); });
}

// p = softmax(z) and loss[r] = cross-entropy of row r against the smoothed one-hot target of
// labels[r] (in [0, classes), not checked here), clipped as Keras does when clip_epsilon > 0
// (0: no clip).   z, p: (rows, classes), p must not alias z; labels, loss: (rows,)
template <class T>
void softmax_cross_entropy_forward(const T* z, const std::int32_t* labels, index_t rows,
                                   index_t classes, T label_smoothing, T clip_epsilon, T* p,
                                   T* loss) {
  const detail::SmoothedTarget<T> target(label_smoothing, classes);
  const bool clip = clip_epsilon > T(0);
  const T lo = clip_epsilon, hi = T(1) - clip_epsilon;
  const T log_lo = clip ? std::log(lo) : T(0), log_hi = clip ? std::log(hi) : T(0);
  detail::for_each_row(rows, classes, [&](index_t r) {
    const T* zr = z + r * classes;
    T* pr = p + r * classes;
    const detail::LogSoftmaxShift<T> shift = detail::softmax_row(zr, pr, classes);
    T l = T(0);
    for (index_t k = 0; k < classes; ++k) {
      const T y = target(k, labels[r]);
      if (y == T(0)) continue;
      T log_p = (zr[k] - shift.max) - shift.log_sum;
      if (clip && pr[k] < lo) log_p = log_lo;
      if (clip && pr[k] > hi) log_p = log_hi;
      l -= y * log_p;
    }
    loss[r] = l;
  });
}

// dz += scale * (p * sum_{j in U} y_j - [k in U] y)   (see the top of this file; scale carries
// the 1/N of a batch mean). p: (rows, classes) from softmax_cross_entropy_forward.
template <class T>
void softmax_cross_entropy_backward(const T* p, const std::int32_t* labels, index_t rows,
                                    index_t classes, T label_smoothing, T clip_epsilon, T scale,
                                    T* dz) {
  const detail::SmoothedTarget<T> target(label_smoothing, classes);
  const bool clip = clip_epsilon > T(0);
  const T lo = clip_epsilon, hi = T(1) - clip_epsilon;
  auto inside = [&](T v) { return !clip || !(v < lo || v > hi); };
  detail::for_each_row(rows, classes, [&](index_t r) {
    const T* pr = p + r * classes;
    T* dzr = dz + r * classes;
    // sum of y over the classes inside the clip: exactly 1 for one-hot targets and nothing
    // clipped, exactly 0 when everything that has a target is clipped
    index_t others_inside = 0;
    for (index_t k = 0; k < classes; ++k) others_inside += k != labels[r] && inside(pr[k]);
    const T y_inside =
        (inside(pr[labels[r]]) ? target.on : T(0)) + target.off * static_cast<T>(others_inside);
    for (index_t k = 0; k < classes; ++k) {
      const T y = inside(pr[k]) ? target(k, labels[r]) : T(0);
      dzr[k] += scale * (pr[k] * y_inside - y);
    }
  });
}

// p = softmax(z / temperature) row by row.   z, p: (rows, cols), cols >= 1; p may alias z;
// temperature > 0 (not checked here).
template <class T>
void tempered_softmax_forward(const T* z, T* p, index_t rows, index_t cols, T temperature) {
  const T inv_t = T(1) / temperature;
  detail::for_each_row(rows, cols, [&](index_t r) {
    detail::tempered_softmax_row(z + r * cols, inv_t, p + r * cols, cols);
  });
}

// p = softmax(z / temperature) and loss[r] = KL(q_r || p_r) (see the top of this file).
// z, q, p: (rows, classes), p must alias neither; loss: (rows,); temperature > 0.
template <class T>
void soft_cross_entropy_forward(const T* z, const T* q, index_t rows, index_t classes,
                                T temperature, T* p, T* loss) {
  const T inv_t = T(1) / temperature;
  detail::for_each_row(rows, classes, [&](index_t r) {
    const T* zr = z + r * classes;
    const T* qr = q + r * classes;
    const detail::LogSoftmaxShift<T> shift =
        detail::tempered_softmax_row(zr, inv_t, p + r * classes, classes);
    T l = T(0);
    for (index_t k = 0; k < classes; ++k) {
      if (!(qr[k] > T(0))) continue;
      const T log_p = (zr[k] * inv_t - shift.max) - shift.log_sum;
      l += qr[k] * (std::log(qr[k]) - log_p);
    }
    loss[r] = l;
  });
}

// dz += scale * (p - q), p from soft_cross_entropy_forward: the gradient of KL(q || p) is this
// with scale = 1 / temperature (times the batch mean's 1/N).
template <class T>
void soft_cross_entropy_backward(const T* p, const T* q, index_t rows, index_t classes, T scale,
                                 T* dz) {
  detail::for_each_row(rows, classes, [&](index_t r) {
    const T* pr = p + r * classes;
    const T* qr = q + r * classes;
    T* dzr = dz + r * classes;
    for (index_t k = 0; k < classes; ++k) dzr[k] += scale * (pr[k] - qr[k]);
  });
}

}  // namespace minires::kernels
