// Distillation<T>: knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the
// Knowledge in a Neural Network"). A Loss that trains a student against its class labels and
// against a trained teacher's predictions on the same (augmented) inputs:
//
//   L = (1 - w) CE(y, softmax(z)) + w t^2 KL(q || softmax(z / t)),  q = softmax(teacher(x) / t)
//   dL/dz = (1 - w) dCE/dz + w t (softmax(z / t) - q)
//
// z the student's logits, y the (optionally smoothed, optionally Keras-clipped) one-hot targets
// of SoftmaxCrossEntropy, w the soft targets' weight, t the temperature (the t^2 keeps the soft
// term's gradient on the scale of the hard term's as t changes). The kernels are in
// kernels/softmax.hpp. fit() calls begin_batch(x) with each batch's inputs; the teacher runs there,
// in inference mode, on the inputs it has not seen before.
//
// The teacher's predictions are memoised by the inputs' content (a 128-bit hash of each sample's
// values), up to `cache_entries` distinct samples: with augmentations that have few outcomes
// (Fashion-MNIST's mirror images: two per image) the teacher runs about twice per training image
// over a whole run instead of once per sample per epoch. Samples beyond the capacity are run
// every time they come. The cache grows (allocates) as it fills; nothing else allocates after
// setup(). A cached sample's targets are the teacher's from the batch that first held it, equal
// to a fresh run's up to the rounding of the convolution path chosen for that batch size; runs
// with the same seed and thread count stay bit-identical.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/core/shape.hpp"
#include "minires/core/span.hpp"
#include "minires/core/tensor.hpp"
#include "minires/graph/model.hpp"
#include "minires/kernels/softmax.hpp"
#include "minires/loss/loss.hpp"
#include "minires/loss/softmax_cross_entropy.hpp"

namespace minires {

struct DistillationOptions {
  double weight = 0.9;       // w in [0, 1]: the soft targets' share of the loss
  double temperature = 4.0;  // t > 0
  // Distinct samples whose teacher predictions are kept (0: none, the teacher runs on every
  // sample of every batch). 10 classes in float: ~100 bytes per entry with the table.
  std::size_t cache_entries = std::size_t(1) << 20;
  SoftmaxCrossEntropyOptions hard;  // the class-label term
};

namespace detail {

// Two 64-bit hashes of a byte range (xxHash64-style rounds over 8-byte words with different
// seeds), a key whose collisions are negligible for a cache of millions of entries.
struct Key128 {
  std::uint64_t a = 0, b = 0;
  bool operator==(const Key128& o) const noexcept { return a == o.a && b == o.b; }
};
struct Key128Hash {
  std::size_t operator()(const Key128& k) const noexcept { return static_cast<std::size_t>(k.a); }
};

inline std::uint64_t rotl64(std::uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

inline Key128 content_key(const void* data, std::size_t bytes) {
  constexpr std::uint64_t p1 = 0x9E3779B185EBCA87ULL, p2 = 0xC2B2AE3D27D4EB4FULL,
                          p3 = 0x165667B19E3779F9ULL;
  std::uint64_t a = 0x27D4EB2F165667C5ULL ^ bytes, b = 0x85EBCA77C2B2AE63ULL + bytes;
  const auto* c = static_cast<const unsigned char*>(data);
  auto mix = [&](std::uint64_t w) {
    a = rotl64(a + w * p2, 31) * p1;
    b = rotl64(b ^ (w * p3), 27) * p2 + p3;
  };
  std::size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, c + i, 8);
    mix(w);
  }
  if (i < bytes) {
    std::uint64_t w = 0;
    std::memcpy(&w, c + i, bytes - i);
    mix(w);
  }
  auto avalanche = [](std::uint64_t h) {
    h ^= h >> 33;
    h *= p2;
    h ^= h >> 29;
    h *= p3;
    return h ^ (h >> 32);
  };
  return {avalanche(a), avalanche(b)};
}

}  // namespace detail

template <class T>
class Distillation : public Loss<T> {
 public:
  using Options = DistillationOptions;

