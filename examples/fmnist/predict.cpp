// fmnist predict: classifies images (the test set's, or an IDX file's) with a saved model and
// prints each image's three most likely classes.
#include <minires/minires.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "common.hpp"

namespace fmnist {
namespace {

struct PredictArgs {
  std::string model_file;
  std::string images;  // "": the test set
  index_t count = 10;
};

int predict_command(const PredictArgs& args, const Common& common) {
  const std::string &path = args.model_file, &images_path = args.images;
  const index_t count = args.count;
  apply_threads(common);
  Config cfg;
  Model<float> model = load_checkpoint(path, &cfg, StoredPrecision::Use);
  // The same preprocessing as in training (the standardisation uses the training images).
  auto split = load_data(common.data, cfg);
  std::shared_ptr<const LabelledImages> custom;
  ImageDataset<float> set = split.test;
  bool labelled = true;
  if (!images_path.empty()) {
    auto li = std::make_shared<LabelledImages>();
    li->images = read_idx_images(images_path);
    const Shape sample = split.test.sample_shape();
    if (li->images.rows != sample[1] || li->images.cols != sample[2]) {
      throw ShapeError("--images '" + images_path + "': the model takes " +
                       std::to_string(sample[1]) + "x" + std::to_string(sample[2]) +
                       " images, found " + std::to_string(li->images.rows) + "x" +
                       std::to_string(li->images.cols));
    }
    li->labels.assign(static_cast<std::size_t>(li->images.count), 0);
    custom = li;
    ImageDatasetOptions o;
    o.mean = split.test.options().mean;
    o.stddev = split.test.options().stddev;
    set = ImageDataset<float>(custom, fashion_mnist_classes, o);
    labelled = false;
  }
  const index_t n = std::min(count, set.size());
  Tensor<float> x(Shape{n, 1, 28, 28});
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  std::vector<index_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), index_t(0));
  set.get(Span<const index_t>(idx), x, labels.data(), nullptr);
  const Tensor<float> p = predict(model, x);
  for (index_t i = 0; i < n; ++i) {
    std::vector<index_t> order(10);
    std::iota(order.begin(), order.end(), index_t(0));
    std::sort(order.begin(), order.end(), [&](index_t a, index_t b) { return p(i, a) > p(i, b); });
    std::printf("image %lld: %-12s %.4f", static_cast<long long>(i),
                fashion_mnist_class_names[static_cast<std::size_t>(order[0])],
                static_cast<double>(p(i, order[0])));
    std::printf("   (then %s %.4f, %s %.4f)",
                fashion_mnist_class_names[static_cast<std::size_t>(order[1])],
                static_cast<double>(p(i, order[1])),
                fashion_mnist_class_names[static_cast<std::size_t>(order[2])],
                static_cast<double>(p(i, order[2])));
    if (labelled) {
      const auto truth = labels[static_cast<std::size_t>(i)];
      std::printf("   true: %s%s", fashion_mnist_class_names[static_cast<std::size_t>(truth)],
                  truth == order[0] ? "" : "  <- wrong");
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace

Command add_predict_command(CLI::App& program, Common& common) {
  auto args = std::make_shared<PredictArgs>();
  CLI::App* predict_cmd = program.add_subcommand("predict", "Classify images with a saved model");
  add_shared_options(predict_cmd, common);
  add_model_file_option(predict_cmd, args->model_file);
  predict_cmd->add_option("--images", args->images, "An IDX image file (default: the test set)")
      ->check(CLI::ExistingFile);
  predict_cmd->add_option("--count", args->count, "How many images to classify")
      ->check(in_range<index_t>(1, Limits::max_limit))
      ->capture_default_str();
  return {predict_cmd, [args, &common] { return predict_command(*args, common); }};
}

}  // namespace fmnist
