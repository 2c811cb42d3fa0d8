// RMSprop with Keras 2.0 semantics and defaults (Keras 2.0 optimizers.RMSprop):
//   a <- rho*a + (1 - rho)*g^2 ;  p <- p - lr * g / (sqrt(a) + epsilon),  a starts at 0.
// Keras 2.0.x uses epsilon 1e-8; Keras >= 2.1.3 uses 1e-7. weight_decay adds wd*p to g.
#pragma once

#include "minires/kernels/optim.hpp"
#include "minires/optim/optimizer.hpp"

namespace minires {

struct RMSpropOptions {
  double lr = 1e-3;
  double rho = 0.9;
  double epsilon = 1e-8;
  double weight_decay = 0.0;
};

template <class T>
class RMSprop : public Optimizer<T> {
 public:
  explicit RMSprop(RMSpropOptions o = {}) : Optimizer<T>("RMSprop", o.lr), o_(o) {
    this->check_range("RMSprop", "rho", o.rho, 0.0, 1.0);
    this->check_range("RMSprop", "epsilon", o.epsilon, 0.0, 1.0);
    this->check_range("RMSprop", "weight_decay", o.weight_decay, 0.0, 1.0);
  }
  const char* name() const override { return "RMSprop"; }
  std::string config() const override {
    return "lr=" + this->fmt(this->learning_rate()) + " rho=" + this->fmt(o_.rho) +
           " epsilon=" + this->fmt(o_.epsilon) + " weight_decay=" + this->fmt(o_.weight_decay) +
           this->decay_vectors_config();
  }

 protected:
  int num_slots() const override { return 1; }
  const char* slot_name(int) const override { return "accumulator"; }
  void update(Tensor<T>& p, const Tensor<T>& g, std::vector<Tensor<T>>& s) override {
    kernels::rmsprop_update(p.data(), g.data(), s[0].data(), p.size(), T(this->learning_rate()),
                            T(o_.rho), T(o_.epsilon), T(this->decay_for(p, o_.weight_decay)));
  }

 private:
  RMSpropOptions o_;
};

}  // namespace minires
