// Residual-block builders for Model<T>.
//
// The seed notebook's blocks (Keras, 2017):
//   conv_block(x, (f1, f2, f3)):     [Conv(f1) BN ReLU] [Conv(f2) BN ReLU] [Conv(f3) BN ReLU]
//                                    + shortcut Conv(f3) BN,          add, ReLU
//   identity_block(x, (f1, f2, f3)): the same main path + identity shortcut, add, ReLU
// with 1x1 kernels and stride 1 by default (both configurable; the stride applies to every
// convolution of the block, as in the notebook). Note the ReLU before the add, which the
// notebook has and He et al.'s blocks do not.
//
// He et al.'s blocks ("Deep Residual Learning", 2015), convolutions without bias (BN follows):
//   basic_block(x, f, s):       Conv3x3(f, s) BN ReLU Conv3x3(f) BN + shortcut, add, ReLU
//   bottleneck_block(x, f, s):  Conv1x1(f) BN ReLU Conv3x3(f, s) BN ReLU Conv1x1(4f) BN
//                               + shortcut, add, ReLU
// where the shortcut is the identity when the shape is unchanged, else a projection
// Conv1x1(out, s) BN. resnet_stages() stacks stages of such blocks.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "minires/graph/model.hpp"
#include "minires/init/initializers.hpp"
#include "minires/layers/add.hpp"
#include "minires/layers/batch_norm.hpp"
#include "minires/layers/conv2d.hpp"
#include "minires/layers/relu.hpp"

namespace minires {

struct SeedBlockOptions {
  index_t kernel_size = 1;  // of the three main-path convolutions
  index_t strides = 1;      // of every convolution in the block
  std::string name;         // layer-name prefix, e.g. "a_2" (empty: generated names)
};

struct ResidualOptions {
  Initializer kernel_initializer = Initializer::HeNormal;
  BatchNormOptions batch_norm{};
  // The last BatchNorm of each block's residual branch starts with gamma = 0, so every block
  // starts as its shortcut (Goyal et al. 2017; torchvision's zero_init_residual).
  bool zero_init_residual = false;
  std::string name;  // layer-name prefix (empty: generated names)

