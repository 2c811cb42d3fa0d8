// fmnist_subset SRC DST TRAIN TEST: writes the first TRAIN training and TEST test images of the
// Fashion-MNIST files in SRC, with their labels, to DST as gzip IDX files (the layout fmnist
// reads). The fmnist smoke test runs the program on such a subset: the same files, formats and
// code paths as the full data, a fraction of the work (which matters under the sanitizers).
#include <minires/data/fashion_mnist.hpp>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>

using namespace minires;

namespace {

void write_part(const LabelledImages& part, index_t count, const std::string& dst,
                const std::string& name) {
  if (count < 1 || count > part.size()) {
    throw ValueError("fmnist_subset: expected 1 to " + std::to_string(part.size()) + " " + name +
                     " images, found " + std::to_string(count));
  }
  IdxImages images = part.images;
  images.count = count;
  images.pixels.resize(static_cast<std::size_t>(count * images.image_size()));
  write_idx_images(dst + "/" + name + "-images-idx3-ubyte.gz", images, true);
  write_idx_labels(dst + "/" + name + "-labels-idx1-ubyte.gz",
                   Span<const std::uint8_t>(part.labels.data(), static_cast<std::size_t>(count)),
                   true);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: fmnist_subset SRC DST TRAIN TEST\n");
    return 2;
  }
  try {
    const FashionMnist data = load_fashion_mnist(argv[1]);
    std::filesystem::create_directories(argv[2]);
    write_part(*data.train, std::atoll(argv[3]), argv[2], "train");
    write_part(*data.test, std::atoll(argv[4]), argv[2], "t10k");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
