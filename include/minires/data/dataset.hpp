// Datasets: labelled samples that the training loop gathers into batches (Dataset), and samples
// held in one tensor (TensorDataset).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/core/rng.hpp"
#include "minires/core/span.hpp"
#include "minires/core/tensor.hpp"

namespace minires {

template <class T>
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual index_t size() const = 0;
  // Shape of one sample, without the batch dimension.
  virtual Shape sample_shape() const = 0;
  virtual index_t num_classes() const = 0;
  // Writes samples `indices` into x (shape (indices.size(), sample shape...), already sized)
  // and their class labels into labels. `augment` is non-null while training: a dataset may
  // then draw random augmentations from it (the same generator state gives the same batch).
  virtual void get(Span<const index_t> indices, Tensor<T>& x, std::int32_t* labels,
                   Rng* augment) const = 0;
};

// Samples held in one tensor (N, sample shape...) with labels in [0, num_classes).
template <class T>
class TensorDataset : public Dataset<T> {
 public:
  TensorDataset(Tensor<T> x, std::vector<std::int32_t> labels, index_t num_classes)
      : x_(std::move(x)), labels_(std::move(labels)), classes_(num_classes) {
    if (x_.rank() < 2) {
      throw ShapeError("TensorDataset: expected samples of shape (N, ...), found " +
                       x_.shape().str());
    }
    if (static_cast<index_t>(labels_.size()) != x_.dim(0)) {
      throw ShapeError("TensorDataset: expected " + std::to_string(x_.dim(0)) +
                       " labels (one per sample), found " + std::to_string(labels_.size()));
    }
    for (std::size_t i = 0; i < labels_.size(); ++i) {
      if (labels_[i] < 0 || labels_[i] >= classes_) {
        throw ValueError("TensorDataset: label " + std::to_string(labels_[i]) + " of sample " +
                         std::to_string(i) + " is outside [0, " + std::to_string(classes_) + ")");
      }
    }
    sample_size_ = x_.size() / x_.dim(0);
  }

  index_t size() const override { return x_.dim(0); }
  Shape sample_shape() const override { return Shape::from(x_.shape().data() + 1, x_.rank() - 1); }
  index_t num_classes() const override { return classes_; }
  const Tensor<T>& samples() const noexcept { return x_; }
  const std::vector<std::int32_t>& labels() const noexcept { return labels_; }

  void get(Span<const index_t> indices, Tensor<T>& x, std::int32_t* labels, Rng*) const override {
    for (std::size_t i = 0; i < indices.size(); ++i) {
      const index_t k = indices[i];
      std::copy(x_.data() + k * sample_size_, x_.data() + (k + 1) * sample_size_,
                x.data() + static_cast<index_t>(i) * sample_size_);
      labels[i] = labels_[static_cast<std::size_t>(k)];
    }
  }

 private:
  Tensor<T> x_;
  std::vector<std::int32_t> labels_;
  index_t classes_;
  index_t sample_size_ = 0;
};

}  // namespace minires
