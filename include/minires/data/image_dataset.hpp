// ImageDataset<T>: a Dataset over one-channel byte images (MNIST, Fashion-MNIST, ...). Pixels stay
// bytes in memory (a quarter of float's footprint) and are converted batch by batch in get():
//
//   x = (p / 255 - mean) / stddev        p the byte; mean 0, stddev 1 give plain [0, 1] scaling
//
// through a 256-entry table made at construction, so get() allocates nothing. Samples have shape
// (1, rows, cols). A dataset can be a view of a contiguous range of the images (range(), first()),
// sharing them: the split into training and validation parts costs no copy.
//
// Augmentation, when enabled in the options, is applied by get() only when it is given a
// generator (the training loop passes one while training, nullptr when evaluating). For each
// sample, in batch order, it draws from that generator, always in this order:
//   dy = uniform_int(2 * pad + 1) - pad     vertical shift
//   dx = uniform_int(2 * pad + 1) - pad     horizontal shift
//   flip = uniform() < flip_probability     horizontal flip
// and writes out(y, x) = img(y - dy, x - dx), where img is the image mirrored left-right when
// flip is drawn and pixels outside it are the background byte 0 (converted like any pixel). This
// is the usual random crop of the image zero-padded by `pad` pixels on every side, plus a random
// flip; the same generator state gives the same batch.
//
// Random erasing (Zhong et al. 2017, "Random Erasing Data Augmentation"), when its probability p
// is above 0, follows (after the crop and flip, if enabled) and draws, for each sample:
//   erase = uniform() < p
// and when erase is drawn, up to 10 attempts at a rectangle of the H x W image:
//   area   = uniform(area_min, area_max) * H * W
//   aspect = exp(uniform(log(aspect_min), -log(aspect_min)))
//   h = round(sqrt(area * aspect)), w = round(sqrt(area / aspect))
// the first with 1 <= h < H and 1 <= w < W then draws its corner y0 = uniform_int(H - h + 1),
// x0 = uniform_int(W - w + 1) and sets those h x w outputs to 0: the mean pixel when the images
// are standardised, black otherwise (torchvision's RandomErasing(value=0) after Normalize).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "minires/core/error.hpp"
#include "minires/core/rng.hpp"
#include "minires/core/span.hpp"
#include "minires/core/tensor.hpp"
#include "minires/data/dataset.hpp"
#include "minires/data/idx.hpp"
#include "minires/data/image_ops.hpp"

namespace minires {

// Mean and standard deviation of pixel values scaled to [0, 1].
struct PixelStats {
  double mean = 0.0;
  double stddev = 1.0;
};

// Mean and (population) standard deviation of p / 255 over images [begin, end), exact (from a
// histogram of the byte values). Fashion-MNIST's 60000 training images give 0.2860, 0.3530.
inline PixelStats pixel_statistics(const IdxImages& images, index_t begin, index_t end) {
  if (begin < 0 || end > images.count || begin >= end) {
    throw ValueError("pixel_statistics: expected a non-empty range [begin, end) within [0, " +
                     std::to_string(images.count) + "], found [" + std::to_string(begin) + ", " +
                     std::to_string(end) + ")");
  }
  std::array<std::uint64_t, 256> histogram{};
  for (const std::uint8_t *p = images.image(begin), *e = images.image(end); p != e; ++p) {
    ++histogram[*p];
  }
  const double n = static_cast<double>((end - begin) * images.image_size());
  double mean = 0.0;
  for (int v = 0; v < 256; ++v) mean += static_cast<double>(histogram[v]) * (v / 255.0);
  mean /= n;
  double var = 0.0;
  for (int v = 0; v < 256; ++v) {
    const double d = v / 255.0 - mean;
    var += static_cast<double>(histogram[v]) * d * d;
  }
  return {mean, std::sqrt(var / n)};
}

struct ImageDatasetOptions {
  // Standardisation after scaling to [0, 1]: x = (p / 255 - mean) / stddev.
  double mean = 0.0;
  double stddev = 1.0;
  // Augmentation (see the top of this file); get() applies it only when given a generator.
  bool augment = false;
  index_t crop_padding = 2;       // shift by up to +-crop_padding pixels, filling with 0
  double flip_probability = 0.5;  // horizontal flip
  // Random erasing (see the top of this file), independent of `augment`; 0: off.
  double erase_probability = 0.0;
  double erase_area_min = 0.02, erase_area_max = 0.4;  // fraction of the image
  double erase_aspect_min = 0.3;                       // aspect (h / w) in [min, 1 / min]

