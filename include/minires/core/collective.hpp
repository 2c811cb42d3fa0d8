// A group of processes that train one model together (data parallelism), as the library sees
// it: sums and broadcasts of arrays across the group, nothing else. fit() and evaluate()
// (train/) shard their batches over it and sum gradients and metrics through it; BatchNorm
// (layers/) can sum its batch statistics through it (synchronised BatchNorm). The library
// itself has no implementation but the trivial one below: minires/distributed/mpi.hpp
// implements it over MPI, as an optional component, so the core stays free of MPI.
//
// Every member function is collective: all ranks call it, in the same order, with the same
// count. Implementations throw a minires::Error when the group fails.
#pragma once

#include "minires/core/shape.hpp"

namespace minires {

class Collective {
 public:
  virtual ~Collective() = default;

  virtual int rank() const = 0;  // 0 .. size() - 1
  virtual int size() const = 0;

  // In place: data[0, n) = its sum over all ranks. Every rank receives the same values.
  virtual void sum(float* data, index_t n) = 0;
  virtual void sum(double* data, index_t n) = 0;
  // In place: data[0, n) = rank root's data.
  virtual void broadcast(float* data, index_t n, int root) = 0;
  virtual void broadcast(double* data, index_t n, int root) = 0;
};

// A group of one process: sums and broadcasts leave the data as it is.
class SingleProcess final : public Collective {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void sum(float*, index_t) override {}
  void sum(double*, index_t) override {}
  void broadcast(float*, index_t, int) override {}
  void broadcast(double*, index_t, int) override {}
};

}  // namespace minires
