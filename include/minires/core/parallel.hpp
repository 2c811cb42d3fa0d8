// Thread-count control. minires parallelises with OpenMP; the count is a user setting
// (set_num_threads, or the OMP_NUM_THREADS environment variable read by OpenMP itself), bounded
// by max_threads: far beyond the hardware, libgomp itself fails (40000 threads abort, 100000
// crash), and any count above the hardware threads only slows training down.
#pragma once

#include <Eigen/Core>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <string>

#include "minires/core/error.hpp"
#include "minires/core/shape.hpp"

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

namespace minires {

// Work, in simple operations (one element read, computed and written; one SIMD multiply-add),
// below which a piece of work runs on one thread: starting a parallel region costs microseconds,
// and far more when the cores are shared with other processes.
inline constexpr index_t parallel_min_work = index_t(1) << 14;

// Items per chunk for items that cost `work_per_item` operations each: the grain that makes a
// chunk worth a thread (at least 1).
inline index_t parallel_grain(index_t work_per_item) noexcept {
  return work_per_item >= parallel_min_work
             ? 1
             : (parallel_min_work + std::max<index_t>(work_per_item, 1) - 1) /
                   std::max<index_t>(work_per_item, 1);
}

// Calls body(begin, end) on contiguous chunks that cover [0, n), in one OpenMP parallel region
// when there is work for more than one chunk of `grain` items (as ATen's at::parallel_for):
// min(num_threads(), n / grain) chunks, one per thread, else body(0, n) on the calling thread.
// The chunks depend on the thread count, so body must compute each item independently of how
// [0, n) is cut (reductions across items keep their own fixed partition, as the convolutions'
// batch slots do).
template <class Body>
void parallel_for(index_t n, index_t grain, Body&& body) {
  if (n <= 0) return;
  const index_t chunks =
      std::min<index_t>(num_threads(), std::max<index_t>(1, n / std::max<index_t>(grain, 1)));
  if (chunks <= 1) {
    body(index_t(0), n);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(static_cast <int>(chunks))
  for (index_t c = 0; c < chunks; ++c) body(n * c / chunks, n * (c + 1) / chunks);
}

}  // namespace minires
