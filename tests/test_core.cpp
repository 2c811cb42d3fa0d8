// Shape, Tensor<T>, Rng, errors, version, thread control, files.
#include <catch2/catch.hpp>

#include <minires/core/file.hpp>
#include <minires/minires.hpp>

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "file_util.hpp"

using namespace minires;

TEST_CASE("version matches the CMake project version") {
  CHECK(std::string(version_string) == MINIRES_EXPECTED_VERSION);
  CHECK(std::to_string(version_major) + "." + std::to_string(version_minor) + "." +
            std::to_string(version_patch) ==
        MINIRES_EXPECTED_VERSION);
}

TEST_CASE("Shape: rank, size, indexing, printing") {
  const Shape s{128, 4, 28, 28};
  CHECK(s.rank() == 4);
  CHECK(s.size() == 128 * 4 * 28 * 28);
  CHECK(s[0] == 128);
  CHECK(s[-1] == 28);
  CHECK(s.str() == "(128, 4, 28, 28)");
  CHECK(Shape{10}.str() == "(10,)");
  CHECK(Shape{}.size() == 1);
  CHECK(s.with_batch(7) == Shape{7, 4, 28, 28});
  CHECK(Shape{4, 28, 28}.prepend_batch(7) == Shape{7, 4, 28, 28});
  CHECK(Shape{}.prepend_batch(3) == Shape{3});
  CHECK(s != Shape{128, 4, 28});
  CHECK_THROWS_AS(s[4], ShapeError);
  CHECK_THROWS_AS((Shape{1, 2, 3, 4, 5}), ShapeError);
  CHECK_THROWS_AS((Shape{2, -1}), ShapeError);
  CHECK_THROWS_WITH((Shape{1, 2, 3, 4, 5}), Catch::Contains("at most 4") && Catch::Contains("5"));
}

TEMPLATE_TEST_CASE("Tensor: storage is aligned, zeroed and row-major", "", float, double) {
  Tensor<TestType> t(Shape{2, 3, 4, 5});
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % tensor_alignment == 0);
  CHECK(t.size() == 120);
  CHECK(t.rank() == 4);
  for (TestType v : t) CHECK(v == TestType(0));
  t(1, 2, 3, 4) = TestType(5);
  CHECK(t[119] == TestType(5));
  t(0, 1, 0, 2) = TestType(7);
  CHECK(t[1 * 20 + 0 * 5 + 2] == TestType(7));
  CHECK(t.at(0, 1, 0, 2) == TestType(7));
  CHECK_THROWS_AS(t.at(0, 3, 0, 0), ShapeError);
  CHECK_THROWS_WITH(t.at(0, 3, 0, 0), Catch::Contains("(2, 3, 4, 5)"));
  CHECK_THROWS_AS(t.at(0, 1), ShapeError);

  Tensor<TestType> m(Shape{3, 4});
  m(2, 1) = TestType(9);
  CHECK(m[9] == TestType(9));
  Tensor<TestType> v3(Shape{2, 3, 4});
  v3(1, 2, 3) = TestType(1);
  CHECK(v3[23] == TestType(1));
}

TEMPLATE_TEST_CASE("Tensor: moves are cheap, copies explicit", "", float, double) {
  Tensor<TestType> a(Shape{4, 4});
  a.fill(TestType(2));
  const TestType* p = a.data();
  Tensor<TestType> b = std::move(a);
  CHECK(b.data() == p);  // no copy of the storage
  CHECK(a.size() == 0);  // NOLINT(bugprone-use-after-move): moved-from is empty
  Tensor<TestType> c = b.clone();
  CHECK(c.data() != b.data());
  CHECK(c.shape() == b.shape());
  CHECK(c[15] == TestType(2));
  c[0] = TestType(3);
  CHECK(b[0] == TestType(2));
  b.copy_from(c);
  CHECK(b[0] == TestType(3));
  Tensor<TestType> wrong(Shape{4, 5});
  CHECK_THROWS_AS(b.copy_from(wrong), ShapeError);
  CHECK_THROWS_WITH(b.copy_from(wrong),
                    Catch::Contains("expected shape (4, 4)") && Catch::Contains("found (4, 5)"));
}

