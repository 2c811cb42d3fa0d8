// The training loop: fit() trains a Model with a Loss and an Optimizer on a Dataset, epoch by
// epoch, with seeded shuffling, an optional learning-rate schedule, validation after each epoch
// (evaluate.hpp), PreciseBN (precise_bn.hpp) and callbacks (progress, checkpoints, early
// stopping).
//
// Determinism: epoch e shuffles with a generator seeded from (seed, e), and batches are
// gathered in that order, so the same seed and thread count give bit-identical runs, also
// when training is resumed at an epoch boundary (initial_epoch).
//
// Data parallelism (FitOptions::replicas, train/data_parallel.hpp): every process of a group
// calls fit() with the same model, data and options. Rank 0's parameters, state and optimizer
// state are broadcast first; each global batch of batch_size samples is split into one shard
// per process; the loss gradient is scaled by the shard's share of the batch and the
// parameter gradients summed over the group, so every process takes the step one process
// would take on the whole batch (the same up to summation order, with synchronised BatchNorm
// or a model without BatchNorm). Losses and accuracies are summed over the group; callbacks
// run on rank 0 only and its decision to stop is broadcast; BatchNorm's moving statistics are
// broadcast from rank 0 after every epoch (as DDP's broadcast_buffers), and validation is
// sharded and summed (evaluate's EvalOptions::replicas).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/core/parallel.hpp"
#include "minires/core/rng.hpp"
#include "minires/core/tensor.hpp"
#include "minires/data/dataset.hpp"
#include "minires/graph/model.hpp"
#include "minires/kernels/elementwise.hpp"
#include "minires/loss/loss.hpp"
#include "minires/optim/optimizer.hpp"
#include "minires/optim/schedule.hpp"
#include "minires/train/data_parallel.hpp"
#include "minires/train/evaluate.hpp"
#include "minires/train/precise_bn.hpp"

namespace minires {

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

// What fit() does: the hyper-parameters of the loop, and what runs beside it (validation data,
// callbacks, an interrupt flag), none of them owned. The scalar type defaults to float like the
// layers': FitOptions options; options.validation = val; options.callbacks = {progress, ckpt};
template <class T = float>
struct FitOptions {
  FitOptions(index_t epochs = 1, index_t batch_size = 32)  // 32: Keras' default
      : epochs(epochs), batch_size(batch_size) {}

