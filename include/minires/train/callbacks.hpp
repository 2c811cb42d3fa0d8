// Callbacks for fit(): a progress display, checkpoints, early stopping.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>

#include "minires/io/checkpoint.hpp"
#include "minires/train/fit.hpp"

namespace minires {

// Shows training progress. On a terminal: a live bar per epoch (images/s, running loss and
// accuracy, ETA), redrawn at most ten times a second. Elsewhere (a pipe, a log file): plain
// lines, one per epoch. Either way each epoch ends with a summary line.
template <class T>
class ProgressBar : public Callback<T> {
 public:
  explicit ProgressBar(std::FILE* out = stdout) : ProgressBar(out, ::isatty(::fileno(out)) == 1) {}
  ProgressBar(std::FILE* out, bool live) : out_(out), live_(live) {}

  void on_train_begin(const FitInfo& info) override { info_ = info; }

  void on_batch_end(const BatchProgress& p) override {
    if (!live_) return;
    const auto now = std::chrono::steady_clock::now();
    if (p.step != p.steps && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    const int width = 24;
    const int filled = static_cast<int>(width * p.step / std::max<index_t>(p.steps, 1));
    std::string bar(static_cast<std::size_t>(filled), '=');
    if (filled < width) bar += '>';
    bar.resize(static_cast<std::size_t>(width), ' ');
    const double rate = p.seconds > 0 ? static_cast<double>(p.samples) / p.seconds : 0.0;
    const double eta =
        p.step > 0 ? p.seconds * static_cast<double>(p.steps - p.step) / static_cast<double>(p.step)
                   : 0.0;
    std::fprintf(out_, "\r%s [%s] %lld/%lld  loss %.4f  acc %.4f  %.0f img/s  ETA %s \033[K",
                 epoch_label(p.epoch).c_str(), bar.c_str(), static_cast<long long>(p.step),
                 static_cast<long long>(p.steps), p.loss, p.accuracy, rate, clock_str(eta).c_str());
    std::fflush(out_);
  }

  bool on_epoch_end(const EpochStats& s, Model<T>&, Optimizer<T>&) override {
    if (live_) std::fputs("\r\033[K", out_);
    std::fprintf(out_, "%s  loss %.4f  acc %.4f", epoch_label(s.epoch).c_str(), s.train_loss,
                 s.train_accuracy);
    if (!std::isnan(s.val_loss))
      std::fprintf(out_, "  val_loss %.4f  val_acc %.4f", s.val_loss, s.val_accuracy);
    std::fprintf(out_, "  %.1fs  %.0f img/s  lr %.3g\n", s.seconds, s.images_per_second,
                 s.learning_rate);
    std::fflush(out_);
    return true;
  }

 private:
  std::string epoch_label(index_t epoch) const {
    return "epoch " + std::to_string(epoch) + "/" + std::to_string(info_.epochs);
  }
  static std::string clock_str(double seconds) {
    const long s = static_cast<long>(seconds + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    return buf;
  }

  std::FILE* out_;
  bool live_;
  FitInfo info_;
  std::chrono::steady_clock::time_point last_draw_{};
};

// Which figure a callback watches: validation accuracy/loss, or the training ones when there is
// no validation set.
enum class Monitor { ValAccuracy, ValLoss };

inline double monitored(const EpochStats& s, Monitor m) {
  const bool acc = m == Monitor::ValAccuracy;
  const double v = acc ? s.val_accuracy : s.val_loss;
  if (!std::isnan(v)) return v;
  return acc ? s.train_accuracy : s.train_loss;
}
inline bool improves(Monitor m, double candidate, double best, double min_delta = 0.0) {
  return m == Monitor::ValAccuracy ? candidate > best + min_delta : candidate < best - min_delta;
}

// Saves the model (with optimizer state, for resuming) after every epoch to `last_path`, and to
// `best_path` whenever the monitored figure improves. Saves are atomic: an interrupted run
// leaves the previous complete checkpoint in place. Metadata records the epoch and figures;
// `extra` is added to it (e.g. the configuration, to resume with).
template <class T>
class ModelCheckpoint : public Callback<T> {
 public:
  ModelCheckpoint(std::string last_path, std::string best_path,
                  Monitor monitor = Monitor::ValAccuracy, Metadata extra = {})
      : last_(std::move(last_path)),
        best_(std::move(best_path)),
        monitor_(monitor),
        extra_(std::move(extra)) {}

  // Replaces the extra metadata written from the next epoch on.
  void set_extra(Metadata extra) { extra_ = std::move(extra); }

  // Continue from an earlier run whose best figure `best` was reached at `epoch`: only
  // improvements over it are saved as best, and best_epoch() stays `epoch` until then.
  void set_best(double best, index_t epoch) {
    best_value_ = best;
    best_epoch_ = epoch;
    has_best_ = true;
  }
  double best() const noexcept { return best_value_; }
  index_t best_epoch() const noexcept { return best_epoch_; }

  bool on_epoch_end(const EpochStats& s, Model<T>& model, Optimizer<T>& optimizer) override {
    Metadata meta = extra_;
    meta["epoch"] = std::to_string(s.epoch);
    meta["train_loss"] = std::to_string(s.train_loss);
    meta["train_accuracy"] = std::to_string(s.train_accuracy);
    meta["val_loss"] = std::to_string(s.val_loss);
    meta["val_accuracy"] = std::to_string(s.val_accuracy);
    const double v = monitored(s, monitor_);
    if (!has_best_ || improves(monitor_, v, best_value_)) {
      best_value_ = v;
      best_epoch_ = s.epoch;
      has_best_ = true;
      meta["best"] = std::to_string(v);
      meta["best_epoch"] = std::to_string(s.epoch);
      if (!best_.empty()) save(model, best_, meta, &optimizer);
    }
    meta["best"] = std::to_string(best_value_);
    meta["best_epoch"] = std::to_string(best_epoch_);
    if (!last_.empty()) save(model, last_, meta, &optimizer);
    return true;
  }

 private:
  std::string last_, best_;
  Monitor monitor_;
  Metadata extra_;
  double best_value_ = 0;
  index_t best_epoch_ = 0;
  bool has_best_ = false;
};

// Stops training when the monitored figure has not improved by min_delta for `patience` epochs.
template <class T>
class EarlyStopping : public Callback<T> {
 public:
  explicit EarlyStopping(index_t patience, Monitor monitor = Monitor::ValLoss,
                         double min_delta = 0.0)
      : patience_(patience), monitor_(monitor), min_delta_(min_delta) {
    if (patience < 0)
      throw ValueError("EarlyStopping: expected patience >= 0, found " + std::to_string(patience));
  }
  bool on_epoch_end(const EpochStats& s, Model<T>&, Optimizer<T>&) override {
    const double v = monitored(s, monitor_);
    if (!has_best_ || improves(monitor_, v, best_, min_delta_)) {
      best_ = v;
      has_best_ = true;
      waited_ = 0;
      return true;
    }
    return ++waited_ <= patience_;
  }

 private:
  index_t patience_;
  Monitor monitor_;
  double min_delta_;
  double best_ = 0;
  bool has_best_ = false;
  index_t waited_ = 0;
};

}  // namespace minires
