// SoftmaxCrossEntropy<T>: softmax and categorical cross-entropy fused, over logits (N, K) and
// class-index labels, returning the batch-mean loss (a Loss, loss/loss.hpp).
//
// Keras 2.0 Dense(K, activation='softmax') + loss='categorical_crossentropy' with one-hot
// targets is keras_clip = true (the default): the reported loss is -log clip(p_label, 1e-7,
// 1 - 1e-7), and a sample whose p_label is clipped gives no gradient. PyTorch
// nn.CrossEntropyLoss() (mean reduction) is keras_clip = false; with label_smoothing s it is
// nn.CrossEntropyLoss(label_smoothing=s). The math is in kernels/softmax.hpp.
//
// Also here: softmax(logits, probs) for inference.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/core/shape.hpp"
#include "minires/core/span.hpp"
#include "minires/core/tensor.hpp"
#include "minires/kernels/softmax.hpp"
#include "minires/loss/loss.hpp"

namespace minires {

struct SoftmaxCrossEntropyOptions {
  // Targets y = (1 - s) * onehot(label) + s / K, s in [0, 1]. Keras 2.0 has none (0).
  double label_smoothing = 0.0;
  // Keras 2.0's clip of the probabilities to [epsilon, 1 - epsilon], for the loss and the
  // gradient (classes outside the clip pass no gradient). Off: PyTorch's unclipped loss,
  // gradient always (p - y) / N.
  bool keras_clip = true;
  // K.epsilon() of Keras 2.0; in (0, 0.5).
  double epsilon = 1e-7;
};

template <class T>
class SoftmaxCrossEntropy : public Loss<T> {
 public:
  using Options = SoftmaxCrossEntropyOptions;

  SoftmaxCrossEntropy() : SoftmaxCrossEntropy(Options{}) {}
  explicit SoftmaxCrossEntropy(const Options& options) : options_(options) {
    if (!(options.label_smoothing >= 0.0 && options.label_smoothing <= 1.0)) {
      throw ValueError("SoftmaxCrossEntropy: expected label_smoothing in [0, 1], found " +
                       std::to_string(options.label_smoothing));
    }
    if (!(options.epsilon > 0.0 && options.epsilon < 0.5)) {
      throw ValueError("SoftmaxCrossEntropy: expected epsilon in (0, 0.5), found " +
                       std::to_string(options.epsilon));
    }
  }

  const Options& options() const noexcept { return options_; }
  const char* name() const override { return "categorical_crossentropy"; }

  // Sizes the buffers for logits of this shape: (largest batch, classes).
  void setup(const Shape& logits) override {
    if (logits.rank() != 2 || logits[1] < 1) {
      throw ShapeError(
          "SoftmaxCrossEntropy: expected logits of shape (batch, classes) with "
          "classes >= 1, found " +
          logits.str());
    }
    planned_ = logits;
    probs_.resize(logits);
    losses_.resize(Shape{logits[0]});
    labels_.assign(static_cast<std::size_t>(logits[0]), 0);
    batch_ = -1;
  }

  // L = (1/N) sum_n -sum_k y_nk log p_nk,  p_n = softmax(logits_n)   (clipped: see Options)
  // Caches p and the labels for backward(). labels: N class indices in [0, K).
  T forward(const Tensor<T>& logits, Span<const std::int32_t> labels) override {
    if (planned_.rank() == 0) setup(logits.shape());  // the first forward plans, if setup() did not
    check_logits(logits.shape());
    const index_t n = logits.dim(0), k = logits.dim(1);
    if (static_cast<index_t>(labels.size()) != n) {
      throw ShapeError("SoftmaxCrossEntropy: expected " + std::to_string(n) +
                       " labels (one per row of logits " + logits.shape().str() + "), found " +
                       std::to_string(labels.size()));
    }
    detail::check_labels("SoftmaxCrossEntropy", labels, k);
    std::copy(labels.begin(), labels.end(), labels_.begin());  // all valid: cache them
    probs_.resize(logits.shape());
    losses_.resize(Shape{n});
    kernels::softmax_cross_entropy_forward(logits.data(), labels_.data(), n, k, smoothing(),
                                           clip_epsilon(), probs_.data(), losses_.data());
    batch_ = n;
    double sum = 0.0;  // summed in order: the same result for any thread count
    for (index_t i = 0; i < n; ++i) sum += static_cast<double>(losses_[i]);
    return n > 0 ? static_cast<T>(sum / static_cast<double>(n)) : T(0);
  }

