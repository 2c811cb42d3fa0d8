// UnaryLayer<T>: the argument checks shared by every single-input layer (ReLU, Flatten, the
// pooling layers). A derived layer implements output_shape() and calls
//   plan(inputs)                      in setup(): validates and records the planned input shape;
//   forward_input(x, y)               in forward(): returns the input after checking the input
//                                     count, the planned shape (any batch up to the planned one)
//                                     and that y has the output shape for that batch;
//   backward_grad(x, y, dy, dx)       in backward(): the same checks plus dy's shape, and
//                                     returns dx[0] (nullptr when no input gradient is wanted).
// The checks allocate nothing unless they throw.
// It also keeps the input-gradient overwriting that Model asks for (Layer::
// set_gradient_overwrite): a derived layer that can write dx outright returns true from
// can_overwrite_gradients() and, in backward(), writes dx[0] where accumulate_dx() is false.
#pragma once

#include <string>
#include <vector>

#include "minires/layers/checks.hpp"
#include "minires/layers/layer.hpp"

namespace minires {

template <class T>
class UnaryLayer : public Layer<T> {
 public:
  int num_inputs() const override { return 1; }

  // The input shape setup() planned for (rank 0 before setup).
  const Shape& planned_input() const noexcept { return planned_; }

  void set_gradient_overwrite(const std::vector<bool>& first_writer) override {
    if (!this->can_overwrite_gradients()) {
      Layer<T>::set_gradient_overwrite(first_writer);  // throws for any true, naming the layer
      return;
    }
    overwrite_dx_ = !first_writer.empty() && first_writer[0];
  }

 protected:
  // False after set_gradient_overwrite({true}): backward writes every element of dx[0] and
  // reads none; true (dx[0] += ...) otherwise.
  bool accumulate_dx() const noexcept { return !overwrite_dx_; }

  void plan(Span<const Shape> inputs) {
    this->expect_inputs(inputs, 1);
    (void)this->output_shape(inputs);  // throws for shapes the layer cannot take
    planned_ = inputs[0];
  }

  const Tensor<T>& forward_input(Span<const Tensor<T>* const> x, const Tensor<T>& y) const {
    const Tensor<T>& in = checked_input(x);
    expect_shape("output", expected_output(in), y.shape());
    return in;
  }

  Tensor<T>* backward_grad(Span<const Tensor<T>* const> x, const Tensor<T>& y, const Tensor<T>& dy,
                           Span<Tensor<T>* const> dx) const {
    const Tensor<T>& in = checked_input(x);
    const Shape out = expected_output(in);
    expect_shape("output", out, y.shape());
    expect_shape("output gradient", out, dy.shape());
    if (dx.size() != 1) {
      throw ShapeError(std::string(this->type()) + ": expected 1 input gradient slot, found " +
                       std::to_string(dx.size()));
    }
    if (dx[0] != nullptr) expect_shape("input gradient", in.shape(), dx[0]->shape());
    return dx[0];
  }

  void expect_shape(const char* what, const Shape& expected, const Shape& found) const {
    detail::expect_shape(this->type(), what, expected, found);
  }

 private:
  const Tensor<T>& checked_input(Span<const Tensor<T>* const> x) const {
    if (x.size() != 1 || x[0] == nullptr) {
      throw ShapeError(std::string(this->type()) + ": expected 1 input tensor, found " +
                       (x.size() == 1 ? std::string("a null pointer") : std::to_string(x.size())));
    }
    if (planned_.rank() == 0) {
      throw ShapeError(std::string(this->type()) +
                       ": expected setup() before forward/backward, found no planned input shape");
    }
    this->expect_planned(planned_, x[0]->shape());
    return *x[0];
  }

  Shape expected_output(const Tensor<T>& in) const {
    const Shape s = in.shape();
    return this->output_shape(Span<const Shape>(&s, 1));
  }

  Shape planned_;
  bool overwrite_dx_ = false;  // set_gradient_overwrite
};

}  // namespace minires
