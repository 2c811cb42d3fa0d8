// Thread-count control. minires parallelises with OpenMP; the count is a user setting
// (set_num_threads, or the OMP_NUM_THREADS environment variable read by OpenMP itself), bounded
// by max_threads: far beyond the hardware, libgomp itself fails (40000 threads abort, 100000
// crash), and any count above the hardware threads only slows training down.
#pragma once

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <string>

#include "minires/core/error.hpp"

namespace minires {

// The most threads minires accepts, from set_num_threads or OMP_NUM_THREADS.
inline constexpr int max_threads = 1024;

// Threads minires kernels (and Eigen's GEMM) use from now on: 1 to max_threads (ValueError
// otherwise). More than hardware_threads() is allowed but slow (see oversubscribed()).
inline void set_num_threads(int n) {
  if (n < 1 || n > max_threads) {
    throw ValueError("set_num_threads: expected 1 to " + std::to_string(max_threads) +
                     " threads, found " + std::to_string(n));
  }
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

namespace minires {

// Throws ValueError when the thread count in force (OMP_NUM_THREADS, unless set_num_threads
// changed it) is above max_threads, before any parallel region would try to start that many.
// fit(), evaluate() and predict() call it; programs can call it first thing.
inline void check_num_threads() {
  const int n = num_threads();
  if (n > max_threads) {
    throw ValueError("expected at most " + std::to_string(max_threads) + " threads, found " +
                     std::to_string(n) +
                     " (from OMP_NUM_THREADS); set OMP_NUM_THREADS to at most the " +
                     std::to_string(hardware_threads()) + " hardware threads");
  }
}

// True when n threads are more than the hardware threads: each step then waits for threads
// that share a core, often many times slower than with hardware_threads().
inline bool oversubscribed(int n) noexcept {
  return n > hardware_threads();
}

}  // namespace minires
