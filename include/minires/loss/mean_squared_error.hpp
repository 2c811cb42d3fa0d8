// MeanSquaredError<T>: the mean squared difference between the model's output (N, K) and one-hot
// targets of class-index labels, Keras' loss='mean_squared_error' with one-hot targets (mean over
// the K outputs, then over the batch) and PyTorch's nn.MSELoss() against F.one_hot(labels, K).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/core/shape.hpp"
#include "minires/core/span.hpp"
#include "minires/core/tensor.hpp"
#include "minires/loss/loss.hpp"

namespace minires {

template <class T>
class MeanSquaredError : public Loss<T> {
 public:
  const char* name() const override { return "mean_squared_error"; }

  // Sizes the buffers for outputs of this shape: (largest batch, K).
  void setup(const Shape& output) override {
    if (output.rank() != 2 || output[1] < 1) {
      throw ShapeError(
          "MeanSquaredError: expected outputs of shape (batch, classes) with "
          "classes >= 1, found " +
          output.str());
    }
    planned_ = output;
    diff_.resize(output);
    batch_ = -1;
  }

  // L = (1 / (N K)) sum_n sum_k (out_nk - y_nk)^2,  y_n = onehot(label_n)
  // Caches out - y for backward(). labels: N class indices in [0, K).
  T forward(const Tensor<T>& output, Span<const std::int32_t> labels) override {
    const Shape& s = output.shape();
    if (planned_.rank() == 0) setup(s);  // the first forward plans, if setup() did not
    if (s.rank() != 2 || s[1] != planned_[1] || s[0] > planned_[0]) {
      throw ShapeError("MeanSquaredError: set up for outputs " + planned_.str() +
                       " (any batch up to " + std::to_string(planned_[0]) + "), found " + s.str());
    }
    const index_t n = s[0], k = s[1];
    if (static_cast<index_t>(labels.size()) != n) {
      throw ShapeError("MeanSquaredError: expected " + std::to_string(n) +
                       " labels (one per row of " + s.str() + "), found " +
                       std::to_string(labels.size()));
    }
    detail::check_labels("MeanSquaredError", labels, k);
    diff_.resize(s);
    double sum = 0.0;  // summed in order: the same result for any thread count
    for (index_t i = 0; i < n; ++i) {
      for (index_t j = 0; j < k; ++j) {
        const T y = j == labels[static_cast<std::size_t>(i)] ? T(1) : T(0);
        const T d = output.data()[i * k + j] - y;
        diff_.data()[i * k + j] = d;
        sum += static_cast<double>(d) * static_cast<double>(d);
      }
    }
    batch_ = n;
    return n > 0 ? static_cast<T>(sum / static_cast<double>(n * k)) : T(0);
  }

  // dout_nk += scale * 2 (out_nk - y_nk) / (N K)
  void backward(Tensor<T>& doutput, T scale = T(1)) const override {
    if (batch_ < 0) {
      throw ValueError("MeanSquaredError: expected forward() before backward(), found none");
    }
    if (doutput.shape() != diff_.shape()) {
      throw ShapeError("MeanSquaredError: expected doutput of shape " + diff_.shape().str() +
                       " (the output of the last forward), found " + doutput.shape().str());
    }
    if (batch_ == 0) return;
    const T c = scale * T(2) / static_cast<T>(diff_.size());
    for (index_t i = 0; i < diff_.size(); ++i) doutput.data()[i] += c * diff_.data()[i];
  }

 private:
  Shape planned_;
  Tensor<T> diff_;  // out - y of the last forward, (N, K)
  index_t batch_ = -1;
};

}  // namespace minires