  // `teacher` (trained, with the student's input shape and number of classes) must outlive the
  // loss; it runs in inference mode and is not changed otherwise.
  Distillation(Model<T>& teacher, const Options& options)
      : teacher_(teacher), options_(options), hard_(options.hard) {
    if (!(options.weight >= 0.0 && options.weight <= 1.0)) {
      throw ValueError("Distillation: expected weight in [0, 1], found " +
                       std::to_string(options.weight));
    }
    if (!(options.temperature > 0.0 && std::isfinite(options.temperature))) {
      throw ValueError("Distillation: expected a finite temperature above 0, found " +
                       std::to_string(options.temperature));
    }
  }

  const Options& options() const noexcept { return options_; }
  const char* name() const override { return "distillation"; }

  // Sizes every buffer for logits (largest batch, classes); plans the teacher for that batch.
  void setup(const Shape& logits) override {
    hard_.setup(logits);  // checks the shape
    planned_ = logits;
    const index_t n = logits[0];
    targets_.resize(logits);
    tempered_.resize(logits);
    soft_losses_.resize(Shape{n});
    misses_.reserve(static_cast<std::size_t>(n));
    keys_.resize(static_cast<std::size_t>(n));
    teacher_.plan(n);
    miss_x_.resize(teacher_.output_shape(teacher_.input()).prepend_batch(n));
    cache_.reserve(std::min(options_.cache_entries, std::size_t(1) << 16));
    prepared_ = -1;
    batch_ = -1;
  }

  // The teacher's tempered predictions q for this batch of inputs (N, sample shape...), from the
  // cache or from running the teacher on the samples it has not seen.
  void begin_batch(const Tensor<T>& x) override {
    if (planned_.rank() == 0) {
      throw ShapeError("Distillation: expected setup() before begin_batch(), found none");
    }
    const index_t n = x.rank() > 0 ? x.dim(0) : 0, k = planned_[1];
    if (n > planned_[0]) {
      throw ShapeError("Distillation: set up for batches of up to " + std::to_string(planned_[0]) +
                       " samples, found inputs " + x.shape().str());
    }
    targets_.resize(Shape{n, k});
    if (n == 0) {
      prepared_ = 0;
      return;
    }
    const index_t sample = x.size() / n;
    const std::size_t bytes = static_cast<std::size_t>(sample) * sizeof(T);
    misses_.clear();
    for (index_t i = 0; i < n; ++i) {
      keys_[static_cast<std::size_t>(i)] = detail::content_key(x.data() + i * sample, bytes);
      const auto it = options_.cache_entries > 0 ? cache_.find(keys_[static_cast<std::size_t>(i)])
                                                 : cache_.end();
      if (it == cache_.end()) {
        misses_.push_back(i);
        continue;
      }
      std::memcpy(targets_.data() + i * k, stored_.data() + it->second * k, sizeof(T) * k);
      ++cache_hits_;
    }
    if (!misses_.empty()) run_teacher(x, sample, n, k);
    prepared_ = n;
  }

  // L = (1 - w) CE + w t^2 mean_n KL(q_n || softmax(z_n / t))   (begin_batch() gave q)
  T forward(const Tensor<T>& logits, Span<const std::int32_t> labels) override {
    const index_t n = logits.rank() == 2 ? logits.dim(0) : -1;
    if (prepared_ < 0 || prepared_ != n) {
      throw ValueError("Distillation: expected begin_batch() with the inputs of this batch of " +
                       std::to_string(n) + " before forward(), found " +
                       (prepared_ < 0 ? std::string("none")
                                      : "one of " + std::to_string(prepared_) + " samples"));
    }
    const double hard = static_cast<double>(hard_.forward(logits, labels));  // checks the shapes
    prepared_ = -1;
    batch_ = n;
    tempered_.resize(logits.shape());
    soft_losses_.resize(Shape{n});
    kernels::soft_cross_entropy_forward(logits.data(), targets_.data(), n, logits.dim(1),
                                        temperature(), tempered_.data(), soft_losses_.data());
    double soft = 0.0;  // summed in order: the same for any thread count
    for (index_t i = 0; i < n; ++i) soft += static_cast<double>(soft_losses_[i]);
    if (n > 0) soft /= static_cast<double>(n);
    const double w = options_.weight, t = options_.temperature;
    return static_cast<T>((1.0 - w) * hard + w * t * t * soft);
  }