TEST_CASE("Tensor: reshape keeps the data, resize keeps the capacity") {
  Tensor<float> t(Shape{2, 6});
  for (index_t i = 0; i < 12; ++i) t[i] = static_cast<float>(i);
  const float* p = t.data();
  t.reshape(Shape{3, 2, 2});
  CHECK(t.data() == p);
  CHECK(t(2, 1, 1) == 11.f);
  CHECK_THROWS_AS(t.reshape(Shape{5, 2}), ShapeError);
  CHECK_THROWS_WITH(t.reshape(Shape{5, 2}), Catch::Contains("12") && Catch::Contains("(5, 2)"));

  const long long before = tensor_allocations();
  t.resize(Shape{2, 2});  // smaller: same storage
  CHECK(t.data() == p);
  CHECK(t.capacity() == 12);
  t.resize(Shape{3, 4});
  CHECK(t.data() == p);
  CHECK(tensor_allocations() == before);
  t.resize(Shape{5, 5});  // larger: new storage
  CHECK(tensor_allocations() == before + 1);
  CHECK(t.capacity() == 25);
}

TEST_CASE("Tensor: Eigen matrix views alias the storage") {
  Tensor<double> t(Shape{2, 3, 2});
  auto m = t.matrix();
  CHECK(m.rows() == 2);
  CHECK(m.cols() == 6);
  m(1, 4) = 3.5;
  CHECK(t(1, 2, 0) == 3.5);
  auto m2 = t.matrix(4, 3);
  CHECK(m2(3, 1) == 3.5);
  CHECK_THROWS_AS(t.matrix(5, 3), ShapeError);
  CHECK(t.vector().sum() == 3.5);
}

TEMPLATE_TEST_CASE("Tensor: seeded initialisation is reproducible", "", float, double) {
  Tensor<TestType> a(Shape{1000}), b(Shape{1000});
  Rng r1(42), r2(42);
  a.uniform(r1, TestType(-0.5), TestType(0.5));
  b.uniform(r2, TestType(-0.5), TestType(0.5));
  for (index_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == b[i]);
  for (TestType v : a) {
    CHECK(v >= TestType(-0.5));
    CHECK(v < TestType(0.5));
  }
  a.normal(r1, TestType(1), TestType(2));
  const double mean = a.vector().template cast<double>().mean();
  CHECK(mean == Approx(1.0).margin(0.2));
  Tensor<TestType> c(Shape{1000});
  Rng r3(43);
  c.uniform(r3, TestType(-0.5), TestType(0.5));
  CHECK(c[0] != b[0]);
}

TEST_CASE("Rng: distributions have the right moments") {
  Rng rng(1);
  const int n = 200000;
  double s = 0, s2 = 0, t2 = 0;
  std::vector<int> counts(7, 0);
  double tmax = 0;
  for (int i = 0; i < n; ++i) {
    const double u = rng.uniform();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    const double z = rng.normal();
    s += z;
    s2 += z * z;
    const double t = rng.truncated_normal(0.0, 1.0);
    t2 += t * t;
    tmax = std::max(tmax, std::abs(t));
    ++counts[rng.uniform_int(7)];
  }
  CHECK(s / n == Approx(0.0).margin(0.01));
  CHECK(s2 / n == Approx(1.0).margin(0.02));
  CHECK(tmax <= 2.0);
  CHECK(std::sqrt(t2 / n) == Approx(0.8796).margin(0.01));  // std of N(0,1) truncated at 2 sigma
  for (int c : counts) CHECK(c == Approx(n / 7.0).epsilon(0.03));
  CHECK_THROWS_AS(rng.uniform_int(0), ValueError);
}

TEST_CASE("Rng: the stream is fixed by the seed") {
  // Pinned values: a change here changes every seeded run of every user.
  Rng rng(2024);
  CHECK(rng.next() == 1029197146548041518ULL);
  CHECK(rng.next() == 14427268137155694693ULL);
  CHECK(rng.uniform() == 0.072054940062963313);
  Rng other(2025);
  CHECK(other.next() != 1029197146548041518ULL);
}

TEST_CASE("errors form one hierarchy") {
  CHECK_THROWS_AS(throw ShapeError("x"), Error);
  CHECK_THROWS_AS(throw ValueError("x"), Error);
  CHECK_THROWS_AS(throw IoError("x"), Error);
  CHECK_THROWS_AS(throw FormatError("x"), Error);
  CHECK_THROWS_AS(throw NumericalError("x"), Error);
  CHECK_THROWS_AS(throw Error("x"), std::runtime_error);
}

TEST_CASE("thread count is a user setting") {
  const int before = num_threads();
  set_num_threads(1);
  CHECK(num_threads() == 1);
  CHECK(Eigen::nbThreads() == 1);
  set_num_threads(2);
  CHECK(num_threads() == 2);
  CHECK_THROWS_AS(set_num_threads(0), ValueError);
  CHECK(num_threads() == 2);
  set_num_threads(before);
  CHECK(hardware_threads() >= 1);
}

