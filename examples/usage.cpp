// The seed notebook's my_resnet() in minires (models::seed_resnet, written out in
// include/minires/models/fashion_mnist.hpp and docs/usage.md): build it, look at it, train it,
// save it, load it back and predict. Trains on a small synthetic task so it runs anywhere in
// seconds; the fmnist example trains the same model on Fashion-MNIST.
//
//   build/release/examples/usage [epochs]
#include <minires/minires.hpp>
#include <minires/models/fashion_mnist.hpp>  // seed_resnet: not part of the umbrella header

#include <algorithm>

#include <cstdio>
#include <cstdlib>

using namespace minires;

// 28x28 images of a bright square whose position (one of ten) is the class, plus noise.
TensorDataset<float> squares(index_t n, std::uint64_t seed) {
  Rng rng(seed);
  Tensor<float> x(Shape{n, 1, 28, 28});
  std::vector<std::int32_t> y(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    const auto cls = static_cast<std::int32_t>(rng.uniform_int(10));
    y[static_cast<std::size_t>(i)] = cls;
    float* img = x.data() + i * 784;
    for (index_t k = 0; k < 784; ++k) img[k] = static_cast<float>(rng.uniform(0.0, 0.5));
    const index_t r0 = 2 + (cls / 5) * 13, c0 = 2 + (cls % 5) * 5;
    for (index_t r = r0; r < r0 + 8; ++r)
      for (index_t c = c0; c < c0 + 4; ++c) img[r * 28 + c] = 1.0f;
  }
  return TensorDataset<float>(std::move(x), std::move(y), 10);
}

int main(int argc, char** argv) {
  const index_t epochs = argc > 1 ? std::atoi(argv[1]) : 3;
  Model<float> model = models::seed_resnet<float>();
  model.init(/*seed=*/42);
  std::fputs(model.summary().c_str(), stdout);

  const auto train = squares(2000, 1), val = squares(500, 2);
  SoftmaxCrossEntropy<float> loss;  // Keras' categorical cross-entropy (clipped at 1e-7)
  RMSprop<float> optimizer;         // Keras 2.0 defaults: lr 1e-3, rho 0.9, epsilon 1e-8
  FitOptions options;
  options.epochs = epochs;
  options.batch_size = 128;
  options.validation = val;
  ProgressBar<float> progress;
  options.callbacks = {progress};
  fit(model, loss, optimizer, train, options);

  const EvalResult result = evaluate(model, val);
  std::printf("validation accuracy %.4f, loss %.4f\n", result.accuracy, result.loss);

  save(model, "usage_model.mrm", {{"epochs", std::to_string(epochs)}});
  // The file describes its architecture: load_model rebuilds it from the known models.
  Model<float> restored = load_model("usage_model.mrm", models::fashion_mnist_models<float>());
  const Tensor<float> p = predict(restored, val.samples());
  std::printf("restored model: sample 0 is class %d with probability %.3f\n",
              static_cast<int>(std::max_element(p.data(), p.data() + 10) - p.data()),
              static_cast<double>(*std::max_element(p.data(), p.data() + 10)));
  std::remove("usage_model.mrm");
  return result.accuracy > 0.5 ? 0 : 1;
}
