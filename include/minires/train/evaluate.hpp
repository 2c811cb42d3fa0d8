// Inference: evaluate() gives the loss, accuracy and confusion matrix of a classifier on a
// Dataset, optionally averaging the predictions of several views of each image (test-time
// augmentation: the mirror image, shifted images); predict() gives class probabilities.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "minires/core/collective.hpp"
#include "minires/core/error.hpp"
#include "minires/core/parallel.hpp"
#include "minires/core/tensor.hpp"
#include "minires/data/dataset.hpp"
#include "minires/data/image_ops.hpp"
#include "minires/graph/model.hpp"
#include "minires/kernels/softmax.hpp"

namespace minires {

struct EvalOptions {
  index_t batch_size = 128;
  // Test-time augmentation: classify each image by the mean of the class probabilities of the
  // image and of its mirror image (flipped along the last axis, the width). Samples must be
  // images (C, H, W).
  bool flip = false;
  // Test-time augmentation: also classify the image shifted by `shift` pixels up, down, left
  // and right (the edge pixels repeated into the vacated border), averaging the probabilities
  // of all views: 5 views, or 10 with flip. 0: no shifted views.
  index_t shift = 0;
  // Data-parallel evaluation: every process of the group calls evaluate() with the same model
  // and data, evaluates its own contiguous share of the samples, and all receive the result
  // for the whole data set (losses, counts and the confusion matrix summed over the group).
  Collective* replicas = nullptr;
};

struct EvalResult {
  double loss = 0, accuracy = 0;
  index_t classes = 0;
  std::vector<index_t> confusion;  // classes x classes, row = true class, column = predicted
};

namespace detail {

inline index_t argmax_row(const float* p, index_t k) {
  return static_cast<index_t>(std::max_element(p, p + k) - p);
}
inline index_t argmax_row(const double* p, index_t k) {
  return static_cast<index_t>(std::max_element(p, p + k) - p);
}

template <class T>
void check_dataset(const Model<T>& model, const Dataset<T>& data, const char* what) {
  const Shape want = model.output_shape(model.input());
  if (data.sample_shape() != want) {
    throw ShapeError(std::string(what) + ": the model takes samples of shape " + want.str() +
                     ", the dataset has " + data.sample_shape().str());
  }
  const Shape out = model.output_shape(model.output());
  if (out.rank() != 1 || out[0] != data.num_classes()) {
    throw ShapeError(std::string(what) + ": the model outputs " + out.str() +
                     " per sample, the dataset has " + std::to_string(data.num_classes()) +
                     " classes");
  }
}

// probs = softmax(logits) row by row; logits (N, K), probs resized to match.
template <class T>
void softmax_rows(const Tensor<T>& logits, Tensor<T>& probs) {
  probs.resize(logits.shape());
  kernels::softmax_forward(logits.data(), probs.data(), logits.dim(0), logits.dim(1));
}

// The batch-mean cross-entropy of logits (N, K) against labels, as Keras 2.0 reports it
// (probabilities clipped to [1e-7, 1 - 1e-7]; SoftmaxCrossEntropy's default), summed in order.
template <class T>
T batch_cross_entropy(const Tensor<T>& logits, const std::int32_t* labels, Tensor<T>& probs,
                      Tensor<T>& losses) {
  const index_t n = logits.dim(0), k = logits.dim(1);
  probs.resize(logits.shape());
  losses.resize(Shape{n});
  kernels::softmax_cross_entropy_forward(logits.data(), labels, n, k, T(0), T(1e-7), probs.data(),
                                         losses.data());
  double sum = 0.0;
  for (index_t i = 0; i < n; ++i) sum += static_cast<double>(losses[i]);
  return n > 0 ? static_cast<T>(sum / static_cast<double>(n)) : T(0);
}

// A test-time view of an image: mirrored when flip, then shifted by (dy, dx) pixels, the edge
// pixels repeated into the vacated border (shift_flip_image with Border::Edge).
struct View {
  index_t dy = 0, dx = 0;
  bool flip = false;
};

inline std::vector<View> eval_views(const EvalOptions& o) {
  std::vector<View> views;
  for (bool flip : {false, true}) {
    if (flip && !o.flip) break;
    views.push_back({0, 0, flip});
    if (o.shift == 0) continue;
    for (index_t s : {-o.shift, o.shift}) {
      views.push_back({s, 0, flip});
      views.push_back({0, flip ? -s : s, flip});  // the mirror image moved the other way first
    }
  }
  return views;
}

// dst = view v of the images (C, H, W) in src, plane by plane.
template <class T>
void make_view(const Tensor<T>& src, const Shape& sample, const View& v, Tensor<T>& dst) {
  dst.resize(src.shape());
  const index_t h = sample[1], w = sample[2], planes = src.size() / (h * w);
  for (index_t p = 0; p < planes; ++p) {
    shift_flip_image(src.data() + p * h * w, dst.data() + p * h * w, h, w, v.dy, v.dx, v.flip,
                     Border::Edge, T(0), [](T value) { return value; });
  }
}

}  // namespace detail

// Loss, accuracy and confusion matrix of `model` on `data`, in inference mode. With test-time
// augmentation (options.flip, options.shift), the prediction and the loss are those of the mean
// of the views' class probabilities.
template <class T>
EvalResult evaluate(Model<T>& model, const Dataset<T>& data, const EvalOptions& options) {
  check_num_threads();
  detail::check_dataset(model, data, "evaluate");
  const Shape sample = data.sample_shape();
  const bool tta = options.flip || options.shift != 0;
  if (tta && sample.rank() != 3) {
    throw ShapeError(
        "evaluate: test-time augmentation expects image samples (C, H, W), found samples of "
        "shape " +
        sample.str());
  }
  if (options.shift != 0 &&
      (options.shift < 0 || options.shift >= std::min(sample[1], sample[2]))) {
    throw ValueError("evaluate: expected a test-time shift in [0, " +
                     std::to_string(std::min(sample[1], sample[2])) + ") pixels, found " +
                     std::to_string(options.shift));
  }
  const std::vector<detail::View> views = detail::eval_views(options);
  const index_t n = data.size(), k = data.num_classes();
  const index_t bs = std::max<index_t>(1, std::min(options.batch_size, n));
  Collective* group = options.replicas;
  const index_t first = group != nullptr ? n * group->rank() / group->size() : 0;
  const index_t last = group != nullptr ? n * (group->rank() + 1) / group->size() : n;
  Tensor<T> x(Model<T>::batch_shape(sample, bs)), view, probs, view_probs;
  std::vector<std::int32_t> labels(static_cast<std::size_t>(bs));
  std::vector<index_t> idx(static_cast<std::size_t>(bs));
  Tensor<T> sample_probs(Shape{bs, k}), sample_losses(Shape{bs});
  EvalResult r;
  r.classes = k;
  r.confusion.assign(static_cast<std::size_t>(k * k), 0);
  double loss_sum = 0;
  index_t correct = 0;
  for (index_t start = first; start < last; start += bs) {
    const index_t m = std::min(bs, last - start);
    x.resize(Model<T>::batch_shape(sample, m));
    std::iota(idx.begin(), idx.begin() + m, start);
    data.get(Span<const index_t>(idx.data(), static_cast<std::size_t>(m)), x, labels.data(),
             nullptr);
    const Tensor<T>* scores = &model.forward(x, Mode::Infer);
    if (!tta) {
      loss_sum += static_cast<double>(detail::batch_cross_entropy(*scores, labels.data(),
                                                                  sample_probs, sample_losses)) *
                  static_cast<double>(m);
    } else {
      detail::softmax_rows(*scores, probs);  // views[0] is the image itself
      for (std::size_t v = 1; v < views.size(); ++v) {
        detail::make_view(x, sample, views[v], view);
        detail::softmax_rows(model.forward(view, Mode::Infer), view_probs);
        for (index_t i = 0; i < m * k; ++i) probs.data()[i] += view_probs.data()[i];
      }
      const T inv = T(1) / static_cast<T>(views.size());
      for (index_t i = 0; i < m * k; ++i) probs.data()[i] *= inv;
      for (index_t i = 0; i < m; ++i) {
        const double p =
            static_cast<double>(probs.data()[i * k + labels[static_cast<std::size_t>(i)]]);
        loss_sum -= std::log(std::max(p, std::numeric_limits<double>::min()));
      }
      scores = &probs;
    }
    for (index_t i = 0; i < m; ++i) {
      const index_t pred = detail::argmax_row(scores->data() + i * k, k);
      const index_t truth = labels[static_cast<std::size_t>(i)];
      correct += pred == truth;
      ++r.confusion[static_cast<std::size_t>(truth * k + pred)];
    }
  }
  if (group != nullptr) {  // the whole data set's sums, in double (exact for the counts)
    std::vector<double> sums(r.confusion.size() + 2);
    sums[0] = loss_sum;
    sums[1] = static_cast<double>(correct);
    for (std::size_t i = 0; i < r.confusion.size(); ++i)
      sums[i + 2] = static_cast<double>(r.confusion[i]);
    group->sum(sums.data(), static_cast<index_t>(sums.size()));
    loss_sum = sums[0];
    correct = static_cast<index_t>(sums[1]);
    for (std::size_t i = 0; i < r.confusion.size(); ++i)
      r.confusion[i] = static_cast<index_t>(sums[i + 2]);
  }
  r.loss = n > 0 ? loss_sum / static_cast<double>(n) : 0.0;
  r.accuracy = n > 0 ? static_cast<double>(correct) / static_cast<double>(n) : 0.0;
  return r;
}

template <class T>
EvalResult evaluate(Model<T>& model, const Dataset<T>& data, index_t batch_size = 128) {
  EvalOptions options;
  options.batch_size = batch_size;
  return evaluate(model, data, options);
}

// Class probabilities (N, classes) for the samples x (N, sample shape...), in inference mode.
template <class T>
Tensor<T> predict(Model<T>& model, const Tensor<T>& x, index_t batch_size = 128) {
  check_num_threads();
  if (x.rank() < 1) throw ShapeError("predict: expected a batch of samples, found a scalar");
  const index_t n = x.dim(0);
  const Shape sample = Shape::from(x.shape().data() + 1, x.rank() - 1);
  const index_t per = n > 0 ? x.size() / n : 0;
  const index_t k = model.output_shape(model.output())[0];
  Tensor<T> probs(Shape{n, k}), chunk, chunk_probs;
  const index_t bs = std::max<index_t>(1, std::min(batch_size, std::max<index_t>(n, 1)));
  for (index_t start = 0; start < n; start += bs) {
    const index_t m = std::min(bs, n - start);
    chunk.resize(Model<T>::batch_shape(sample, m));
    std::copy(x.data() + start * per, x.data() + (start + m) * per, chunk.data());
    detail::softmax_rows(model.forward(chunk, Mode::Infer), chunk_probs);
    std::copy(chunk_probs.data(), chunk_probs.data() + m * k, probs.data() + start * k);
  }
  return probs;
}

}  // namespace minires
