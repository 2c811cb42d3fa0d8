// Writes the seed corpus of the fuzz targets into DIR/{idx,checkpoint,run_metadata}: small
// valid inputs of each kind (and a few near misses), so fuzzing starts from real structure.
//   make_corpus DIR
#include <minires/minires.hpp>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "../examples/fmnist/config.hpp"

using namespace minires;
namespace fs = std::filesystem;

namespace {

std::string read(const std::string& path) {
  std::string s;
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return s;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) s.append(buf, n);
  std::fclose(f);
  return s;
}

// fmnist's metadata after `epochs` epochs of a run of `model`.
Metadata run_metadata(const std::string& model, index_t epochs) {
  fmnist::Settings given;
  given.model = model;
  const fmnist::Config c = given.resolve();
  fmnist::json history = fmnist::json::array();
  for (index_t e = 1; e <= epochs; ++e) {
    EpochStats s;
    s.epoch = e;
    s.train_loss = 2.0 / static_cast<double>(e);
    s.train_accuracy = 0.6;
    s.val_loss = 0.5;
    s.val_accuracy = 0.8;
    s.learning_rate = c.lr;
    s.seconds = 10;
    s.images_per_second = 5000;
    history.push_back(fmnist::epoch_json(s));
  }
  return {{"config", c.to_json().dump()},
          {"history", history.dump()},
          {"epoch", std::to_string(epochs)},
          {"best", "0.800000"},
          {"best_epoch", "1"},
          {"model", model}};
}

std::string serialized(const Metadata& m) {
  std::string s;
  for (const auto& [k, v] : m) s += k + '\0' + v + '\0';
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_corpus DIR\n");
    return 2;
  }
  const fs::path dir = argv[1];
  for (const char* sub : {"idx", "checkpoint", "run_metadata"}) fs::create_directories(dir / sub);

  IdxImages images{3, 4, 5, std::vector<std::uint8_t>(60)};
  for (std::size_t i = 0; i < images.pixels.size(); ++i)
    images.pixels[i] = static_cast<std::uint8_t>(i * 37 % 256);
  const std::vector<std::uint8_t> labels = {0, 9, 3, 3, 7};
  write_idx_images((dir / "idx/images").string(), images, false);
  write_idx_images((dir / "idx/images.gz").string(), images, true);
  write_idx_labels((dir / "idx/labels").string(), labels, false);
  write_idx_labels((dir / "idx/labels.gz").string(), labels, true);
  const std::string gz = read((dir / "idx/images.gz").string());
  write_file_atomically((dir / "idx/images-no-trailer.gz").string(), gz.substr(0, gz.size() - 8),
                        "make_corpus");

  Model<float> m;
  Node x = m.add_input(Shape{1, 4, 4});
  x = m.add(Conv2D<float>(2, 3, Conv2DOptions().same()), x);
  x = m.add(BatchNorm<float>(), x);
  x = m.add(ReLU<float>(), x);
  x = m.add(GlobalAvgPool2D<float>(), x);
  m.add(Dense<float>(3), x);
  m.init(1);
  save(m, (dir / "checkpoint/model.mrm").string(), run_metadata("seed", 1));
  RMSprop<float> opt;
  opt.attach(m.params());
  save(m, (dir / "checkpoint/with-optimizer.mrm").string(), {{"epoch", "1"}}, &opt);

  write_file_atomically((dir / "run_metadata/seed-2-epochs").string(),
                        serialized(run_metadata("seed", 2)), "make_corpus");
  write_file_atomically((dir / "run_metadata/resnet-1-epoch").string(),
                        serialized(run_metadata("resnet", 1)), "make_corpus");
  Metadata old = run_metadata("seed-as-written", 1);
  fmnist::json c = fmnist::json::parse(old["config"]);
  c["augment"] = false;
  c.erase("ema");
  old["config"] = c.dump();
  write_file_atomically((dir / "run_metadata/older-format").string(), serialized(old),
                        "make_corpus");
  std::printf("wrote the seed corpus to %s\n", dir.string().c_str());
  return 0;
}