  ImageDatasetOptions& standardize(double m, double s) {
    mean = m;
    stddev = s;
    return *this;
  }
  ImageDatasetOptions& standardize(const PixelStats& s) { return standardize(s.mean, s.stddev); }
  ImageDatasetOptions& augmentation(index_t padding = 2, double flip = 0.5) {
    augment = true;
    crop_padding = padding;
    flip_probability = flip;
    return *this;
  }
  ImageDatasetOptions& erasing(double probability, double area_min = 0.02, double area_max = 0.4,
                               double aspect_min = 0.3) {
    erase_probability = probability;
    erase_area_min = area_min;
    erase_area_max = area_max;
    erase_aspect_min = aspect_min;
    return *this;
  }
};

template <class T>
class ImageDataset : public Dataset<T> {
 public:
  // All images of `data`, whose labels must lie in [0, num_classes).
  ImageDataset(std::shared_ptr<const LabelledImages> data, index_t num_classes,
               const ImageDatasetOptions& options = {})
      : data_(std::move(data)), classes_(num_classes) {
    if (!data_) throw ValueError("ImageDataset: expected images, found a null pointer");
    const IdxImages& im = data_->images;
    if (im.count < 0 || im.rows < 1 || im.cols < 1 ||
        static_cast<index_t>(im.pixels.size()) != im.count * im.image_size() ||
        static_cast<index_t>(data_->labels.size()) != im.count) {
      throw ShapeError(
          "ImageDataset: expected count x rows x cols pixels and count labels, found " +
          std::to_string(im.count) + " x " + std::to_string(im.rows) + " x " +
          std::to_string(im.cols) + " with " + std::to_string(im.pixels.size()) + " pixels and " +
          std::to_string(data_->labels.size()) + " labels");
    }
    if (num_classes < 1) {
      throw ValueError("ImageDataset: expected num_classes >= 1, found " +
                       std::to_string(num_classes));
    }
    const std::size_t bad = detail::first_label_outside(data_->labels, num_classes);
    if (bad < data_->labels.size()) {
      throw ValueError("ImageDataset: label " + std::to_string(data_->labels[bad]) + " of sample " +
                       std::to_string(bad) + " is outside [0, " + std::to_string(num_classes) +
                       ")");
    }
    end_ = im.count;
    set_options(options);
  }

  index_t size() const override { return end_ - begin_; }
  Shape sample_shape() const override { return Shape{1, data_->images.rows, data_->images.cols}; }
  index_t num_classes() const override { return classes_; }

  void get(Span<const index_t> indices, Tensor<T>& x, std::int32_t* labels,
           Rng* augment) const override {
    const auto m = static_cast<index_t>(indices.size());
    const IdxImages& im = data_->images;
    if (x.shape() != Shape{m, 1, im.rows, im.cols}) {
      throw ShapeError("ImageDataset::get: expected x of shape " +
                       Shape{m, 1, im.rows, im.cols}.str() + " for " + std::to_string(m) +
                       " samples, found " + x.shape().str());
    }
    const index_t hw = im.image_size();
    const bool transform = augment != nullptr && options_.augment;
    const bool erase = augment != nullptr && options_.erase_probability > 0.0;
    for (index_t i = 0; i < m; ++i) {
      const index_t k = indices[static_cast<std::size_t>(i)];
      if (k < 0 || k >= size()) {
        throw ValueError("ImageDataset::get: sample index " + std::to_string(k) +
                         " is outside [0, " + std::to_string(size()) + ")");
      }
      const std::uint8_t* src = im.image(begin_ + k);
      T* dst = x.data() + i * hw;
      labels[i] = data_->labels[static_cast<std::size_t>(begin_ + k)];
      if (transform) {
        const index_t pad = options_.crop_padding;
        const auto span = static_cast<std::uint64_t>(2 * pad + 1);
        const index_t dy = static_cast<index_t>(augment->uniform_int(span)) - pad;
        const index_t dx = static_cast<index_t>(augment->uniform_int(span)) - pad;
        const bool flip = augment->uniform() < options_.flip_probability;
        shift_flip(src, dst, dy, dx, flip);
      } else {
        for (index_t j = 0; j < hw; ++j) dst[j] = lut_[src[j]];
      }
      if (erase) erase_rectangle(dst, *augment);
    }
  }

  // Samples [begin, end) of this dataset, sharing its images and options.
  ImageDataset range(index_t begin, index_t end) const {
    if (begin < 0 || end > size() || begin > end) {
      throw ValueError(
          "ImageDataset::range: expected 0 <= begin <= end <= " + std::to_string(size()) +
          ", found [" + std::to_string(begin) + ", " + std::to_string(end) + ")");
    }
    ImageDataset d = *this;
    d.begin_ = begin_ + begin;
    d.end_ = begin_ + end;
    return d;
  }
  // The first min(n, size()) samples.
  ImageDataset first(index_t n) const {
    if (n < 0) throw ValueError("ImageDataset::first: expected n >= 0, found " + std::to_string(n));
    return range(0, std::min(n, size()));
  }
  // The same samples with other options.
  ImageDataset with_options(const ImageDatasetOptions& options) const {
    ImageDataset d = *this;
    d.set_options(options);
    return d;
  }

