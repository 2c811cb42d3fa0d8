// PreciseBN: recompute_batch_norm_statistics() re-estimates the moving statistics of every
// layer that keeps them (BatchNorm) for the current weights. fit() calls it after each epoch
// when FitOptions::precise_bn_batches is set; it is also how the statistics follow the averaged
// weights when the optimizer averages them (weight averaging).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/core/rng.hpp"
#include "minires/core/tensor.hpp"
#include "minires/data/dataset.hpp"
#include "minires/graph/model.hpp"
#include "minires/train/evaluate.hpp"

namespace minires {

namespace detail {

inline std::uint64_t epoch_seed(std::uint64_t seed, index_t epoch, std::uint64_t stream) {
  return seed * 0x9e3779b97f4a7c15ULL + static_cast<std::uint64_t>(epoch) * 0xbf58476d1ce4e5b9ULL +
         stream;
}

// order = 0, 1, …, order.size() − 1, then (when shuffled) a Fisher–Yates shuffle drawn from a
// generator seeded with `seed`.
inline void fill_order(std::vector<index_t>& order, bool shuffled, std::uint64_t seed) {
  std::iota(order.begin(), order.end(), index_t(0));
  if (!shuffled) return;
  Rng rng(seed);
  for (std::size_t i = order.size(); i-- > 1;) {
    std::swap(order[i], order[static_cast<std::size_t>(rng.uniform_int(i + 1))]);
  }
}

}  // namespace detail

// PreciseBN (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): sets every BatchNorm's
// moving statistics to the average of its batch statistics over `batches` batches of
// `batch_size` samples of `data` (fewer if data is smaller), drawn in an order seeded by `seed`
// and not augmented, run forward in Mode::Train with the current weights. The momentum average
// that training keeps mixes in statistics of older weights, which lag behind weights that move
// fast (large learning rates, RMSprop); inference then normalises with stale statistics. Only the
// moving statistics change. Returns the number of batches used.
template <class T>
index_t recompute_batch_norm_statistics(Model<T>& model, const Dataset<T>& data, index_t batches,
                                        index_t batch_size, std::uint64_t seed) {
  detail::check_dataset(model, data, "recompute_batch_norm_statistics");
  if (batches < 1 || batch_size < 1) {
    throw ValueError(
        "recompute_batch_norm_statistics: expected batches >= 1 and batch_size >= 1, found " +
        std::to_string(batches) + " and " + std::to_string(batch_size));
  }
  const index_t n = data.size();
  const index_t bs = std::min(batch_size, n);
  const index_t used = bs > 0 ? std::min(batches, n / bs) : 0;  // whole batches only
  if (used == 0) return 0;
  std::vector<Layer<T>*> norms;  // the layers with moving statistics (BatchNorm)
  for (std::size_t i = 0; i < model.size(); ++i) {
    Layer<T>* layer = model.layer(Node{static_cast<int>(i)});
    if (layer != nullptr && layer->set_statistics_averaging(false)) norms.push_back(layer);
  }
  if (norms.empty()) return 0;
  std::vector<index_t> order(static_cast<std::size_t>(n));
  detail::fill_order(order, true, seed);
  Tensor<T> x(Model<T>::batch_shape(data.sample_shape(), bs));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(bs));
  for (auto* layer : norms) layer->set_statistics_averaging(true);
  for (index_t b = 0; b < used; ++b) {
    data.get(Span<const index_t>(order.data() + b * bs, static_cast<std::size_t>(bs)), x,
             labels.data(), nullptr);
    model.forward(x, Mode::Train);
  }
  for (auto* layer : norms) layer->set_statistics_averaging(false);
  return used;
}

}  // namespace minires
