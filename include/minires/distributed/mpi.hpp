// Data-parallel training over MPI (the optional minires::mpi component: link the CMake target
// minires::mpi, which carries MPI::MPI_CXX; the rest of minires never includes this header).
//
//   minires::mpi::Environment env(argc, argv);   // MPI_Init_thread, MPI_Finalize at scope end
//   minires::mpi::Communicator world;            // MPI_COMM_WORLD, a minires::Collective
//   FitOptions options(epochs, global_batch);
//   options.replicas = world;                    // every rank runs the same fit()
//   options.sync_batch_norm = true;              // optional: N ranks train exactly as one
//   fit(model, loss, optimizer, train, options);
//
// and run it with `mpirun -np N program ...` (docs/distributed.md). Sums are MPI_Allreduce
// (MPI_SUM, in place), broadcasts MPI_Bcast; the communicator returns errors instead of
// aborting (MPI_ERRORS_RETURN) and every failure throws MpiError with MPI's message. When one
// rank fails for good, call Communicator::abort so the others do not wait for it forever.
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>

#include "minires/core/collective.hpp"
#include "minires/core/error.hpp"

namespace minires::mpi {

// An MPI call failed.
class MpiError : public Error {
 public:
  using Error::Error;
};

namespace detail {

inline void check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw MpiError(std::string("MPI: ") + call + " failed: expected MPI_SUCCESS, found error " +
                 std::to_string(rc) + " (" + std::string(text, static_cast<std::size_t>(len)) +
                 ")");
}

template <class T>
MPI_Datatype datatype();
template <>
inline MPI_Datatype datatype<float>() {
  return MPI_FLOAT;
}
template <>
inline MPI_Datatype datatype<double>() {
  return MPI_DOUBLE;
}

}  // namespace detail

// True when this process was started by an MPI launcher (mpirun/mpiexec of Open MPI, MPICH or
// a PMI/PMIx-based scheduler): a program can then start MPI, and run alone otherwise.
inline bool launched_by_mpirun() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

// MPI for the lifetime of this object: MPI_Init_thread (MPI_THREAD_FUNNELED: only the thread
// that created it calls MPI; OpenMP threads run the kernels between the calls), then
// MPI_Finalize. One per process.
class Environment {
 public:
  Environment(int& argc, char**& argv) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) throw MpiError("MPI: expected one mpi::Environment, found MPI started");
    int provided = 0;
    detail::check(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  }
  Environment() : Environment(dummy_argc_, dummy_argv_) {}
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;
  ~Environment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }

 private:
  static inline int dummy_argc_ = 0;
  static inline char** dummy_argv_ = nullptr;
};

// A communicator as a minires::Collective (MPI_COMM_WORLD by default). Counts above INT_MAX
// are sent in pieces.
class Communicator final : public Collective {
 public:
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
    detail::check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    detail::check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
    detail::check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  MPI_Comm comm() const noexcept { return comm_; }

  void sum(float* data, index_t n) override { allreduce(data, n); }
  void sum(double* data, index_t n) override { allreduce(data, n); }
  void broadcast(float* data, index_t n, int root) override { bcast(data, n, root); }
  void broadcast(double* data, index_t n, int root) override { bcast(data, n, root); }

  void barrier() { detail::check(MPI_Barrier(comm_), "MPI_Barrier"); }
  // Ends every rank of the communicator with `code` (MPI_Abort): for a rank that cannot go
  // on, so that the others, waiting in a collective call, do not hang.
  [[noreturn]] void abort(int code) {
    MPI_Abort(comm_, code);
    std::abort();  // MPI_Abort does not return
  }

 private:
  template <class T>
  void allreduce(T* data, index_t n) {
    for (index_t done = 0; done < n;) {
      const int count = static_cast<int>(std::min<index_t>(n - done, INT_MAX));
      detail::check(
          MPI_Allreduce(MPI_IN_PLACE, data + done, count, detail::datatype<T>(), MPI_SUM, comm_),
          "MPI_Allreduce");
      done += count;
    }
  }
  template <class T>
  void bcast(T* data, index_t n, int root) {
    for (index_t done = 0; done < n;) {
      const int count = static_cast<int>(std::min<index_t>(n - done, INT_MAX));
      detail::check(MPI_Bcast(data + done, count, detail::datatype<T>(), root, comm_), "MPI_Bcast");
      done += count;
    }
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

}  // namespace minires::mpi
