// One training step (or one inference batch) of a model on a fixed synthetic batch, as the
// benchmarks and the profiler run it: zero_grad, forward, loss, backward, optimizer step.
#pragma once

#include <minires/minires.hpp>
#include <minires/models/fashion_mnist.hpp>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

struct ModelStep {
  minires::Model<float> model;
  minires::SoftmaxCrossEntropy<float> loss{unclipped()};
  std::unique_ptr<minires::Optimizer<float>> optimizer;
  minires::Tensor<float> x;
  std::vector<std::int32_t> labels;

  // name: "seed" (RMSprop lr 1e-3, as the notebook) or "resnet" (SGD, Nesterov, weight decay,
  // as fmnist's default). The model is planned for `batch` with the current thread count.
  ModelStep(const std::string& name, minires::index_t batch, bool fusion = true) {
    using namespace minires;
    if (name == "seed") {
      model = models::seed_resnet<float>();
      optimizer = std::make_unique<RMSprop<float>>(RMSpropOptions{});
    } else if (name == "resnet") {
      model = models::small_resnet<float>();
      SGDOptions o;
      o.lr = 0.05;
      o.momentum = 0.9;
      o.nesterov = true;
      o.weight_decay = 5e-4;
      optimizer = std::make_unique<SGD<float>>(o);
    } else {
      throw std::invalid_argument("unknown model '" + name + "' (expected seed or resnet)");
    }
    model.set_fusion(fusion);
    model.init(1);
    model.plan(batch);
    loss.setup(Shape{batch, 10});
    optimizer->attach(model.params());
    x.resize(Shape{batch, 1, 28, 28});
    Rng rng(7);
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(rng.uniform());
    labels.resize(static_cast<std::size_t>(batch));
    for (auto& l : labels) l = static_cast<std::int32_t>(rng.uniform_int(10));
  }

  static minires::SoftmaxCrossEntropyOptions unclipped() {
    minires::SoftmaxCrossEntropyOptions o;
    o.keras_clip = false;
    return o;
  }

  void train_step() {
    using namespace minires;
    model.zero_grad();
    const Tensor<float>& logits = model.forward(x, Mode::Train);
    loss.forward(logits, Span<const std::int32_t>(labels.data(), labels.size()));
    loss.backward(model.output_grad());
    model.backward();
    optimizer->step();
  }

  void inference() { model.forward(x, minires::Mode::Infer); }

  // Floating-point operations of one image, counted as 2 per multiply-add of the convolutions
  // and Dense layers (everything else is a few percent): forward only, or a training step
  // (forward, input gradient and weight gradient: 3x, less the input gradient of a layer that
  // reads the model's input, which is not computed).
  double flops_per_image(bool train) {
    using namespace minires;
    double total = 0;
    for (std::size_t i = 0; i < model.size(); ++i) {
      const Node n{static_cast<int>(i)};
      Layer<float>* layer = model.layer(n);
      double macs = 0;
      if (auto* conv = dynamic_cast<Conv2D<float>*>(layer)) {
        const auto& g = conv->geometry();
        macs = double(conv->filters()) * double(g.col_rows()) * double(g.col_cols());
      } else if (auto* dense = dynamic_cast<Dense<float>*>(layer)) {
        macs = double(dense->kernel.size());
      }
      if (macs == 0) continue;
      bool reads_input = false;
      for (const Node in : model.inputs(n)) reads_input = reads_input || in.id == model.input().id;
      total += 2 * macs * (train ? (reads_input ? 2 : 3) : 1);
    }
    return total;
  }
};

}  // namespace bench