  index_t epochs;
  index_t batch_size;
  bool shuffle = true;
  std::uint64_t seed = 0;  // shuffling and augmentation
  bool augment = false;    // pass a generator to Dataset::get while training
  Schedule schedule = Schedule::constant();
  index_t initial_epoch = 0;  // resume: epochs before this one count as done
  // After each epoch (before validation), recompute_batch_norm_statistics over this many
  // training batches, drawn in an order seeded from (seed, epoch); 0: keep the momentum
  // averages of training (Keras).
  index_t precise_bn_batches = 0;
  // Evaluated after each epoch (EpochStats::val_loss, val_accuracy); none by default. It must
  // outlive fit().
  std::optional<std::reference_wrapper<const Dataset<T>>> validation;
  // Called in this order at each event (Callback); they must outlive fit().
  std::vector<std::reference_wrapper<Callback<T>>> callbacks;
  // Polled between steps; when it becomes true, fit() stops without finishing the epoch.
  // With replicas, a flag raised on any process stops all of them after the current step.
  std::optional<std::reference_wrapper<const std::atomic<bool>>> interrupt;
  // Data-parallel training over this group (see the header comment); none: one process. The
  // global batch (batch_size) must have at least as many samples as the group has processes;
  // a last batch with fewer is skipped. It must outlive fit().
  std::optional<std::reference_wrapper<Collective>> replicas;
  // With replicas: BatchNorm normalises with the statistics of the whole global batch
  // (synchronised BatchNorm), so N processes train exactly as one. Off: each process uses its
  // shard's statistics (DDP's default), which differ from one process' by the batch size.
  bool sync_batch_norm = false;
};

// Trains `model` (already initialised) on `train`, as `options` say: validating on
// options.validation after each epoch, calling options.callbacks. The optimizer is attached to
// the model's parameters here unless it already was (a resumed optimizer keeps its state).
// Throws NumericalError if the loss stops being finite.
template <class T>
History fit(Model<T>& model, Loss<T>& loss, Optimizer<T>& optimizer, const Dataset<T>& train,
            const FitOptions<T>& options = {}) {
  const Dataset<T>* val = options.validation ? &options.validation->get() : nullptr;
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
  Collective* group = options.replicas ? &options.replicas->get() : nullptr;
  const int ranks = group != nullptr ? group->size() : 1;
  const int rank = group != nullptr ? group->rank() : 0;
  const bool lead = rank == 0;  // runs the callbacks
  if (bs < ranks) {
    throw ValueError("fit: expected a global batch of at least one sample per process (" +
                     std::to_string(ranks) + "), found " + std::to_string(bs));
  }
  const index_t shard = (bs + ranks - 1) / ranks;  // the largest shard of a batch

  model.plan(shard);
  loss.setup(Model<T>::batch_shape(model.output_shape(model.output()), shard));
  if (!optimizer.attached()) optimizer.attach(model.params());
  std::optional<GradientBuckets<T>> buckets;
  if (group != nullptr) {
    broadcast_model(model, *group);
    broadcast_tensors(optimizer.state(), *group);
    buckets.emplace(model.params());
  }
  // Synchronised BatchNorm for this call only (also when it throws).
  struct GroupGuard {
    Model<T>* model = nullptr;
    ~GroupGuard() {
      if (model != nullptr) model->set_statistics_group(nullptr);
    }
  } group_guard;
  if (group != nullptr && options.sync_batch_norm) {
    model.set_statistics_group(group);
    group_guard.model = &model;
  }
  // Weight averaging (Optimizer::set_weight_averaging): between epochs, and when fit() returns
  // or throws, the model holds the averaged weights (validated, checkpointed, returned) and the
  // optimizer holds the raw weights in their place; each epoch swaps them to train the raw weights.
  const bool averaging = optimizer.weight_averaging() > 0.0;

  Tensor<T> x(Model<T>::batch_shape(train.sample_shape(), shard));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(shard));
  std::vector<index_t> order(static_cast<std::size_t>(n));

  FitInfo info{options.epochs, options.initial_epoch, steps, n, val ? val->size() : 0, bs};
  if (lead)
    for (Callback<T>& c : options.callbacks) c.on_train_begin(info);
  History history;
  using clock = std::chrono::steady_clock;
  bool stop_requested = false;  // with replicas: some process's interrupt flag, summed

