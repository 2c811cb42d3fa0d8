// The training loop: fit() trains a Model with a SoftmaxCrossEntropy loss and an Optimizer on a
// Dataset, epoch by epoch, with seeded shuffling, an optional learning-rate schedule, validation
// after each epoch and callbacks (progress, checkpoints, early stopping). evaluate() and
// predict() run the model in inference mode; evaluate() can average the predictions of each
// image and its mirror image (test-time augmentation). recompute_batch_norm_statistics()
// re-estimates the BatchNorm moving statistics for the final weights (PreciseBN), also after
// every epoch of fit() (FitOptions::precise_bn_batches), which is also how the statistics
// follow the averaged weights when the optimizer averages them (weight averaging).
//
// Determinism: epoch e shuffles with a generator seeded from (seed, e), and batches are
// gathered in that order, so the same seed and thread count give bit-identical runs, also
// when training is resumed at an epoch boundary (initial_epoch).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/core/parallel.hpp"
#include "minires/core/rng.hpp"
#include "minires/core/tensor.hpp"
#include "minires/graph/model.hpp"
#include "minires/layers/batch_norm.hpp"
#include "minires/layers/softmax_cross_entropy.hpp"
#include "minires/optim/optimizer.hpp"
#include "minires/optim/schedule.hpp"
#include "minires/train/dataset.hpp"

namespace minires {

struct FitOptions {
  index_t epochs = 1;
  index_t batch_size = 32;  // Keras' default
  bool shuffle = true;
  std::uint64_t seed = 0;  // shuffling and augmentation
  bool augment = false;    // pass a generator to Dataset::get while training
  Schedule schedule = Schedule::constant();
  index_t initial_epoch = 0;  // resume: epochs before this one count as done
  // After each epoch (before validation), recompute_batch_norm_statistics over this many
  // training batches, drawn in an order seeded from (seed, epoch); 0: keep the momentum
  // averages of training (Keras).
  index_t precise_bn_batches = 0;
  // Polled between steps; when it becomes true, fit() stops without finishing the epoch.
  const std::atomic<bool>* interrupt = nullptr;
};

struct EpochStats {
  index_t epoch = 0;  // 1-based
  double train_loss = 0, train_accuracy = 0;
  double val_loss = std::numeric_limits<double>::quiet_NaN();
  double val_accuracy = std::numeric_limits<double>::quiet_NaN();
  double learning_rate = 0;  // at the epoch's last step
  double seconds = 0;        // training time of the epoch (validation excluded)
  double images_per_second = 0;
};

struct History {
  std::vector<EpochStats> epochs;
  bool interrupted = false;    // stopped by FitOptions::interrupt
  bool stopped_early = false;  // a callback asked to stop
};

struct FitInfo {
  index_t epochs = 0, initial_epoch = 0, steps_per_epoch = 0, train_size = 0, val_size = 0,
          batch_size = 0;
};

struct BatchProgress {
  index_t epoch = 0;  // 1-based
  index_t step = 0;   // 1-based within the epoch
  index_t steps = 0;
  index_t samples = 0;            // seen so far in this epoch
  double loss = 0, accuracy = 0;  // running means over the epoch
  double seconds = 0;             // since the epoch began
};

template <class T>
class Callback {
 public:
  virtual ~Callback() = default;
  virtual void on_train_begin(const FitInfo&) {}
  virtual void on_epoch_begin(index_t /*epoch*/) {}
  virtual void on_batch_end(const BatchProgress&) {}
  // Called with the finished epoch's figures; return false to stop training.
  virtual bool on_epoch_end(const EpochStats&, Model<T>&, Optimizer<T>&) { return true; }
  virtual void on_train_end(const History&) {}
};

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
};

struct EvalResult {
  double loss = 0, accuracy = 0;
  index_t classes = 0;
  std::vector<index_t> confusion;  // classes x classes, row = true class, column = predicted
};

namespace detail {

// Keeps a parameter out of template argument deduction (std::type_identity is C++20).
template <class T>
struct identity {
  using type = T;
};
template <class T>
using identity_t = typename identity<T>::type;

inline index_t argmax_row(const float* p, index_t k) {
  return static_cast<index_t>(std::max_element(p, p + k) - p);
}
inline index_t argmax_row(const double* p, index_t k) {
  return static_cast<index_t>(std::max_element(p, p + k) - p);
}

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

template <class T>
void check_dataset(const Model<T>& model, const Dataset<T>& data, const char* what) {
  const Shape want = model.output_shape(model.input_node());
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

// A test-time view of an image: shifted by (dy, dx) pixels, then mirrored when flip.
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
      views.push_back({0, s, flip});
    }
  }
  return views;
}

