// BatchNorm<T>: batch normalisation (Keras 2.0 BatchNormalization; PyTorch nn.BatchNorm2d /
// BatchNorm1d with eps=1e-3, momentum=0.01, but a biased moving variance).
//
//   x: (N, C, H, W), statistics per channel over (N, H, W)    or    x: (N, C), per feature over N
//   Mode::Train:  y = γ·(x − mean)/sqrt(var + ε) + β with the batch mean and biased variance;
//                 moving_mean     = momentum·moving_mean     + (1 − momentum)·mean
//                 moving_variance = momentum·moving_variance + (1 − momentum)·var
//   Mode::Infer:  y = γ·(x − moving_mean)/sqrt(moving_variance + ε) + β
//   averaging:    (set_averaging(true), for recompute_batch_norm_statistics) Mode::Train sets the
//                 moving statistics to the plain average of the k batch statistics seen since:
//                 moving = (k−1)/k·moving + 1/k·batch  instead of the momentum average
//   group:        (set_statistics_group, synchronised BatchNorm in data-parallel training) the
//                 batch statistics and the backward's sums are those of the whole batch, split
//                 over the processes of a Collective: N processes compute what one would
//
// Defaults as Keras 2.0.0–2.1.3: momentum 0.99, ε 1e-3, γ = 1, β = 0, moving mean 0, moving
// variance 1; the moving variance is fed the biased batch variance (Keras 2.1.4+ and PyTorch
// feed the unbiased one). Math in kernels/batch_norm.hpp.
//
//   BatchNorm<float> bn;                               // Keras defaults
//   BatchNorm<float> fast(BatchNormOptions{0.9, 1e-5});  // momentum 0.9, epsilon 1e-5
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "minires/core/collective.hpp"
#include "minires/kernels/batch_norm.hpp"
#include "minires/layers/unary_layer.hpp"

namespace minires {

struct BatchNormOptions {
  double momentum = 0.99;   // weight of the old moving statistics
  double epsilon = 1e-3;    // added to the variance
  double gamma_init = 1.0;  // gamma's initial value (0: the layer starts by outputting beta)
};

template <class T = float>
class BatchNorm : public UnaryLayer<T> {
 public:
  // Trainable scale and shift with their gradients, and the moving statistics (state); all
  // (C,), sized by the first setup().
  Tensor<T> gamma, dgamma, beta, dbeta;
  Tensor<T> moving_mean, moving_variance;

  explicit BatchNorm(const BatchNormOptions& options = {}) : options_(options) {
    if (!(options.momentum >= 0.0 && options.momentum <= 1.0)) {
      throw ValueError("BatchNormalization: expected a momentum in [0, 1], found " +
                       std::to_string(options.momentum));
    }
    if (!std::isfinite(options.gamma_init)) {
      throw ValueError("BatchNormalization: expected a finite gamma_init, found " +
                       std::to_string(options.gamma_init));
    }
    if (!(options.epsilon > 0.0)) {
      throw ValueError("BatchNormalization: expected epsilon > 0, found " +
                       std::to_string(options.epsilon));
    }
  }

  const char* type() const override { return "BatchNormalization"; }

  // "momentum=0.99 epsilon=0.001"
  std::string config() const override {
    char s[64];
    std::snprintf(s, sizeof s, "momentum=%g epsilon=%g", options_.momentum, options_.epsilon);
    return s;
  }
  const BatchNormOptions& options() const noexcept { return options_; }

  // Statistics of the last forward pass, per channel, in double: the batch mean and biased
  // variance after Mode::Train; mean and rstd are what backward uses (the moving statistics
  // after Mode::Infer).
  const Tensor<double>& batch_mean() const noexcept { return mean_; }
  const Tensor<double>& batch_variance() const noexcept { return var_; }
  const Tensor<double>& rstd() const noexcept { return rstd_; }

