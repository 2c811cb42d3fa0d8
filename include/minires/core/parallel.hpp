// Thread-count control. minires parallelises with OpenMP; the count is a user setting
// (set_num_threads, or the OMP_NUM_THREADS environment variable read by OpenMP itself).
#pragma once

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <string>

#include "minires/core/error.hpp"

namespace minires {

// Threads minires kernels (and Eigen's GEMM) use from now on.
inline void set_num_threads(int n) {
  if (n < 1)
    throw ValueError("set_num_threads: expected at least 1 thread, found " + std::to_string(n));
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  Eigen::setNbThreads(n);
}

// Threads a parallel region would use now.
inline int num_threads() noexcept {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Hardware threads available to this process.
inline int hardware_threads() noexcept {
#ifdef _OPENMP
  return omp_get_num_procs();
#else
  return 1;
#endif
}

}  // namespace minires
