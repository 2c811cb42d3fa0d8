// Learning-rate schedules: a function of the step (0-based, counted over the whole run) that
// scales the base learning rate, optionally after a linear warm-up.
//   constant:  lr
//   step:      lr * factor^floor(epoch / every_epochs)
//   cosine:    min_lr + (lr - min_lr) * (1 + cos(pi * s / S)) / 2,
//              s = step - warmup, S = total - warmup
//   warm-up:   lr * (step + 1) / warmup_steps for the first warmup_steps steps
#pragma once

#include <algorithm>
#include <cmath>
#include <string>

#include "minires/core/error.hpp"
#include "minires/core/shape.hpp"

namespace minires {

class Schedule {
 public:
  enum class Kind { Constant, Step, Cosine };

  static Schedule constant() { return Schedule(Kind::Constant); }
  static Schedule step(index_t every_epochs, double factor) {
    if (every_epochs < 1 || !(factor > 0.0 && factor <= 1.0)) {
      throw ValueError("Schedule::step: expected every_epochs >= 1 and factor in (0, 1], found " +
                       std::to_string(every_epochs) + " and " + std::to_string(factor));
    }
    Schedule s(Kind::Step);
    s.every_epochs_ = every_epochs;
    s.factor_ = factor;
    return s;
  }
  static Schedule cosine(index_t total_steps, double min_lr = 0.0) {
    if (total_steps < 1 || min_lr < 0.0) {
      throw ValueError("Schedule::cosine: expected total_steps >= 1 and min_lr >= 0, found " +
                       std::to_string(total_steps) + " and " + std::to_string(min_lr));
    }
    Schedule s(Kind::Cosine);
    s.total_steps_ = total_steps;
    s.min_lr_ = min_lr;
    return s;
  }
  // Adds a linear warm-up over the first `steps` steps.
  Schedule& warmup(index_t steps) {
    if (steps < 0)
      throw ValueError("Schedule::warmup: expected steps >= 0, found " + std::to_string(steps));
    warmup_ = steps;
    return *this;
  }

  Kind kind() const noexcept { return kind_; }

  // The learning rate at `step` (0-based) given the base rate and the steps in one epoch.
  double at(double base_lr, index_t step, index_t steps_per_epoch) const {
    if (step < warmup_)
      return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_);
    switch (kind_) {
      case Kind::Constant:
        return base_lr;
      case Kind::Step: {
        const index_t epoch = step / std::max<index_t>(steps_per_epoch, 1);
        return base_lr * std::pow(factor_, static_cast<double>(epoch / every_epochs_));
      }
      case Kind::Cosine: {
        const double span = static_cast<double>(std::max<index_t>(total_steps_ - warmup_, 1));
        const double s = std::min(static_cast<double>(step - warmup_), span);
        return min_lr_ +
               (base_lr - min_lr_) * 0.5 * (1.0 + std::cos(3.14159265358979323846 * s / span));
      }
    }
    return base_lr;
  }

  std::string str() const {
    std::string s = kind_ == Kind::Constant ? "constant"
                    : kind_ == Kind::Step   ? "step(every " + std::to_string(every_epochs_) +
                                                " epochs x" + std::to_string(factor_) + ")"
                                          : "cosine(" + std::to_string(total_steps_) + " steps)";
    if (warmup_ > 0) s += " + warmup(" + std::to_string(warmup_) + " steps)";
    return s;
  }

 private:
  explicit Schedule(Kind k) : kind_(k) {}
  Kind kind_;
  index_t every_epochs_ = 1;
  double factor_ = 1.0;
  index_t total_steps_ = 1;
  double min_lr_ = 0.0;
  index_t warmup_ = 0;
};

}  // namespace minires
