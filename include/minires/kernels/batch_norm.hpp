// Batch normalisation per channel, on x viewed as (N, C, S): S = H*W for NCHW images, S = 1 for
// (N, features). Channel c holds m = N*S values.
//
//   mean = Σ x / m     var = Σ (x − mean)² / m  (biased)     rstd = 1 / sqrt(var + epsilon)
//   x̂ = (x − mean) · rstd                                     y = γ · x̂ + β
//
// Backward, with dy given:
//   dβ += Σ dy      dγ += Σ dy · x̂
//   statistics of this batch (training):  dx += γ·rstd/m · (m·dy − Σdy − x̂ · Σ(dy·x̂))
//   constant statistics (inference):      dx += γ·rstd · dy
//
// Fused ReLU (relu = true): the forward writes z = max(y, 0) (NaN passes, as relu_forward) and
// the backward is given dz and the output z, and uses dy = dz · [z > 0] (relu_backward's rule).
// The results equal BatchNorm followed by a separate ReLU, bit for bit, with two fewer passes
// over memory in each direction.
//
// Sums are accumulated in double: a channel's values are summed in T, in SIMD lanes, in segments
// of at most 512 (an image's run of S values, split in pieces of 512 when longer, or the runs of
// 512 / S images together when S is smaller), and the segment sums are added in double. Mean
// and variance use the corrected two-pass algorithm (Chan, Golub & LeVeque), so a large mean
// does not cancel the variance away. Channels are computed in parallel, each by one thread in a
// fixed order: results do not depend on the thread count.
#pragma once

#include <xsimd/xsimd.hpp>

#include <algorithm>
#include <cmath>
#include <utility>

#include "minires/core/parallel.hpp"
#include "minires/core/shape.hpp"
#include "minires/kernels/elementwise.hpp"

namespace minires::kernels {

struct BatchNormDims {
  index_t batch = 0, channels = 0, spatial = 1;  // N, C, S

