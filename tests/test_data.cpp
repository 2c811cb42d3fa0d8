// The data layer: IDX files (gzip and plain) round trip through the writer, and every kind of
// bad file throws the right error naming the file and the problem; the Fashion-MNIST loader;
// ImageDataset's scaling, standardisation, views and augmentation; the real Debian data when it
// is installed.
#include <catch2/catch.hpp>

#include <minires/data/fashion_mnist.hpp>
#include <minires/minires.hpp>

#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "allocation_counter.hpp"
#include "file_util.hpp"

using namespace minires;
using test::read_bytes;
using test::TempDir;
using test::write_bytes;
namespace fs = std::filesystem;

namespace {

// `bytes` gzip-compressed into `path`.
void write_gz(const std::string& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

// count images of rows x cols with bytes from a seeded generator; `smooth` makes them
// compressible (runs of equal bytes), like real images.
IdxImages make_images(index_t count, index_t rows, index_t cols, std::uint64_t seed,
                      bool smooth = false) {
  Rng rng(seed);
  IdxImages im{count, rows, cols, std::vector<std::uint8_t>(std::size_t(count * rows * cols))};
  for (std::size_t i = 0; i < im.pixels.size(); ++i) {
    im.pixels[i] =
        smooth && i % 16 != 0 ? im.pixels[i - 1] : static_cast<std::uint8_t>(rng.uniform_int(256));
  }
  return im;
}
std::vector<std::uint8_t> make_labels(index_t count, index_t classes) {
  std::vector<std::uint8_t> labels(static_cast<std::size_t>(count));
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = std::uint8_t(i * 7 % classes);
  return labels;
}

// The bytes of an IDX file: 0, 0, type, rank, big-endian dims, payload.
std::string idx_bytes(unsigned type, std::vector<std::uint32_t> dims, const std::string& payload) {
  std::string s = {'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (std::uint32_t d : dims) {
    for (int shift = 24; shift >= 0; shift -= 8) s += static_cast<char>(d >> shift);
  }
  return s + payload;
}

std::shared_ptr<const LabelledImages> labelled(IdxImages images, std::vector<std::uint8_t> labels) {
  return std::make_shared<const LabelledImages>(
      LabelledImages{std::move(images), std::move(labels)});
}

// One batch of `indices` from `d`, with labels.
template <class T>
std::pair<Tensor<T>, std::vector<std::int32_t>> batch(const ImageDataset<T>& d,
                                                      const std::vector<index_t>& indices,
                                                      Rng* rng) {
  const auto m = static_cast<index_t>(indices.size());
  Tensor<T> x(Shape{m, 1, d.sample_shape()[1], d.sample_shape()[2]});
  std::vector<std::int32_t> labels(indices.size(), -1);
  d.get(Span<const index_t>(indices), x, labels.data(), rng);
  return {std::move(x), std::move(labels)};
}
std::vector<index_t> iota(index_t n, index_t from = 0) {
  std::vector<index_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), from);
  return v;
}

// The Fashion-MNIST file names, as written by write_fashion_mnist below.
const char* const fmnist_files[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

// A small stand-in for Fashion-MNIST in `dir`: 30 training and 10 test images of 28 x 28.
void write_fashion_mnist(const TempDir& dir, bool gzip, std::uint64_t seed = 1) {
  const std::string ext = gzip ? ".gz" : "";
  write_idx_images(dir / (fmnist_files[0] + ext), make_images(30, 28, 28, seed), gzip);
  write_idx_labels(dir / (fmnist_files[1] + ext), make_labels(30, 10), gzip);
  write_idx_images(dir / (fmnist_files[2] + ext), make_images(10, 28, 28, seed + 1), gzip);
  write_idx_labels(dir / (fmnist_files[3] + ext), make_labels(10, 10), gzip);
}

}  // namespace

// ---- IDX ----------------------------------------------------------------------------------------

TEST_CASE("IDX images and labels round trip through the writer, gzip and plain") {
  TempDir dir("roundtrip");
  const IdxImages im = make_images(7, 5, 3, 11, true);
  const std::vector<std::uint8_t> labels = make_labels(7, 10);
  for (bool gzip : {true, false}) {
    INFO("gzip " << gzip);
    const std::string ipath = dir / "images", lpath = dir / "labels";
    write_idx_images(ipath, im, gzip);
    write_idx_labels(lpath, labels, gzip);
    const std::string raw = read_bytes(ipath);
    if (gzip) {
      CHECK(raw.substr(0, 2) == "\x1f\x8b");
    } else {
      CHECK(raw == idx_bytes(0x08, {7, 5, 3}, std::string(im.pixels.begin(), im.pixels.end())));
    }
    const IdxImages back = read_idx_images(ipath);
    CHECK(back.count == 7);
    CHECK(back.rows == 5);
    CHECK(back.cols == 3);
    CHECK(back.pixels == im.pixels);
    CHECK(read_idx_labels(lpath) == labels);
    const LabelledImages both = read_idx_labelled(ipath, lpath, 10);
    CHECK(both.images.pixels == im.pixels);
    CHECK(both.labels == labels);
  }
}

