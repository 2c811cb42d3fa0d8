// Adam (Keras 2.0 form) and AdamW (decoupled weight decay, Loshchilov & Hutter):
//   t <- t + 1 ;  lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
//   m <- beta1*m + (1 - beta1)*g ;  v <- beta2*v + (1 - beta2)*g^2
//   p <- p - lr_t * m / (sqrt(v) + epsilon)
// Adam's weight_decay is L2 (g += wd*p); AdamW's shrinks p by lr*wd before the step.
#pragma once

#include <cmath>

#include "minires/kernels/optim.hpp"
#include "minires/optim/optimizer.hpp"

namespace minires {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double epsilon = 1e-8;
  double weight_decay = 0.0;
};

// How Adam applies weight decay: as an L2 term added to the gradient (Adam, Keras), or
// decoupled from the gradient, shrinking the weights by lr * weight_decay before the step (AdamW).
enum class WeightDecay { L2, Decoupled };

template <class T>
class Adam : public Optimizer<T> {
 public:
  explicit Adam(AdamOptions o = {}) : Adam(o, WeightDecay::L2) {}
  Adam(AdamOptions o, WeightDecay mode)
      : Optimizer<T>(mode == WeightDecay::Decoupled ? "AdamW" : "Adam", o.lr),
        o_(o),
        decoupled_(mode == WeightDecay::Decoupled) {
    const bool decoupled = decoupled_;
    this->check_range(decoupled ? "AdamW" : "Adam", "beta1", o.beta1, 0.0, 1.0 - 1e-12);
    this->check_range(decoupled ? "AdamW" : "Adam", "beta2", o.beta2, 0.0, 1.0 - 1e-12);
    this->check_range(decoupled ? "AdamW" : "Adam", "epsilon", o.epsilon, 0.0, 1.0);
    this->check_range(decoupled ? "AdamW" : "Adam", "weight_decay", o.weight_decay, 0.0, 1.0);
  }
  const char* name() const override { return decoupled_ ? "AdamW" : "Adam"; }
  std::string config() const override {
    return "lr=" + this->fmt(this->learning_rate()) + " beta1=" + this->fmt(o_.beta1) +
           " beta2=" + this->fmt(o_.beta2) + " epsilon=" + this->fmt(o_.epsilon) +
           " weight_decay=" + this->fmt(o_.weight_decay) + this->decay_vectors_config();
  }

 protected:
  int num_slots() const override { return 2; }
  const char* slot_name(int s) const override { return s == 0 ? "m" : "v"; }
  void update(Tensor<T>& p, const Tensor<T>& g, std::vector<Tensor<T>>& s) override {
    const double t = static_cast<double>(this->iterations());
    const double lr = this->learning_rate();
    const double wd = this->decay_for(p, o_.weight_decay);
    const double lr_t = lr * std::sqrt(1.0 - std::pow(o_.beta2, t)) / (1.0 - std::pow(o_.beta1, t));
    kernels::adam_update(p.data(), g.data(), s[0].data(), s[1].data(), p.size(), T(lr_t),
                         T(o_.beta1), T(o_.beta2), T(o_.epsilon), T(decoupled_ ? 0.0 : wd),
                         T(decoupled_ ? lr * wd : 0.0));
  }

 private:
  AdamOptions o_;
  bool decoupled_;
};

// AdamW: Adam with decoupled weight decay.
template <class T>
class AdamW : public Adam<T> {
 public:
  explicit AdamW(AdamOptions o = {}) : Adam<T>(o, WeightDecay::Decoupled) {}
};

}  // namespace minires
