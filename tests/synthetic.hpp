// A small synthetic image task for training tests: 1x8x8 images of one line plus noise,
// four classes by the line's direction (horizontal, vertical, diagonal, anti-diagonal).
#pragma once

#include <minires/minires.hpp>

#include <vector>

namespace minires::test {

template <class T>
TensorDataset<T> line_patterns(index_t n, std::uint64_t seed) {
  Rng rng(seed);
  Tensor<T> x(Shape{n, 1, 8, 8});
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    const auto cls = static_cast<std::int32_t>(rng.uniform_int(4));
    const auto pos = static_cast<index_t>(rng.uniform_int(8));
    labels[static_cast<std::size_t>(i)] = cls;
    T* img = x.data() + i * 64;
    for (index_t k = 0; k < 64; ++k) img[k] = static_cast<T>(rng.uniform(0.0, 0.3));
    for (index_t t = 0; t < 8; ++t) {
      index_t r = 0, c = 0;
      switch (cls) {
        case 0:
          r = pos, c = t;
          break;
        case 1:
          r = t, c = pos;
          break;
        case 2:
          r = t, c = (t + pos) % 8;
          break;
        default:
          r = t, c = (8 + pos - t) % 8;
          break;
      }
      img[r * 8 + c] = T(1);
    }
  }
  return TensorDataset<T>(std::move(x), std::move(labels), 4);
}

// conv3x3(8) BN ReLU -> basic block(8) -> global average pool -> dense(4)
template <class T>
Model<T> small_resnet() {
  Model<T> m;
  Node x = m.add_input(Shape{1, 8, 8});
  x = m.add(Conv2D<T>(8, 3, Conv2DOptions().same()), x);
  x = m.add(BatchNorm<T>(), x);
  x = m.add(ReLU<T>(), x);
  x = basic_block(m, x, 8);
  x = m.add(GlobalAvgPool2D<T>(), x);
  m.add(Dense<T>(4), x);
  return m;
}

}  // namespace minires::test