TEST_CASE("bad IDX files throw FormatError naming the file and the problem") {
  TempDir dir("bad_idx");
  const std::string path = dir / "bad-idx3-ubyte";
  const std::string pixels(2 * 3 * 4, '\x7f');
  auto images_error = [&](const std::string& bytes) {
    write_bytes(path, bytes);
    try {
      read_idx_images(path);
    } catch (const FormatError& e) {
      return std::string(e.what());
    }
    FAIL("read_idx_images accepted a bad file");
    return std::string();
  };
  using Catch::Contains;

  SECTION("bad magic") {
    const std::string msg = images_error("PK\x03\x04" + std::string(40, 'x'));
    CHECK_THAT(msg, Contains(path) && Contains("not an IDX file") && Contains("0x00000803") &&
                        Contains("0x504B0304"));
  }
  SECTION("wrong type code") {
    const std::string msg = images_error(idx_bytes(0x0D, {2, 3, 1}, std::string(24, '\0')));
    CHECK_THAT(msg, Contains(path) && Contains("expected the magic number 0x00000803") &&
                        Contains("0x00000D03") && Contains("type code 0x0D, 32-bit float"));
  }
  SECTION("wrong dimension count") {
    const std::string msg = images_error(idx_bytes(0x08, {24}, pixels));
    CHECK_THAT(msg, Contains(path) && Contains("wrong number of dimensions") &&
                        Contains("0x00000803") && Contains("(1 dimensions)"));
    write_idx_images(path, make_images(2, 3, 4, 1), false);
    CHECK_THROWS_WITH(read_idx_labels(path), Contains(path) && Contains("0x00000801") &&
                                                 Contains("0x00000803") &&
                                                 Contains("(3 dimensions)"));
  }
  SECTION("truncated magic number") {
    CHECK_THAT(images_error(""),
               Contains(path) && Contains("truncated") && Contains("found only 0 bytes"));
    CHECK_THAT(images_error(std::string("\0\0", 2)), Contains("found only 2 bytes"));
  }
  SECTION("truncated header") {
    const std::string msg = images_error(idx_bytes(0x08, {2, 3, 4}, "").substr(0, 9));
    CHECK_THAT(msg, Contains(path) && Contains("truncated") && Contains("16-byte header") &&
                        Contains("found 9 bytes"));
  }
  SECTION("truncated payload") {
    const std::string msg = images_error(idx_bytes(0x08, {2, 3, 4}, pixels.substr(0, 17)));
    CHECK_THAT(msg, Contains(path) && Contains("truncated") && Contains("2 x 3 x 4") &&
                        Contains("promises 24 bytes") && Contains("found 17"));
  }
  SECTION("trailing bytes") {
    const std::string msg = images_error(idx_bytes(0x08, {2, 3, 4}, pixels + "abc"));
    CHECK_THAT(msg, Contains(path) && Contains("after the end") && Contains("24 bytes") &&
                        Contains("found 3 more"));
  }
  SECTION("zero-sized dimension") {
    const std::string msg = images_error(idx_bytes(0x08, {2, 0, 4}, ""));
    CHECK_THAT(msg, Contains(path) && Contains("dimension 1 (rows) is 0") &&
                        Contains("expected a positive size"));
    write_bytes(path, idx_bytes(0x08, {0}, ""));
    CHECK_THROWS_WITH(read_idx_labels(path), Contains("dimension 0 (label count) is 0"));
  }
  SECTION("dimensions too large to be real") {
    const std::string msg = images_error(idx_bytes(0x08, {0xFFFFFFFF, 0xFFFFFFFF, 2}, pixels));
    CHECK_THAT(msg, Contains(path) && Contains("4294967295 x 4294967295") &&
                        Contains("1099511627776-byte limit"));
    // within the limit but far beyond the data: a truncation error, not an attempt to allocate
    CHECK_THAT(images_error(idx_bytes(0x08, {60000, 2000, 2000}, pixels)),
               Contains("promises 240000000000 bytes") && Contains("found 24"));
  }
}

