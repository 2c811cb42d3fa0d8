// AvgPool2D<T>: the mean over each pool window of every channel.
// Keras 2.0 AveragePooling2D(pool_size, strides=None, padding) / PyTorch
// nn.AvgPool2d(k, s, count_include_pad=False). With 'same' padding the padded cells are left
// out of the divisor, as in TF; with 'valid' the divisor is always ph*pw.
#pragma once

#include "minires/kernels/pool.hpp"
#include "minires/layers/pool2d.hpp"

namespace minires {

template <class T = float>
class AvgPool2D final : public Pool2D<T> {
 public:
  explicit AvgPool2D(const Pool2DOptions& options = {}) : Pool2D<T>("AveragePooling2D", options) {}
  // Square pool; stride 0 means the pool size.
  explicit AvgPool2D(index_t pool, index_t stride = 0,
                     kernels::Padding padding = kernels::Padding::Valid)
      : AvgPool2D(Pool2DOptions{pool, pool, stride, stride, padding}) {}

  void setup(Span<const Shape> inputs) override { this->plan_pool(inputs); }

  // y[n,c,oh,ow] = (1/|W|) sum_{(h,w) in W} x[n,c,h,w],  W = the window clipped to the input
  void forward(Span<const Tensor<T>* const> x, Tensor<T>& y, Mode /*mode*/) override {
    const Tensor<T>& in = this->forward_input(x, y);
    kernels::avg_pool2d_forward(in.data(), this->geometry(), in.dim(0), y.data());
  }

  // dx[n,c,h,w] += sum over the windows W containing (h,w) of dy[n,c,oh,ow] / |W|
  void backward(Span<const Tensor<T>* const> x, const Tensor<T>& y, const Tensor<T>& dy,
                Span<Tensor<T>* const> dx) override {
    Tensor<T>* dx0 = this->backward_grad(x, y, dy, dx);
    if (dx0 == nullptr) return;
    kernels::avg_pool2d_backward(dy.data(), this->geometry(), dy.dim(0), dx0->data(),
                                 this->accumulate_dx());
  }
};

}  // namespace minires