  index_t count() const noexcept { return batch * spatial; }  // m: values per channel
  index_t size() const noexcept { return batch * channels * spatial; }
};

namespace detail {

inline constexpr index_t bn_segment = 512;

// Calls piece(offset, length) over channel c's values and end() after each segment of at most
// bn_segment values: an image's run of S values (in pieces of bn_segment when S is longer), or
// the runs of bn_segment / S images together when S is shorter, so that small images (7x7,
// 4x4) are summed in long SIMD loops, not a reduction per run.
template <class Piece, class End>
void for_channel_segments(const BatchNormDims& d, index_t c, Piece&& piece, End&& end) {
  const index_t S = d.spatial;
  if (S == 0) return;
  if (S > bn_segment) {
    for (index_t n = 0; n < d.batch; ++n) {
      const index_t base = (n * d.channels + c) * S;
      for (index_t s = 0; s < S; s += bn_segment) {
        piece(base + s, std::min(bn_segment, S - s));
        end();
      }
    }
    return;
  }
  const index_t per = bn_segment / S;
  for (index_t n0 = 0; n0 < d.batch; n0 += per) {
    for (index_t n = n0; n < std::min(d.batch, n0 + per); ++n) piece((n * d.channels + c) * S, S);
    end();
  }
}

// Calls piece(offset, length) over channel c's runs (one per image): for elementwise passes.
template <class Piece>
void for_channel_runs(const BatchNormDims& d, index_t c, Piece&& piece) {
  for (index_t n = 0; n < d.batch; ++n) piece((n * d.channels + c) * d.spatial, d.spatial);
}

// A sum in segments: each segment's values in T (in four SIMD accumulators, so that the adds
// do not wait on one another, and a scalar for the rest of each piece), then the segment sums
// in double.
template <class T>
struct SegmentSum {
  using B = xsimd::batch<T>;
  B lanes[4] = {B(T(0)), B(T(0)), B(T(0)), B(T(0))};
  T rest = T(0);
  double total = 0.0;
  void end_segment() {
    total += static_cast<double>(xsimd::hadd((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + rest);
    for (auto& l : lanes) l = B(T(0));
    rest = T(0);
  }
};

// Runs vec(i, k) for each full batch starting at i in [begin, end), k = the accumulator (0 to
// 3, in turn), and scalar(i) for the rest.
template <class T, class Vec, class Scalar>
void sum_loop(index_t begin, index_t end, Vec&& vec, Scalar&& scalar) {
  constexpr index_t w = static_cast<index_t>(xsimd::batch<T>::size);
  index_t i = begin;
  for (; i + 4 * w <= end; i += 4 * w) {
    vec(i, 0);
    vec(i + w, 1);
    vec(i + 2 * w, 2);
    vec(i + 3 * w, 3);
  }
  if (i + w <= end) vec(i, 0), i += w;
  if (i + w <= end) vec(i, 1), i += w;
  if (i + w <= end) vec(i, 2), i += w;
  for (; i < end; ++i) scalar(i);
}

// The output gradient the BatchNorm sees: dy, or dy · [z > 0] when a ReLU is fused (z: its
// output; relu_backward's rule).
template <class T>
inline T masked_grad(const T* dy, const T* z, bool relu, index_t i) {
  return relu ? (z[i] > T(0) ? dy[i] : T(0)) : dy[i];
}
template <class T>
inline xsimd::batch<T> masked_grad_batch(const T* dy, const T* z, bool relu, index_t i) {
  using B = xsimd::batch<T>;
  const B g = B::load_unaligned(dy + i);
  return relu ? xsimd::select(B::load_unaligned(z + i) > B(T(0)), g, B(T(0))) : g;
}

// y = (x − mu) · scale + offset over channel c, then y = max(y, 0) when relu (NaN passes).
template <class T>
void channel_affine(const T* x, const BatchNormDims& d, index_t c, T mu, T scale, T offset, T* y,
                    bool relu) {
  using B = xsimd::batch<T>;
  const B mu_v(mu), scale_v(scale), offset_v(offset);
  for_channel_runs(d, c, [&](index_t off, index_t len) {
    simd_loop<T>(
        off, off + len,
        [&](index_t i) {
          const B v = (B::load_unaligned(x + i) - mu_v) * scale_v + offset_v;
          (relu ? kernels::detail::relu(v) : v).store_unaligned(y + i);
        },
        [&](index_t i) {
          const T v = (x[i] - mu) * scale + offset;
          y[i] = relu ? kernels::detail::relu(v) : v;
        });
  });
}

// Runs body(c) for every channel, in parallel when the tensor is large.
template <class Body>
void for_channels(const BatchNormDims& d, Body&& body) {
  parallel_for(d.channels, parallel_grain(d.size() / std::max<index_t>(d.channels, 1)),
               [&](index_t c0, index_t c1) {
                 for (index_t c = c0; c < c1; ++c) body(c);
               });
}

// Σx over channel c.
template <class T>
double channel_sum(const T* x, const BatchNormDims& d, index_t c) {
  using B = xsimd::batch<T>;
  SegmentSum<T> sx;
  for_channel_segments(
      d, c,
      [&](index_t off, index_t len) {
        sum_loop<T>(
            off, off + len, [&](index_t i, int k) { sx.lanes[k] += B::load_unaligned(x + i); },
            [&](index_t i) { sx.rest += x[i]; });
      },
      [&] { sx.end_segment(); });
  return sx.total;
}

// Σu and Σv over channel c, terms(i) giving the pair (u, v) at i as SIMD batches (a full batch
// from i) and scalar_terms(i) as scalars.
template <class T, class Terms, class ScalarTerms>
void channel_two_sums(const BatchNormDims& d, index_t c, Terms&& terms, ScalarTerms&& scalar_terms,
                      double& sum_u, double& sum_v) {
  SegmentSum<T> su, sv;
  for_channel_segments(
      d, c,
      [&](index_t off, index_t len) {
        sum_loop<T>(
            off, off + len,
            [&](index_t i, int k) {
              const auto [u, v] = terms(i);
              su.lanes[k] += u;
              sv.lanes[k] += v;
            },
            [&](index_t i) {
              const auto [u, v] = scalar_terms(i);
              su.rest += u;
              sv.rest += v;
            });
      },
      [&] {
        su.end_segment();
        sv.end_segment();
      });
  sum_u = su.total;
  sum_v = sv.total;
}

// Σe and Σe² over channel c, e = x − mu_t.
template <class T>
void channel_deviation_sums(const T* x, const BatchNormDims& d, index_t c, T mu_t, double& sum_e,
                            double& sum_e2) {
  using B = xsimd::batch<T>;
  const B mu_v(mu_t);
  channel_two_sums<T>(
      d, c,
      [&](index_t i) {
        const B e = B::load_unaligned(x + i) - mu_v;
        return std::pair<B, B>(e, e * e);
      },
      [&](index_t i) {
        const T e = x[i] - mu_t;
        return std::pair<T, T>(e, e * e);
      },
      sum_e, sum_e2);
}

// From the m values' deviation sums around mu_t: mean = mu_t + Σe/m, var = Σe²/m − (Σe/m)²
// and rstd (written at c), then y = γ·r·(x − mu_t) + β + γ·r·(mu_t − mean) over channel c.
template <class T>
void normalize_channel(const T* x, const BatchNormDims& d, index_t c, T mu_t, double sum_e,
                       double sum_e2, double m, const T* gamma, const T* beta, double epsilon, T* y,
                       double* mean, double* var, double* rstd, bool relu) {
  const double mu = static_cast<double>(mu_t) + sum_e / m;
  const double v = std::max(0.0, sum_e2 / m - (sum_e / m) * (sum_e / m));
  const double r = 1.0 / std::sqrt(v + epsilon);
  mean[c] = mu;
  var[c] = v;
  rstd[c] = r;
  channel_affine(x, d, c, mu_t, static_cast<T>(gamma[c] * r),
                 static_cast<T>(beta[c] + gamma[c] * r * (mu_t - mu)), y, relu);
}

// Σg and Σg·(x − mu_t) over channel c, g = dy (masked by the fused ReLU's output z when relu).
template <class T>
void channel_grad_sums(const T* x, const T* dy, const T* z, bool relu, const BatchNormDims& d,
                       index_t c, T mu_t, double& sum_dy, double& sum_dy_xc) {
  using B = xsimd::batch<T>;
  const B mu_v(mu_t);
  channel_two_sums<T>(
      d, c,
      [&](index_t i) {
        const B g = masked_grad_batch(dy, z, relu, i);
        return std::pair<B, B>(g, g * (B::load_unaligned(x + i) - mu_v));
      },
      [&](index_t i) {
        const T g = masked_grad(dy, z, relu, i);
        return std::pair<T, T>(g, g * (x[i] - mu_t));
      },
      sum_dy, sum_dy_xc);
}

// dx += a·g + b·(x − mu_t) + k over channel c (g as in channel_grad_sums); dx = ... when not
// accumulate.
template <class T>
void channel_grad_apply(const T* x, const T* dy, const T* z, bool relu, const BatchNormDims& d,
                        index_t c, T mu_t, double a, double b, double k, T* dx, bool accumulate) {
  using B = xsimd::batch<T>;
  const T at = static_cast<T>(a), bt = static_cast<T>(b), kt = static_cast<T>(k);
  const B a_v(at), b_v(bt), k_v(kt), mu_v(mu_t);
  for_channel_runs(d, c, [&](index_t off, index_t len) {
    simd_loop<T>(
        off, off + len,
        [&](index_t i) {
          const B g = masked_grad_batch(dy, z, relu, i);
          const B v = a_v * g + b_v * (B::load_unaligned(x + i) - mu_v) + k_v;
          (accumulate ? B::load_unaligned(dx + i) + v : v).store_unaligned(dx + i);
        },
        [&](index_t i) {
          const T v = at * masked_grad(dy, z, relu, i) + bt * (x[i] - mu_t) + kt;
          dx[i] = accumulate ? dx[i] + v : v;
        });
  });
}

}  // namespace detail

// Training forward: batch mean and biased variance per channel (written to mean, var), the rstd
// cached for backward, and y = γ·(x − mean)·rstd + β.
template <class T>
void batch_norm_forward_train(const T* x, const BatchNormDims& d, const T* gamma, const T* beta,
                              double epsilon, T* y, double* mean, double* var, double* rstd,
                              bool relu = false) {
  const double m = static_cast<double>(d.count());
  detail::for_channels(d, [&](index_t c) {
    // Corrected two-pass algorithm: a first mean rounded to T, then the sums of the deviations
    // from it, e = x − mu_t, give mean = mu_t + Σe/m and var = Σe²/m − (Σe/m)².
    const T mu_t = static_cast<T>(detail::channel_sum(x, d, c) / m);
    double sum_e = 0.0, sum_e2 = 0.0;
    detail::channel_deviation_sums(x, d, c, mu_t, sum_e, sum_e2);
    detail::normalize_channel(x, d, c, mu_t, sum_e, sum_e2, m, gamma, beta, epsilon, y, mean, var,
                              rstd, relu);
  });
}

// Inference forward with the moving statistics: y = γ·(x − moving_mean)/sqrt(moving_var + ε) + β.
// The statistics used are written to mean and rstd for backward.
template <class T>
void batch_norm_forward_infer(const T* x, const BatchNormDims& d, const T* gamma, const T* beta,
                              const T* moving_mean, const T* moving_variance, double epsilon, T* y,
                              double* mean, double* rstd, bool relu = false) {
  detail::for_channels(d, [&](index_t c) {
    mean[c] = moving_mean[c];
    rstd[c] = 1.0 / std::sqrt(static_cast<double>(moving_variance[c]) + epsilon);
    detail::channel_affine(x, d, c, moving_mean[c], static_cast<T>(gamma[c] * rstd[c]), beta[c], y,
                           relu);
  });
}

// moving = momentum · moving + (1 − momentum) · batch, per channel (Keras' moving average
// without zero-debiasing).
template <class T>
void batch_norm_update_moving(const double* batch, index_t channels, double momentum, T* moving) {
  for (index_t c = 0; c < channels; ++c) {
    moving[c] =
        static_cast<T>(momentum * static_cast<double>(moving[c]) + (1.0 - momentum) * batch[c]);
  }
}

// Backward with the mean/rstd the forward used. batch_statistics: the forward normalised with
// statistics of this batch (training) rather than constants (inference). Accumulates into dgamma,
// dbeta and dx (dx may be null; accumulate_dx false: writes dx). z: the fused ReLU's output
// when relu (else unused, may be null).
template <class T>
void batch_norm_backward(const T* x, const T* dy, const BatchNormDims& d, const T* gamma,
                         const double* mean, const double* rstd, bool batch_statistics, T* dx,
                         T* dgamma, T* dbeta, const T* z = nullptr, bool relu = false,
                         bool accumulate_dx = true) {
  const double m = static_cast<double>(d.count());
  detail::for_channels(d, [&](index_t c) {
    const T mu_t = static_cast<T>(mean[c]);
    const double r = rstd[c];
    // Σ dy and Σ dy·(x − mu_t) in one pass; Σ dy·x̂ = r · (Σ dy·(x − mu_t) + (mu_t − mean)·Σ dy).
    double sum_dy = 0.0, sum_dy_xc = 0.0;
    detail::channel_grad_sums(x, dy, z, relu, d, c, mu_t, sum_dy, sum_dy_xc);
    const double sum_dy_xhat = r * (sum_dy_xc + (mu_t - mean[c]) * sum_dy);
    dbeta[c] += static_cast<T>(sum_dy);
    dgamma[c] += static_cast<T>(sum_dy_xhat);
    if (dx == nullptr) return;
    // dx += a·dy + b·(x − mu_t) + k, with a = γ·r and, for batch statistics,
    // b = −a·r·Σ(dy·x̂)/m and k = −a·Σdy/m + b·(mu_t − mean).
    const double a = static_cast<double>(gamma[c]) * r;
    const double b = batch_statistics ? -a * r * sum_dy_xhat / m : 0.0;
    const double k = batch_statistics ? -a * sum_dy / m + b * (mu_t - mean[c]) : 0.0;
    detail::channel_grad_apply(x, dy, z, relu, d, c, mu_t, a, b, k, dx, accumulate_dx);
  });
}

// ---- Statistics over a group of processes (synchronised BatchNorm) ---------------------------
//
// Data-parallel training splits a batch over several processes. With statistics synchronised,
// every process normalises with the statistics of the whole batch, and the backward uses the
// whole batch's sums, so N processes compute what one process would on the concatenated batch.
// The computation is the one above, split into phases with a sum over the group between them:
// reduce(v, n) sums the n doubles at v over all processes, in place (every process calls it
// in the same order). Channels are visited in passes over the whole tensor instead of one
// channel at a time, so these paths are used only when a group is set.

// Training forward over a group: as batch_norm_forward_train with the mean and variance of the
// group's batch. Returns the group's values per channel (m). sums: 2 * channels + 1 doubles.
template <class T, class Reduce>
double batch_norm_forward_train_group(const T* x, const BatchNormDims& d, const T* gamma,
                                      const T* beta, double epsilon, T* y, double* mean,
                                      double* var, double* rstd, bool relu, double* sums,
                                      Reduce&& reduce) {
  const index_t C = d.channels;
  detail::for_channels(d, [&](index_t c) { sums[c] = detail::channel_sum(x, d, c); });
  sums[C] = static_cast<double>(d.count());
  reduce(sums, C + 1);
  const double m = sums[C];
  for (index_t c = 0; c < C; ++c) mean[c] = static_cast<double>(static_cast<T>(sums[c] / m));
  detail::for_channels(d, [&](index_t c) {  // deviations from the rounded mean mu_t
    detail::channel_deviation_sums(x, d, c, static_cast<T>(mean[c]), sums[c], sums[C + c]);
  });
  reduce(sums, 2 * C);
  detail::for_channels(d, [&](index_t c) {
    detail::normalize_channel(x, d, c, static_cast<T>(mean[c]), sums[c], sums[C + c], m, gamma,
                              beta, epsilon, y, mean, var, rstd, relu);
  });
  return m;
}

// Backward of batch_norm_forward_train_group (m: what it returned): dgamma and dbeta get this
// process's sums only (the gradients are summed over the group afterwards, with the others);
// dx uses the group's (added into dx, or written when not accumulate_dx). sums: 2 * channels
// doubles.
template <class T, class Reduce>
void batch_norm_backward_group(const T* x, const T* dy, const BatchNormDims& d, const T* gamma,
                               const double* mean, const double* rstd, double m, T* dx, T* dgamma,
                               T* dbeta, const T* z, bool relu, double* sums, Reduce&& reduce,
                               bool accumulate_dx = true) {
  const index_t C = d.channels;
  detail::for_channels(d, [&](index_t c) {
    const T mu_t = static_cast<T>(mean[c]);
    double sum_dy = 0.0, sum_dy_xc = 0.0;
    detail::channel_grad_sums(x, dy, z, relu, d, c, mu_t, sum_dy, sum_dy_xc);
    dbeta[c] += static_cast<T>(sum_dy);
    dgamma[c] += static_cast<T>(rstd[c] * (sum_dy_xc + (mu_t - mean[c]) * sum_dy));
    sums[c] = sum_dy;
    sums[C + c] = sum_dy_xc;
  });
  reduce(sums, 2 * C);
  if (dx == nullptr) return;
  detail::for_channels(d, [&](index_t c) {
    const T mu_t = static_cast<T>(mean[c]);
    const double r = rstd[c], sum_dy = sums[c];
    const double sum_dy_xhat = r * (sums[C + c] + (mu_t - mean[c]) * sum_dy);
    const double a = static_cast<double>(gamma[c]) * r;
    const double b = -a * r * sum_dy_xhat / m;
    const double k = -a * sum_dy / m + b * (mu_t - mean[c]);
    detail::channel_grad_apply(x, dy, z, relu, d, c, mu_t, a, b, k, dx, accumulate_dx);
  });
}

}  // namespace minires::kernels