TEST_CASE("thread counts beyond max_threads are refused with a clear message") {
  const int before = num_threads();
  for (int n : {max_threads + 1, 40000, 100000}) {
    CHECK_THROWS_AS(set_num_threads(n), ValueError);
    CHECK_THROWS_WITH(set_num_threads(n), Catch::Contains("expected 1 to 1024 threads") &&
                                              Catch::Contains(std::to_string(n)));
  }
  CHECK(num_threads() == before);
  check_num_threads();
#ifdef _OPENMP
  // what OMP_NUM_THREADS=100000 leaves in force; no parallel region runs until it is reset
  omp_set_num_threads(100000);
  CHECK_THROWS_AS(check_num_threads(), ValueError);
  CHECK_THROWS_WITH(check_num_threads(),
                    Catch::Contains("found 100000") && Catch::Contains("OMP_NUM_THREADS"));
  omp_set_num_threads(before);
#endif
  CHECK(oversubscribed(hardware_threads() + 1));
  CHECK_FALSE(oversubscribed(hardware_threads()));
}

// ---- Files --------------------------------------------------------------------------------

TEST_CASE("write_file_atomically writes whole files and replaces them") {
  test::TempDir dir("atomic");
  const std::string path = dir / "out.json";
  write_file_atomically(path, std::string("first"), "test");
  CHECK(test::read_bytes(path) == "first");
  write_file_atomically(path, std::string(100000, 'x'), "test");
  CHECK(test::read_bytes(path) == std::string(100000, 'x'));
  CHECK_FALSE(std::filesystem::exists(temporary_path(path)));
  const std::string unwritable = dir / "no/such/dir/file";
  CHECK_THROWS_AS(write_file_atomically(unwritable, std::string("x"), "test"), IoError);
  CHECK_THROWS_WITH(write_file_atomically(unwritable, std::string("x"), "test"),
                    Catch::Contains(unwritable) && Catch::Contains("cannot create"));
}

// A full disk, as a file-size limit: the write fails with the reason, the old file stays whole,
// and no temporary is left.
TEST_CASE("a failed write leaves the old file unchanged and no temporary behind") {
  test::TempDir dir("atomic_full");
  const std::string path = dir / "metrics.json";
  write_file_atomically(path, std::string("the earlier run"), "test");
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit before{};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &before) == 0);
  rlimit small = before;
  small.rlim_cur = 4096;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string message;
  try {
    write_file_atomically(path, std::string(100000, 'y'), "test");
  } catch (const IoError& e) {
    message = e.what();
  }
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &before) == 0);
  std::signal(SIGXFSZ, old_handler);
  CHECK_THAT(message, Catch::Contains(path) && Catch::Contains("File too large") &&
                          Catch::Contains("unchanged"));
  CHECK(test::read_bytes(path) == "the earlier run");
  CHECK_FALSE(std::filesystem::exists(temporary_path(path)));
}

TEST_CASE("remove_stale_temporaries removes what killed processes left, nothing else") {
  test::TempDir dir("stale");
  // a process that has ended: a child that exits at once
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  REQUIRE(child > 0);
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  const std::string dead = "last.mrm.tmp-" + std::to_string(child);
  const std::string mine = "metrics.json.tmp-" + std::to_string(::getpid());
  for (const auto& name : {dead, mine, std::string("notes.tmp-x1"), std::string("last.mrm")})
    test::write_bytes(dir / name, "partial");
  const std::vector<std::string> removed = remove_stale_temporaries(dir.path.string());
  CHECK(removed == std::vector<std::string>{dead});
  CHECK_FALSE(std::filesystem::exists(dir / dead));
  CHECK(std::filesystem::exists(dir / mine));
  CHECK(std::filesystem::exists(dir / "notes.tmp-x1"));
  CHECK(std::filesystem::exists(dir / "last.mrm"));
}

TEST_CASE("InputFile reads regular files only, without blocking on a FIFO") {
  test::TempDir dir("input_file");
  test::write_bytes(dir / "f", "abc");
  InputFile f(dir / "f", "test");
  CHECK(f.size() == 3);
  char buf[8];
  CHECK(f.read(buf, sizeof buf) == 3);
  const std::string fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  CHECK_THROWS_AS(InputFile(fifo, "test"), IoError);
  CHECK_THROWS_WITH(InputFile(dir.path.string(), "test"),
                    Catch::Contains("test '") && Catch::Contains("a directory"));
  CHECK_THROWS_WITH(InputFile(dir / "missing", "test"), Catch::Contains("cannot open"));
}
