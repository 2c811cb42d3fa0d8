// MaxPool2D, AvgPool2D, GlobalAvgPool2D and Flatten: forward and backward against direct loops
// (float and double) on random geometries, hand-computed values, Keras' output sizes, the
// first-maximum tie rule, NaN propagation, the 'same' divisor of average pooling, gradient checks
// in double, batches smaller than planned, results independent of the thread count, and errors.
#include <catch2/catch.hpp>

#include <minires/kernels/pool.hpp>
#include <minires/layers/avg_pool2d.hpp>
#include <minires/layers/flatten.hpp>
#include <minires/layers/global_avg_pool2d.hpp>
#include <minires/layers/max_pool2d.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "layer_test_util.hpp"

using namespace minires;
using kernels::Padding;
using minires::test::random_tensor;

namespace {

// Keras/TF output size and leading pad along one axis, written out from the rule.
struct Axis {
  index_t out, pad_before;
};
Axis keras_axis(index_t in, index_t k, index_t s, Padding padding) {
  if (padding == Padding::Valid) return {(in - k) / s + 1, 0};
  const index_t out = (in + s - 1) / s;
  const index_t total = std::max<index_t>((out - 1) * s + k - in, 0);
  return {out, total / 2};
}

enum class Pool { Max, Avg };

// Direct loops: y and dx (= backward of dy) of max or average pooling; windows clipped to the
// input; max takes the first maximum in row-major order, a NaN beating any number.
template <class T>
void naive_pool(Pool kind, const Tensor<T>& x, const Pool2DOptions& o, const Tensor<T>& dy,
                Tensor<T>& y, Tensor<T>& dx) {
  const index_t N = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  const index_t sh = o.stride_h ? o.stride_h : o.pool_h, sw = o.stride_w ? o.stride_w : o.pool_w;
  const Axis ah = keras_axis(H, o.pool_h, sh, o.padding);
  const Axis aw = keras_axis(W, o.pool_w, sw, o.padding);
  y.resize(Shape{N, C, ah.out, aw.out});
  dx.resize(x.shape());
  dx.zero();
  for (index_t n = 0; n < N; ++n)
    for (index_t c = 0; c < C; ++c)
      for (index_t oh = 0; oh < ah.out; ++oh)
        for (index_t ow = 0; ow < aw.out; ++ow) {
          index_t count = 0, bh = -1, bw = -1;
          T acc = T(0);
          for (index_t i = 0; i < o.pool_h; ++i)
            for (index_t j = 0; j < o.pool_w; ++j) {
              const index_t ih = oh * sh - ah.pad_before + i, iw = ow * sw - aw.pad_before + j;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              const T v = x(n, c, ih, iw);
              if (kind == Pool::Avg) {
                acc += v;
              } else if (count == 0 || v > acc || (std::isnan(v) && !std::isnan(acc))) {
                acc = v;
                bh = ih;
                bw = iw;
              }
              ++count;
            }
          REQUIRE(count > 0);
          const T g = dy(n, c, oh, ow);
          if (kind == Pool::Max) {
            y(n, c, oh, ow) = acc;
            dx(n, c, bh, bw) += g;
            continue;
          }
          y(n, c, oh, ow) = acc / static_cast<T>(count);
          for (index_t i = 0; i < o.pool_h; ++i)
            for (index_t j = 0; j < o.pool_w; ++j) {
              const index_t ih = oh * sh - ah.pad_before + i, iw = ow * sw - aw.pad_before + j;
              if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                dx(n, c, ih, iw) += g / static_cast<T>(count);
            }
        }
}

template <class T>
std::unique_ptr<Layer<T>> make_pool(Pool kind, const Pool2DOptions& o) {
  if (kind == Pool::Max) return std::make_unique<MaxPool2D<T>>(o);
  return std::make_unique<AvgPool2D<T>>(o);
}

// Runs a set-up layer on x with output gradient dy; returns y and dx (dx from zero).
template <class T>
std::pair<Tensor<T>, Tensor<T>> run(Layer<T>& layer, const Tensor<T>& x, const Tensor<T>& dy) {
  Tensor<T> y = test::forward<T>(layer, {&x});
  auto dx = test::backward<T>(layer, {&x}, y, dy);
  return {std::move(y), std::move(dx[0])};
}

// One plane (1, 1, H, W) with the given values, row-major.
Tensor<double> plane(index_t h, index_t w, const std::vector<double>& v) {
  Tensor<double> t(Shape{1, 1, h, w});
  REQUIRE(static_cast<index_t>(v.size()) == t.size());
  for (index_t i = 0; i < t.size(); ++i) t[i] = v[static_cast<std::size_t>(i)];
  return t;
}

std::vector<double> values(const Tensor<double>& t) {
  return std::vector<double>(t.begin(), t.end());
}

// Forward and backward (dy = 1 everywhere) of one layer on one input set up for it.
std::pair<Tensor<double>, Tensor<double>> run_ones(Layer<double>& layer, const Tensor<double>& x) {
  const Shape s = x.shape();
  layer.setup(Span<const Shape>(&s, 1));
  Tensor<double> dy(layer.output_shape(Span<const Shape>(&s, 1)));
  dy.fill(1.0);
  return run(layer, x, dy);
}

const double nan = std::numeric_limits<double>::quiet_NaN();

}  // namespace

