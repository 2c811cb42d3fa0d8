// Save and load: round trip, architecture mismatch, truncated and corrupt files, missing
// files, optimizer state; a failed load leaves the model unchanged.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>

#include <sys/stat.h>
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "file_util.hpp"
#include "synthetic.hpp"
#include "test_util.hpp"

using namespace minires;
using minires::test::read_bytes;
using minires::test::write_bytes;

namespace {

std::vector<float> flat(Model<float>& m) {
  std::vector<float> w;
  for (auto& p : m.params()) w.insert(w.end(), p.value->begin(), p.value->end());
  for (auto& p : m.state()) w.insert(w.end(), p.value->begin(), p.value->end());
  return w;
}

struct TempFile {
  std::string path;
  explicit TempFile(std::string p) : path(std::move(p)) {}
  ~TempFile() { std::remove(path.c_str()); }
};

}  // namespace

TEST_CASE("save -> load -> predict gives identical outputs") {
  TempFile file("test_checkpoint_roundtrip.mrm");
  auto train = test::line_patterns<float>(64, 3);
  auto a = test::small_resnet<float>();
  a.init(1);
  SoftmaxCrossEntropy<float> loss;
  RMSprop<float> opt;
  fit(a, loss, opt, train, FitOptions{1, 16});  // moves weights and BN statistics
  save(a, file.path, {{"epoch", "1"}, {"note", "hello"}});

  auto b = test::small_resnet<float>();
  b.init(2);
  REQUIRE(flat(a) != flat(b));
  const Metadata meta = load(b, file.path);
  CHECK(meta.at("epoch") == "1");
  CHECK(meta.at("note") == "hello");
  CHECK(flat(a) == flat(b));
  const Tensor<float> pa = predict(a, train.samples()), pb = predict(b, train.samples());
  CHECK(std::equal(pa.begin(), pa.end(), pb.begin()));

  std::string arch;
  CHECK(read_metadata(file.path, &arch).at("note") == "hello");
  CHECK(arch == a.architecture());

  // a float file loads into a double model of the same architecture
  auto d = test::small_resnet<double>();
  d.init(3);
  load(d, file.path);
  CHECK(static_cast<float>(d.params()[0].value->data()[0]) == a.params()[0].value->data()[0]);
}

TEST_CASE("bad files throw clear errors and leave the model unchanged") {
  TempFile file("test_checkpoint_bad.mrm"), broken("test_checkpoint_broken.mrm");
  auto a = test::small_resnet<float>();
  a.init(1);
  save(a, file.path);
  const std::string good = read_bytes(file.path);
  auto b = test::small_resnet<float>();
  b.init(2);
  const auto original = flat(b);

  SECTION("missing file") {
    CHECK_THROWS_AS(load(b, "no/such/dir/model.mrm"), IoError);
    CHECK_THROWS_WITH(load(b, "no/such/dir/model.mrm"), Catch::Contains("no/such/dir/model.mrm"));
  }
  SECTION("truncated file") {
    for (std::size_t keep : {std::size_t(0), std::size_t(10), good.size() / 2, good.size() - 1}) {
      write_bytes(broken.path, good.substr(0, keep));
      INFO("kept " << keep << " bytes");
      CHECK_THROWS_AS(load(b, broken.path), FormatError);
    }
  }
  SECTION("corrupt byte") {
    std::string bad = good;
    bad[bad.size() / 2] = static_cast<char>(bad[bad.size() / 2] ^ 0x40);
    write_bytes(broken.path, bad);
    CHECK_THROWS_WITH(load(b, broken.path), Catch::Contains("checksum"));
  }
  SECTION("not a model") {
    write_bytes(broken.path, std::string(100, 'x'));
    CHECK_THROWS_WITH(load(b, broken.path), Catch::Contains("not a minires model"));
  }
  SECTION("another architecture") {
    Model<float> other;
    Node x = other.add_input(Shape{1, 8, 8});
    x = other.add(Conv2D<float>(4, 3, Conv2DOptions().same()), x);
    x = other.add(GlobalAvgPool2D<float>(), x);
    other.add(Dense<float>(4), x);
    other.init(1);
    const TempFile o("test_checkpoint_other.mrm");
    save(other, o.path);
    CHECK_THROWS_WITH(load(b, o.path),
                      Catch::Contains("another architecture") && Catch::Contains("conv2d_1"));
  }
  SECTION("optimizer state asked for but absent") {
    RMSprop<float> opt;
    opt.attach(b.params());
    CHECK_THROWS_WITH(load(b, file.path, &opt), Catch::Contains("optimizer/"));
  }
  CHECK(flat(b) == original);
}

