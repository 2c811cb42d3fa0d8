// The loss contract: what fit() needs of a loss. A loss ends the graph: it compares the model's
// output (N, ...) with one class label per sample and gives the batch-mean loss and its gradient.
//
//   setup(output)          sizes every buffer for outputs of this shape (dimension 0: the
//                          largest batch); nothing is allocated after it. Optional: the first
//                          forward() plans for its own shape when setup() was not called.
//   forward(out, labels)   the batch-mean loss; caches what backward needs.
//   backward(dout, scale)  ACCUMULATES dout += scale * dL/dout for the last forward.
//   begin_batch(inputs)    optional: fit() passes each training batch's inputs before the
//                          model's forward; a loss whose targets depend on them (distillation,
//                          train/distillation.hpp: its teacher's predictions) computes them here.
//
// Losses: SoftmaxCrossEntropy (loss/softmax_cross_entropy.hpp, the default for classifiers) and
// MeanSquaredError against one-hot targets (loss/mean_squared_error.hpp).
#pragma once

#include <cstdint>
#include <string>

#include "minires/core/error.hpp"
#include "minires/core/shape.hpp"
#include "minires/core/span.hpp"
#include "minires/core/tensor.hpp"

namespace minires {

template <class T>
class Loss {
 public:
  virtual ~Loss() = default;
  // Keras' name of the loss ("categorical_crossentropy", "mean_squared_error").
  virtual const char* name() const = 0;
  virtual void setup(const Shape& output) = 0;
  virtual T forward(const Tensor<T>& output, Span<const std::int32_t> labels) = 0;
  virtual void backward(Tensor<T>& doutput, T scale = T(1)) const = 0;
  virtual void begin_batch(const Tensor<T>& /*inputs*/) {}
};

namespace detail {

// Throws ValueError, naming `loss`, the position and the value, unless every label is in [0, k).
inline void check_labels(const char* loss, Span<const std::int32_t> labels, index_t k) {
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= k) {
      throw ValueError(std::string(loss) + ": label " + std::to_string(labels[i]) +
                       " at position " + std::to_string(i) +
                       " is out of range: expected a class in [0, " + std::to_string(k) + ") for " +
                       std::to_string(k) + " classes");
    }
  }
}

}  // namespace detail
}  // namespace minires