TEMPLATE_TEST_CASE("MaxPool2D and AvgPool2D match direct loops on random geometries", "", float,
                   double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-13;
  Rng rng(5);
  int tested = 0;
  for (int trial = 0; trial < 200; ++trial) {
    Pool2DOptions o;
    o.pool_h = 1 + static_cast<index_t>(rng.uniform_int(4));
    o.pool_w = 1 + static_cast<index_t>(rng.uniform_int(4));
    o.stride_h = static_cast<index_t>(rng.uniform_int(4));  // 0: the pool size
    o.stride_w = static_cast<index_t>(rng.uniform_int(4));
    o.padding = rng.uniform_int(2) ? Padding::Same : Padding::Valid;
    const Shape shape{1 + static_cast<index_t>(rng.uniform_int(3)),
                      1 + static_cast<index_t>(rng.uniform_int(3)),
                      1 + static_cast<index_t>(rng.uniform_int(10)),
                      1 + static_cast<index_t>(rng.uniform_int(10))};
    if (o.padding == Padding::Valid && (o.pool_h > shape[2] || o.pool_w > shape[3])) continue;
    const Pool kind = trial % 2 ? Pool::Max : Pool::Avg;
    INFO((kind == Pool::Max ? "max" : "avg")
         << " input " << shape.str() << " pool " << o.pool_h << "x" << o.pool_w << " strides "
         << o.stride_h << "x" << o.stride_w << (o.padding == Padding::Same ? " same" : " valid"));
    auto layer = make_pool<T>(kind, o);
    layer->setup(Span<const Shape>(&shape, 1));
    const Tensor<T> x = random_tensor<T>(rng, shape, -2.0, 2.0);
    Tensor<T> y_ref, dx_ref;
    const Tensor<T> dy = random_tensor<T>(rng, layer->output_shape(Span<const Shape>(&shape, 1)));
    naive_pool(kind, x, o, dy, y_ref, dx_ref);
    const auto [y, dx] = run(*layer, x, dy);
    REQUIRE(y.shape() == y_ref.shape());
    for (index_t i = 0; i < y.size(); ++i)
      REQUIRE(y[i] == Approx(y_ref[i]).epsilon(tol).margin(tol));
    for (index_t i = 0; i < dx.size(); ++i)
      REQUIRE(dx[i] == Approx(dx_ref[i]).epsilon(tol).margin(tol));
    ++tested;
  }
  CHECK(tested > 120);
}

TEST_CASE(
    "Pooling output shapes follow Keras: defaults, 'valid' drops the odd row, 'same' is ceil") {
  MaxPool2D<double> pool;  // Keras defaults: pool 2x2, strides = pool, 'valid'
  CHECK(pool.options().pool_h == 2);
  CHECK(pool.options().stride_h == 2);
  CHECK(pool.options().stride_w == 2);
  CHECK(pool.options().padding == Padding::Valid);
  Shape s{32, 16, 28, 28};
  for (index_t expected : {14, 7, 3, 1}) {
    s = pool.output_shape(Span<const Shape>(&s, 1));
    CHECK(s == Shape{32, 16, expected, expected});
  }
  const Shape odd{2, 3, 7, 5};
  CHECK(MaxPool2D<float>(3, 2, Padding::Same).output_shape(Span<const Shape>(&odd, 1)) ==
        Shape{2, 3, 4, 3});
  CHECK(AvgPool2D<float>(3, 2, Padding::Valid).output_shape(Span<const Shape>(&odd, 1)) ==
        Shape{2, 3, 3, 2});
  CHECK(AvgPool2D<float>(Pool2DOptions().pool(2, 3).strides(1, 2).valid())
            .output_shape(Span<const Shape>(&odd, 1)) == Shape{2, 3, 6, 2});
  CHECK(GlobalAvgPool2D<float>().output_shape(Span<const Shape>(&odd, 1)) == Shape{2, 3});
  CHECK(Flatten<float>().output_shape(Span<const Shape>(&odd, 1)) == Shape{2, 105});
}