TEST_CASE("saving is atomic and reports unwritable paths") {
  auto a = test::small_resnet<float>();
  a.init(1);
  CHECK_THROWS_AS(save(a, "no/such/dir/model.mrm"), IoError);
  TempFile file("test_checkpoint_atomic.mrm");
  save(a, file.path);
  save(a, file.path);  // overwriting an existing file goes through a temporary and a rename
  std::ifstream tmp(file.path + ".tmp-" + std::to_string(::getpid()));
  CHECK_FALSE(tmp.good());
  CHECK(read_bytes(file.path).substr(0, 7) == "MINIRES");
}

TEST_CASE("only regular files load, and declared sizes are checked before anything is allocated") {
  auto a = test::small_resnet<float>();
  a.init(1);
  const auto original = flat(a);
  using Catch::Contains;
  // not regular files: a device that never ends, a directory, a FIFO (without waiting)
  CHECK_THROWS_AS(load(a, "/dev/zero"), IoError);
  CHECK_THROWS_WITH(load(a, "/dev/zero"), Contains("/dev/zero") &&
                                              Contains("expected a regular file") &&
                                              Contains("character device"));
  const std::string dir = "test_checkpoint_dir.mrm";
  std::filesystem::create_directory(dir);
  CHECK_THROWS_WITH(read_metadata(dir), Contains(dir) && Contains("found a directory"));
  std::filesystem::remove(dir);
  const std::string fifo = "test_checkpoint_fifo.mrm";
  std::filesystem::remove(fifo);
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_WITH(load(a, fifo), Contains(fifo) && Contains("FIFO"));
  std::filesystem::remove(fifo);

  // a header that declares a 4 GiB architecture string in a small file
  TempFile file("test_checkpoint_declared.mrm");
  save(a, file.path);
  std::string bytes = read_bytes(file.path);
  for (int i = 12; i < 16; ++i) bytes[static_cast<std::size_t>(i)] = '\xff';
  const auto crc = static_cast<std::uint32_t>(
      ::crc32(0L, reinterpret_cast<const unsigned char*>(bytes.data()), uInt(bytes.size() - 4)));
  std::memcpy(&bytes[bytes.size() - 4], &crc, 4);
  write_bytes(file.path, bytes);
  CHECK_THROWS_AS(load(a, file.path), FormatError);
  CHECK_THROWS_WITH(load(a, file.path), Contains("truncated") && Contains("architecture"));
  // a wrong version is reported before the rest is read
  bytes = read_bytes(file.path);
  bytes[8] = 9;
  write_bytes(file.path, bytes);
  CHECK_THROWS_WITH(load(a, file.path), Contains("expected format version 1, found 9"));
  CHECK(flat(a) == original);
}