  Shape output_shape(Span<const Shape> inputs) const override {
    this->expect_inputs(inputs, 1);
    const Shape& s = inputs[0];
    if (s.rank() != 2 && s.rank() != 4) {
      throw ShapeError(
          "BatchNormalization: expected a rank-2 (N, features) or rank-4 (N, C, H, W) "
          "input, found shape " +
          s.str() + " of rank " + std::to_string(s.rank()));
    }
    if (s[1] < 1) {
      throw ShapeError("BatchNormalization: expected at least 1 channel, found " + s.str());
    }
    if (!gamma.empty() && s[1] != gamma.dim(0)) {
      throw ShapeError("BatchNormalization: expected an input with " +
                       std::to_string(gamma.dim(0)) + " channels (as set up), found " + s.str());
    }
    return s;
  }

  void setup(Span<const Shape> inputs) override {
    this->plan(inputs);
    const index_t c = inputs[0][1];
    if (gamma.empty()) {
      for (Tensor<T>* t : {&gamma, &dgamma, &beta, &dbeta, &moving_mean, &moving_variance}) {
        t->resize(Shape{c});
      }
      reset_state();
    }
    for (Tensor<double>* t : {&mean_, &var_, &rstd_}) t->resize(Shape{c});
    group_sums_.resize(Shape{2 * c + 1});
    has_forward_ = false;
  }

  // γ = gamma_init (1 by default), β = 0, moving mean 0, moving variance 1 (draws nothing from
  // rng).
  void init(Rng& /*rng*/) override {
    if (gamma.empty()) {
      throw Error("BatchNormalization: expected setup() before init(), found no parameters");
    }
    reset_state();
  }

  // While on, each Mode::Train forward averages its batch statistics into the moving ones with
  // equal weights (the first batch replaces them): after k batches they hold the mean of the k
  // batch means and of the k batch variances. Switching (on or off) restarts the count.
  void set_averaging(bool on) noexcept {
    averaging_ = on;
    averaged_ = 0;
  }
  bool averaging() const noexcept { return averaging_; }
  bool set_statistics_averaging(bool on) override {
    set_averaging(on);
    return true;
  }

  // Synchronised BatchNorm: while a group is set, Mode::Train uses the statistics of the batch
  // of the whole group (every process calls forward and backward in step). null: this
  // process's batch only (the default).
  bool set_statistics_group(Collective* group) override {
    group_ = group;
    return true;
  }
  Collective* statistics_group() const noexcept { return group_; }

  bool can_fuse_relu() const override { return true; }
  void set_fused_relu(bool on) override { fused_relu_ = on; }
  bool fused_relu() const override { return fused_relu_; }

  bool can_overwrite_gradients() const override { return true; }

  // Mode::Infer is y = x·scale + shift per channel: scale = γ/sqrt(moving_variance + ε),
  // shift = β − moving_mean·scale (in double, rounded once).
  bool is_inference_affine() const override { return true; }
  void inference_affine(T* scale, T* shift) const override {
    for (index_t c = 0; c < gamma.size(); ++c) {
      const double s = static_cast<double>(gamma[c]) /
                       std::sqrt(static_cast<double>(moving_variance[c]) + options_.epsilon);
      scale[c] = static_cast<T>(s);
      shift[c] =
          static_cast<T>(static_cast<double>(beta[c]) - static_cast<double>(moving_mean[c]) * s);
    }
  }

  // Train: normalise with the batch statistics and update the moving ones.
  // Infer: normalise with the moving statistics.
  void forward(Span<const Tensor<T>* const> x, Tensor<T>& y, Mode mode) override {
    const Tensor<T>& in = this->forward_input(x, y);
    const auto d = dims(in.shape());
    if (mode == Mode::Train && group_ != nullptr) {
      group_count_ = kernels::batch_norm_forward_train_group(
          in.data(), d, gamma.data(), beta.data(), options_.epsilon, y.data(), mean_.data(),
          var_.data(), rstd_.data(), fused_relu_, group_sums_.data(), group_reduce());
    } else if (mode == Mode::Train) {
      kernels::batch_norm_forward_train(in.data(), d, gamma.data(), beta.data(), options_.epsilon,
                                        y.data(), mean_.data(), var_.data(), rstd_.data(),
                                        fused_relu_);
    }
    if (mode == Mode::Train) {
      double momentum = options_.momentum;
      if (averaging_) {
        momentum = static_cast<double>(averaged_) / static_cast<double>(averaged_ + 1);
        ++averaged_;
      }
      kernels::batch_norm_update_moving(mean_.data(), d.channels, momentum, moving_mean.data());
      kernels::batch_norm_update_moving(var_.data(), d.channels, momentum, moving_variance.data());
    } else {
      kernels::batch_norm_forward_infer(in.data(), d, gamma.data(), beta.data(), moving_mean.data(),
                                        moving_variance.data(), options_.epsilon, y.data(),
                                        mean_.data(), rstd_.data(), fused_relu_);
    }
    last_mode_ = mode;
    has_forward_ = true;
  }