TEST_CASE("bad gzip files throw FormatError naming the file") {
  TempDir dir("bad_gzip");
  const std::string good = dir / "good.gz", path = dir / "bad.gz";
  write_idx_images(good, make_images(20, 28, 28, 5, true), true);
  const std::string gz = read_bytes(good);
  REQUIRE(gz.size() > 100);
  using Catch::Contains;

  SECTION("corrupt deflate data") {
    std::string bad = gz;
    for (std::size_t i = 20; i < 60; ++i) bad[i] = static_cast<char>(bad[i] ^ 0x5a);
    write_bytes(path, bad);
    CHECK_THROWS_AS(read_idx_images(path), FormatError);
    CHECK_THROWS_WITH(read_idx_images(path), Contains(path));
  }
  SECTION("bad checksum") {
    std::string bad = gz;
    bad[bad.size() - 6] = static_cast<char>(bad[bad.size() - 6] ^ 1);  // CRC-32 of the trailer
    write_bytes(path, bad);
    CHECK_THROWS_AS(read_idx_images(path), FormatError);
    CHECK_THROWS_WITH(read_idx_images(path), Contains(path) && Contains("corrupt gzip data") &&
                                                 Contains("incorrect data check"));
  }
  SECTION("unknown compression method") {
    std::string bad = gz;
    bad[2] = 7;
    write_bytes(path, bad);
    CHECK_THROWS_WITH(read_idx_images(path), Contains(path) && Contains("corrupt gzip data"));
  }
  SECTION("truncated gzip stream") {
    write_bytes(path, gz.substr(0, gz.size() / 2));
    CHECK_THROWS_AS(read_idx_images(path), FormatError);
    CHECK_THROWS_WITH(read_idx_images(path), Contains(path) && Contains("truncated") &&
                                                 Contains("promises 15680 bytes") &&
                                                 Contains("gzip stream ends early"));
  }
  SECTION("all the data but without the trailer (CRC-32 and length)") {
    for (std::size_t cut : {1, 4, 8}) {
      write_bytes(path, gz.substr(0, gz.size() - cut));
      CHECK_THROWS_AS(read_idx_images(path), FormatError);
      CHECK_THROWS_WITH(read_idx_images(path),
                        Contains(path) && Contains("gzip stream ends early") && Contains("CRC-32"));
    }
  }
  SECTION("a wrong length in the trailer") {
    std::string bad = gz;
    bad[bad.size() - 4] = static_cast<char>(bad[bad.size() - 4] ^ 1);
    write_bytes(path, bad);
    CHECK_THROWS_WITH(read_idx_images(path), Contains(path) && Contains("incorrect length check"));
  }
  SECTION("bytes after the gzip stream") {
    write_bytes(path, gz + "x");
    CHECK_THROWS_AS(read_idx_images(path), FormatError);
    CHECK_THROWS_WITH(read_idx_images(path), Contains(path) &&
                                                 Contains("after the end of the gzip stream") &&
                                                 Contains("found 1 more bytes"));
    write_bytes(path, gz + std::string(10000, '\0'));
    CHECK_THROWS_WITH(read_idx_images(path), Contains("found 10000 more bytes"));
    write_bytes(path, gz + gz);  // a second gzip member is trailing data too
    CHECK_THROWS_WITH(read_idx_images(path), Contains("after the end of the gzip stream"));
  }
  SECTION("a valid gzip stream holding a truncated or overlong IDX file") {
    const std::string header = idx_bytes(0x08, {20, 28, 28}, "");
    write_gz(path, header + std::string(100, 'x'));
    CHECK_THROWS_WITH(read_idx_images(path),
                      Contains(path) && Contains("truncated") && Contains("promises 15680 bytes") &&
                          Contains("found 100") && !Contains("gzip stream ends early"));
    write_gz(path, header + std::string(15680 + 5, 'x'));
    CHECK_THROWS_WITH(read_idx_images(path), Contains(path) && Contains("found 5 more"));
  }
}

// Every single-bit flip anywhere in a gzip file either throws FormatError or leaves the data
// as it was (the flip hit a field that carries no data: the header's time stamp, flags for the
// compressor and OS, or the padding bits of the last deflate byte). Changed pixels never load.
TEST_CASE("no single-bit flip in a gzip IDX file loads changed data") {
  TempDir dir("gzip_flips");
  const std::string good = dir / "good.gz", path = dir / "flipped.gz";
  const IdxImages images = make_images(6, 28, 28, 11, true);
  write_idx_images(good, images, true);
  const std::string gz = read_bytes(good);
  index_t rejected = 0, unchanged = 0;
  for (std::size_t i = 0; i < gz.size(); ++i) {
    for (int bit = 0; bit < 8; bit += 3) {
      std::string bad = gz;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      write_bytes(path, bad);
      try {
        const IdxImages back = read_idx_images(path);
        INFO("byte " << i << " bit " << bit);
        CHECK(back.pixels == images.pixels);
        CHECK(back.count == images.count);
        ++unchanged;
      } catch (const FormatError&) {
        ++rejected;
      }
    }
  }
  INFO(rejected << " rejected, " << unchanged << " unchanged");
  CHECK(rejected > 9 * unchanged);
}

TEST_CASE("IDX data can be read from memory, gzip or plain, with the same checks") {
  TempDir dir("idx_memory");
  const IdxImages images = make_images(3, 5, 4, 2);
  for (bool gzip : {false, true}) {
    write_idx_images(dir / "m", images, gzip);
    const std::string bytes = read_bytes(dir / "m");
    static const char* const names[] = {"image count", "rows", "columns"};
    detail::IdxInput in(bytes.data(), bytes.size(), "memory", "test");
    CHECK(in.gzip() == gzip);
    const detail::IdxArray a = detail::read_idx(in, 3, names);
    CHECK(a.dims == std::vector<index_t>{3, 5, 4});
    CHECK(a.data == images.pixels);
    detail::IdxInput cut(bytes.data(), bytes.size() - 1, "memory", "test");
    CHECK_THROWS_AS(detail::read_idx(cut, 3, names), FormatError);
  }
}

TEST_CASE("missing or unreadable IDX files throw IoError naming the path") {
  TempDir dir("missing");
  const std::string missing = dir / "no-such-file.gz";
  CHECK_THROWS_AS(read_idx_images(missing), IoError);
  CHECK_THROWS_WITH(read_idx_images(missing),
                    Catch::Contains(missing) && Catch::Contains("cannot open"));
  CHECK_THROWS_AS(read_idx_labels(missing), IoError);
  // only regular files are read: a directory, a FIFO (without waiting for a writer), a device
  CHECK_THROWS_AS(read_idx_images(dir.path.string()), IoError);
  CHECK_THROWS_WITH(read_idx_images(dir.path.string()),
                    Catch::Contains(dir.path.string()) &&
                        Catch::Contains("expected a regular file, found a directory"));
  const std::string fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(read_idx_labels(fifo), Catch::Contains(fifo) && Catch::Contains("a FIFO"));
  CHECK_THROWS_WITH(read_idx_images("/dev/zero"), Catch::Contains("a character device"));
}

