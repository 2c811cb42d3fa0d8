// Finite-difference gradient checking in double precision (central differences).
//
//   numeric_i = (f(x + h e_i) - f(x - h e_i)) / (2h)
//   error_i   = |analytic_i - numeric_i| / max(|analytic_i|, |numeric_i|)    (relative)
//
// An element passes when its relative error is within rel_tol or its absolute error within
// abs_tol (the latter covers gradients that are zero or nearly so). The checker perturbs x in
// place and restores every element, so f may read x directly.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "minires/core/shape.hpp"

namespace minires::testing {

struct GradCheckOptions {
  double step = 1e-6;      // h
  double rel_tol = 1e-6;   // pass if relative error <= rel_tol ...
  double abs_tol = 1e-8;   // ... or absolute error <= abs_tol
  index_t max_checks = 0;  // check at most this many evenly spaced elements (0: all)
};

struct GradCheckResult {
  index_t checked = 0;         // elements compared
  index_t failed = 0;          // elements outside both tolerances
  double max_rel_error = 0.0;  // largest relative error over elements checked
  double max_abs_error = 0.0;  // largest absolute error over elements checked
  index_t worst_index = -1;    // element with the largest relative error among failures
                               // (or overall when none failed)
  double worst_analytic = 0.0;
  double worst_numeric = 0.0;

  bool ok() const noexcept { return failed == 0; }

  std::string report() const {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "gradcheck: %lld of %lld elements failed; max rel error %.3e, max abs error "
                  "%.3e; worst element %lld: analytic %.9g vs numeric %.9g",
                  static_cast<long long>(failed), static_cast<long long>(checked), max_rel_error,
                  max_abs_error, static_cast<long long>(worst_index), worst_analytic,
                  worst_numeric);
    return buf;
  }
};

// sum a[i] * b[i] with compensated (Neumaier) summation, for losses that central differences
// take apart. A plain running sum of n terms carries rounding noise of ~sqrt(n) ulps of the
// sum that changes with every perturbation (each later partial sum rounds differently), and
// over 2h = 2e-6 that noise reaches ~1e-8 for a few thousand terms: the checker's absolute
// tolerance. Compensated, the terms a perturbation leaves alone cancel to within an ulp or two
// of the sum, so the check sees the layer's own error.
inline double compensated_dot(const double* a, const double* b, index_t n) noexcept {
  double sum = 0.0, comp = 0.0;
  for (index_t i = 0; i < n; ++i) {
    const double v = a[i] * b[i];
    const double t = sum + v;
    comp += std::abs(sum) >= std::abs(v) ? (sum - t) + v : (v - t) + sum;
    sum = t;
  }
  return sum + comp;
}

// Compares analytic[0..n) with central differences of f() around x[0..n).
template <class F>
GradCheckResult check_gradient(F&& f, double* x, index_t n, const double* analytic,
                               const GradCheckOptions& options = {}) {
  GradCheckResult r;
  const index_t stride = (options.max_checks > 0 && n > options.max_checks)
                             ? (n + options.max_checks - 1) / options.max_checks
                             : 1;
  double worst_fail = -1.0, worst_any = -1.0;
  for (index_t i = 0; i < n; i += stride) {
    const double saved = x[i];
    x[i] = saved + options.step;
    const double f_plus = f();
    x[i] = saved - options.step;
    const double f_minus = f();
    x[i] = saved;
    const double numeric = (f_plus - f_minus) / (2.0 * options.step);
    const double abs_err = std::abs(analytic[i] - numeric);
    const double denom = std::max(std::abs(analytic[i]), std::abs(numeric));
    const double rel_err = denom > 0.0 ? abs_err / denom : 0.0;
    ++r.checked;
    r.max_abs_error = std::max(r.max_abs_error, abs_err);
    r.max_rel_error = std::max(r.max_rel_error, rel_err);
    const bool pass = rel_err <= options.rel_tol || abs_err <= options.abs_tol;
    if (!pass) ++r.failed;
    const bool take = pass ? (worst_fail < 0.0 && rel_err > worst_any) : rel_err > worst_fail;
    if (take) {
      (pass ? worst_any : worst_fail) = rel_err;
      r.worst_index = i;
      r.worst_analytic = analytic[i];
      r.worst_numeric = numeric;
    }
  }
  return r;
}

}  // namespace minires::testing
