// Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 60000 training and 10000 test 28x28 grayscale
// images of 10 kinds of clothing, as four IDX files. Debian packages them as
// `dataset-fashion-mnist` in /usr/share/datasets/fashion-mnist.
//
//   FashionMnist data = load_fashion_mnist();              // or load_fashion_mnist(dir)
//   ImageDatasetOptions options;
//   options.standardize(pixel_statistics(data.train->images, 0, 55000)).augmentation();
//   auto split = split_fashion_mnist<float>(data, options);  // 55000 / 5000 / 10000
#pragma once

#include <array>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "minires/core/error.hpp"
#include "minires/data/idx.hpp"
#include "minires/data/image_dataset.hpp"

namespace minires {

inline constexpr index_t fashion_mnist_classes = 10;
inline constexpr index_t fashion_mnist_image_size = 28;  // rows and columns
// The seed notebook's validation split: the last 5000 training images.
inline constexpr index_t fashion_mnist_validation_size = 5000;

// Where Debian's dataset-fashion-mnist package installs the files.
inline std::string default_fashion_mnist_dir() {
  return "/usr/share/datasets/fashion-mnist";
}

// Class names, indexed by label.
inline constexpr std::array<const char*, 10> fashion_mnist_class_names = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

struct FashionMnist {
  std::shared_ptr<const LabelledImages> train;  // 60000 images
  std::shared_ptr<const LabelledImages> test;   // 10000 images
};

namespace detail {

inline std::string fashion_mnist_help() {
  return "expected the Fashion-MNIST IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
         "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz) there; "
         "install them with `apt-get install dataset-fashion-mnist` (into " +
         default_fashion_mnist_dir() +
         ") or load them from the directory that holds the four files";
}

// dir/name.gz if it exists, else dir/name; IoError with directions when neither does.
inline std::string fashion_mnist_file(const std::string& dir, const std::string& name) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (const std::string& candidate : {name + ".gz", name}) {
    const fs::path p = fs::path(dir) / candidate;
    if (fs::exists(p, ec)) return p.string();
  }
  throw IoError("load_fashion_mnist: '" + dir + "' has no " + name + " or " + name + ".gz; " +
                fashion_mnist_help());
}

// One part (train or t10k): its images must be 28x28, its labels in [0, 10).
inline std::shared_ptr<const LabelledImages> load_fashion_mnist_part(const std::string& dir,
                                                                     const std::string& part) {
  const std::string images = fashion_mnist_file(dir, part + "-images-idx3-ubyte");
  const std::string labels = fashion_mnist_file(dir, part + "-labels-idx1-ubyte");
  auto data = std::make_shared<const LabelledImages>(
      read_idx_labelled(images, labels, fashion_mnist_classes));
  if (data->images.rows != fashion_mnist_image_size ||
      data->images.cols != fashion_mnist_image_size) {
    throw FormatError("load_fashion_mnist '" + images + "': expected 28x28 images, found " +
                      std::to_string(data->images.rows) + "x" + std::to_string(data->images.cols));
  }
  return data;
}

}  // namespace detail

// Reads the four files from `dir` (each as .gz if present, else uncompressed), checking that
// every image is 28x28 and has a label in [0, 10). A missing directory or file throws IoError
// saying how to get the data; bad contents throw FormatError naming the file.
inline FashionMnist load_fashion_mnist(const std::string& dir = default_fashion_mnist_dir()) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    const bool exists = std::filesystem::exists(dir, ec);
    throw IoError("load_fashion_mnist: '" + dir + "' " +
                  (exists ? "is not a directory" : "does not exist") +
                  "; expected the directory that holds the data: " + detail::fashion_mnist_help());
  }
  FashionMnist data;
  data.train = detail::load_fashion_mnist_part(dir, "train");
  data.test = detail::load_fashion_mnist_part(dir, "t10k");
  return data;
}

template <class T>
struct FashionMnistSplit {
  ImageDataset<T> train, validation, test;
};

// The seed notebook's split: the first 60000 - validation_size training images train, the last
// validation_size validate, the test images only test. All three use `options` (augmentation
// only ever applies while training, when fit() passes a generator).
template <class T>
FashionMnistSplit<T> split_fashion_mnist(const FashionMnist& data,
                                         const ImageDatasetOptions& options = {},
                                         index_t validation_size = fashion_mnist_validation_size) {
  const ImageDataset<T> all(data.train, fashion_mnist_classes, options);
  if (validation_size < 0 || validation_size >= all.size()) {
    throw ValueError("split_fashion_mnist: expected a validation size in [0, " +
                     std::to_string(all.size()) + "), found " + std::to_string(validation_size));
  }
  const index_t n = all.size() - validation_size;
  return {all.range(0, n), all.range(n, all.size()),
          ImageDataset<T>(data.test, fashion_mnist_classes, options)};
}

}  // namespace minires
