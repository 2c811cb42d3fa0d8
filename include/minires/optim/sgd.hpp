// SGD with optional momentum and Nesterov momentum, Keras 2.0 form:
//   v <- momentum*v - lr*g ;  p <- p + v   (Nesterov: p <- p + momentum*v - lr*g)
// weight_decay adds wd*p to g (L2).
#pragma once

#include "minires/kernels/optim.hpp"
#include "minires/optim/optimizer.hpp"

namespace minires {

struct SGDOptions {
  double lr = 0.01;
  double momentum = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;
};

template <class T>
class SGD : public Optimizer<T> {
 public:
  explicit SGD(SGDOptions o = {}) : Optimizer<T>("SGD", o.lr), o_(o) {
    this->check_range("SGD", "momentum", o.momentum, 0.0, 1.0);
    this->check_range("SGD", "weight_decay", o.weight_decay, 0.0, 1.0);
    if (o.nesterov && o.momentum == 0.0) {
      throw ValueError("SGD: Nesterov momentum needs momentum > 0, found 0");
    }
  }
  const char* name() const override { return "SGD"; }
  std::string config() const override {
    return "lr=" + this->fmt(this->learning_rate()) + " momentum=" + this->fmt(o_.momentum) +
           " nesterov=" + (o_.nesterov ? "true" : "false") +
           " weight_decay=" + this->fmt(o_.weight_decay) + this->decay_vectors_config();
  }

 protected:
  int num_slots() const override { return 1; }
  const char* slot_name(int) const override { return "velocity"; }
  void update(Tensor<T>& p, const Tensor<T>& g, std::vector<Tensor<T>>& s) override {
    kernels::sgd_update(p.data(), g.data(), s[0].data(), p.size(), T(this->learning_rate()),
                        T(o_.momentum), o_.nesterov, T(this->decay_for(p, o_.weight_decay)));
  }

 private:
  SGDOptions o_;
};

}  // namespace minires
