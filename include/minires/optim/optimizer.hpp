// Optimizer<T>: updates a set of named parameters from their gradients. attach() binds the
// parameters and sizes the per-parameter state (zeroed) once; step() allocates nothing.
// The learning rate is a plain value the training loop (or a schedule) may change between
// steps. state() exposes the slots and the iteration count by name, for checkpoints.
//
// Weight averaging (set_weight_averaging(decay), off by default): after every step the
// optimizer also updates an exponential moving average of each parameter,
//   a_t = d_t * a_{t-1} + (1 - d_t) * p_t,   d_t = min(decay, (1 + t) / (10 + t)),
// t the steps taken before this one (TensorFlow's ExponentialMovingAverage with num_updates,
// so the average is not dominated by the initial weights early on), starting from a_0 = the
// weights at attach(). swap_averages() exchanges every parameter with its average; fit() uses
// it to validate and checkpoint the averaged weights while training the raw ones. The averages
// are part of state() ("<param>/average"), so checkpoints resume them.
//
// Weight decay on vectors (set_decay_vectors, on by default as in Keras and PyTorch): off
// exempts every one-dimensional parameter (biases, BatchNorm's gamma and beta) from the
// optimizer's weight decay, the "no bias decay" of Goyal et al. 2017 and He et al. 2019;
// kernels and Dense weights decay as before.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/core/tensor.hpp"
#include "minires/layers/layer.hpp"

namespace minires {

template <class T>
class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // "RMSprop", "SGD", "Adam", "AdamW"
  virtual const char* name() const = 0;
  // One-line hyper-parameters, e.g. "lr=0.001 rho=0.9 epsilon=1e-08".
  virtual std::string config() const = 0;

  // Binds the optimizer to `params` (each with a gradient) and zeroes its state.
  void attach(std::vector<ParamRef<T>> params) {
    for (const auto& p : params) {
      if (p.value == nullptr || p.grad == nullptr || p.value->shape() != p.grad->shape()) {
        throw ValueError(std::string(name()) + ": parameter '" + p.name +
                         "' needs a value and a gradient of the same shape");
      }
    }
    params_ = std::move(params);
    slots_.clear();
    slots_.resize(params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
      for (int s = 0; s < num_slots(); ++s) slots_[i].emplace_back(params_[i].value->shape());
    }
    iterations_.resize(Shape{1});
    iterations_.zero();
    steps_ = 0;
    stored_steps_ = T(0);
    reset_averages();
  }

  bool attached() const noexcept { return !iterations_.empty(); }

  // Applies one update to every attached parameter.
  void step() {
    if (params_.empty()) throw ValueError(std::string(name()) + ": step() before attach()");
    steps_ = iterations();  // a checkpoint may have been loaded into iterations_
    const double t = static_cast<double>(steps_);
    ++steps_;
    iterations_[0] = stored_steps_ = static_cast<T>(steps_);
    for (std::size_t i = 0; i < params_.size(); ++i) {
      update(*params_[i].value, *params_[i].grad, slots_[i]);
    }
    if (average_decay_ > 0.0) {
      const T d = static_cast<T>(std::min(average_decay_, (1.0 + t) / (10.0 + t)));
      for (std::size_t i = 0; i < params_.size(); ++i) {
        const Tensor<T>& p = *params_[i].value;
        Tensor<T>& a = averages_[i];
        for (index_t k = 0; k < p.size(); ++k) a[k] = d * a[k] + (T(1) - d) * p[k];
      }
    }
  }

  // Turns weight averaging on (0 < decay < 1) or off (0); see the header comment. When the
  // optimizer is attached, the averages restart from the current weights.
  void set_weight_averaging(double decay) {
    if (!(decay >= 0.0 && decay < 1.0)) {
      throw ValueError(std::string(name()) +
                       ": expected a weight-averaging decay in [0, 1), found " +
                       std::to_string(decay));
    }
    average_decay_ = decay;
    reset_averages();
  }
  double weight_averaging() const noexcept { return average_decay_; }

