// Add<T>: the element-wise sum of two or more tensors of one shape (a residual connection).
// Keras 2.0 keras.layers.Add / PyTorch `a + b`.
#pragma once

#include <string>
#include <vector>

#include "minires/kernels/elementwise.hpp"
#include "minires/layers/checks.hpp"
#include "minires/layers/layer.hpp"

namespace minires {

template <class T = float>
class Add final : public Layer<T> {
 public:
  const char* type() const override { return "Add"; }
  int num_inputs() const override { return -1; }

  // All inputs must have the shape of input 0; that is the output shape.
  Shape output_shape(Span<const Shape> inputs) const override {
    expect_arity(inputs.size());
    for (std::size_t i = 1; i < inputs.size(); ++i) expect_like_first(i, inputs[0], inputs[i]);
    return inputs[0];
  }

  void setup(Span<const Shape> inputs) override {
    planned_ = output_shape(inputs);
    planned_inputs_ = inputs.size();
  }

  bool can_fuse_relu() const override { return true; }
  void set_fused_relu(bool on) override { fused_relu_ = on; }
  bool fused_relu() const override { return fused_relu_; }

  bool can_overwrite_gradients() const override { return true; }
  void set_gradient_overwrite(const std::vector<bool>& first_writer) override {
    overwrite_ = first_writer;
  }

  // y = x_0 + x_1 + ... + x_{k-1}   (summed left to right; then max(y, 0) with a fused ReLU)
  void forward(Span<const Tensor<T>* const> x, Tensor<T>& y, Mode /*mode*/) override {
    check_inputs(x);
    expect_shape("output", x[0]->shape(), y.shape());
    const index_t n = y.size();
    const std::size_t k = x.size();
    for (std::size_t i = 1; i < k; ++i) {
      const T* a = i == 1 ? x[0]->data() : y.data();
      if (fused_relu_ && i + 1 == k) {
        kernels::add_relu(a, x[i]->data(), y.data(), n);
      } else {
        kernels::add(a, x[i]->data(), y.data(), n);
      }
    }
  }

  // dx_i += dy for every input i whose gradient is wanted (dx[i] != nullptr);
  // with a fused ReLU (y its output, dy its gradient): dx_i += dy·[y > 0].
  // Inputs set by set_gradient_overwrite: dx_i = dy (or dy·[y > 0]).
  void backward(Span<const Tensor<T>* const> x, const Tensor<T>& y, const Tensor<T>& dy,
                Span<Tensor<T>* const> dx) override {
    check_inputs(x);
    expect_shape("output", x[0]->shape(), y.shape());
    expect_shape("output gradient", x[0]->shape(), dy.shape());
    if (dx.size() != x.size()) {
      throw ShapeError(std::string(type()) + ": expected " + std::to_string(x.size()) +
                       " input gradient slots (one per input), found " + std::to_string(dx.size()));
    }
    for (std::size_t i = 0; i < dx.size(); ++i) {
      if (dx[i] == nullptr) continue;
      if (dx[i]->shape() != x[0]->shape()) {
        expect_shape(("input gradient " + std::to_string(i)).c_str(), x[0]->shape(),
                     dx[i]->shape());
      }
      const bool accumulate = i >= overwrite_.size() || !overwrite_[i];
      if (fused_relu_) {
        kernels::relu_backward(y.data(), dy.data(), dx[i]->data(), dy.size(), accumulate);
      } else if (accumulate) {
        kernels::add(dx[i]->data(), dy.data(), dx[i]->data(), dy.size());
      } else {
        kernels::copy(dy.data(), dx[i]->data(), dy.size());
      }
    }
  }

 private:
  bool fused_relu_ = false;
  std::vector<bool> overwrite_;  // per input: backward writes dx[i] (set_gradient_overwrite)

  void expect_arity(std::size_t n) const {
    if (n < 2) {
      throw ShapeError(std::string(type()) + ": expected two or more inputs, found " +
                       std::to_string(n));
    }
  }
  void expect_like_first(std::size_t i, const Shape& first, const Shape& s) const {
    if (s != first) {
      throw ShapeError(std::string(type()) + ": input " + std::to_string(i) + " has shape " +
                       s.str() + ", expected " + first.str() + " (the shape of input 0)");
    }
  }
  void expect_shape(const char* what, const Shape& expected, const Shape& found) const {
    detail::expect_shape(type(), what, expected, found);
  }
  // Same count as planned, no null input, input 0 within the plan, the others like input 0.
  void check_inputs(Span<const Tensor<T>* const> x) const {
    if (planned_inputs_ == 0) {
      throw ShapeError(std::string(type()) +
                       ": expected setup() before forward/backward, found no planned input shapes");
    }
    if (x.size() != planned_inputs_) {
      throw ShapeError(std::string(type()) + ": set up for " + std::to_string(planned_inputs_) +
                       " inputs, found " + std::to_string(x.size()));
    }
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (x[i] == nullptr) {
        throw ShapeError(std::string(type()) + ": expected a tensor for input " +
                         std::to_string(i) + ", found a null pointer");
      }
    }
    this->expect_planned(planned_, x[0]->shape());
    for (std::size_t i = 1; i < x.size(); ++i) expect_like_first(i, x[0]->shape(), x[i]->shape());
  }

  Shape planned_;
  std::size_t planned_inputs_ = 0;
};

}  // namespace minires