// dst = view v of the m images (C, H, W) in src: dst(c, y, x) = src(c, clamp(y - dy),
// clamp(x' - dx)) with x' = W - 1 - x when mirrored.
template <class T>
void make_view(const Tensor<T>& src, const Shape& sample, const View& v, Tensor<T>& dst) {
  dst.resize(src.shape());
  const index_t h = sample[1], w = sample[2], planes = src.size() / (h * w);
  const auto clamp = [](index_t i, index_t n) { return std::min(std::max(i, index_t(0)), n - 1); };
  for (index_t p = 0; p < planes; ++p) {
    const T* s = src.data() + p * h * w;
    T* d = dst.data() + p * h * w;
    for (index_t y = 0; y < h; ++y) {
      const T* row = s + clamp(y - v.dy, h) * w;
      for (index_t x = 0; x < w; ++x) d[y * w + x] = row[clamp((v.flip ? w - 1 - x : x) - v.dx, w)];
    }
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
  Tensor<T> x(Model<T>::batch_shape(sample, bs)), view, probs, view_probs;
  std::vector<std::int32_t> labels(static_cast<std::size_t>(bs));
  std::vector<index_t> idx(static_cast<std::size_t>(bs));
  SoftmaxCrossEntropy<T> loss;
  loss.setup(Shape{bs, k});
  EvalResult r;
  r.classes = k;
  r.confusion.assign(static_cast<std::size_t>(k * k), 0);
  double loss_sum = 0;
  index_t correct = 0;
  for (index_t start = 0; start < n; start += bs) {
    const index_t m = std::min(bs, n - start);
    x.resize(Model<T>::batch_shape(sample, m));
    std::iota(idx.begin(), idx.begin() + m, start);
    data.get(Span<const index_t>(idx.data(), static_cast<std::size_t>(m)), x, labels.data(),
             nullptr);
    const Tensor<T>* scores = &model.forward(x, Mode::Infer);
    if (!tta) {
      loss_sum +=
          static_cast<double>(loss.forward(
              *scores, Span<const std::int32_t>(labels.data(), static_cast<std::size_t>(m)))) *
          static_cast<double>(m);
    } else {
      softmax(*scores, probs);  // views[0] is the image itself
      for (std::size_t v = 1; v < views.size(); ++v) {
        detail::make_view(x, sample, views[v], view);
        softmax(model.forward(view, Mode::Infer), view_probs);
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
  std::vector<BatchNorm<T>*> norms;
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (auto* bn = dynamic_cast<BatchNorm<T>*>(model.layer(Node{static_cast<int>(i)}))) {
      norms.push_back(bn);
    }
  }
  if (norms.empty()) return 0;
  std::vector<index_t> order(static_cast<std::size_t>(n));
  detail::fill_order(order, true, seed);
  Tensor<T> x(Model<T>::batch_shape(data.sample_shape(), bs));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(bs));
  for (auto* bn : norms) bn->set_averaging(true);
  for (index_t b = 0; b < used; ++b) {
    data.get(Span<const index_t>(order.data() + b * bs, static_cast<std::size_t>(bs)), x,
             labels.data(), nullptr);
    model.forward(x, Mode::Train);
  }
  for (auto* bn : norms) bn->set_averaging(false);
  return used;
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
    softmax(model.forward(chunk, Mode::Infer), chunk_probs);
    std::copy(chunk_probs.data(), chunk_probs.data() + m * k, probs.data() + start * k);
  }
  return probs;
}

// Trains `model` (already initialised) on `train`, validating on `val` (may be null) after each
// epoch. The optimizer is attached to the model's parameters here unless it already was (a
// resumed optimizer keeps its state). Throws NumericalError if the loss stops being finite.
template <class T>
History fit(Model<T>& model, SoftmaxCrossEntropy<T>& loss, Optimizer<T>& optimizer,
            const Dataset<T>& train, const Dataset<detail::identity_t<T>>* val,
            const FitOptions& options,
            const std::vector<Callback<detail::identity_t<T>>*>& callbacks = {}) {
  check_num_threads();
  detail::check_dataset(model, train, "fit");
  if (val != nullptr) detail::check_dataset(model, *val, "fit (validation)");
  if (options.batch_size < 1 || options.epochs < 0 || options.initial_epoch < 0) {
    throw ValueError("fit: expected batch_size >= 1, epochs >= 0 and initial_epoch >= 0, found " +
                     std::to_string(options.batch_size) + ", " + std::to_string(options.epochs) +
                     " and " + std::to_string(options.initial_epoch));
  }
  const index_t n = train.size(), k = train.num_classes();
  if (n == 0) throw ValueError("fit: the training set is empty");
  const index_t bs = std::min(options.batch_size, n);
  const index_t steps = (n + bs - 1) / bs;
  const double base_lr = optimizer.learning_rate();

  model.plan(bs);
  loss.setup(Shape{bs, k});
  if (!optimizer.attached()) optimizer.attach(model.params());
  // Weight averaging (Optimizer::set_weight_averaging): between epochs, and when fit() returns
  // or throws, the model holds the averaged weights (validated, checkpointed, returned) and the
  // optimizer holds the raw weights in their place; each epoch swaps them to train the raw weights.
  const bool averaging = optimizer.weight_averaging() > 0.0;

  Tensor<T> x(Model<T>::batch_shape(train.sample_shape(), bs));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(bs));
  std::vector<index_t> order(static_cast<std::size_t>(n));

  FitInfo info{options.epochs, options.initial_epoch, steps, n, val ? val->size() : 0, bs};
  for (auto* c : callbacks) c->on_train_begin(info);
  History history;
  using clock = std::chrono::steady_clock;

  for (index_t epoch = options.initial_epoch; epoch < options.epochs; ++epoch) {
    for (auto* c : callbacks) c->on_epoch_begin(epoch + 1);
    if (averaging) optimizer.swap_averages();  // train the raw weights
    detail::fill_order(order, options.shuffle, detail::epoch_seed(options.seed, epoch, 1));
    Rng augment_rng(detail::epoch_seed(options.seed, epoch, 2));
    const auto t0 = clock::now();
    double loss_sum = 0;
    index_t correct = 0, seen = 0;
    EpochStats stats;
    stats.epoch = epoch + 1;
    for (index_t step = 0; step < steps; ++step) {
      if (options.interrupt != nullptr && options.interrupt->load()) {
        if (averaging) optimizer.swap_averages();
        history.interrupted = true;
        for (auto* c : callbacks) c->on_train_end(history);
        return history;
      }
      const index_t start = step * bs, m = std::min(bs, n - start);
      x.resize(Model<T>::batch_shape(train.sample_shape(), m));
      train.get(Span<const index_t>(order.data() + start, static_cast<std::size_t>(m)), x,
                labels.data(), options.augment ? &augment_rng : nullptr);

      model.zero_grad();
      const Tensor<T>& logits = model.forward(x, Mode::Train);
      const double l = static_cast<double>(loss.forward(
          logits, Span<const std::int32_t>(labels.data(), static_cast<std::size_t>(m))));
      if (!std::isfinite(l)) {
        if (averaging) optimizer.swap_averages();  // as after an epoch: the averages in the model
        throw NumericalError("fit: the loss became " + std::to_string(l) + " at epoch " +
                             std::to_string(epoch + 1) + ", step " + std::to_string(step + 1) +
                             "; training stopped (checkpoints written so far are unchanged)");
      }
      for (index_t i = 0; i < m; ++i) {
        correct +=
            detail::argmax_row(logits.data() + i * k, k) == labels[static_cast<std::size_t>(i)];
      }
      loss.backward(model.output_grad());
      model.backward();
      stats.learning_rate = options.schedule.at(base_lr, epoch * steps + step, steps);
      optimizer.set_learning_rate(stats.learning_rate);
      optimizer.step();

      loss_sum += l * static_cast<double>(m);
      seen += m;
      BatchProgress p{epoch + 1,
                      step + 1,
                      steps,
                      seen,
                      loss_sum / static_cast<double>(seen),
                      static_cast<double>(correct) / static_cast<double>(seen),
                      std::chrono::duration<double>(clock::now() - t0).count()};
      for (auto* c : callbacks) c->on_batch_end(p);
    }
    if (averaging) optimizer.swap_averages();  // validate and checkpoint the averaged weights
    if (options.precise_bn_batches > 0) {
      recompute_batch_norm_statistics(model, train, options.precise_bn_batches, bs,
                                      detail::epoch_seed(options.seed, epoch, 3));
    }
    stats.seconds = std::chrono::duration<double>(clock::now() - t0).count();
    stats.train_loss = loss_sum / static_cast<double>(seen);
    stats.train_accuracy = static_cast<double>(correct) / static_cast<double>(seen);
    stats.images_per_second = stats.seconds > 0 ? static_cast<double>(seen) / stats.seconds : 0.0;
    if (val != nullptr && val->size() > 0) {
      const EvalResult r = evaluate(model, *val, bs);
      stats.val_loss = r.loss;
      stats.val_accuracy = r.accuracy;
    }
    history.epochs.push_back(stats);
    bool go_on = true;
    for (auto* c : callbacks) go_on = c->on_epoch_end(stats, model, optimizer) && go_on;
    if (!go_on) {
      history.stopped_early = true;
      break;
    }
  }
  optimizer.set_learning_rate(base_lr);
  for (auto* c : callbacks) c->on_train_end(history);
  return history;
}

}  // namespace minires
