// The installed Fashion-MNIST data (Debian's dataset-fashion-mnist) has the published shape,
// class balance and pixel statistics. Without the package the test prints "skipped: ...", which
// CTest reports as skipped (SKIP_REGULAR_EXPRESSION): it never passes without having looked at
// the data.
#include <catch2/catch.hpp>

#include <minires/data/fashion_mnist.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

using namespace minires;

TEST_CASE("the installed Fashion-MNIST data has the published shape and statistics") {
  const std::string dir = default_fashion_mnist_dir();
  if (!std::filesystem::is_directory(dir)) {
    std::printf("skipped: %s is not installed (apt-get install dataset-fashion-mnist)\n",
                dir.c_str());
    return;
  }
  const FashionMnist d = load_fashion_mnist(dir);
  REQUIRE(d.train->size() == 60000);
  REQUIRE(d.test->size() == 10000);
  for (const auto* part : {d.train.get(), d.test.get()}) {
    CHECK(part->images.rows == 28);
    CHECK(part->images.cols == 28);
    std::vector<index_t> histogram(10, 0);
    for (std::uint8_t l : part->labels) ++histogram[l];
    CHECK(histogram == std::vector<index_t>(10, part->size() / 10));  // 6000 / 1000 per class
    const auto [lo, hi] =
        std::minmax_element(part->images.pixels.begin(), part->images.pixels.end());
    CHECK(*lo == 0);
    CHECK(*hi == 255);
  }
  // the commonly quoted normalisation constants of the training set
  const PixelStats s = pixel_statistics(d.train->images, 0, 60000);
  CHECK(s.mean == Approx(0.2860).margin(5e-4));
  CHECK(s.stddev == Approx(0.3530).margin(5e-4));
  const auto split = split_fashion_mnist<float>(d);
  CHECK(split.train.size() == 55000);
  CHECK(split.validation.size() == 5000);
  CHECK(split.test.size() == 10000);
  CHECK(split.validation.label(0) == d.train->labels[55000]);
}