TEST_CASE("MaxPool2D values, and the gradient goes to the first maximum of each window") {
  SECTION("distinct values, 'valid' 2x2") {
    MaxPool2D<double> pool;
    const auto [y, dx] = run_ones(pool, plane(4, 4,
                                              {1, 2, 5, 3,    //
                                               4, 0, 1, 1,    //
                                               -1, -2, 7, 8,  //
                                               -3, -4, 9, 6}));
    CHECK(values(y) == std::vector<double>{4, 5, -1, 9});
    CHECK(values(dx) == std::vector<double>{0, 0, 1, 0,  //
                                            1, 0, 0, 0,  //
                                            1, 0, 0, 0,  //
                                            0, 0, 1, 0});
  }
  SECTION("exact ties: first in row-major order") {
    MaxPool2D<double> pool;
    const auto [y, dx] = run_ones(pool, plane(2, 6,
                                              {1, 5, 5, 1, 0, 0,  //
                                               5, 2, 1, 5, 0, 0}));
    CHECK(values(y) == std::vector<double>{5, 5, 0});
    CHECK(values(dx) == std::vector<double>{0, 1, 1, 0, 1, 0,  //
                                            0, 0, 0, 0, 0, 0});
  }
  SECTION("overlapping windows (pool 3, stride 2) add up at a shared maximum") {
    MaxPool2D<double> pool(3, 2);
    std::vector<double> v(25, 0.0);
    v[2 * 5 + 2] = 9;  // the centre belongs to all four windows
    v[0] = 9;          // ties with the centre in window (0, 0) and comes first
    const auto [y, dx] = run_ones(pool, plane(5, 5, v));
    CHECK(values(y) == std::vector<double>{9, 9, 9, 9});
    CHECK(dx(0, 0, 0, 0) == 1);
    CHECK(dx(0, 0, 2, 2) == 3);
    double total = 0;
    for (double g : dx) total += g;
    CHECK(total == 4);
  }
  SECTION("'same' padding: padded cells never win, even over negative inputs") {
    MaxPool2D<double> pool(3, 1, Padding::Same);  // 4x4 -> 4x4, one padded row/col on each side
    Tensor<double> x(Shape{1, 1, 4, 4});
    x.fill(-1.0);
    const auto [y, dx] = run_ones(pool, x);
    for (double v : y) CHECK(v == -1.0);
    // Along each axis the clipped windows start at input cells 0, 0, 1, 2 (the first one in
    // the padding); the tie goes to each window's first input cell.
    CHECK(values(dx) == std::vector<double>{4, 2, 2, 0,  //
                                            2, 1, 1, 0,  //
                                            2, 1, 1, 0,  //
                                            0, 0, 0, 0});
  }
  SECTION("an all -inf window keeps its first cell") {
    MaxPool2D<double> pool;
    const double inf = std::numeric_limits<double>::infinity();
    const auto [y, dx] = run_ones(pool, plane(2, 2, {-inf, -inf, -inf, -inf}));
    CHECK(y[0] == -inf);
    CHECK(values(dx) == std::vector<double>{1, 0, 0, 0});
  }
}

