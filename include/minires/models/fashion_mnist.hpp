// Ready-made models for 1x28x28 images in 10 classes (Fashion-MNIST, MNIST).
//
//   seed_resnet<T>()      the 2017 Keras notebook's my_resnet() as intended: Conv 3x3 (4) BN
//                         ReLU, MaxPool 2x2, conv_block(4,4,64), identity_block x2, AvgPool 2x2,
//                         Flatten, Dense 10 (34,426 parameters).
//   seed_resnet<T>(true)  the notebook as it ran: the max-pool's output was discarded, so the
//                         blocks run at 28x28 and the Dense layer sees 64x14x14 features. (Its
//                         other accident, channels-last block convolutions on channels-first
//                         data, is not reproduced: minires is NCHW throughout.)
//   small_resnet<T>()     a small ResNet of He et al.'s 3x3 basic blocks for accuracy per CPU
//                         minute: a 3x3 stem at 28x28, then stages of widths 32, 64, 128 at
//                         14x14, 7x7 and 4x4, global average pooling, Dense 10 (~0.39 M
//                         parameters, ~18 M multiply-adds per image). zero_init_residual: each
//                         block's last BatchNorm starts with gamma = 0 (ResidualOptions).
// The final Dense layer outputs logits; the softmax is part of the loss (SoftmaxCrossEntropy).
// Including this header also brings the Fashion-MNIST loader (data/fashion_mnist.hpp); neither
// is part of <minires/minires.hpp>.
#pragma once

#include "minires/data/fashion_mnist.hpp"
#include "minires/graph/model.hpp"
#include "minires/graph/residual.hpp"
#include "minires/io/load_model.hpp"
#include "minires/layers/avg_pool2d.hpp"
#include "minires/layers/dense.hpp"
#include "minires/layers/flatten.hpp"
#include "minires/layers/global_avg_pool2d.hpp"
#include "minires/layers/max_pool2d.hpp"

namespace minires::models {

template <class T>
Model<T> seed_resnet(bool as_written = false) {
  Model<T> m;
  Node x = m.add_input(Shape{1, 28, 28});
  x = m.add(Conv2D<T>(4, 3, Conv2DOptions().same()), x, "Conv1");
  x = m.add(BatchNorm<T>(), x, "BN_Conv1");
  x = m.add(ReLU<T>(), x);
  // The notebook called MaxPooling2D(...)(x) without keeping the result; Keras then never
  // connected (or ran) the pool.
  if (!as_written) x = m.add(MaxPool2D<T>(2), x);
  x = conv_block(m, x, {4, 4, 64}, {1, 1, "a_2"});
  x = identity_block(m, x, {4, 4, 64}, {1, 1, "b_2"});
  x = identity_block(m, x, {4, 4, 64}, {1, 1, "c_2"});
  x = m.add(AvgPool2D<T>(2), x, "avg_pool");
  x = m.add(Flatten<T>(), x);
  m.add(Dense<T>(10), x, "softmax10");
  return m;
}

template <class T>
Model<T> small_resnet(bool zero_init_residual = false) {
  Model<T> m;
  Node x = m.add_input(Shape{1, 28, 28});
  const auto conv = Conv2DOptions().same().no_bias().kernel_init(Initializer::HeNormal);
  x = m.add(Conv2D<T>(32, 3, conv), x, "stem_conv");
  x = m.add(BatchNorm<T>(), x, "stem_bn");
  x = m.add(ReLU<T>(), x, "stem_relu");
  ResNetStages stages;
  stages.widths = {32, 64, 128};
  stages.blocks = {2, 2, 1};
  stages.strides = {2, 2, 2};
  stages.options.name = "res";
  stages.options.zero_init_residual = zero_init_residual;
  x = resnet_stages(m, x, stages);
  x = m.add(GlobalAvgPool2D<T>(), x, "gap");
  m.add(Dense<T>(10), x, "logits");
  return m;
}

// The models above by the names fmnist uses ("resnet", "seed", "seed-as-written"), for
// load_model(path, fashion_mnist_models<T>()).
template <class T>
ModelRegistry<T> fashion_mnist_models() {
  ModelRegistry<T> r;
  r.add("resnet", [] { return small_resnet<T>(); });
  r.add("seed", [] { return seed_resnet<T>(); });
  r.add("seed-as-written", [] { return seed_resnet<T>(/*as_written=*/true); });
  return r;
}

}  // namespace minires::models