  // dlogits += scale * (p - y) / N  where no class is clipped (always when keras_clip is off);
  // in general dlogits_k += scale * (p_k * sum_{j in U} y_j - [k in U] y_k) / N, U = the classes
  // with p inside [epsilon, 1 - epsilon]. For one-hot targets: 0 for a row whose p_label is
  // clipped, p - y otherwise (Keras 2.0's tf.clip_by_value passes no gradient outside).
  void backward(Tensor<T>& dlogits, T scale = T(1)) const override {
    if (batch_ < 0) {
      throw ValueError("SoftmaxCrossEntropy: expected forward() before backward(), found none");
    }
    if (dlogits.shape() != probs_.shape()) {
      throw ShapeError("SoftmaxCrossEntropy: expected dlogits of shape " + probs_.shape().str() +
                       " (the logits of the last forward), found " + dlogits.shape().str());
    }
    if (batch_ == 0) return;
    kernels::softmax_cross_entropy_backward(probs_.data(), labels_.data(), batch_, probs_.dim(1),
                                            smoothing(), clip_epsilon(),
                                            scale / static_cast<T>(batch_), dlogits.data());
  }

  // Probabilities of the last forward, (N, K).
  const Tensor<T>& probs() const noexcept { return probs_; }
  // Per-sample losses of the last forward, (N,); forward returned their mean.
  const Tensor<T>& sample_losses() const noexcept { return losses_; }

 private:
  T smoothing() const noexcept { return static_cast<T>(options_.label_smoothing); }
  T clip_epsilon() const noexcept {
    return options_.keras_clip ? static_cast<T>(options_.epsilon) : T(0);
  }

  void check_logits(const Shape& s) const {
    if (planned_.rank() == 0) {
      throw ShapeError(
          "SoftmaxCrossEntropy: expected setup() before forward(), found no "
          "planned logits shape");
    }
    if (s.rank() != 2) {
      throw ShapeError(
          "SoftmaxCrossEntropy: expected logits of rank 2 (batch, classes), found "
          "shape " +
          s.str() + " of rank " + std::to_string(s.rank()));
    }
    if (s[1] != planned_[1] || s[0] > planned_[0]) {
      throw ShapeError("SoftmaxCrossEntropy: set up for logits " + planned_.str() +
                       " (any batch up to " + std::to_string(planned_[0]) + "), found " + s.str());
    }
  }

  Options options_;
  Shape planned_;
  Tensor<T> probs_;                   // (N, K) of the last forward
  Tensor<T> losses_;                  // (N,) of the last forward
  std::vector<std::int32_t> labels_;  // (N,) of the last forward
  index_t batch_ = -1;                // N of the last forward; -1 before any
};

// probs = softmax(logits) row by row, for inference. logits: (N, K); probs is resized to
// match (reallocating only when its capacity is too small).
template <class T>
void softmax(const Tensor<T>& logits, Tensor<T>& probs) {
  if (logits.rank() != 2 || logits.dim(1) < 1) {
    throw ShapeError(
        "softmax: expected logits of shape (batch, classes) with classes >= 1, found " +
        logits.shape().str());
  }
  probs.resize(logits.shape());
  kernels::softmax_forward(logits.data(), probs.data(), logits.dim(0), logits.dim(1));
}

}  // namespace minires