TEMPLATE_TEST_CASE("MaxPool2D propagates NaN and sends its gradient to the first NaN", "", float,
                   double) {
  using T = TestType;
  const T n = std::numeric_limits<T>::quiet_NaN();
  MaxPool2D<T> pool;
  const Shape s{1, 1, 2, 6};
  pool.setup(Span<const Shape>(&s, 1));
  Tensor<T> x(s);
  const T v[] = {9, 1, 1, n, 1, 2,  //
                 n, 3, n, 8, 3, 4};
  for (index_t i = 0; i < x.size(); ++i) x[i] = v[i];
  Tensor<T> dy(Shape{1, 1, 1, 3});
  dy.fill(T(1));
  const auto [y, dx] = run(pool, x, dy);
  CHECK(std::isnan(y[0]));  // NaN after a larger number
  CHECK(std::isnan(y[1]));  // two NaNs
  CHECK(y[2] == 4);         // unaffected
  CHECK(dx[6] == 1);        // first NaN of window 0
  CHECK(dx[3] == 1);        // first NaN (row-major) of window 1, not the one below-left of it
  CHECK(dx[8] == 0);
  CHECK(dx[0] == 0);
  CHECK(dx[11] == 1);
}

TEST_CASE("AvgPool2D: 'valid' is the plain mean, 'same' leaves padding out of the divisor") {
  SECTION("'valid' 2x2 mean, odd last row and column dropped") {
    AvgPool2D<double> pool;
    const auto [y, dx] = run_ones(pool, plane(3, 3, {1, 2, 3, 4, 5, 6, 7, 8, 9}));
    CHECK(values(y) == std::vector<double>{3});
    CHECK(values(dx) == std::vector<double>{0.25, 0.25, 0, 0.25, 0.25, 0, 0, 0, 0});
  }
  SECTION("'same' 2x2 stride 2 on 3x3: the bottom/right windows hold 2 and 1 cells") {
    AvgPool2D<double> pool(2, 2, Padding::Same);
    const auto [y, dx] = run_ones(pool, plane(3, 3, {1, 2, 3, 4, 5, 6, 7, 8, 9}));
    CHECK(values(y) == std::vector<double>{3, 4.5, 7.5, 9});
    CHECK(values(dx) == std::vector<double>{0.25, 0.25, 0.5, 0.25, 0.25, 0.5, 0.5, 0.5, 1});
  }
  SECTION("'same' 3x3 stride 1: a constant input stays exactly constant at the borders") {
    AvgPool2D<double> pool(3, 1, Padding::Same);
    Tensor<double> x(Shape{2, 3, 5, 4});
    x.fill(0.7);
    const auto [y, dx] = run_ones(pool, x);
    for (double v : y) CHECK(v == Approx(0.7).epsilon(1e-15));
    // Corner (0, 0) is in 4 windows: two corner windows (4 cells) and two edge windows (6 cells).
    CHECK(dx(0, 0, 0, 0) == Approx(1.0 / 4 + 2.0 / 6 + 1.0 / 9).epsilon(1e-15));
  }
}

TEST_CASE("GlobalAvgPool2D and Flatten values") {
  Rng rng(9);
  const Shape s{2, 3, 7, 5};
  const Tensor<double> x = random_tensor<double>(rng, s);
  const Tensor<double> dy2 = random_tensor<double>(rng, Shape{2, 3});
  GlobalAvgPool2D<double> gap;
  gap.setup(Span<const Shape>(&s, 1));
  const auto [g, dg] = run<double>(gap, x, dy2);
  REQUIRE(g.shape() == Shape{2, 3});
  for (index_t n = 0; n < 2; ++n)
    for (index_t c = 0; c < 3; ++c) {
      double sum = 0;
      for (index_t h = 0; h < 7; ++h)
        for (index_t w = 0; w < 5; ++w) sum += x(n, c, h, w);
      CHECK(g(n, c) == Approx(sum / 35).epsilon(1e-14));
      for (index_t h = 0; h < 7; ++h)
        for (index_t w = 0; w < 5; ++w)
          CHECK(dg(n, c, h, w) == Approx(dy2(n, c) / 35).epsilon(1e-15));
    }

  Flatten<double> flatten;
  flatten.setup(Span<const Shape>(&s, 1));
  const Tensor<double> dyf = random_tensor<double>(rng, Shape{2, 105});
  const auto [f, df] = run<double>(flatten, x, dyf);
  REQUIRE(f.shape() == Shape{2, 105});
  for (index_t n = 0; n < 2; ++n)
    for (index_t c = 0; c < 3; ++c)
      for (index_t h = 0; h < 7; ++h)
        for (index_t w = 0; w < 5; ++w) {
          REQUIRE(f(n, (c * 7 + h) * 5 + w) == x(n, c, h, w));  // NCHW order
          REQUIRE(df(n, c, h, w) == dyf(n, (c * 7 + h) * 5 + w));
        }
}

