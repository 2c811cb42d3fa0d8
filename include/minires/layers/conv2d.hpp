// Conv2D<T>: 2-D convolution of NCHW images (Keras 2.0 Conv2D, PyTorch nn.Conv2d).
//
//   x: (N, C, H, W) -> y: (N, filters, OH, OW)
//   y[n,f,oh,ow] = bias[f] +
//                  sum_{c,i,j} kernel[f,c,i,j] * x[n, c, oh*sh - pad_top + i, ow*sw - pad_left + j]
//
// Cross-correlation (no kernel flip), any kernel size and strides, 'valid' or 'same' padding
// (TensorFlow's rule: the odd extra row/column of padding goes at the bottom/right), optional
// bias. Defaults as Keras 2.0: stride 1, 'valid', bias on, glorot_uniform kernel, zero bias.
// The kernel is stored (filters, C, kh, kw) — Keras' (kh, kw, C, filters) permuted (3, 2, 0, 1),
// PyTorch's weight layout.
//
// Computed by kernels/conv2d.hpp on groups of images in fixed batch slots: shifted convolutions
// (no im2col) for 3x3-like kernels at stride 1 or 2 with 'same' output sizes, im2col + GEMM for
// the rest, and one product for a 1x1 stride-1 unpadded convolution.
//
//   m.add(Conv2D(32, 3).same(), x);                           // 32 filters, 3x3, 'same'
//   m.add(Conv2D(64, 3).strides(2).same().no_bias(), x);    // or with a Conv2DOptions
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "minires/core/parallel.hpp"
#include "minires/core/precision.hpp"
#include "minires/init/initializers.hpp"
#include "minires/kernels/conv2d.hpp"
#include "minires/kernels/elementwise.hpp"
#include "minires/layers/unary_layer.hpp"

namespace minires {

struct Conv2DOptions {
  index_t stride_h = 1, stride_w = 1;
  kernels::Padding padding = kernels::Padding::Valid;
  bool use_bias = true;
  Initializer kernel_initializer = Initializer::GlorotUniform;
  Initializer bias_initializer = Initializer::Zeros;

  Conv2DOptions& strides(index_t s) { return strides(s, s); }
  Conv2DOptions& strides(index_t sh, index_t sw) {
    stride_h = sh;
    stride_w = sw;
    return *this;
  }
  Conv2DOptions& same() {
    padding = kernels::Padding::Same;
    return *this;
  }
  Conv2DOptions& valid() {
    padding = kernels::Padding::Valid;
    return *this;
  }
  Conv2DOptions& no_bias() {
    use_bias = false;
    return *this;
  }
  Conv2DOptions& kernel_init(Initializer init) {
    kernel_initializer = init;
    return *this;
  }
  Conv2DOptions& bias_init(Initializer init) {
    bias_initializer = init;
    return *this;
  }
};

template <class T = float>
class Conv2D : public UnaryLayer<T> {
 public:
  // Parameters and their gradients. kernel/dkernel: (filters, C, kh, kw); bias/dbias: (filters,),
  // empty when use_bias is off. Sized by the first setup().
  Tensor<T> kernel, dkernel;
  Tensor<T> bias, dbias;

  Conv2D(index_t filters, index_t kernel_size, const Conv2DOptions& options = {})
      : Conv2D(filters, kernel_size, kernel_size, options) {}

  Conv2D(index_t filters, index_t kernel_h, index_t kernel_w, const Conv2DOptions& options = {})
      : options_(options), filters_(filters), kernel_h_(kernel_h), kernel_w_(kernel_w) {
    if (filters < 1) {
      throw ValueError("Conv2D: expected filters >= 1, found " + std::to_string(filters));
    }
    if (kernel_h < 1 || kernel_w < 1) {
      throw ValueError("Conv2D: expected a kernel size >= 1, found " + std::to_string(kernel_h) +
                       "x" + std::to_string(kernel_w));
    }
    if (options.stride_h < 1 || options.stride_w < 1) {
      throw ValueError("Conv2D: expected strides >= 1, found " + std::to_string(options.stride_h) +
                       "x" + std::to_string(options.stride_w));
    }
  }

