// Data parallelism: the pieces fit() and evaluate() use to train one model on several
// processes (a Collective, core/collective.hpp; over MPI: minires/distributed/mpi.hpp), the
// design of Horovod and PyTorch DDP:
//
//   - every process holds a full replica; parameters, saved state (BatchNorm's moving
//     statistics) and the optimizer's state are broadcast from rank 0 when training starts;
//   - every process shuffles with the same seed and takes its own contiguous shard of each
//     global batch (shard_range: sizes differ by at most one when the batch does not divide);
//   - after the backward pass the gradients are summed over the processes in a few flat
//     buckets (GradientBuckets: Horovod's tensor fusion, one collective call per bucket), each
//     process having scaled its loss gradient by its share of the global batch, so the sum is
//     the gradient of the mean loss over the whole global batch: every replica then takes the
//     same optimizer step.
#pragma once

#include <algorithm>
#include <utility>
#include <vector>

#include "minires/core/collective.hpp"
#include "minires/core/error.hpp"
#include "minires/core/tensor.hpp"
#include "minires/graph/model.hpp"
#include "minires/layers/layer.hpp"

namespace minires {

// Samples [first, second) of a batch of m samples that rank `rank` of `size` takes.
inline std::pair<index_t, index_t> shard_range(index_t m, int rank, int size) noexcept {
  return {m * rank / size, m * (rank + 1) / size};
}

// Broadcasts every tensor of `refs` (values, not gradients) from rank `root`.
template <class T>
void broadcast_tensors(const std::vector<ParamRef<T>>& refs, Collective& group, int root = 0) {
  for (const auto& r : refs) group.broadcast(r.value->data(), r.value->size(), root);
}

// Broadcasts a model's parameters and saved state from rank `root`.
template <class T>
void broadcast_model(Model<T>& model, Collective& group, int root = 0) {
  broadcast_tensors(model.params(), group, root);
  broadcast_tensors(model.state(), group, root);
}

// The gradients of a list of parameters, summed over a group in flat buckets of at most
// `bucket_elements` values each (whole parameters; one larger than a bucket gets one of its
// own). The buffer is allocated once, here.
template <class T>
class GradientBuckets {
 public:
  // 2^22 values: 16 MB of float, Horovod's fusion threshold order of magnitude.
  static constexpr index_t default_bucket_elements = index_t(1) << 22;

  explicit GradientBuckets(std::vector<ParamRef<T>> params,
                           index_t bucket_elements = default_bucket_elements)
      : params_(std::move(params)) {
    if (bucket_elements < 1) {
      throw ValueError("GradientBuckets: expected a bucket of at least 1 element, found " +
                       std::to_string(bucket_elements));
    }
    index_t size = 0, largest = 0;
    std::size_t first = 0;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const index_t n = params_[i].grad->size();
      if (size > 0 && size + n > bucket_elements) {
        buckets_.push_back({first, i});
        largest = std::max(largest, size);
        first = i;
        size = 0;
      }
      size += n;
    }
    if (first < params_.size()) buckets_.push_back({first, params_.size()});
    largest = std::max(largest, size);
    buffer_.resize(Shape{std::max<index_t>(largest, 1)});
  }

  // Every gradient = its sum over the group.
  void sum(Collective& group) {
    for (const auto& [begin, end] : buckets_) {
      T* p = buffer_.data();
      for (std::size_t i = begin; i < end; ++i) {
        const Tensor<T>& g = *params_[i].grad;
        p = std::copy(g.data(), g.data() + g.size(), p);
      }
      const index_t n = static_cast<index_t>(p - buffer_.data());
      group.sum(buffer_.data(), n);
      const T* q = buffer_.data();
      for (std::size_t i = begin; i < end; ++i) {
        Tensor<T>& g = *params_[i].grad;
        std::copy(q, q + g.size(), g.data());
        q += g.size();
      }
    }
  }

  std::size_t buckets() const noexcept { return buckets_.size(); }
  // Values summed per call: every gradient once.
  index_t elements() const noexcept {
    index_t n = 0;
    for (const auto& p : params_) n += p.grad->size();
    return n;
  }

 private:
  std::vector<ParamRef<T>> params_;
  std::vector<std::pair<std::size_t, std::size_t>> buckets_;  // [first, last) parameter
  Tensor<T> buffer_;
};

}  // namespace minires