TEST_CASE("Pooling and Flatten gradient checks") {
  struct Case {
    Shape in;
    Pool2DOptions o;
  };
  const Case cases[] = {
      {{1, 1, 7, 5}, {2, 2, 0, 0, Padding::Valid}},  // batch 1, one channel, odd sizes
      {{2, 3, 7, 5}, {3, 3, 2, 2, Padding::Same}},   // overlapping, stride 2, 'same'
      {{2, 2, 6, 6}, {2, 2, 2, 2, Padding::Same}},   // 'same' that needs no padding
      {{1, 2, 5, 7}, {2, 3, 1, 2, Padding::Valid}},  // rectangular pool and strides
      {{3, 1, 4, 4}, {3, 3, 1, 1, Padding::Same}},   // padding on every side
      {{2, 2, 9, 9}, {3, 3, 2, 2, Padding::Valid}},  // overlapping, 'valid'
      {{1, 1, 3, 3}, {2, 2, 2, 2, Padding::Same}},   // windows of 4, 2 and 1 cells
  };
  Rng rng(100);
  for (const Case& c : cases) {
    const std::string geometry = c.in.str() + " pool " + std::to_string(c.o.pool_h) + "x" +
                                 std::to_string(c.o.pool_w) + " stride " +
                                 std::to_string(c.o.stride_h) + "x" + std::to_string(c.o.stride_w) +
                                 (c.o.padding == Padding::Same ? " same" : " valid");
    MaxPool2D<double> max_pool(c.o);
    test::require_gradients(max_pool, {c.in}, rng, geometry);
    AvgPool2D<double> avg_pool(c.o);
    test::require_gradients(avg_pool, {c.in}, rng, geometry);
  }
  for (const Shape& s : {Shape{1, 1, 7, 5}, Shape{2, 3, 4, 4}, Shape{3, 2, 1, 1}}) {
    GlobalAvgPool2D<double> gap;
    test::require_gradients(gap, {s}, rng, s.str());
  }
  for (const Shape& s : {Shape{1, 1, 7, 5}, Shape{2, 3, 4, 4}, Shape{3, 5}, Shape{2, 3, 5}}) {
    Flatten<double> flatten;
    test::require_gradients(flatten, {s}, rng, s.str());
  }
}

TEST_CASE("Pooling layers and Flatten run a batch smaller than planned") {
  const Pool2DOptions same{3, 3, 2, 2, Padding::Same};
  test::check_smaller_batch([&] { return std::make_unique<MaxPool2D<double>>(same); },
                            {Shape{1, 3, 7, 5}}, 5, 2);
  test::check_smaller_batch([&] { return std::make_unique<AvgPool2D<double>>(same); },
                            {Shape{1, 3, 7, 5}}, 5, 2);
  test::check_smaller_batch([] { return std::make_unique<GlobalAvgPool2D<double>>(); },
                            {Shape{1, 4, 3, 3}}, 4, 1);
  test::check_smaller_batch([] { return std::make_unique<Flatten<double>>(); }, {Shape{1, 4, 3, 3}},
                            4, 3);
}

TEST_CASE("Pooling results do not depend on the thread count") {
  Rng rng(77);
  const Shape s{8, 16, 28, 28};  // large enough for the parallel path
  const Tensor<float> x = random_tensor<float>(rng, s);
  for (Pool kind : {Pool::Max, Pool::Avg}) {
    auto layer = make_pool<float>(kind, Pool2DOptions().pool(3).strides(2).same());
    layer->setup(Span<const Shape>(&s, 1));
    const Tensor<float> dy =
        random_tensor<float>(rng, layer->output_shape(Span<const Shape>(&s, 1)));
    const int threads = num_threads();
    set_num_threads(1);
    const auto [y1, dx1] = run(*layer, x, dy);
    set_num_threads(2);
    const auto [y2, dx2] = run(*layer, x, dy);
    set_num_threads(threads);
    CHECK(std::equal(y1.begin(), y1.end(), y2.begin()));
    CHECK(std::equal(dx1.begin(), dx1.end(), dx2.begin()));
  }
}

TEST_CASE("pooling layers report Keras' class names") {
  CHECK(std::string(MaxPool2D<float>().type()) == "MaxPooling2D");
  CHECK(std::string(AvgPool2D<float>().type()) == "AveragePooling2D");
  CHECK(std::string(GlobalAvgPool2D<float>().type()) == "GlobalAveragePooling2D");
}