  // Whether weight decay applies to one-dimensional parameters (see the header comment).
  void set_decay_vectors(bool on) noexcept { decay_vectors_ = on; }
  bool decay_vectors() const noexcept { return decay_vectors_; }

  // Exchanges every attached parameter with its average (applied twice, it restores both).
  void swap_averages() {
    if (average_decay_ <= 0.0) {
      throw ValueError(std::string(name()) + ": swap_averages() without weight averaging");
    }
    for (std::size_t i = 0; i < params_.size(); ++i) {
      Tensor<T>& p = *params_[i].value;
      std::swap_ranges(p.data(), p.data() + p.size(), averages_[i].data());
    }
  }

  double learning_rate() const noexcept { return lr_; }
  void set_learning_rate(double lr) { lr_ = checked_lr(name(), lr); }
  // Steps taken since attach() (or as restored from a checkpoint). Counted in an integer, so
  // exactly at any count; the checkpoint's copy ("iterations", a tensor of T) is exact up to
  // 2^24 steps in float and 2^53 in double, and a count loaded from it is taken as it is.
  long long iterations() const noexcept {
    if (iterations_.empty()) return 0;
    if (iterations_[0] != stored_steps_) return std::llround(iterations_[0]);  // loaded
    return steps_;
  }

  // The optimizer's state as named tensors: per parameter "<param>/<slot>" (then
  // "<param>/average" with weight averaging), and "iterations".
  std::vector<ParamRef<T>> state() {
    std::vector<ParamRef<T>> out;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      for (int s = 0; s < num_slots(); ++s) {
        out.push_back({params_[i].name + "/" + slot_name(s),
                       &slots_[i][static_cast<std::size_t>(s)], nullptr});
      }
      if (i < averages_.size())
        out.push_back({params_[i].name + "/average", &averages_[i], nullptr});
    }
    out.push_back({"iterations", &iterations_, nullptr});
    return out;
  }

 protected:
  // The weight decay `update` applies to parameter p: `weight_decay`, or 0 for a vector when
  // decay_vectors() is off.
  double decay_for(const Tensor<T>& p, double weight_decay) const noexcept {
    return decay_vectors_ || p.shape().rank() > 1 ? weight_decay : 0.0;
  }
  // " decay_vectors=false" when off (appended to config()), else nothing.
  std::string decay_vectors_config() const {
    return decay_vectors_ ? std::string() : std::string(" decay_vectors=false");
  }

  // `optimizer` names the optimizer in messages (virtual calls are not possible here).
  Optimizer(const char* optimizer, double lr) : lr_(checked_lr(optimizer, lr)) {}

  static double checked_lr(const char* optimizer, double lr) {
    if (!(lr >= 0.0) || !std::isfinite(lr)) {
      throw ValueError(std::string(optimizer) + ": expected a finite learning rate >= 0, found " +
                       std::to_string(lr));
    }
    return lr;
  }

  virtual int num_slots() const = 0;
  virtual const char* slot_name(int s) const = 0;
  virtual void update(Tensor<T>& p, const Tensor<T>& g, std::vector<Tensor<T>>& slots) = 0;

  static void check_range(const char* opt, const char* what, double v, double lo, double hi) {
    if (!(v >= lo && v <= hi)) {
      throw ValueError(std::string(opt) + ": expected " + what + " in [" + std::to_string(lo) +
                       ", " + std::to_string(hi) + "], found " + std::to_string(v));
    }
  }
  static std::string fmt(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v);
    return buf;
  }

 private:
  // The averages start as copies of the weights (none while averaging is off).
  void reset_averages() {
    averages_.clear();
    if (average_decay_ <= 0.0) return;
    for (const auto& p : params_) averages_.push_back(p.value->clone());
  }

  std::vector<ParamRef<T>> params_;
  std::vector<std::vector<Tensor<T>>> slots_;
  std::vector<Tensor<T>> averages_;
  Tensor<T> iterations_;   // the step count as saved in checkpoints
  long long steps_ = 0;    // the exact step count
  T stored_steps_ = T(0);  // what step() last wrote into iterations_
  double lr_ = 0.0;
  double average_decay_ = 0.0;
  bool decay_vectors_ = true;
};

}  // namespace minires