  // Per channel, m values, x̂ = (x − mean)·rstd with the statistics the forward used:
  //   dβ += Σ dy      dγ += Σ dy·x̂
  //   after Train:  dx += (γ·rstd/m)·(m·dy − Σdy − x̂·Σ(dy·x̂))   (through the batch statistics)
  //   after Infer:  dx += γ·rstd·dy                               (statistics are constants)
  // The moving statistics get no gradient. With a fused ReLU, y is the ReLU's output and dy its
  // gradient: the BatchNorm's own output gradient is dy·[y > 0]. After set_gradient_overwrite
  // ({true}), dx is written (=) instead.
  void backward(Span<const Tensor<T>* const> x, const Tensor<T>& y, const Tensor<T>& dy,
                Span<Tensor<T>* const> dx) override {
    Tensor<T>* dx0 = this->backward_grad(x, y, dy, dx);
    if (!has_forward_) {
      throw Error(
          "BatchNormalization: expected forward() before backward(), found none since "
          "setup()");
    }
    const Tensor<T>& in = *x[0];
    if (last_mode_ == Mode::Train && group_ != nullptr) {
      kernels::batch_norm_backward_group(
          in.data(), dy.data(), dims(in.shape()), gamma.data(), mean_.data(), rstd_.data(),
          group_count_, dx0 != nullptr ? dx0->data() : nullptr, dgamma.data(), dbeta.data(),
          y.data(), fused_relu_, group_sums_.data(), group_reduce(), this->accumulate_dx());
      return;
    }
    kernels::batch_norm_backward(in.data(), dy.data(), dims(in.shape()), gamma.data(), mean_.data(),
                                 rstd_.data(), last_mode_ == Mode::Train,
                                 dx0 != nullptr ? dx0->data() : nullptr, dgamma.data(),
                                 dbeta.data(), y.data(), fused_relu_, this->accumulate_dx());
  }

  std::vector<ParamRef<T>> params() override {
    return {{"gamma", &gamma, &dgamma}, {"beta", &beta, &dbeta}};
  }
  std::vector<ParamRef<T>> state() override {
    return {{"moving_mean", &moving_mean, nullptr}, {"moving_variance", &moving_variance, nullptr}};
  }

 private:
  static kernels::BatchNormDims dims(const Shape& s) {
    return {s[0], s[1], s.rank() == 4 ? s[2] * s[3] : 1};
  }

  auto group_reduce() {
    return [this](double* v, index_t n) { group_->sum(v, n); };
  }

  void reset_state() {
    gamma.fill(static_cast<T>(options_.gamma_init));
    beta.fill(T(0));
    moving_mean.fill(T(0));
    moving_variance.fill(T(1));
  }

  BatchNormOptions options_;
  Tensor<double> mean_, var_, rstd_;  // per channel, cached by forward for backward
  Collective* group_ = nullptr;       // synchronised statistics (set_statistics_group)
  Tensor<double> group_sums_;         // the group's sums, 2C + 1
  double group_count_ = 0;            // values per channel in the group's batch
  bool fused_relu_ = false;
  bool averaging_ = false;
  index_t averaged_ = 0;  // batches averaged since set_averaging
  Mode last_mode_ = Mode::Train;
  bool has_forward_ = false;
};

}  // namespace minires