  const ImageDatasetOptions& options() const noexcept { return options_; }
  // Where this view starts in the underlying images.
  index_t offset() const noexcept { return begin_; }
  const LabelledImages& data() const noexcept { return *data_; }
  std::int32_t label(index_t i) const {
    return data_->labels.at(static_cast<std::size_t>(begin_ + i));
  }
  // Mean and standard deviation of this view's pixels scaled to [0, 1] (for standardize()).
  PixelStats pixel_statistics() const {
    return minires::pixel_statistics(data_->images, begin_, end_);
  }

 private:
  void set_options(const ImageDatasetOptions& o) {
    const IdxImages& im = data_->images;
    if (!std::isfinite(o.mean) || !std::isfinite(o.stddev) || !(o.stddev > 0.0)) {
      throw ValueError("ImageDataset: expected a finite mean and a finite stddev > 0, found mean " +
                       std::to_string(o.mean) + ", stddev " + std::to_string(o.stddev));
    }
    if (o.augment && (o.crop_padding < 0 || o.crop_padding >= std::min(im.rows, im.cols))) {
      throw ValueError("ImageDataset: expected crop_padding in [0, " +
                       std::to_string(std::min(im.rows, im.cols)) + ") for " +
                       std::to_string(im.rows) + "x" + std::to_string(im.cols) + " images, found " +
                       std::to_string(o.crop_padding));
    }
    if (o.augment && !(o.flip_probability >= 0.0 && o.flip_probability <= 1.0)) {
      throw ValueError("ImageDataset: expected flip_probability in [0, 1], found " +
                       std::to_string(o.flip_probability));
    }
    if (o.erase_probability != 0.0 &&
        !(o.erase_probability > 0.0 && o.erase_probability <= 1.0 && o.erase_area_min > 0.0 &&
          o.erase_area_min <= o.erase_area_max && o.erase_area_max < 1.0 &&
          o.erase_aspect_min > 0.0 && o.erase_aspect_min <= 1.0)) {
      throw ValueError(
          "ImageDataset: expected erase_probability in [0, 1], 0 < erase_area_min <= "
          "erase_area_max < 1 and erase_aspect_min in (0, 1], found " +
          std::to_string(o.erase_probability) + ", " + std::to_string(o.erase_area_min) + ", " +
          std::to_string(o.erase_area_max) + ", " + std::to_string(o.erase_aspect_min));
    }
    options_ = o;
    for (int v = 0; v < 256; ++v) lut_[v] = static_cast<T>((v / 255.0 - o.mean) / o.stddev);
  }

  // dst(y, x) = img(y - dy, x - dx), img = src mirrored when flip, background outside.
  void shift_flip(const std::uint8_t* src, T* dst, index_t dy, index_t dx, bool flip) const {
    shift_flip_image(src, dst, data_->images.rows, data_->images.cols, dy, dx, flip,
                     Border::Constant, lut_[0], [this](std::uint8_t p) { return lut_[p]; });
  }

  // Random erasing of one converted image (the draws at the top of this file).
  void erase_rectangle(T* dst, Rng& rng) const {
    const ImageDatasetOptions& o = options_;
    if (!(rng.uniform() < o.erase_probability)) return;
    const index_t rows = data_->images.rows, cols = data_->images.cols;
    const double image_area = static_cast<double>(rows * cols);
    const double log_aspect = std::log(o.erase_aspect_min);
    for (int attempt = 0; attempt < 10; ++attempt) {
      const double area = rng.uniform(o.erase_area_min, o.erase_area_max) * image_area;
      const double aspect = std::exp(rng.uniform(log_aspect, -log_aspect));
      const auto h = static_cast<index_t>(std::lround(std::sqrt(area * aspect)));
      const auto w = static_cast<index_t>(std::lround(std::sqrt(area / aspect)));
      if (h < 1 || h >= rows || w < 1 || w >= cols) continue;
      const auto y0 =
          static_cast<index_t>(rng.uniform_int(static_cast<std::uint64_t>(rows - h + 1)));
      const auto x0 =
          static_cast<index_t>(rng.uniform_int(static_cast<std::uint64_t>(cols - w + 1)));
      for (index_t y = y0; y < y0 + h; ++y) std::fill_n(dst + y * cols + x0, w, T(0));
      return;
    }
  }

  std::shared_ptr<const LabelledImages> data_;
  index_t classes_;
  index_t begin_ = 0, end_ = 0;
  ImageDatasetOptions options_;
  std::array<T, 256> lut_{};
};

}  // namespace minires
