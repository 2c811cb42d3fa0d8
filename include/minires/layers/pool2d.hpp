// Pool2D<T>: what MaxPool2D and AvgPool2D share: the Keras 2.0 options, their validation, the
// output shape and the per-image geometry (kernels::ConvGeometry::keras, TF's 'same' rule).
#pragma once

#include <string>

#include "minires/kernels/im2col.hpp"
#include "minires/layers/unary_layer.hpp"

namespace minires {

// Keras 2.0 MaxPooling2D / AveragePooling2D arguments: pool_size=(2, 2), strides=None (the
// pool size), padding='valid'. Set fluently, as Conv2DOptions:
//   MaxPool2D(Pool2DOptions().pool(3).strides(2).same())
struct Pool2DOptions {
  index_t pool_h = 2, pool_w = 2;
  index_t stride_h = 0, stride_w = 0;  // 0: the pool size (Keras' strides=None)
  kernels::Padding padding = kernels::Padding::Valid;

  Pool2DOptions& pool(index_t p) { return pool(p, p); }
  Pool2DOptions& pool(index_t ph, index_t pw) {
    pool_h = ph;
    pool_w = pw;
    return *this;
  }
  Pool2DOptions& strides(index_t s) { return strides(s, s); }
  Pool2DOptions& strides(index_t sh, index_t sw) {
    stride_h = sh;
    stride_w = sw;
    return *this;
  }
  Pool2DOptions& same() {
    padding = kernels::Padding::Same;
    return *this;
  }
  Pool2DOptions& valid() {
    padding = kernels::Padding::Valid;
    return *this;
  }
};

template <class T>
class Pool2D : public UnaryLayer<T> {
 public:
  // Keras' class name: "MaxPooling2D" or "AveragePooling2D".
  const char* type() const final { return type_name_; }

  // Writes dx instead of adding to it when Model says it is the first to (accumulate_dx()).
  bool can_overwrite_gradients() const override { return true; }

  // The options as given, with zero strides replaced by the pool size.
  const Pool2DOptions& options() const noexcept { return options_; }

  // "pool=2x2 strides=2x2 padding=valid"
  std::string config() const override {
    return "pool=" + std::to_string(options_.pool_h) + "x" + std::to_string(options_.pool_w) +
           " strides=" + std::to_string(options_.stride_h) + "x" +
           std::to_string(options_.stride_w) +
           " padding=" + (options_.padding == kernels::Padding::Same ? "same" : "valid");
  }

  // (N, C, H, W) -> (N, C, OH, OW); valid: OH = floor((H - ph)/sh) + 1, same: OH = ceil(H/sh).
  Shape output_shape(Span<const Shape> inputs) const override {
    const kernels::ConvGeometry g = geometry_for(inputs);
    return Shape{inputs[0][0], g.channels, g.out_h, g.out_w};
  }

 protected:
  // `type_name` is the layer's type(), a string literal.
  Pool2D(const char* type_name, const Pool2DOptions& options)
      : type_name_(type_name), options_(options) {
    if (options_.stride_h == 0) options_.stride_h = options_.pool_h;
    if (options_.stride_w == 0) options_.stride_w = options_.pool_w;
    if (options_.pool_h < 1 || options_.pool_w < 1 || options_.stride_h < 1 ||
        options_.stride_w < 1) {
      throw ValueError(std::string(type_name) +
                       ": expected a pool size >= 1 and strides >= 1 (or 0 for the pool size), "
                       "found pool " +
                       std::to_string(options.pool_h) + "x" + std::to_string(options.pool_w) +
                       ", strides " + std::to_string(options.stride_h) + "x" +
                       std::to_string(options.stride_w));
    }
  }

  // Validates and records the planned input; geometry() is valid afterwards.
  void plan_pool(Span<const Shape> inputs) {
    this->plan(inputs);
    geometry_ = geometry_for(inputs);
  }

  // Geometry of one planned image (independent of the batch size).
  const kernels::ConvGeometry& geometry() const noexcept { return geometry_; }

 private:
  kernels::ConvGeometry geometry_for(Span<const Shape> inputs) const {
    this->expect_inputs(inputs, 1);
    const Shape& s = inputs[0];
    this->expect_rank(s, 4, "(N, C, H, W) input");
    if (s[1] < 1 || s[2] < 1 || s[3] < 1) {
      throw ShapeError(std::string(this->type()) + ": expected non-empty C, H, W, found input " +
                       s.str());
    }
    if (options_.padding == kernels::Padding::Valid &&
        (options_.pool_h > s[2] || options_.pool_w > s[3])) {
      throw ShapeError(std::string(this->type()) + ": expected an input of at least " +
                       std::to_string(options_.pool_h) + "x" + std::to_string(options_.pool_w) +
                       " (the pool size, 'valid' padding), found " + s.str());
    }
    return kernels::ConvGeometry::keras(s[1], s[2], s[3], options_.pool_h, options_.pool_w,
                                        options_.stride_h, options_.stride_w, options_.padding);
  }

  const char* type_name_;
  Pool2DOptions options_;
  kernels::ConvGeometry geometry_;
};

}  // namespace minires