TEST_CASE("architectures saved with the pooling layers' short names still load") {
  // Before the pooling layers reported Keras' class names, checkpoints stored MaxPool2D,
  // AvgPool2D and GlobalAvgPool2D, and default node names made from them (max_pool2d_1).
  // Reading translates the types and those default names; other names stay as they are.
  const std::string old_text =
      "input_1 Input  <- (None, 1, 28, 28)\n"
      "max_pool2d_1 MaxPool2D pool=2x2 strides=2x2 padding=valid <- input_1 (None, 1, 14, 14)\n"
      "MaxPool2D MaxPool2D pool=2x2 strides=1x1 padding=same <- max_pool2d_1 (None, 1, 14, 14)\n"
      "avg_pool2d_x AvgPool2D pool=2x2 strides=2x2 padding=valid <- MaxPool2D (None, 1, 7, 7)\n"
      "global_avg_pool2d_1 GlobalAvgPool2D  <- avg_pool2d_x (None, 1)\n"
      "output global_avg_pool2d_1\n";
  const std::string current =
      "input_1 Input  <- (None, 1, 28, 28)\n"
      "max_pooling2d_1 MaxPooling2D pool=2x2 strides=2x2 padding=valid <- input_1 "
      "(None, 1, 14, 14)\n"
      "MaxPool2D MaxPooling2D pool=2x2 strides=1x1 padding=same <- max_pooling2d_1 "
      "(None, 1, 14, 14)\n"
      "avg_pool2d_x AveragePooling2D pool=2x2 strides=2x2 padding=valid <- MaxPool2D "
      "(None, 1, 7, 7)\n"
      "global_average_pooling2d_1 GlobalAveragePooling2D  <- avg_pool2d_x (None, 1)\n"
      "output global_average_pooling2d_1\n";
  CHECK(detail::with_current_type_names(old_text) == current);
  CHECK(detail::with_current_type_names(current) == current);

  Model<float> m;
  Node x = m.add_input(Shape{1, 4, 4});
  x = m.add(MaxPool2D(2), x, "max_pool2d_1");  // a new file: a name given is kept as it is
  x = m.add(GlobalAvgPool2D(), x);
  m.set_output(x);
  CHECK(m.architecture().find(" MaxPooling2D ") != std::string::npos);
  CHECK(detail::with_current_type_names(m.architecture()) == m.architecture());
}

TEST_CASE("optimizer state round-trips") {
  TempFile file("test_checkpoint_opt.mrm");
  auto train = test::line_patterns<float>(64, 3);
  auto a = test::small_resnet<float>();
  a.init(1);
  SoftmaxCrossEntropy<float> loss;
  Adam<float> opt;
  fit(a, loss, opt, train, FitOptions{1, 16});
  save(a, file.path, {}, &opt);
  auto b = test::small_resnet<float>();
  b.init(1);
  Adam<float> opt_b;
  opt_b.attach(b.params());
  load(b, file.path, &opt_b);
  CHECK(opt_b.iterations() == opt.iterations());
  auto sa = opt.state(), sb = opt_b.state();
  REQUIRE(sa.size() == sb.size());
  for (std::size_t i = 0; i < sa.size(); ++i) {
    CHECK(sa[i].name == sb[i].name);
    CHECK(std::equal(sa[i].value->begin(), sa[i].value->end(), sb[i].value->begin()));
  }
}

TEST_CASE("load_model rebuilds a saved model from its own architecture description") {
  auto a = test::small_resnet<float>();
  a.init(3);
  TempFile file("test_checkpoint_load_model.mrm");
  save(a, file.path, {{"note", "x"}});
  ModelRegistry<float> known;
  known.add("dense", [] {
    Model<float> m;
    m.add(Dense<float>(4), m.add_input(Shape{64}));
    return m;
  });
  known.add("small_resnet", [] { return test::small_resnet<float>(); });
  CHECK_THROWS_AS(known.add("dense", [] { return Model<float>(); }), ValueError);
  std::string name;
  Metadata meta;
  Model<float> b = load_model(file.path, known, &name, &meta);
  CHECK(name == "small_resnet");
  CHECK(meta.at("note") == "x");
  CHECK(flat(b) == flat(a));

  ModelRegistry<float> none;
  none.add("dense", known.entries()[0].second);
  CHECK_THROWS_AS(load_model(file.path, none), FormatError);
  CHECK_THROWS_WITH(load_model(file.path, none),
                    Catch::Contains("none of the known architectures (dense)") &&
                        Catch::Contains("load(model, path)"));
}
