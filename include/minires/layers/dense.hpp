// Dense<T>: fully connected layer (Keras 2.0 Dense, PyTorch nn.Linear with weight = kernelᵀ).
//
//   x: (N, in) -> y: (N, units)        y = x · kernel + bias
//
// kernel (in, units) in Keras' layout, bias (units,). Defaults as Keras 2.0: bias on,
// glorot_uniform kernel (fan_in = in, fan_out = units), zero bias. Image activations must be
// flattened first (Flatten layer); the GEMMs run through kernels::gemm (Eigen, multithreaded by
// Eigen itself since this layer opens no parallel region).
//
//   Dense<float> fc(10);                                    // 10 units
//   Dense<float> logits(10, DenseOptions().no_bias());
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "minires/init/initializers.hpp"
#include "minires/kernels/elementwise.hpp"
#include "minires/kernels/gemm.hpp"
#include "minires/layers/unary_layer.hpp"

namespace minires {

struct DenseOptions {
  bool use_bias = true;
  Initializer kernel_initializer = Initializer::GlorotUniform;
  Initializer bias_initializer = Initializer::Zeros;

  DenseOptions& no_bias() {
    use_bias = false;
    return *this;
  }
  DenseOptions& kernel_init(Initializer init) {
    kernel_initializer = init;
    return *this;
  }
  DenseOptions& bias_init(Initializer init) {
    bias_initializer = init;
    return *this;
  }
};

template <class T = float>
class Dense : public UnaryLayer<T> {
 public:
  // Parameters and their gradients: kernel/dkernel (in, units), bias/dbias (units,) — empty
  // without bias. Sized by the first setup().
  Tensor<T> kernel, dkernel;
  Tensor<T> bias, dbias;

  explicit Dense(index_t units, const DenseOptions& options = {})
      : options_(options), units_(units) {
    if (units < 1) throw ValueError("Dense: expected units >= 1, found " + std::to_string(units));
  }

  const char* type() const override { return "Dense"; }

  // "units=10 use_bias=true"
  std::string config() const override {
    return "units=" + std::to_string(units_) +
           " use_bias=" + (options_.use_bias ? "true" : "false");
  }
  index_t units() const noexcept { return units_; }
  const DenseOptions& options() const noexcept { return options_; }

  Shape output_shape(Span<const Shape> inputs) const override {
    this->expect_inputs(inputs, 1);
    const Shape& s = inputs[0];
    if (s.rank() != 2) {
      throw ShapeError("Dense: expected a rank-2 input (batch, features), found shape " + s.str() +
                       " of rank " + std::to_string(s.rank()) +
                       (s.rank() > 2 ? "; add a Flatten layer before Dense" : ""));
    }
    if (s[1] < 1) throw ShapeError("Dense: expected at least 1 input feature, found " + s.str());
    if (!kernel.empty() && s[1] != kernel.dim(0)) {
      throw ShapeError("Dense: expected an input with " + std::to_string(kernel.dim(0)) +
                       " features (the kernel is " + kernel.shape().str() + "), found " + s.str());
    }
    return Shape{s[0], units_};
  }

  void setup(Span<const Shape> inputs) override {
    this->plan(inputs);
    if (kernel.empty()) {
      const Shape k{inputs[0][1], units_};
      kernel.resize(k);
      dkernel.resize(k);
      if (options_.use_bias) {
        bias.resize(Shape{units_});
        dbias.resize(Shape{units_});
      }
    }
  }

  void init(Rng& rng) override {
    if (kernel.empty()) throw Error("Dense: expected setup() before init(), found no kernel");
    initialize(kernel, options_.kernel_initializer, dense_fans(kernel.dim(0), units_), rng);
    if (options_.use_bias) initialize(bias, options_.bias_initializer, vector_fans(units_), rng);
  }

  // Writes dx instead of adding to it when Model says it is the first to (accumulate_dx()).
  bool can_overwrite_gradients() const override { return true; }

  // y = x · kernel + bias
  void forward(Span<const Tensor<T>* const> x, Tensor<T>& y, Mode /*mode*/) override {
    const Tensor<T>& in = this->forward_input(x, y);
    const index_t n = in.dim(0), features = in.dim(1);
    if (options_.use_bias) {
      for (index_t i = 0; i < n; ++i) std::copy(bias.begin(), bias.end(), y.data() + i * units_);
    }
    kernels::gemm(kernels::Trans::No, kernels::Trans::No, n, units_, features, T(1), in.data(),
                  kernel.data(), options_.use_bias ? T(1) : T(0), y.data());
  }

  // dkernel += xᵀ · dy      dbias += Σ_n dy[n]      dx += dy · kernelᵀ   (skipped when dx is null)
  void backward(Span<const Tensor<T>* const> x, const Tensor<T>& y, const Tensor<T>& dy,
                Span<Tensor<T>* const> dx) override {
    Tensor<T>* dx0 = this->backward_grad(x, y, dy, dx);
    const Tensor<T>& in = *x[0];
    const index_t n = in.dim(0), features = in.dim(1);
    kernels::gemm(kernels::Trans::Yes, kernels::Trans::No, features, units_, n, T(1), in.data(),
                  dy.data(), T(1), dkernel.data());
    if (options_.use_bias) {
      for (index_t i = 0; i < n; ++i)
        kernels::axpy(T(1), dy.data() + i * units_, dbias.data(), units_);
    }
    if (dx0 != nullptr) {
      kernels::gemm(kernels::Trans::No, kernels::Trans::Yes, n, features, units_, T(1), dy.data(),
                    kernel.data(), this->accumulate_dx() ? T(1) : T(0), dx0->data());
    }
  }

  std::vector<ParamRef<T>> params() override {
    std::vector<ParamRef<T>> p{{"kernel", &kernel, &dkernel}};
    if (options_.use_bias) p.push_back({"bias", &bias, &dbias});
    return p;
  }

 private:
  DenseOptions options_;
  index_t units_;
};

}  // namespace minires