  // dz += scale (1 - w) dCE/dz + scale w t (softmax(z / t) - q) / N
  void backward(Tensor<T>& dlogits, T scale = T(1)) const override {
    if (batch_ < 0) {
      throw ValueError("Distillation: expected forward() before backward(), found none");
    }
    const double w = options_.weight;
    if (w < 1.0) hard_.backward(dlogits, static_cast<T>(static_cast<double>(scale) * (1.0 - w)));
    if (w > 0.0 && batch_ > 0) {
      const T s = static_cast<T>(static_cast<double>(scale) * w * options_.temperature /
                                 static_cast<double>(batch_));
      kernels::soft_cross_entropy_backward(tempered_.data(), targets_.data(), batch_,
                                           tempered_.dim(1), s, dlogits.data());
    }
  }

  // The teacher's tempered predictions q of the last begin_batch(), (N, K).
  const Tensor<T>& targets() const noexcept { return targets_; }
  // Samples the teacher ran on, and samples served from the cache, so far.
  std::int64_t teacher_samples() const noexcept { return teacher_samples_; }
  std::int64_t cache_hits() const noexcept { return cache_hits_; }
  std::size_t cached() const noexcept { return cache_.size(); }

 private:
  T temperature() const noexcept { return static_cast<T>(options_.temperature); }

  // Runs the teacher on the samples misses_ names, writes their targets and caches them.
  void run_teacher(const Tensor<T>& x, index_t sample, index_t n, index_t k) {
    const index_t m = static_cast<index_t>(misses_.size());
    if (m == n) {
      run_on(x, m, k);
    } else {
      miss_x_.resize(Shape::from(x.shape().data() + 1, x.rank() - 1).prepend_batch(m));
      for (index_t j = 0; j < m; ++j)
        std::memcpy(miss_x_.data() + j * sample,
                    x.data() + misses_[static_cast<std::size_t>(j)] * sample,
                    sizeof(T) * static_cast<std::size_t>(sample));
      run_on(miss_x_, m, k);
    }
    teacher_samples_ += m;
  }

  void run_on(const Tensor<T>& xs, index_t m, index_t k) {
    const Tensor<T>& z = teacher_.forward(xs, Mode::Infer);
    if (z.rank() != 2 || z.dim(0) != m || z.dim(1) != k) {
      throw ShapeError("Distillation: expected the teacher's output of shape " + Shape{m, k}.str() +
                       " (the student's classes), found " + z.shape().str());
    }
    for (index_t j = 0; j < m; ++j) {
      const index_t i = misses_[static_cast<std::size_t>(j)];
      T* q = targets_.data() + i * k;
      kernels::tempered_softmax_forward(z.data() + j * k, q, 1, k, temperature());
      if (cache_.size() < options_.cache_entries &&
          cache_.emplace(keys_[static_cast<std::size_t>(i)], cache_.size()).second) {
        stored_.insert(stored_.end(), q, q + k);
      }
    }
  }

  Model<T>& teacher_;
  Options options_;
  SoftmaxCrossEntropy<T> hard_;
  Shape planned_;
  Tensor<T> targets_;      // (N, K): q of the last begin_batch
  Tensor<T> tempered_;     // (N, K): softmax(z / t) of the last forward
  Tensor<T> soft_losses_;  // (N,)
  Tensor<T> miss_x_;       // the samples the teacher runs on, when not the whole batch
  std::vector<index_t> misses_;
  std::vector<detail::Key128> keys_;
  std::unordered_map<detail::Key128, std::size_t, detail::Key128Hash> cache_;
  std::vector<T> stored_;  // the cached targets, K per entry, in insertion order
  std::int64_t teacher_samples_ = 0, cache_hits_ = 0;
  index_t prepared_ = -1;  // samples of the last begin_batch not yet consumed by forward
  index_t batch_ = -1;     // N of the last forward
};

}  // namespace minires