  const char* type() const override { return "Conv2D"; }
  // Inference with a per-filter affine map folded in (Model::set_folding, a BatchNorm after
  // this layer): kernel'[f] = kernel[f]·scale[f], bias'[f] = bias[f]·scale[f] + shift[f],
  // recomputed at every call (the parameters may have changed), then the ReLU in place.
  bool can_fold_affine() const override { return true; }
  void set_affine_folding(bool on) override {
    if (on) {
      folded_kernel_.resize(kernel.shape());
      folded_bias_.resize(Shape{filters_});
    } else {
      folded_kernel_ = Tensor<T>();
      folded_bias_ = Tensor<T>();
    }
  }
  void forward_affine(Span<const Tensor<T>* const> x, Tensor<T>& y, const T* scale, const T* shift,
                      bool relu) override {
    if (folded_bias_.size() != filters_) {
      throw Error("Conv2D: expected set_affine_folding(true) before forward_affine()");
    }
    const Tensor<T>& in = this->forward_input(x, y);
    const index_t k = kernel.size() / filters_;
    for (index_t f = 0; f < filters_; ++f) {
      for (index_t i = 0; i < k; ++i) folded_kernel_[f * k + i] = kernel[f * k + i] * scale[f];
      folded_bias_[f] = (options_.use_bias ? bias[f] * scale[f] : T(0)) + shift[f];
    }
    kernels::conv2d_forward(in.data(), in.dim(0), geometry_, folded_kernel_.data(),
                            folded_bias_.data(), filters_, y.data(), workspace(), slots_,
                            precision_);
    if (relu) kernels::relu_forward(y.data(), y.data(), y.size());
  }

  index_t workspace_size() const override { return work_size_; }
  void share_workspace(bool on) override { shared_work_ = on; }
  void set_workspace(T* work) override {
    if (shared_work_) work_ptr_ = work;
  }

  const char* algorithm() const override {
    return geometry_.channels > 0
               ? kernels::conv2d_algorithm_name(
                     kernels::conv2d_plan<T>(geometry_, filters_, precision_).algorithm)
               : "";
  }

  // Fluent settings, as Conv2DOptions has them: m.add(Conv2D(64, 3).strides(2).same(), x).
  // They change the configuration and may only be used before the layer is set up.
  Conv2D& same() & { return set_padding(kernels::Padding::Same); }
  Conv2D&& same() && { return std::move(same()); }
  Conv2D& valid() & { return set_padding(kernels::Padding::Valid); }
  Conv2D&& valid() && { return std::move(valid()); }
  Conv2D& strides(index_t s) & { return strides(s, s); }
  Conv2D&& strides(index_t s) && { return std::move(strides(s, s)); }
  Conv2D& strides(index_t sh, index_t sw) & {
    if (sh < 1 || sw < 1) {
      throw ValueError("Conv2D: expected strides >= 1, found " + std::to_string(sh) + "x" +
                       std::to_string(sw));
    }
    options_.strides(sh, sw);
    return *this;
  }
  Conv2D&& strides(index_t sh, index_t sw) && { return std::move(strides(sh, sw)); }
  Conv2D& no_bias() & {
    options_.no_bias();
    return *this;
  }
  Conv2D&& no_bias() && { return std::move(no_bias()); }

  // "filters=4 kernel=3x3 strides=1x1 padding=valid use_bias=true"
  std::string config() const override {
    return "filters=" + std::to_string(filters_) + " kernel=" + std::to_string(kernel_h_) + "x" +
           std::to_string(kernel_w_) + " strides=" + std::to_string(options_.stride_h) + "x" +
           std::to_string(options_.stride_w) +
           " padding=" + (options_.padding == kernels::Padding::Same ? "same" : "valid") +
           " use_bias=" + (options_.use_bias ? "true" : "false");
  }

  index_t filters() const noexcept { return filters_; }
  index_t kernel_h() const noexcept { return kernel_h_; }
  index_t kernel_w() const noexcept { return kernel_w_; }
  const Conv2DOptions& options() const noexcept { return options_; }

 private:
  Conv2D& set_padding(kernels::Padding p) {
    options_.padding = p;
    return *this;
  }

 public:
  // Geometry of one image of the planned input (valid after setup).
  const kernels::ConvGeometry& geometry() const noexcept { return geometry_; }

  Shape output_shape(Span<const Shape> inputs) const override {
    this->expect_inputs(inputs, 1);
    const auto g = geometry_for(inputs[0]);
    return Shape{inputs[0][0], filters_, g.out_h, g.out_w};
  }

  void setup(Span<const Shape> inputs) override {
    this->plan(inputs);
    geometry_ = geometry_for(inputs[0]);
    if (kernel.empty()) {
      const Shape k{filters_, geometry_.channels, kernel_h_, kernel_w_};
      kernel.resize(k);
      dkernel.resize(k);
      if (options_.use_bias) {
        bias.resize(Shape{filters_});
        dbias.resize(Shape{filters_});
      }
    }
    // One slot per thread (no more than images): slot scratch is planned here, once.
    slots_ = static_cast<int>(std::max<index_t>(1, std::min<index_t>(num_threads(), inputs[0][0])));
    precision_ = matmul_precision();
    work_size_ = kernels::conv2d_workspace_size<T>(geometry_, filters_, slots_, precision_);
    if (shared_work_) {
      work_ = Tensor<T>();
      work_ptr_ = nullptr;  // set_workspace() follows
    } else {
      work_.resize(Shape{work_size_});
      work_ptr_ = work_.data();
    }
  }

