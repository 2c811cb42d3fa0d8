// Flatten<T>: (N, d1, ..., dk) -> (N, d1*...*dk), keeping minires' row-major NCHW order:
//   y[n, (c*H + h)*W + w] = x[n, c, h, w].
// Keras 2.0 Flatten on channels_last data flattens NHWC, y[n, (h*W + w)*C + c], so the two
// orders differ. That matters only when importing the weights of the Dense layer after a Keras
// Flatten: permute its input rows from (h, w, c) to (c, h, w) order (PyTorch equivalent of the
// Keras order: x.permute(0, 2, 3, 1).reshape(N, -1)). Within minires the order is internal.
#pragma once

#include <string>

#include "minires/kernels/elementwise.hpp"
#include "minires/layers/unary_layer.hpp"

namespace minires {

template <class T = float>
class Flatten final : public UnaryLayer<T> {
 public:
  const char* type() const override { return "Flatten"; }

  Shape output_shape(Span<const Shape> inputs) const override {
    this->expect_inputs(inputs, 1);
    const Shape& s = inputs[0];
    if (s.rank() < 2) {
      throw ShapeError(std::string(type()) +
                       ": expected an input of rank 2 to 4 (batch first), found shape " + s.str() +
                       " of rank " + std::to_string(s.rank()));
    }
    index_t features = 1;
    for (int i = 1; i < s.rank(); ++i) features *= s[i];
    return Shape{s[0], features};
  }

  void setup(Span<const Shape> inputs) override { this->plan(inputs); }

  // Writes dx instead of adding to it when Model says it is the first to (accumulate_dx()).
  bool can_overwrite_gradients() const override { return true; }

  // y = x, reinterpreted as (N, C*H*W)
  void forward(Span<const Tensor<T>* const> x, Tensor<T>& y, Mode /*mode*/) override {
    const Tensor<T>& in = this->forward_input(x, y);
    kernels::copy(in.data(), y.data(), in.size());
  }

  // dx += dy, reinterpreted as (N, C, H, W)
  void backward(Span<const Tensor<T>* const> x, const Tensor<T>& y, const Tensor<T>& dy,
                Span<Tensor<T>* const> dx) override {
    Tensor<T>* dx0 = this->backward_grad(x, y, dy, dx);
    if (dx0 == nullptr) return;
    if (this->accumulate_dx()) {
      kernels::add(dx0->data(), dy.data(), dx0->data(), dy.size());
    } else {
      kernels::copy(dy.data(), dx0->data(), dy.size());
    }
  }
};

}  // namespace minires
