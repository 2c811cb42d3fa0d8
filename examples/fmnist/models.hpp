// The models of the fmnist example.
//   seed             the 2017 notebook's my_resnet() as intended: Conv 3x3 (4) BN ReLU, MaxPool
//   2x2,
//                    conv_block(4,4,64), identity_block x2, AvgPool 2x2, Flatten, Dense 10.
//   seed-as-written  the notebook as it ran: the max-pool's output was discarded, so the blocks
//                    run at 28x28 and the Dense layer sees 64x14x14 features. (Its other accident,
//                    channels-last block convolutions on channels-first data, is not reproduced:
//                    minires is NCHW throughout.)
//   resnet           the default: a small ResNet of 3x3 basic blocks (He et al.) in three stages
//                    at 28x28, 14x14 and 7x7, global average pooling, Dense 10.
#pragma once

#include <minires/minires.hpp>

#include <string>
#include <vector>

namespace fmnist {

using minires::Model;
using minires::Node;
using minires::Shape;

inline const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = {"resnet", "seed", "seed-as-written"};
  return names;
}

template <class T>
Model<T> seed_model(bool as_written) {
  using namespace minires;
  Model<T> m;
  Node x = m.input(Shape{1, 28, 28});
  x = m.add(Conv2D<T>(4, 3, Conv2DOptions().same()), x, "Conv1");
  x = m.add(BatchNorm<T>(), x, "BN_Conv1");
  x = m.add(ReLU<T>(), x, "relu_Conv1");
  // The notebook called MaxPooling2D(...)(x) without keeping the result, so Keras never
  // connected (or ran) the pool.
  if (!as_written) x = m.add(MaxPool2D<T>(2), x, "max_pool");
  x = conv_block(m, x, {4, 4, 64}, {1, 1, "a_2"});
  x = identity_block(m, x, {4, 4, 64}, {1, 1, "b_2"});
  x = identity_block(m, x, {4, 4, 64}, {1, 1, "c_2"});
  x = m.add(AvgPool2D<T>(2), x, "avg_pool");
  x = m.add(Flatten<T>(), x, "flatten");
  m.add(Dense<T>(10), x, "softmax10");
  return m;
}

// Widths 24-48-96, two basic blocks per stage: about 0.5 M parameters.
template <class T>
Model<T> resnet_model() {
  using namespace minires;
  Model<T> m;
  Node x = m.input(Shape{1, 28, 28});
  const auto conv = Conv2DOptions().same().no_bias().kernel_init(Initializer::HeNormal);
  x = m.add(Conv2D<T>(24, 3, conv), x, "stem_conv");
  x = m.add(BatchNorm<T>(), x, "stem_bn");
  x = m.add(ReLU<T>(), x, "stem_relu");
  ResNetStages stages;
  stages.widths = {24, 48, 96};
  stages.blocks = {2, 2, 2};
  stages.strides = {1, 2, 2};
  stages.options.name = "res";
  x = resnet_stages(m, x, stages);
  x = m.add(GlobalAvgPool2D<T>(), x, "gap");
  m.add(Dense<T>(10), x, "logits");
  return m;
}

template <class T>
Model<T> build_model(const std::string& name) {
  if (name == "seed") return seed_model<T>(false);
  if (name == "seed-as-written") return seed_model<T>(true);
  if (name == "resnet") return resnet_model<T>();
  std::string known;
  for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  throw minires::ValueError("unknown model '" + name + "': expected one of " + known);
}

}  // namespace fmnist