TEST_CASE("Pooling layers and Flatten reject bad use") {
  CHECK_THROWS_AS(MaxPool2D<double>(0), ValueError);
  CHECK_THROWS_WITH(MaxPool2D<double>(0),
                    Catch::Contains("MaxPooling2D") && Catch::Contains("found pool 0x0"));
  CHECK_THROWS_WITH(AvgPool2D<double>(Pool2DOptions().strides(-1, 1)),
                    Catch::Contains("AveragePooling2D") && Catch::Contains("strides -1x1"));

  MaxPool2D<double> pool(3);
  const Shape rank3{2, 7, 5};
  CHECK_THROWS_AS(pool.setup(Span<const Shape>(&rank3, 1)), ShapeError);
  CHECK_THROWS_WITH(pool.setup(Span<const Shape>(&rank3, 1)),
                    Catch::Contains("rank-4") && Catch::Contains("found shape (2, 7, 5)"));
  const Shape tiny{1, 1, 2, 5};
  CHECK_THROWS_WITH(pool.setup(Span<const Shape>(&tiny, 1)),
                    Catch::Contains("at least 3x3") && Catch::Contains("found (1, 1, 2, 5)"));
  CHECK(MaxPool2D<double>(3, 0, Padding::Same).output_shape(Span<const Shape>(&tiny, 1)) ==
        Shape{1, 1, 1, 2});

  const Shape planned{2, 3, 6, 6};
  pool.setup(Span<const Shape>(&planned, 1));
  Tensor<double> x(Shape{3, 3, 6, 6}), y(Shape{3, 3, 2, 2});
  const Tensor<double>* xp[] = {&x};
  CHECK_THROWS_WITH(
      pool.forward(Span<const Tensor<double>* const>(xp), y, Mode::Train),
      Catch::Contains("set up for inputs (2, 3, 6, 6)") && Catch::Contains("found (3, 3, 6, 6)"));
  // backward must follow a forward of the same batch
  Tensor<double> x1(Shape{1, 3, 6, 6}), y1(Shape{1, 3, 2, 2}), dy1(Shape{1, 3, 2, 2}),
      dx1(Shape{1, 3, 6, 6});
  const Tensor<double>* xp1[] = {&x1};
  Tensor<double>* dxp1[] = {&dx1};
  CHECK_THROWS_WITH(pool.backward(Span<const Tensor<double>* const>(xp1), y1, dy1,
                                  Span<Tensor<double>* const>(dxp1)),
                    Catch::Contains("backward must follow forward"));
  Tensor<double> dy_bad(Shape{1, 3, 3, 3});
  pool.forward(Span<const Tensor<double>* const>(xp1), y1, Mode::Train);
  CHECK_THROWS_WITH(pool.backward(Span<const Tensor<double>* const>(xp1), y1, dy_bad,
                                  Span<Tensor<double>* const>(dxp1)),
                    Catch::Contains("expected output gradient of shape (1, 3, 2, 2)") &&
                        Catch::Contains("found (1, 3, 3, 3)"));

  const Shape rank2{4, 10};
  CHECK_THROWS_WITH(GlobalAvgPool2D<double>().output_shape(Span<const Shape>(&rank2, 1)),
                    Catch::Contains("rank-4") && Catch::Contains("(4, 10)"));
  const Shape rank1{4};
  CHECK_THROWS_AS(Flatten<double>().output_shape(Span<const Shape>(&rank1, 1)), ShapeError);
  CHECK_THROWS_WITH(Flatten<double>().output_shape(Span<const Shape>(&rank1, 1)),
                    Catch::Contains("rank 2 to 4") && Catch::Contains("found shape (4,)"));

  // The kernels refuse explicit padding that leaves a window without input cells.
  const auto g = kernels::ConvGeometry::explicit_padding(1, 4, 4, 2, 2, 2, 2, 2, 0, 0, 0);
  std::vector<double> in(16), out(static_cast<std::size_t>(g.out_h * g.out_w));
  CHECK_THROWS_AS(kernels::avg_pool2d_forward(in.data(), g, 1, out.data()), ValueError);
  CHECK_THROWS_WITH(
      kernels::avg_pool2d_forward(in.data(), g, 1, out.data()),
      Catch::Contains("padding smaller than the 2x2 window") && Catch::Contains("top 2"));
}
