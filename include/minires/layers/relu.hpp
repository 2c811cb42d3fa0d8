// ReLU<T>: y = max(x, 0), element-wise, on a tensor of any rank >= 1 (dimension 0 is the batch).
// Keras 2.0 Activation('relu') / PyTorch nn.ReLU.
#pragma once

#include "minires/kernels/elementwise.hpp"
#include "minires/layers/unary_layer.hpp"

namespace minires {

template <class T = float>
class ReLU final : public UnaryLayer<T> {
 public:
  const char* type() const override { return "ReLU"; }
  bool is_relu() const override { return true; }

  Shape output_shape(Span<const Shape> inputs) const override {
    this->expect_inputs(inputs, 1);
    if (inputs[0].rank() < 1) {
      throw ShapeError(std::string(type()) +
                       ": expected an input of rank >= 1 (batch first), found " + inputs[0].str());
    }
    return inputs[0];
  }

  void setup(Span<const Shape> inputs) override { this->plan(inputs); }

  // Writes dx instead of adding to it when Model says it is the first to (accumulate_dx()).
  bool can_overwrite_gradients() const override { return true; }

  // y = max(x, 0)
  void forward(Span<const Tensor<T>* const> x, Tensor<T>& y, Mode /*mode*/) override {
    const Tensor<T>& in = this->forward_input(x, y);
    kernels::relu_forward(in.data(), y.data(), in.size());
  }

  // dx += dy * [x > 0]   (0 at x == 0, like TF's ReluGrad and PyTorch's threshold_backward)
  void backward(Span<const Tensor<T>* const> x, const Tensor<T>& y, const Tensor<T>& dy,
                Span<Tensor<T>* const> dx) override {
    Tensor<T>* dx0 = this->backward_grad(x, y, dy, dx);
    if (dx0 == nullptr) return;
    kernels::relu_backward(x[0]->data(), dy.data(), dx0->data(), dy.size(), this->accumulate_dx());
  }
};

}  // namespace minires