TEST_CASE("read_idx_labelled checks the label count and range") {
  TempDir dir("labelled");
  const std::string images = dir / "images", labels = dir / "labels.gz";
  write_idx_images(images, make_images(4, 2, 2, 3), false);
  SECTION("label out of range") {
    write_idx_labels(labels, std::vector<std::uint8_t>{1, 9, 10, 2}, true);
    CHECK_THROWS_AS(read_idx_labelled(images, labels, 10), FormatError);
    CHECK_THROWS_WITH(read_idx_labelled(images, labels, 10),
                      Catch::Contains(labels) && Catch::Contains("label 10 at position 2") &&
                          Catch::Contains("outside [0, 10)"));
    CHECK(read_idx_labelled(images, labels, 11).labels[2] == 10);
  }
  SECTION("image/label count mismatch") {
    write_idx_labels(labels, std::vector<std::uint8_t>{1, 2, 3}, true);
    CHECK_THROWS_AS(read_idx_labelled(images, labels, 10), FormatError);
    CHECK_THROWS_WITH(read_idx_labelled(images, labels, 10),
                      Catch::Contains(images) && Catch::Contains(labels) &&
                          Catch::Contains("holds 4 images") && Catch::Contains("holds 3 labels"));
  }
}

TEST_CASE("the IDX writer rejects inconsistent data and unwritable paths") {
  TempDir dir("writer");
  IdxImages im = make_images(2, 3, 4, 1);
  im.pixels.pop_back();
  CHECK_THROWS_AS(write_idx_images(dir / "x", im, false), ValueError);
  CHECK_THROWS_WITH(write_idx_images(dir / "x", im, false),
                    Catch::Contains("describe 24 bytes, found 23"));
  CHECK_FALSE(fs::exists(dir / "x"));
  CHECK_THROWS_AS(write_idx_labels(dir / "x", std::vector<std::uint8_t>{}, false), ValueError);
  const std::string unwritable = dir / "no/such/dir/labels";
  CHECK_THROWS_AS(write_idx_labels(unwritable, std::vector<std::uint8_t>{1}, true), IoError);
  CHECK_THROWS_WITH(write_idx_labels(unwritable, std::vector<std::uint8_t>{1}, true),
                    Catch::Contains(unwritable) && Catch::Contains("cannot create"));
}

// ---- Fashion-MNIST loader -------------------------------------------------------------------

TEST_CASE("load_fashion_mnist reads gzip or plain files, preferring .gz") {
  TempDir dir("fmnist");
  SECTION("plain") {
    write_fashion_mnist(dir, false);
    const FashionMnist d = load_fashion_mnist(dir.path.string());
    CHECK(d.train->size() == 30);
    CHECK(d.test->size() == 10);
    CHECK(d.train->images.pixels == make_images(30, 28, 28, 1).pixels);
    CHECK(d.test->labels == make_labels(10, 10));
  }
  SECTION("gzip preferred over plain") {
    write_fashion_mnist(dir, false, 1);
    write_fashion_mnist(dir, true, 7);
    const FashionMnist d = load_fashion_mnist(dir.path.string());
    CHECK(d.train->images.pixels == make_images(30, 28, 28, 7).pixels);
    CHECK(d.test->images.pixels == make_images(10, 28, 28, 8).pixels);
  }
  SECTION("a split into train, validation and test views") {
    write_fashion_mnist(dir, true);
    const FashionMnist d = load_fashion_mnist(dir.path.string());
    const auto split = split_fashion_mnist<float>(d, {}, 8);
    CHECK(split.train.size() == 22);
    CHECK(split.validation.size() == 8);
    CHECK(split.validation.offset() == 22);
    CHECK(split.test.size() == 10);
    CHECK(split.train.num_classes() == 10);
    CHECK(split.test.sample_shape() == Shape{1, 28, 28});
    CHECK(&split.train.data() == d.train.get());  // views share the pixels
    CHECK(&split.validation.data() == d.train.get());
    CHECK_THROWS_AS(split_fashion_mnist<float>(d, {}, 30), ValueError);
  }
}

TEST_CASE("load_fashion_mnist says how to get the data when it is missing") {
  TempDir dir("fmnist_missing");
  using Catch::Contains;
  const std::string nowhere = dir / "nowhere";
  CHECK_THROWS_AS(load_fashion_mnist(nowhere), IoError);
  CHECK_THROWS_WITH(load_fashion_mnist(nowhere),
                    Contains(nowhere) && Contains("does not exist") &&
                        Contains("apt-get install dataset-fashion-mnist") && !Contains("--data"));
  write_fashion_mnist(dir, true);
  fs::remove(dir / "t10k-labels-idx1-ubyte.gz");
  CHECK_THROWS_AS(load_fashion_mnist(dir.path.string()), IoError);
  CHECK_THROWS_WITH(load_fashion_mnist(dir.path.string()),
                    Contains("has no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz") &&
                        Contains("apt-get install dataset-fashion-mnist") && !Contains("--data"));
}

TEST_CASE("load_fashion_mnist takes a directory and 28x28 images only") {
  TempDir dir("fmnist_shape");
  write_fashion_mnist(dir, true);
  CHECK_THROWS_WITH(load_fashion_mnist(dir / "train-images-idx3-ubyte.gz"),
                    Catch::Contains("is not a directory") && !Catch::Contains("does not exist"));
  write_idx_images(dir / "t10k-images-idx3-ubyte.gz", make_images(10, 32, 32, 3), true);
  CHECK_THROWS_AS(load_fashion_mnist(dir.path.string()), FormatError);
  CHECK_THROWS_WITH(load_fashion_mnist(dir.path.string()),
                    Catch::Contains(dir / "t10k-images-idx3-ubyte.gz") &&
                        Catch::Contains("expected 28x28 images, found 32x32"));
}