  for (index_t epoch = options.initial_epoch; epoch < options.epochs; ++epoch) {
    if (lead)
      for (Callback<T>& c : options.callbacks) c.on_epoch_begin(epoch + 1);
    if (averaging) optimizer.swap_averages();  // train the raw weights
    detail::fill_order(order, options.shuffle, detail::epoch_seed(options.seed, epoch, 1));
    // Each process draws its own augmentations (rank 0 the single-process stream).
    Rng augment_rng(detail::epoch_seed(options.seed, epoch, 2 + 4 * std::uint64_t(rank)));
    const auto t0 = clock::now();
    double loss_sum = 0;
    index_t correct = 0, seen = 0;
    EpochStats stats;
    stats.epoch = epoch + 1;
    for (index_t step = 0; step < steps; ++step) {
      const bool interrupted = options.interrupt && options.interrupt->get().load();
      if (group != nullptr ? stop_requested : interrupted) {
        if (averaging) optimizer.swap_averages();
        history.interrupted = true;
        if (lead)
          for (Callback<T>& c : options.callbacks) c.on_train_end(history);
        return history;
      }
      const index_t start = step * bs, batch_m = std::min(bs, n - start);
      if (batch_m < ranks) continue;  // a last batch too small to split (replicas only)
      const auto [first, last] = shard_range(batch_m, rank, ranks);
      const index_t m = last - first;
      x.resize(Model<T>::batch_shape(train.sample_shape(), m));
      train.get(Span<const index_t>(order.data() + start + first, static_cast<std::size_t>(m)), x,
                labels.data(), options.augment ? &augment_rng : nullptr);
      loss.begin_batch(x);

      model.zero_grad();
      const Tensor<T>& logits = model.forward(x, Mode::Train);
      double l = static_cast<double>(loss.forward(
          logits, Span<const std::int32_t>(labels.data(), static_cast<std::size_t>(m))));
      index_t step_correct = 0;
      for (index_t i = 0; i < m; ++i) {
        step_correct +=
            detail::argmax_row(logits.data() + i * k, k) == labels[static_cast<std::size_t>(i)];
      }
      if (group != nullptr) {  // the global batch's figures, and any process's interrupt
        double figures[3] = {l * static_cast<double>(m), static_cast<double>(step_correct),
                             interrupted ? 1.0 : 0.0};
        group->sum(figures, 3);
        l = figures[0] / static_cast<double>(batch_m);
        step_correct = static_cast<index_t>(figures[1]);
        stop_requested = figures[2] > 0.0;
      }
      if (!std::isfinite(l)) {
        if (averaging) optimizer.swap_averages();  // as after an epoch: the averages in the model
        throw NumericalError("fit: the loss became " + std::to_string(l) + " at epoch " +
                             std::to_string(epoch + 1) + ", step " + std::to_string(step + 1) +
                             "; training stopped (checkpoints written so far are unchanged)");
      }
      correct += step_correct;
      if (group == nullptr) {
        model.backward(loss);
      } else {
        // This shard's mean-loss gradient, scaled to its share of the global batch's mean.
        Tensor<T>& dlogits = model.output_grad();
        loss.backward(dlogits);
        kernels::scale(static_cast<T>(static_cast<double>(m) / static_cast<double>(batch_m)),
                       dlogits.data(), dlogits.size());
        model.backward();
        buckets->sum(*group);
      }
      stats.learning_rate = options.schedule.at(base_lr, epoch * steps + step, steps);
      optimizer.set_learning_rate(stats.learning_rate);
      optimizer.step();

      loss_sum += l * static_cast<double>(batch_m);
      seen += batch_m;
      BatchProgress p{epoch + 1,
                      step + 1,
                      steps,
                      seen,
                      loss_sum / static_cast<double>(seen),
                      static_cast<double>(correct) / static_cast<double>(seen),
                      std::chrono::duration<double>(clock::now() - t0).count()};
      if (lead)
        for (Callback<T>& c : options.callbacks) c.on_batch_end(p);
    }
    if (averaging) optimizer.swap_averages();  // validate and checkpoint the averaged weights
    // Per-process BatchNorm statistics differ: all take rank 0's (synchronised ones agree).
    if (group != nullptr) broadcast_tensors(model.state(), *group);
    if (options.precise_bn_batches > 0) {
      recompute_batch_norm_statistics(model, train, options.precise_bn_batches, bs,
                                      detail::epoch_seed(options.seed, epoch, 3));
    }
    stats.seconds = std::chrono::duration<double>(clock::now() - t0).count();
    stats.train_loss = seen > 0 ? loss_sum / static_cast<double>(seen) : 0.0;
    stats.train_accuracy =
        seen > 0 ? static_cast<double>(correct) / static_cast<double>(seen) : 0.0;
    stats.images_per_second = stats.seconds > 0 ? static_cast<double>(seen) / stats.seconds : 0.0;
    if (val != nullptr && val->size() > 0) {
      EvalOptions eval_options;
      eval_options.batch_size = shard;  // the planned buffers
      eval_options.replicas = group;
      const EvalResult r = evaluate(model, *val, eval_options);
      stats.val_loss = r.loss;
      stats.val_accuracy = r.accuracy;
    }
    history.epochs.push_back(stats);
    bool go_on = true;
    if (lead)
      for (Callback<T>& c : options.callbacks)
        go_on = c.on_epoch_end(stats, model, optimizer) && go_on;
    if (group != nullptr) {  // rank 0's callbacks decide for all
      double flag = go_on ? 1.0 : 0.0;
      group->broadcast(&flag, 1, 0);
      go_on = flag > 0.0;
    }
    if (!go_on) {
      history.stopped_early = true;
      break;
    }
  }
  optimizer.set_learning_rate(base_lr);
  if (lead)
    for (Callback<T>& c : options.callbacks) c.on_train_end(history);
  return history;
}

}  // namespace minires