  // The options of the branch's last BatchNorm.
  BatchNormOptions last_batch_norm() const {
    BatchNormOptions bn = batch_norm;
    if (zero_init_residual) bn.gamma_init = 0.0;
    return bn;
  }
};

namespace detail {

inline std::string block_name(const std::string& prefix, const std::string& part) {
  return prefix.empty() ? std::string() : prefix + "_" + part;
}

// Conv -> BN (-> ReLU): the unit every block is made of.
template <class T>
Node conv_bn(Model<T>& m, Node x, index_t filters, index_t kernel, const Conv2DOptions& conv,
             const BatchNormOptions& bn, bool relu, const std::string& prefix,
             const std::string& part) {
  x = m.add(Conv2D<T>(filters, kernel, conv), x, block_name(prefix, "conv" + part));
  x = m.add(BatchNorm<T>(bn), x, block_name(prefix, "bn" + part));
  if (relu) x = m.add(ReLU<T>(), x, block_name(prefix, "relu" + part));
  return x;
}

template <class T>
Node seed_block(Model<T>& m, Node input, const std::array<index_t, 3>& f, const SeedBlockOptions& o,
                bool projection) {
  // Keras Conv2D defaults as in the notebook: 'valid' padding, bias, glorot_uniform.
  Conv2DOptions conv = Conv2DOptions().strides(o.strides);
  if (o.kernel_size > 1) conv.same();
  Node x = input;
  const char* parts[] = {"2a", "2b", "2c"};
  for (int i = 0; i < 3; ++i) {
    x = conv_bn(m, x, f[static_cast<std::size_t>(i)], o.kernel_size, conv, BatchNormOptions{}, true,
                o.name, parts[i]);
  }
  Node shortcut = input;
  if (projection) {
    shortcut = conv_bn(m, input, f[2], 1, Conv2DOptions().strides(o.strides), BatchNormOptions{},
                       false, o.name, "1");
  }
  x = m.add(Add<T>(), {x, shortcut}, block_name(o.name, "add"));
  return m.add(ReLU<T>(), x, block_name(o.name, "out"));
}

template <class T>
Node shortcut_for(Model<T>& m, Node x, index_t out_channels, index_t stride,
                  const ResidualOptions& o) {
  if (stride == 1 && m.output_shape(x)[0] == out_channels) return x;
  Conv2DOptions proj = Conv2DOptions().strides(stride).no_bias().kernel_init(o.kernel_initializer);
  return conv_bn(m, x, out_channels, 1, proj, o.batch_norm, false, o.name, "_proj");
}

}  // namespace detail

// The seed notebook's conv_block: three conv-BN-ReLU steps with filters (f1, f2, f3), a
// Conv(f3)+BN shortcut, add, ReLU.
template <class T>
Node conv_block(Model<T>& m, Node x, const std::array<index_t, 3>& filters,
                const SeedBlockOptions& options = {}) {
  return detail::seed_block(m, x, filters, options, /*projection=*/true);
}

// The seed notebook's identity_block: as conv_block with an identity shortcut; the input must
// already have f3 channels (and the stride must keep the size).
template <class T>
Node identity_block(Model<T>& m, Node x, const std::array<index_t, 3>& filters,
                    const SeedBlockOptions& options = {}) {
  const Shape in = m.output_shape(x);
  if (in.rank() != 3 || in[0] != filters[2] || options.strides != 1) {
    throw ShapeError("identity_block: the identity shortcut needs an input of " +
                     std::to_string(filters[2]) + " channels and stride 1, found input " +
                     in.str() + " and stride " + std::to_string(options.strides) +
                     " (use conv_block to change the shape)");
  }
  return detail::seed_block(m, x, filters, options, /*projection=*/false);
}

// He et al.'s basic block: 3x3-3x3 with a shortcut (projection when the shape changes).
template <class T>
Node basic_block(Model<T>& m, Node x, index_t filters, index_t stride = 1,
                 const ResidualOptions& o = {}) {
  const Conv2DOptions c = Conv2DOptions().same().no_bias().kernel_init(o.kernel_initializer);
  Node y = detail::conv_bn(m, x, filters, 3, Conv2DOptions(c).strides(stride), o.batch_norm, true,
                           o.name, "1");
  y = detail::conv_bn(m, y, filters, 3, c, o.last_batch_norm(), false, o.name, "2");
  y = m.add(Add<T>(), {y, detail::shortcut_for(m, x, filters, stride, o)},
            detail::block_name(o.name, "add"));
  return m.add(ReLU<T>(), y, detail::block_name(o.name, "out"));
}

// He et al.'s bottleneck block: 1x1 (filters) - 3x3 (filters, stride) - 1x1 (4 * filters).
template <class T>
Node bottleneck_block(Model<T>& m, Node x, index_t filters, index_t stride = 1,
                      const ResidualOptions& o = {}) {
  const Conv2DOptions c = Conv2DOptions().same().no_bias().kernel_init(o.kernel_initializer);
  Node y = detail::conv_bn(m, x, filters, 1, c, o.batch_norm, true, o.name, "1");
  y = detail::conv_bn(m, y, filters, 3, Conv2DOptions(c).strides(stride), o.batch_norm, true,
                      o.name, "2");
  y = detail::conv_bn(m, y, 4 * filters, 1, c, o.last_batch_norm(), false, o.name, "3");
  y = m.add(Add<T>(), {y, detail::shortcut_for(m, x, 4 * filters, stride, o)},
            detail::block_name(o.name, "add"));
  return m.add(ReLU<T>(), y, detail::block_name(o.name, "out"));
}

// Stages of residual blocks: stage i has blocks[i] blocks of width widths[i]; its first block
// uses strides[i] (downsampling), the others stride 1.
struct ResNetStages {
  std::vector<index_t> widths;
  std::vector<index_t> blocks;
  std::vector<index_t> strides;
  bool bottleneck = false;
  ResidualOptions options{};
};

template <class T>
Node resnet_stages(Model<T>& m, Node x, const ResNetStages& s) {
  if (s.widths.size() != s.blocks.size() || s.widths.size() != s.strides.size() ||
      s.widths.empty()) {
    throw ValueError(
        "resnet_stages: expected widths, blocks and strides of one equal, non-zero length, found " +
        std::to_string(s.widths.size()) + ", " + std::to_string(s.blocks.size()) + " and " +
        std::to_string(s.strides.size()));
  }
  for (std::size_t i = 0; i < s.widths.size(); ++i) {
    for (index_t b = 0; b < s.blocks[i]; ++b) {
      ResidualOptions o = s.options;
      if (!o.name.empty()) o.name += "_s" + std::to_string(i + 1) + "b" + std::to_string(b + 1);
      const index_t stride = b == 0 ? s.strides[i] : 1;
      x = s.bottleneck ? bottleneck_block(m, x, s.widths[i], stride, o)
                       : basic_block(m, x, s.widths[i], stride, o);
    }
  }
  return x;
}

}  // namespace minires