TEST_CASE("load_fashion_mnist rejects bad labels naming the file, position and value") {
  TempDir dir("fmnist_labels");
  write_fashion_mnist(dir, true);
  std::vector<std::uint8_t> labels = make_labels(30, 10);
  labels[17] = 12;
  write_idx_labels(dir / "train-labels-idx1-ubyte.gz", labels, true);
  CHECK_THROWS_AS(load_fashion_mnist(dir.path.string()), FormatError);
  CHECK_THROWS_WITH(load_fashion_mnist(dir.path.string()),
                    Catch::Contains(dir / "train-labels-idx1-ubyte.gz") &&
                        Catch::Contains("label 12 at position 17"));
}

TEST_CASE("Fashion-MNIST class names") {
  CHECK(fashion_mnist_class_names.size() == std::size_t(fashion_mnist_classes));
  CHECK(std::string(fashion_mnist_class_names[0]) == "T-shirt/top");
  CHECK(std::string(fashion_mnist_class_names[9]) == "Ankle boot");
  CHECK(std::set<std::string>(fashion_mnist_class_names.begin(), fashion_mnist_class_names.end())
            .size() == 10);
}

// ---- ImageDataset ---------------------------------------------------------------------------

TEST_CASE("ImageDataset scales bytes to [0, 1] and standardises") {
  IdxImages im{2, 2, 3, {0, 51, 255, 102, 1, 254, 10, 20, 30, 40, 50, 60}};
  const auto data = labelled(im, {3, 1});
  const ImageDataset<double> plain(data, 4);
  CHECK(plain.size() == 2);
  CHECK(plain.sample_shape() == Shape{1, 2, 3});
  CHECK(plain.num_classes() == 4);
  auto [x, labels] = batch(plain, {1, 0}, nullptr);
  CHECK(labels == std::vector<std::int32_t>{1, 3});
  for (index_t j = 0; j < 6; ++j) {
    CHECK(x[j] == im.pixels[std::size_t(6 + j)] / 255.0);
    CHECK(x[6 + j] == im.pixels[std::size_t(j)] / 255.0);
  }
  CHECK(x[6] == 0.0);
  CHECK(x[8] == 1.0);

  const ImageDataset<float> standard(data, 4, ImageDatasetOptions().standardize(0.25, 0.5));
  auto [xs, ls] = batch(standard, {0}, nullptr);
  CHECK(xs[0] == Approx(-0.5));  // (0 - 0.25) / 0.5
  CHECK(xs[1] == Approx(-0.1));  // (0.2 - 0.25) / 0.5
  CHECK(xs[2] == Approx(1.5));   // (1 - 0.25) / 0.5
  const ImageDataset<float> restandardised =
      ImageDataset<float>(data, 4).with_options(standard.options());
  auto [xw, lw] = batch(restandardised, {0}, nullptr);
  CHECK(std::equal(xw.begin(), xw.end(), xs.begin()));

  CHECK_THROWS_AS(ImageDataset<float>(data, 4, ImageDatasetOptions().standardize(0.5, 0.0)),
                  ValueError);
  CHECK_THROWS_AS(ImageDataset<float>(data, 3), ValueError);  // label 3 of 3 classes
  CHECK_THROWS_WITH(ImageDataset<float>(data, 3), Catch::Contains("label 3 of sample 0"));
}

TEST_CASE("pixel_statistics gives the mean and standard deviation of p / 255") {
  IdxImages im{3, 1, 2, {0, 255, 0, 255, 51, 51}};
  const PixelStats all = pixel_statistics(im, 0, 3);
  CHECK(all.mean == Approx((2 * 1.0 + 2 * 0.2) / 6));
  const double var = (2 * std::pow(0 - all.mean, 2) + 2 * std::pow(1 - all.mean, 2) +
                      2 * std::pow(0.2 - all.mean, 2)) /
                     6;
  CHECK(all.stddev == Approx(std::sqrt(var)));
  const PixelStats first2 = pixel_statistics(im, 0, 2);
  CHECK(first2.mean == Approx(0.5));
  CHECK(first2.stddev == Approx(0.5));
  const ImageDataset<float> d(labelled(im, {0, 1, 0}), 2);
  CHECK(d.range(2, 3).pixel_statistics().mean == Approx(0.2));
  CHECK(d.range(2, 3).pixel_statistics().stddev == Approx(0.0).margin(1e-12));
  CHECK_THROWS_AS(pixel_statistics(im, 2, 2), ValueError);
  CHECK_THROWS_AS(pixel_statistics(im, 0, 4), ValueError);
}

TEST_CASE("ImageDataset views: range, first and nested ranges index the right samples") {
  IdxImages im = make_images(10, 2, 2, 4);
  const auto data = labelled(im, make_labels(10, 10));
  const ImageDataset<float> all(data, 10);
  const ImageDataset<float> mid = all.range(3, 8);
  CHECK(mid.size() == 5);
  CHECK(mid.offset() == 3);
  const ImageDataset<float> inner = mid.range(1, 4);  // samples 4..6 of the whole set
  CHECK(inner.size() == 3);
  CHECK(inner.offset() == 4);
  auto [x, labels] = batch(inner, {2, 0}, nullptr);
  auto [ref, ref_labels] = batch(all, {6, 4}, nullptr);
  CHECK(labels == ref_labels);
  CHECK(std::equal(x.begin(), x.end(), ref.begin()));
  CHECK(inner.label(0) == all.label(4));

  CHECK(all.first(4).size() == 4);
  CHECK(all.first(4).offset() == 0);
  CHECK(mid.first(100).size() == 5);  // a limit above the size keeps everything
  CHECK(mid.first(0).size() == 0);
  CHECK_THROWS_AS(all.first(-1), ValueError);
  CHECK_THROWS_AS(mid.range(2, 6), ValueError);
  CHECK_THROWS_WITH(mid.range(4, 2),
                    Catch::Contains("0 <= begin <= end <= 5") && Catch::Contains("found [4, 2)"));

  Tensor<float> x1(Shape{1, 1, 2, 2});
  std::int32_t label = 0;
  const index_t out_of_view = 3;
  CHECK_THROWS_WITH(inner.get(Span<const index_t>(&out_of_view, 1), x1, &label, nullptr),
                    Catch::Contains("sample index 3 is outside [0, 3)"));
  Tensor<float> wrong(Shape{1, 4});
  const index_t zero = 0;
  CHECK_THROWS_AS(inner.get(Span<const index_t>(&zero, 1), wrong, &label, nullptr), ShapeError);
}