  void init(Rng& rng) override {
    if (kernel.empty()) throw Error("Conv2D: expected setup() before init(), found no kernel");
    initialize(kernel, options_.kernel_initializer,
               conv2d_fans(filters_, kernel.dim(1), kernel_h_, kernel_w_), rng);
    if (options_.use_bias) initialize(bias, options_.bias_initializer, vector_fans(filters_), rng);
  }

  // y = kernel ⋆ x + bias
  void forward(Span<const Tensor<T>* const> x, Tensor<T>& y, Mode /*mode*/) override {
    const Tensor<T>& in = this->forward_input(x, y);
    kernels::conv2d_forward(in.data(), in.dim(0), geometry_, kernel.data(), bias_data(), filters_,
                            y.data(), workspace(), slots_, precision_);
  }

  // With col[n] = im2col(x[n]) (C*kh*kw, OH*OW) and the kernel viewed as W (filters, C*kh*kw):
  //   dkernel += Σ_n dy[n] · col[n]ᵀ      dbias += Σ_{n,oh,ow} dy[n,:,oh,ow]
  //   dx[n]   += col2im(Wᵀ · dy[n])       (skipped when dx is null; = after
  //                                         set_gradient_overwrite({true}))
  void backward(Span<const Tensor<T>* const> x, const Tensor<T>& y, const Tensor<T>& dy,
                Span<Tensor<T>* const> dx) override {
    Tensor<T>* dx0 = this->backward_grad(x, y, dy, dx);
    const Tensor<T>& in = *x[0];
    kernels::conv2d_backward(in.data(), dy.data(), in.dim(0), geometry_, kernel.data(), filters_,
                             dx0 != nullptr ? dx0->data() : nullptr, dkernel.data(),
                             options_.use_bias ? dbias.data() : nullptr, workspace(), slots_,
                             precision_, this->accumulate_dx());
  }

  // Writes dx where the algorithm can (conv2d_writes_dx: the shifted paths), else zeroes each
  // slot's images of dx before adding to them (in the thread that then uses them).
  bool can_overwrite_gradients() const override { return true; }

  std::vector<ParamRef<T>> params() override {
    std::vector<ParamRef<T>> p{{"kernel", &kernel, &dkernel}};
    if (options_.use_bias) p.push_back({"bias", &bias, &dbias});
    return p;
  }

 private:
  const T* bias_data() const noexcept { return options_.use_bias ? bias.data() : nullptr; }

  // The geometry of one image of input shape s, or a ShapeError naming what does not fit.
  kernels::ConvGeometry geometry_for(const Shape& s) const {
    this->expect_rank(s, 4);
    if (s[1] < 1 || s[2] < 1 || s[3] < 1) {
      throw ShapeError("Conv2D: expected an input (N, C, H, W) with C, H, W >= 1, found " +
                       s.str());
    }
    if (!kernel.empty() && s[1] != kernel.dim(1)) {
      throw ShapeError("Conv2D: expected an input with " + std::to_string(kernel.dim(1)) +
                       " channels (the kernel is " + kernel.shape().str() + "), found " + s.str());
    }
    if (options_.padding == kernels::Padding::Valid && (kernel_h_ > s[2] || kernel_w_ > s[3])) {
      throw ShapeError("Conv2D: kernel " + std::to_string(kernel_h_) + "x" +
                       std::to_string(kernel_w_) + " is larger than the input " +
                       std::to_string(s[2]) + "x" + std::to_string(s[3]) + " of " + s.str() +
                       " with 'valid' padding");
    }
    // 'same' pads to (out - 1) * stride + k >= k rows and columns, so the kernel always fits.
    return kernels::ConvGeometry::keras(s[1], s[2], s[3], kernel_h_, kernel_w_, options_.stride_h,
                                        options_.stride_w, options_.padding);
  }

  Conv2DOptions options_;
  index_t filters_, kernel_h_, kernel_w_;
  kernels::ConvGeometry geometry_;
  int slots_ = 1;
  MatmulPrecision precision_ = MatmulPrecision::Highest;  // matmul_precision() at setup
  // Packed weights, per-slot columns and partial gradients (kernels::Conv2DPlan): work_, or a
  // buffer shared by a Model's layers (share_workspace).
  T* workspace() const {
    if (work_ptr_ == nullptr) {
      throw Error(
          "Conv2D: expected set_workspace() after setup() with share_workspace(true), "
          "found no workspace");
    }
    return work_ptr_;
  }
  Tensor<T> work_;
  Tensor<T> folded_kernel_, folded_bias_;  // forward_affine's kernel and bias
  T* work_ptr_ = nullptr;
  index_t work_size_ = 0;
  bool shared_work_ = false;
};

}  // namespace minires
