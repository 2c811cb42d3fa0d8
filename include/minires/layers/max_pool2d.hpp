// MaxPool2D<T>: the maximum over each pool window of every channel.
// Keras 2.0 MaxPooling2D(pool_size, strides=None, padding) / PyTorch nn.MaxPool2d(k, s) for
// 'valid' (for 'same', pad with -inf using TF's asymmetric rule). The gradient goes to the first
// maximum of the window in row-major order; NaN propagates (see kernels/pool.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "minires/kernels/pool.hpp"
#include "minires/layers/pool2d.hpp"

namespace minires {

template <class T = float>
class MaxPool2D final : public Pool2D<T> {
 public:
  explicit MaxPool2D(const Pool2DOptions& options = {}) : Pool2D<T>("MaxPooling2D", options) {}
  // Square pool; stride 0 means the pool size.
  explicit MaxPool2D(index_t pool, index_t stride = 0,
                     kernels::Padding padding = kernels::Padding::Valid)
      : MaxPool2D(Pool2DOptions{pool, pool, stride, stride, padding}) {}

  // Sizes the argmax cache for the largest batch.
  void setup(Span<const Shape> inputs) override {
    this->plan_pool(inputs);
    const Shape out = this->output_shape(inputs);
    argmax_.assign(static_cast<std::size_t>(out.size()), 0);
    cached_batch_ = -1;
  }

  // y[n,c,oh,ow] = max over the window of x[n,c]; argmax_ remembers which cell it was.
  void forward(Span<const Tensor<T>* const> x, Tensor<T>& y, Mode /*mode*/) override {
    const Tensor<T>& in = this->forward_input(x, y);
    kernels::max_pool2d_forward(in.data(), this->geometry(), in.dim(0), y.data(), argmax_.data());
    cached_batch_ = in.dim(0);
  }

  // dx[n,c,argmax[n,c,o]] += dy[n,c,o]   (overlapping windows add up at a shared maximum)
  void backward(Span<const Tensor<T>* const> x, const Tensor<T>& y, const Tensor<T>& dy,
                Span<Tensor<T>* const> dx) override {
    Tensor<T>* dx0 = this->backward_grad(x, y, dy, dx);
    if (x[0]->dim(0) != cached_batch_) {
      throw ShapeError(std::string(this->type()) + ": expected the batch of " +
                       std::to_string(cached_batch_) + " cached by the last forward, found " +
                       std::to_string(x[0]->dim(0)) + " (backward must follow forward)");
    }
    if (dx0 == nullptr) return;
    kernels::max_pool2d_backward(dy.data(), argmax_.data(), this->geometry(), dy.dim(0),
                                 dx0->data(), this->accumulate_dx());
  }

 private:
  std::vector<std::int32_t> argmax_;  // (N, C, OH, OW): plane index ih*W + iw of each maximum
  index_t cached_batch_ = -1;         // batch of the last forward, -1 before any
};

}  // namespace minires