namespace {

// out(y, x) = img(y - dy, x - dx), img mirrored left-right when flip, with `background` outside:
// computed the textbook way, as a crop of the flipped image zero-padded by pad on every side.
std::vector<std::uint8_t> reference_crop(const std::uint8_t* src, index_t h, index_t w, index_t pad,
                                         index_t dy, index_t dx, bool flip) {
  const index_t ph = h + 2 * pad, pw = w + 2 * pad;
  std::vector<std::uint8_t> padded(std::size_t(ph * pw), 0);
  for (index_t y = 0; y < h; ++y) {
    for (index_t x = 0; x < w; ++x) {
      padded[std::size_t((y + pad) * pw + x + pad)] = src[y * w + (flip ? w - 1 - x : x)];
    }
  }
  std::vector<std::uint8_t> out(std::size_t(h * w));
  const index_t top = pad - dy, left = pad - dx;  // the crop's corner in the padded image
  for (index_t y = 0; y < h; ++y) {
    for (index_t x = 0; x < w; ++x)
      out[std::size_t(y * w + x)] = padded[std::size_t((top + y) * pw + left + x)];
  }
  return out;
}

struct Draw {
  index_t dy, dx;
  bool flip;
};
// The draws ImageDataset documents, in its order.
Draw draw(Rng& rng, index_t pad, double flip_probability) {
  const auto span = static_cast<std::uint64_t>(2 * pad + 1);
  const index_t dy = static_cast<index_t>(rng.uniform_int(span)) - pad;
  const index_t dx = static_cast<index_t>(rng.uniform_int(span)) - pad;
  return {dy, dx, rng.uniform() < flip_probability};
}

// The erased rectangle ImageDataset documents (rows [y0, y0 + h), columns [x0, x0 + w)), drawn
// in its order; h = 0 when no rectangle is erased.
struct Erasure {
  index_t y0 = 0, x0 = 0, h = 0, w = 0;
};
Erasure draw_erasure(Rng& rng, index_t rows, index_t cols, double p, double area_min,
                     double area_max, double aspect_min) {
  Erasure e;
  if (!(rng.uniform() < p)) return e;
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double area = (area_min + (area_max - area_min) * rng.uniform()) * double(rows * cols);
    const double la = std::log(aspect_min);
    const double aspect = std::exp(la + (-la - la) * rng.uniform());
    const auto h = index_t(std::lround(std::sqrt(area * aspect)));
    const auto w = index_t(std::lround(std::sqrt(area / aspect)));
    if (h < 1 || h >= rows || w < 1 || w >= cols) continue;
    e.h = h;
    e.w = w;
    e.y0 = index_t(rng.uniform_int(std::uint64_t(rows - h + 1)));
    e.x0 = index_t(rng.uniform_int(std::uint64_t(cols - w + 1)));
    return e;
  }
  return e;
}

}  // namespace

TEST_CASE("augmentation: a single bright pixel moves by the drawn shift and flip") {
  // 6 x 8 images, one bright pixel near the top-left corner: shifts of up to 2 push it out of
  // the image in some draws, and a flip moves it to the other side.
  const index_t h = 6, w = 8, pad = 2;
  IdxImages im{1, h, w, std::vector<std::uint8_t>(std::size_t(h * w), 0)};
  im.pixels[std::size_t(1 * w + 0)] = 200;
  const auto options = ImageDatasetOptions().standardize(0.5, 0.25).augmentation(pad, 0.5);
  const ImageDataset<float> d(labelled(im, {0}), 1, options);
  const float background = float((0.0 - 0.5) / 0.25), bright = float((200 / 255.0 - 0.5) / 0.25);

  std::set<std::tuple<index_t, index_t, bool>> seen;
  int vanished = 0;
  for (std::uint64_t seed = 0; seed < 400; ++seed) {
    Rng rng(seed), replay(seed);
    const Draw t = draw(replay, pad, 0.5);
    seen.insert({t.dy, t.dx, t.flip});
    auto [x, labels] = batch(d, {0}, &rng);
    CHECK(rng.next() == replay.next());  // exactly the documented draws were made
    const index_t y = 1 + t.dy, col = (t.flip ? w - 1 : 0) + t.dx;
    const bool inside = y >= 0 && y < h && col >= 0 && col < w;
    vanished += !inside;
    for (index_t r = 0; r < h; ++r) {
      for (index_t c = 0; c < w; ++c) {
        INFO("seed " << seed << " dy " << t.dy << " dx " << t.dx << " flip " << t.flip << " at ("
                     << r << ", " << c << ")");
        const bool here = inside && r == y && c == col;
        REQUIRE(x[r * w + c] == (here ? bright : background));
      }
    }
  }
  CHECK(seen.size() == 5 * 5 * 2);  // every shift in [-2, 2]^2, flipped and not
  CHECK(vanished > 0);
}

