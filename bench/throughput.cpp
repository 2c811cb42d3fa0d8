// Training and inference throughput of a model, or the time of one convolution, for
// bench/compare/compare.py (which runs PyTorch on the same work and alternates the two).
//
//   throughput model <seed|resnet> <train|infer> <threads> [seconds] [data dir]
//   throughput conv <in> <out> <size> <kernel> <stride> <threads> [seconds]
//
// `model` trains (or runs inference) on batches of 128 of the first 60000 Fashion-MNIST training
// images, pixels scaled to [0, 1], for about `seconds` after two warm-up batches; without the
// data set it uses seeded uniform noise. `conv` times forward + backward (input and weight
// gradients) of a kernel x kernel 'same' convolution without bias, in -> out channels at
// size x size, stride `stride`, batch 128. Prints one line of JSON; "gflops" counts 2 per
// multiply-add of the convolutions and Dense layers (bench::ModelStep::flops_per_image).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <minires/data/fashion_mnist.hpp>

#include "model_step.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr minires::index_t kBatch = 128;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Runs `once` repeatedly for about `budget` seconds; returns (calls, seconds).
template <class F>
std::pair<long, double> time_loop(double budget, F&& once) {
  once();
  once();
  long calls = 0;
  const auto t0 = Clock::now();
  do {
    once();
    ++calls;
  } while (seconds_since(t0) < budget);
  return {calls, seconds_since(t0)};
}

int model_main(const std::string& name, const std::string& mode, int threads, double budget,
               const std::string& dir) {
  minires::set_num_threads(threads);
  bench::ModelStep step(name, kBatch);
  // Real images when the data set is there: batch b takes images [128 b, 128 b + 128).
  std::vector<float> pixels;
  std::vector<std::int32_t> labels;
  bool real = false;
  try {
    const auto data =
        dir.empty() ? minires::load_fashion_mnist() : minires::load_fashion_mnist(dir);
    const auto& im = data.train->images;
    pixels.resize(im.pixels.size());
    for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = float(im.pixels[i]) / 255.0f;
    labels.assign(data.train->labels.begin(), data.train->labels.end());
    real = true;
  } catch (const minires::Error&) {
  }
  const minires::index_t batches = real ? minires::index_t(labels.size()) / kBatch : 1;
  minires::index_t b = 0;
  auto next_batch = [&] {
    if (!real) return;
    std::copy(pixels.data() + b * kBatch * 784, pixels.data() + (b + 1) * kBatch * 784,
              step.x.data());
    std::copy(labels.data() + b * kBatch, labels.data() + (b + 1) * kBatch, step.labels.data());
    b = (b + 1) % batches;
  };
  const bool train = mode == "train";
  if (!train && mode != "infer") throw std::invalid_argument("mode must be train or infer");
  const auto [calls, s] = time_loop(budget, [&] {
    next_batch();
    if (train) {
      step.train_step();
    } else {
      step.inference();
    }
  });
  const double images_per_s = double(calls * kBatch) / s;
  std::printf(
      "{\"system\": \"minires\", \"model\": \"%s\", \"mode\": \"%s\", \"threads\": %d, "
      "\"data\": \"%s\", \"batches\": %ld, \"images_per_s\": %.1f, \"gflops\": %.1f}\n",
      name.c_str(), mode.c_str(), threads, real ? "fashion-mnist" : "noise", calls, images_per_s,
      images_per_s * step.flops_per_image(train) * 1e-9);
  return 0;
}

int conv_main(minires::index_t in_channels, minires::index_t out_channels, minires::index_t size,
              minires::index_t kernel, minires::index_t stride, int threads, double budget) {
  using namespace minires;
  set_num_threads(threads);
  Conv2D<float> conv(out_channels, kernel, Conv2DOptions().same().strides(stride).no_bias());
  const Shape in{kBatch, in_channels, size, size};
  conv.setup(Span<const Shape>(&in, 1));
  Rng rng(3);
  conv.init(rng);
  Tensor<float> x(in), dx(in), y(conv.output_shape(Span<const Shape>(&in, 1))), dy(y.shape());
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = float(rng.uniform(-1, 1));
  for (index_t i = 0; i < dy.size(); ++i) dy.data()[i] = float(rng.uniform(-1, 1));
  const Tensor<float>* xs[] = {&x};
  Tensor<float>* dxs[] = {&dx};
  const auto [calls, s] = time_loop(budget, [&] {
    conv.forward(Span<const Tensor<float>* const>(xs, 1), y, Mode::Train);
    conv.backward(Span<const Tensor<float>* const>(xs, 1), y, dy,
                  Span<Tensor<float>* const>(dxs, 1));
  });
  const auto& g = conv.geometry();
  const double flop = 3.0 * 2.0 * double(kBatch) * double(out_channels) * double(g.col_rows()) *
                      double(g.col_cols());
  std::printf(
      "{\"system\": \"minires\", \"conv\": \"%ld->%ld %ldx%ld s%ld @%ld\", \"algorithm\": \"%s\", "
      "\"threads\": %d, \"calls\": %ld, \"ms\": %.3f, \"gflops\": %.1f}\n",
      long(in_channels), long(out_channels), long(kernel), long(kernel), long(stride), long(size),
      conv.algorithm(), threads, calls, 1e3 * s / double(calls), flop * double(calls) / s * 1e-9);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::vector<std::string> a(argv + 1, argv + argc);
    // "bf16" anywhere: MatmulPrecision::BF16 (AMX bfloat16 convolutions where available).
    const auto bf16 = std::find(a.begin(), a.end(), "bf16");
    if (bf16 != a.end()) {
      minires::set_matmul_precision(minires::MatmulPrecision::BF16);
      a.erase(bf16);
    }
    if (a.size() >= 4 && a[0] == "model") {
      return model_main(a[1], a[2], std::stoi(a[3]), a.size() > 4 ? std::stod(a[4]) : 5.0,
                        a.size() > 5 ? a[5] : "");
    }
    if (a.size() >= 7 && a[0] == "conv") {
      return conv_main(std::stol(a[1]), std::stol(a[2]), std::stol(a[3]), std::stol(a[4]),
                       std::stol(a[5]), std::stoi(a[6]), a.size() > 7 ? std::stod(a[7]) : 2.0);
    }
    std::fprintf(stderr,
                 "usage: throughput model <seed|resnet> <train|infer> <threads> [seconds] [dir] "
                 "[bf16]\n"
                 "       throughput conv <in> <out> <size> <kernel> <stride> <threads> "
                 "[seconds] [bf16]\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "throughput: %s\n", e.what());
    return 1;
  }
}
