// GlobalAvgPool2D<T>: the mean of every channel over its H x W plane, (N, C, H, W) -> (N, C).
// Keras 2.0 GlobalAveragePooling2D / PyTorch x.mean(dim=(2, 3)). It is average pooling with one
// H x W window, so it runs the same kernels.
#pragma once

#include <string>

#include "minires/kernels/pool.hpp"
#include "minires/layers/unary_layer.hpp"

namespace minires {

template <class T = float>
class GlobalAvgPool2D final : public UnaryLayer<T> {
 public:
  const char* type() const override { return "GlobalAveragePooling2D"; }

  Shape output_shape(Span<const Shape> inputs) const override {
    this->expect_inputs(inputs, 1);
    const Shape& s = inputs[0];
    this->expect_rank(s, 4, "(N, C, H, W) input");
    if (s[1] < 1 || s[2] < 1 || s[3] < 1) {
      throw ShapeError(std::string(type()) + ": expected non-empty C, H, W, found input " +
                       s.str());
    }
    return Shape{s[0], s[1]};
  }

  void setup(Span<const Shape> inputs) override {
    this->plan(inputs);
    const Shape& s = inputs[0];
    geometry_ =
        kernels::ConvGeometry::keras(s[1], s[2], s[3], s[2], s[3], 1, 1, kernels::Padding::Valid);
  }

  // Writes dx instead of adding to it when Model says it is the first to (accumulate_dx()).
  bool can_overwrite_gradients() const override { return true; }

  // y[n,c] = (1/(H*W)) sum_{h,w} x[n,c,h,w]
  void forward(Span<const Tensor<T>* const> x, Tensor<T>& y, Mode /*mode*/) override {
    const Tensor<T>& in = this->forward_input(x, y);
    kernels::avg_pool2d_forward(in.data(), geometry_, in.dim(0), y.data());
  }

  // dx[n,c,h,w] += dy[n,c] / (H*W)
  void backward(Span<const Tensor<T>* const> x, const Tensor<T>& y, const Tensor<T>& dy,
                Span<Tensor<T>* const> dx) override {
    Tensor<T>* dx0 = this->backward_grad(x, y, dy, dx);
    if (dx0 == nullptr) return;
    kernels::avg_pool2d_backward(dy.data(), geometry_, dy.dim(0), dx0->data(),
                                 this->accumulate_dx());
  }

 private:
  kernels::ConvGeometry geometry_;  // one H x W window per plane, output 1 x 1
};

}  // namespace minires