TEST_CASE("augmentation matches a padded-crop reference on random images") {
  const index_t n = 16, h = 7, w = 5, pad = 3;
  const IdxImages im = make_images(n, h, w, 21);
  const ImageDataset<double> d(labelled(im, make_labels(n, 10)), 10,
                               ImageDatasetOptions().augmentation(pad, 0.3));
  const std::vector<index_t> order = {5, 0, 15, 3, 3, 9, 12, 1};
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    Rng rng(seed), replay(seed);
    auto [x, labels] = batch(d, order, &rng);
    for (std::size_t i = 0; i < order.size(); ++i) {
      const Draw t = draw(replay, pad, 0.3);
      const auto expected = reference_crop(im.image(order[i]), h, w, pad, t.dy, t.dx, t.flip);
      for (index_t j = 0; j < h * w; ++j) {
        REQUIRE(x[index_t(i) * h * w + j] == expected[std::size_t(j)] / 255.0);
      }
      CHECK(labels[i] == d.label(order[i]));
    }
  }
}

// shift_flip_image against its definition, for both borders, both flips and shifts past the edge.
TEST_CASE("shift_flip_image moves and mirrors with a constant or an edge border") {
  const index_t h = 5, w = 7;
  std::vector<int> src(static_cast<std::size_t>(h * w));
  std::iota(src.begin(), src.end(), 1);
  const auto clamp = [](index_t i, index_t n) { return std::min(std::max(i, index_t(0)), n - 1); };
  for (Border border : {Border::Constant, Border::Edge}) {
    for (bool flip : {false, true}) {
      for (index_t dy = -h - 1; dy <= h + 1; ++dy) {
        for (index_t dx = -w - 1; dx <= w + 1; ++dx) {
          std::vector<double> dst(src.size(), -5.0);
          shift_flip_image(src.data(), dst.data(), h, w, dy, dx, flip, border, -1.0,
                           [](int p) { return 0.5 * p; });
          for (index_t y = 0; y < h; ++y) {
            for (index_t x = 0; x < w; ++x) {
              index_t sy = y - dy, sx = x - dx;
              const bool inside = sy >= 0 && sy < h && sx >= 0 && sx < w;
              double want = -1.0;
              if (inside || border == Border::Edge) {
                sy = clamp(sy, h);
                sx = clamp(sx, w);
                want = 0.5 * src[static_cast<std::size_t>(sy * w + (flip ? w - 1 - sx : sx))];
              }
              INFO("border " << int(border) << " flip " << flip << " dy " << dy << " dx " << dx
                             << " at " << y << "," << x);
              REQUIRE(dst[static_cast<std::size_t>(y * w + x)] == want);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("augmentation is deterministic per generator state and off without a generator") {
  const IdxImages im = make_images(12, 28, 28, 8);
  const auto data = labelled(im, make_labels(12, 10));
  const auto options = ImageDatasetOptions().standardize(0.3, 0.35).augmentation();
  const ImageDataset<float> aug(data, 10, options);
  const ImageDataset<float> plain(data, 10, ImageDatasetOptions().standardize(0.3, 0.35));
  const std::vector<index_t> order = iota(12);

  Rng a(42), b(42), c(43);
  auto [xa, la] = batch(aug, order, &a);
  auto [xb, lb] = batch(aug, order, &b);
  auto [xc, lc] = batch(aug, order, &c);
  CHECK(std::equal(xa.begin(), xa.end(), xb.begin()));
  CHECK_FALSE(std::equal(xa.begin(), xa.end(), xc.begin()));
  CHECK(la == lc);  // augmentation never changes labels

  auto [xn, ln] = batch(aug, order, nullptr);  // evaluating: no generator, no augmentation
  auto [xp, lp] = batch(plain, order, nullptr);
  CHECK(std::equal(xn.begin(), xn.end(), xp.begin()));
  CHECK_FALSE(std::equal(xa.begin(), xa.end(), xp.begin()));

  Rng unused(42), fresh(42);  // augmentation disabled: a generator is ignored and not advanced
  auto [xu, lu] = batch(plain, order, &unused);
  CHECK(std::equal(xu.begin(), xu.end(), xp.begin()));
  CHECK(unused.next() == fresh.next());

  CHECK_THROWS_AS(ImageDataset<float>(data, 10, ImageDatasetOptions().augmentation(28)),
                  ValueError);
  CHECK_THROWS_AS(ImageDataset<float>(data, 10, ImageDatasetOptions().augmentation(-1)),
                  ValueError);
  CHECK_THROWS_AS(ImageDataset<float>(data, 10, ImageDatasetOptions().augmentation(2, 1.5)),
                  ValueError);
}

TEST_CASE("random erasing sets the drawn rectangle to 0 and leaves the rest, after crops") {
  const index_t n = 10, h = 12, w = 9, pad = 2;
  const IdxImages im = make_images(n, h, w, 31);
  const auto data = labelled(im, make_labels(n, 10));
  const std::vector<index_t> order = {3, 0, 9, 3, 5, 7, 1, 2};
  for (const bool crops : {false, true}) {
    auto options = ImageDatasetOptions().standardize(0.4, 0.3).erasing(0.6, 0.05, 0.5, 0.4);
    if (crops) options.augmentation(pad, 0.5);
    const ImageDataset<double> d(data, 10, options);
    const ImageDataset<double> plain(data, 10, ImageDatasetOptions().standardize(0.4, 0.3));
    int erased = 0, kept = 0;
    std::set<std::pair<index_t, index_t>> sizes;
    for (std::uint64_t seed = 0; seed < 40; ++seed) {
      Rng rng(seed), replay(seed);
      auto [x, labels] = batch(d, order, &rng);
      for (std::size_t i = 0; i < order.size(); ++i) {
        std::vector<double> want(std::size_t(h * w));
        const auto conv = [](double p) { return (p / 255.0 - 0.4) / 0.3; };
        if (crops) {
          const Draw t = draw(replay, pad, 0.5);
          const auto ref = reference_crop(im.image(order[i]), h, w, pad, t.dy, t.dx, t.flip);
          for (std::size_t j = 0; j < want.size(); ++j) want[j] = conv(ref[j]);
        } else {
          for (std::size_t j = 0; j < want.size(); ++j) want[j] = conv(im.image(order[i])[j]);
        }
        const Erasure e = draw_erasure(replay, h, w, 0.6, 0.05, 0.5, 0.4);
        if (e.h > 0) {
          ++erased;
          sizes.insert({e.h, e.w});
          // The rectangle covers the drawn share of the image, within rounding.
          CHECK(double(e.h * e.w) >= 0.5 * 0.05 * double(h * w));
          CHECK(double(e.h * e.w) <= 1.5 * 0.5 * double(h * w));
          for (index_t y = e.y0; y < e.y0 + e.h; ++y)
            for (index_t c = e.x0; c < e.x0 + e.w; ++c) want[std::size_t(y * w + c)] = 0.0;
        } else {
          ++kept;
        }
        for (index_t j = 0; j < h * w; ++j) {
          INFO("crops " << crops << " seed " << seed << " sample " << i << " pixel " << j);
          REQUIRE(x[index_t(i) * h * w + j] == Approx(want[std::size_t(j)]).margin(1e-12));
        }
      }
      CHECK(rng.next() == replay.next());        // exactly the documented draws were made
      auto [xn, ln] = batch(d, order, nullptr);  // evaluating: nothing erased
      auto [xp, lp] = batch(plain, order, nullptr);
      REQUIRE(std::equal(xn.begin(), xn.end(), xp.begin()));
    }
    const double share = double(erased) / double(erased + kept);
    CHECK(share > 0.45);  // p = 0.6 over 320 samples
    CHECK(share < 0.75);
    CHECK(sizes.size() > 10);
  }
}

TEST_CASE("random erasing is off at probability 0 and rejects bad options") {
  const IdxImages im = make_images(8, 28, 28, 12);
  const auto data = labelled(im, make_labels(8, 10));
  const std::vector<index_t> order = iota(8);
  // Probability 0 draws nothing more than the crops and flips: old runs replay unchanged.
  const ImageDataset<float> a(data, 10, ImageDatasetOptions().augmentation());
  const ImageDataset<float> b(data, 10, ImageDatasetOptions().augmentation().erasing(0.0));
  Rng ra(5), rb(5);
  auto [xa, la] = batch(a, order, &ra);
  auto [xb, lb] = batch(b, order, &rb);
  CHECK(std::equal(xa.begin(), xa.end(), xb.begin()));
  CHECK(ra.next() == rb.next());
  // Erasing alone (no crops or flips) changes some pixels to 0 and advances the generator.
  const ImageDataset<float> e(data, 10, ImageDatasetOptions().erasing(1.0));
  Rng re(5), fresh(5);
  auto [xe, le] = batch(e, order, &re);
  auto [xp, lp] = batch(e, order, nullptr);
  CHECK_FALSE(std::equal(xe.begin(), xe.end(), xp.begin()));
  CHECK(re.next() != fresh.next());
  CHECK(le == lp);

  const auto bad = [&](ImageDatasetOptions o) {
    CHECK_THROWS_AS(ImageDataset<float>(data, 10, o), ValueError);
  };
  bad(ImageDatasetOptions().erasing(1.5));
  bad(ImageDatasetOptions().erasing(-0.1));
  bad(ImageDatasetOptions().erasing(0.5, 0.0, 0.4));
  bad(ImageDatasetOptions().erasing(0.5, 0.5, 0.4));
  bad(ImageDatasetOptions().erasing(0.5, 0.02, 1.0));
  bad(ImageDatasetOptions().erasing(0.5, 0.02, 0.4, 0.0));
  bad(ImageDatasetOptions().erasing(0.5, 0.02, 0.4, 1.5));
  bad(ImageDatasetOptions().erasing(std::nan("")));
}

TEST_CASE("ImageDataset::get allocates nothing, with or without augmentation") {
  const IdxImages im = make_images(64, 28, 28, 9);
  const ImageDataset<float> d(
      labelled(im, make_labels(64, 10)), 10,
      ImageDatasetOptions().standardize(0.3, 0.35).augmentation().erasing(0.5));
  const std::vector<index_t> order = iota(32, 16);
  Tensor<float> x(Shape{32, 1, 28, 28});
  std::vector<std::int32_t> labels(32);
  Rng rng(1);
  const long long before = test::g_allocations.load();
  d.get(Span<const index_t>(order), x, labels.data(), &rng);
  d.get(Span<const index_t>(order), x, labels.data(), nullptr);
  CHECK(test::g_allocations.load() == before);
}

// ---- the real data ------------------------------------------------------------------------------
