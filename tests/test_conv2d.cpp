// Conv2D: gradient checks in double on every input and parameter (batch 1, one channel, odd
// sizes, rectangular and even kernels, strides with TF's asymmetric 'same' padding, the 1x1
// fast path, no bias); forward and backward against direct convolution loops in float and
// double; a smaller batch than planned; run-to-run bit-identical results; initialisation; errors.
#include <catch2/catch.hpp>

#include <minires/kernels/naive/conv2d.hpp>
#include <minires/layers/conv2d.hpp>

#include "gradcheck_summary.hpp"
#include "test_util.hpp"

#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

using namespace minires;
using kernels::ConvGeometry;
using kernels::Padding;
using minires::test::random_tensor;
using minires::test::to_double;

namespace {

struct ConvCase {
  const char* name;
  Shape input;
  index_t filters, kernel_h, kernel_w;
  Conv2DOptions options;
};

const std::vector<ConvCase>& cases() {
  static const std::vector<ConvCase> c = {
      {"batch 1, one channel, 3x3 valid", {1, 1, 5, 5}, 2, 3, 3, {}},
      {"odd sizes, 3x2 kernel", {2, 3, 7, 5}, 4, 3, 2, {}},
      {"stride 2, same, asymmetric padding",
       {2, 2, 7, 8},
       3,
       3,
       3,
       Conv2DOptions().strides(2).same()},
      {"same, even 2x4 kernel", {2, 2, 5, 6}, 3, 2, 4, Conv2DOptions().same()},
      {"1x1 fast path", {3, 4, 3, 5}, 5, 1, 1, {}},
      {"1x1 same (still the fast path), no bias",
       {2, 3, 4, 3},
       2,
       1,
       1,
       Conv2DOptions().same().no_bias()},
      {"1x1 stride 2 (im2col path)", {2, 3, 5, 5}, 2, 1, 1, Conv2DOptions().strides(2)},
      {"no bias, strides 2x1", {2, 2, 6, 7}, 3, 3, 3, Conv2DOptions().strides(2, 1).no_bias()},
      {"kernel as large as the input", {2, 2, 4, 3}, 3, 4, 3, {}},
      {"same, stride 3, 5x5 kernel on 4x4",
       {1, 2, 4, 4},
       2,
       5,
       5,
       Conv2DOptions().strides(3).same()},
      // Stride 1 or 2, 'same' output size, at least 32 column rows and at most 4/3 dropped
      // columns: the shifted path (kernels/conv2d.hpp).
      {"shifted: 3x3 same", {2, 4, 12, 12}, 3, 3, 3, Conv2DOptions().same()},
      {"shifted: even 4x2 kernel, asymmetric padding, no bias",
       {2, 4, 12, 10},
       3,
       4,
       2,
       Conv2DOptions().same().no_bias()},
      {"shifted: 3x3 same on a wide 6x16 image", {3, 6, 6, 16}, 2, 3, 3, Conv2DOptions().same()},
      {"shifted: stride 2, 3x3 same, even size",
       {2, 4, 16, 16},
       3,
       3,
       3,
       Conv2DOptions().strides(2).same()},
      {"shifted: stride 2, 3x3 same, odd sizes (padding on both sides)",
       {2, 4, 15, 17},
       3,
       3,
       3,
       Conv2DOptions().strides(2).same()},
      {"shifted: strides 2x1, 3x3 same",
       {2, 4, 16, 12},
       3,
       3,
       3,
       Conv2DOptions().strides(2, 1).same()},
      {"shifted: 1x3 kernel at stride 2 (odd rows unread)",
       {2, 16, 16, 14},
       3,
       1,
       3,
       Conv2DOptions().strides(2).same()},
      // The weight gradient keeps up to 4 SIMD batches of filters in registers: 40 and 70
      // filters give blocks of 3 and 4 batches (float) and several blocks (double, 70).
      {"shifted: 40 filters", {2, 4, 12, 12}, 40, 3, 3, Conv2DOptions().same()},
      {"shifted: 70 filters, stride 2",
       {2, 4, 14, 14},
       70,
       3,
       3,
       Conv2DOptions().strides(2).same()},
  };
  return c;
}

// Large enough (> 2^20 multiply-adds) for the batch to be split over the threads.
const std::vector<ConvCase>& parallel_cases() {
  static const std::vector<ConvCase> c = {
      {"parallel: 3x3 same, batch 9", {9, 8, 16, 16}, 8, 3, 3, Conv2DOptions().same()},
      {"parallel: 1x1, batch 9", {9, 32, 16, 16}, 32, 1, 1, {}},
      {"parallel: 3x3 stride 2 same, no bias, batch 9",
       {9, 16, 20, 20},
       16,
       3,
       3,
       Conv2DOptions().strides(2).same().no_bias()},
      // Groups of images share one GEMM (kernels::conv2d_plan): 7x7 runs shifted in groups of
      // 12 and 4x4 by im2col in groups of 12, so batch 37 over the slots ends in partial groups;
      // 20 and 17 filters leave partial blocks of rows.
      {"grouped: 3x3 same at 7x7, batch 37", {37, 12, 7, 7}, 20, 3, 3, Conv2DOptions().same()},
      {"grouped: 3x3 same at 4x4, batch 37", {37, 9, 4, 4}, 17, 3, 3, Conv2DOptions().same()},
      {"grouped: 1x1 stride 2 at 9x9, batch 37",
       {37, 6, 9, 9},
       5,
       1,
       1,
       Conv2DOptions().strides(2).no_bias()},
      // 3x3 stride 1 with C F / (C + F) >= 3 x the SIMD width: Winograd F(4x4, 3x3) for the
      // forward and the input gradient on every host (kernels/conv/plan.hpp).
      {"winograd: 3x3 same, 128 -> 128 at 6x7, batch 5",
       {5, 128, 6, 7},
       128,
       3,
       3,
       Conv2DOptions().same()},
      {"winograd: 3x3 valid, 96 -> 144 at 7x6, batch 3, no bias",
       {3, 96, 7, 6},
       144,
       3,
       3,
       Conv2DOptions().no_bias()},
      {"winograd: 3x3 same at 4x4, batch 37", {37, 128, 4, 4}, 128, 3, 3, Conv2DOptions().same()},
  };
  return c;
}

template <class T>
Conv2D<T> make_conv(const ConvCase& c) {
  return Conv2D<T>(c.filters, c.kernel_h, c.kernel_w, c.options);
}

// Largest |a - b| / (1 + |b|).
template <class T>
double max_diff(const Tensor<T>& a, const std::vector<double>& b) {
  REQUIRE(static_cast<std::size_t>(a.size()) == b.size());
  double m = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    m = std::max(m, std::abs(static_cast<double>(a[static_cast<index_t>(i)]) - b[i]) /
                        (1.0 + std::abs(b[i])));
  }
  return m;
}

template <class T>
constexpr double tolerance() {
  return std::is_same_v<T, float> ? 2e-5 : 1e-12;
}

// Runs forward and backward of `conv` (set up for `planned`) on a batch of `batch` images and
// compares y, dx, dkernel and dbias with the direct loops evaluated in double.
template <class T>
void compare_with_naive(Conv2D<T>& conv, const Shape& planned, index_t batch, Rng& rng) {
  const Shape in_planned = planned;
  conv.setup(Span<const Shape>(&in_planned, 1));
  conv.init(rng);
  if (conv.options().use_bias) conv.bias.uniform(rng, T(-1), T(1));
  const Shape in = planned.with_batch(batch);
  const Shape out = conv.output_shape(Span<const Shape>(&in, 1));
  const auto x = random_tensor<T>(rng, in);
  Tensor<T> y(out);
  const Tensor<T>* xs[] = {&x};
  conv.forward(Span<const Tensor<T>* const>(xs), y, Mode::Train);

  const ConvGeometry& g = conv.geometry();
  const auto xd = to_double(x), wd = to_double(conv.kernel), bd = to_double(conv.bias);
  const double* b = conv.options().use_bias ? bd.data() : nullptr;
  std::vector<double> yd(static_cast<std::size_t>(out.size()));
  kernels::naive::conv2d_forward(xd.data(), batch, g, wd.data(), b, conv.filters(), yd.data());
  CHECK(max_diff(y, yd) <= tolerance<T>());

  // Backward into pre-filled gradients (the layer accumulates).
  const auto dy = random_tensor<T>(rng, out);
  auto dx = random_tensor<T>(rng, in);
  conv.dkernel.uniform(rng, T(-1), T(1));
  if (conv.options().use_bias) conv.dbias.uniform(rng, T(-1), T(1));
  auto dxd = to_double(dx), dwd = to_double(conv.dkernel), dbd = to_double(conv.dbias);
  Tensor<T>* dxs[] = {&dx};
  conv.backward(Span<const Tensor<T>* const>(xs), y, dy, Span<Tensor<T>* const>(dxs));
  const auto dyd = to_double(dy);
  kernels::naive::conv2d_backward(xd.data(), dyd.data(), batch, g, wd.data(), conv.filters(),
                                  dxd.data(), dwd.data(), b ? dbd.data() : nullptr);
  CHECK(max_diff(dx, dxd) <= tolerance<T>());
  CHECK(max_diff(conv.dkernel, dwd) <= tolerance<T>() * std::sqrt(static_cast<double>(batch)));
  if (b) CHECK(max_diff(conv.dbias, dbd) <= tolerance<T>() * batch);
}

}  // namespace

TEST_CASE("Conv2D gradients match finite differences") {
  Rng rng(42);
  for (const auto& c : cases()) {
    auto conv = make_conv<double>(c);
    minires::test::require_gradients(conv, {c.input}, rng, c.name);
  }
}

TEST_CASE("Conv2D gradients through the Winograd path match finite differences") {
  Rng rng(44);
  testing::LayerCheckOptions options;
  options.grad.max_checks = 40;  // evenly spaced elements of each tensor
  // The loss is linear in the input and the kernel, so a larger step adds no truncation error
  // and divides the rounding noise of the Winograd transforms over 128 channels (2.5e-8
  // absolute at h = 1e-6 in the ASan build on Zen 4: above the 1e-8 tolerance).
  options.grad.step = 1e-4;
  Conv2D<double> conv(128, 3, Conv2DOptions().same());
  const Shape in{1, 128, 4, 5};
  conv.setup(Span<const Shape>(&in, 1));
  REQUIRE(std::string(conv.algorithm()) == "winograd");
  minires::test::require_gradients(conv, {in}, rng, "winograd", options);
}

TEST_CASE("Conv2D gradient check without the input gradient (dx null)") {
  Rng rng(43);
  testing::LayerCheckOptions options;
  options.check_input = {false};
  Conv2D<double> conv(3, 3, Conv2DOptions().strides(2).same());
  const auto r =
      minires::test::require_gradients(conv, {Shape{2, 2, 6, 5}}, rng, "dx null", options);
  CHECK(r.parts.size() == 2);  // kernel and bias only
  Conv2D<double> shifted(3, 3, Conv2DOptions().same());
  REQUIRE(kernels::conv2d_is_shifted(
      kernels::ConvGeometry::keras(4, 12, 12, 3, 3, 1, 1, kernels::Padding::Same)));
  const auto s = minires::test::require_gradients(shifted, {Shape{2, 4, 12, 12}}, rng,
                                                  "dx null, shifted", options);
  CHECK(s.parts.size() == 2);
}

TEMPLATE_TEST_CASE("Conv2D forward and backward match direct loops", "", float, double) {
  using T = TestType;
  Rng rng(7);
  for (const auto& c : cases()) {
    INFO(c.name);
    auto conv = make_conv<T>(c);
    compare_with_naive(conv, c.input, c.input[0], rng);
    const bool named_shifted = std::string(c.name).rfind("shifted", 0) == 0;
    CHECK(kernels::conv2d_is_shifted(conv.geometry()) == named_shifted);
  }
  for (const auto& c : parallel_cases()) {
    INFO(c.name);
    auto conv = make_conv<T>(c);
    compare_with_naive(conv, c.input, c.input[0], rng);
    const bool named_winograd = std::string(c.name).rfind("winograd", 0) == 0;
    CHECK((std::string(conv.algorithm()) == "winograd") == named_winograd);
  }
  // Random geometries, batches spread over the threads.
  for (int trial = 0; trial < 40; ++trial) {
    const index_t C = 1 + static_cast<index_t>(rng.uniform_int(4));
    const index_t H = 1 + static_cast<index_t>(rng.uniform_int(10));
    const index_t W = 1 + static_cast<index_t>(rng.uniform_int(10));
    const index_t kh = 1 + static_cast<index_t>(rng.uniform_int(4));
    const index_t kw = 1 + static_cast<index_t>(rng.uniform_int(4));
    Conv2DOptions o;
    o.strides(1 + static_cast<index_t>(rng.uniform_int(3)),
              1 + static_cast<index_t>(rng.uniform_int(3)));
    if (rng.uniform_int(2) == 0) o.same();
    if (rng.uniform_int(4) == 0) o.no_bias();
    if (o.padding == Padding::Valid && (kh > H || kw > W)) continue;
    const index_t filters = 1 + static_cast<index_t>(rng.uniform_int(5));
    const index_t batch = 1 + static_cast<index_t>(rng.uniform_int(5));
    INFO("C=" << C << " H=" << H << " W=" << W << " k=" << kh << "x" << kw << " s=" << o.stride_h
              << "x" << o.stride_w << (o.padding == Padding::Same ? " same" : " valid")
              << " filters=" << filters << " batch=" << batch);
    Conv2D<T> conv(filters, kh, kw, o);
    compare_with_naive(conv, Shape{batch, C, H, W}, batch, rng);
  }
}

TEMPLATE_TEST_CASE("Conv2D runs a smaller batch than planned with the same buffers", "", float,
                   double) {
  using T = TestType;
  Rng rng(8);
  for (const auto& c : {cases()[2], cases()[4], cases()[10]}) {  // im2col, pointwise, shifted
    INFO(c.name);
    auto conv = make_conv<T>(c);
    compare_with_naive(conv, c.input.with_batch(7), 3, rng);
    compare_with_naive(conv, c.input.with_batch(7), 1, rng);
  }
}

TEST_CASE("Conv2D allocates nothing in forward and backward after setup") {
  Rng rng(9);
  Conv2D<float> conv(4, 3, Conv2DOptions().same());
  const Shape planned{6, 3, 9, 9};
  conv.setup(Span<const Shape>(&planned, 1));
  conv.init(rng);
  const Shape in{4, 3, 9, 9};
  const auto x = random_tensor<float>(rng, in);
  Tensor<float> y(Shape{4, 4, 9, 9}), dy(Shape{4, 4, 9, 9}), dx(in);
  const Tensor<float>* xs[] = {&x};
  Tensor<float>* dxs[] = {&dx};
  const long long before = tensor_allocations();
  conv.forward(Span<const Tensor<float>* const>(xs), y, Mode::Train);
  conv.backward(Span<const Tensor<float>* const>(xs), y, dy, Span<Tensor<float>* const>(dxs));
  CHECK(tensor_allocations() == before);
}

// The batch slots are fixed at setup: the thread count at run time changes nothing.
TEST_CASE("Conv2D results do not depend on the thread count after setup") {
  Rng rng(10);
  std::vector<ConvCase> all = parallel_cases();
  all.insert(all.end(), {cases()[2], cases()[4], cases()[7], cases()[10]});
  for (const auto& c : all) {
    INFO(c.name);
    auto conv = make_conv<float>(c);
    const Shape in = c.input.with_batch(9);
    conv.setup(Span<const Shape>(&in, 1));
    conv.init(rng);
    const Shape out = conv.output_shape(Span<const Shape>(&in, 1));
    const auto x = random_tensor<float>(rng, in);
    const auto dy = random_tensor<float>(rng, out);
    const Tensor<float>* xs[] = {&x};
    auto run = [&](int threads) {
      const int before = num_threads();
      set_num_threads(threads);
      std::vector<Tensor<float>> r;
      r.emplace_back(out);
      r.emplace_back(in);
      conv.dkernel.zero();
      conv.dbias.zero();
      Tensor<float>* dxs[] = {&r[1]};
      conv.forward(Span<const Tensor<float>* const>(xs), r[0], Mode::Train);
      conv.backward(Span<const Tensor<float>* const>(xs), r[0], dy,
                    Span<Tensor<float>* const>(dxs));
      r.push_back(conv.dkernel.clone());
      r.push_back(conv.dbias.clone());
      set_num_threads(before);
      return r;
    };
    const auto a = run(1);
    const auto b = run(2);
    for (std::size_t i = 0; i < a.size(); ++i) {
      REQUIRE(a[i].shape() == b[i].shape());
      if (a[i].empty()) continue;  // dbias without bias
      CHECK(std::memcmp(a[i].data(), b[i].data(), sizeof(float) * a[i].size()) == 0);
    }
  }
}

TEST_CASE("Conv2D output shapes follow Keras") {
  auto out = [](const Conv2D<float>& conv, Shape in) {
    return conv.output_shape(Span<const Shape>(&in, 1));
  };
  CHECK(out(Conv2D<float>(16, 3), {8, 1, 28, 28}) == Shape{8, 16, 26, 26});
  CHECK(out(Conv2D<float>(16, 3, Conv2DOptions().same()), {8, 1, 28, 28}) == Shape{8, 16, 28, 28});
  CHECK(out(Conv2D<float>(32, 3, Conv2DOptions().same().strides(2)), {8, 16, 28, 28}) ==
        Shape{8, 32, 14, 14});
  CHECK(out(Conv2D<float>(32, 3, Conv2DOptions().strides(2)), {8, 16, 28, 28}) ==
        Shape{8, 32, 13, 13});
  CHECK(out(Conv2D<float>(4, 1), {2, 64, 14, 14}) == Shape{2, 4, 14, 14});
  CHECK(out(Conv2D<float>(4, 2, 5, Conv2DOptions().same()), {2, 3, 7, 9}) == Shape{2, 4, 7, 9});
}

TEST_CASE("Conv2D configuration string") {
  CHECK(Conv2D<float>(4, 3).config() ==
        "filters=4 kernel=3x3 strides=1x1 padding=valid use_bias=true");
  CHECK(Conv2D<float>(8, 2, 5, Conv2DOptions().strides(2, 1).same().no_bias()).config() ==
        "filters=8 kernel=2x5 strides=2x1 padding=same use_bias=false");
}

TEST_CASE("Conv2D parameters and Keras 2.0 initialisation") {
  Rng rng(11);
  Conv2D<float> conv(16, 3);
  const Shape in{2, 1, 28, 28};
  conv.setup(Span<const Shape>(&in, 1));
  conv.init(rng);
  REQUIRE(conv.kernel.shape() == Shape{16, 1, 3, 3});
  REQUIRE(conv.dkernel.shape() == Shape{16, 1, 3, 3});
  REQUIRE(conv.bias.shape() == Shape{16});
  const auto p = conv.params();
  REQUIRE(p.size() == 2);
  CHECK(p[0].name == "kernel");
  CHECK(p[0].value == &conv.kernel);
  CHECK(p[0].grad == &conv.dkernel);
  CHECK(p[1].name == "bias");
  CHECK(conv.param_count() == 16 * 9 + 16);
  // glorot_uniform with receptive-field fans: fan_in 9, fan_out 144 -> limit 0.1980295.
  float max_abs = 0;
  for (float w : conv.kernel) max_abs = std::max(max_abs, std::abs(w));
  CHECK(max_abs <= 0.1980295f);
  CHECK(max_abs > 0.9f * 0.1980295f);
  for (float b : conv.bias) CHECK(b == 0.0f);

  Conv2D<float> he(8, 3, Conv2DOptions().kernel_init(Initializer::HeNormal).no_bias());
  const Shape in4{1, 4, 5, 5};
  he.setup(Span<const Shape>(&in4, 1));
  he.init(rng);
  CHECK(he.params().size() == 1);
  CHECK(he.bias.empty());
  const double stddev = std::sqrt(2.0 / 36.0);  // fan_in = 4 * 3 * 3
  for (float w : he.kernel) CHECK(std::abs(w) <= 2 * stddev + 1e-7);
}

TEST_CASE("Conv2D reports bad use with the expected and found values") {
  using Catch::Contains;
  CHECK_THROWS_AS(Conv2D<float>(0, 3), ValueError);
  CHECK_THROWS_WITH(Conv2D<float>(0, 3), Contains("filters >= 1") && Contains("found 0"));
  CHECK_THROWS_WITH(Conv2D<float>(4, 0, 3), Contains("kernel size >= 1") && Contains("0x3"));
  CHECK_THROWS_AS(Conv2D<float>(4, 3, Conv2DOptions().strides(0, 1)), ValueError);
  CHECK_THROWS_WITH(Conv2D<float>(4, 3, Conv2DOptions().strides(0, 1)),
                    Contains("strides >= 1") && Contains("0x1"));

  Rng rng(1);
  Conv2D<float> conv(4, 5);
  auto setup = [&](Shape s) { conv.setup(Span<const Shape>(&s, 1)); };
  CHECK_THROWS_AS(setup({2, 28, 28}), ShapeError);
  CHECK_THROWS_WITH(setup({2, 28, 28}), Contains("rank-4") && Contains("(2, 28, 28)"));
  CHECK_THROWS_AS(setup({2, 1, 3, 4}), ShapeError);
  CHECK_THROWS_WITH(setup({2, 1, 3, 4}),
                    Contains("kernel 5x5") && Contains("input 3x4") && Contains("'valid'"));
  CHECK_THROWS_WITH(setup({2, 0, 8, 8}), Contains("C, H, W >= 1") && Contains("(2, 0, 8, 8)"));
  CHECK_THROWS_WITH(conv.init(rng), Contains("setup() before init()"));

  Tensor<float> x(Shape{2, 3, 8, 8}), y(Shape{2, 4, 4, 4});
  const Tensor<float>* xs[] = {&x};
  CHECK_THROWS_WITH(conv.forward(Span<const Tensor<float>* const>(xs), y, Mode::Train),
                    Contains("setup()"));

  setup({2, 3, 8, 8});
  conv.init(rng);
  // The kernel is built for 3 channels now.
  CHECK_THROWS_AS(setup({2, 4, 8, 8}), ShapeError);
  CHECK_THROWS_WITH(setup({2, 4, 8, 8}), Contains("3 channels") && Contains("(2, 4, 8, 8)"));
  // Runtime inputs must match the planned shape, with a batch up to the planned one.
  Tensor<float> x4(Shape{2, 4, 8, 8}), x_big(Shape{3, 3, 8, 8});
  const Tensor<float>* x4s[] = {&x4};
  const Tensor<float>* bigs[] = {&x_big};
  CHECK_THROWS_AS(conv.forward(Span<const Tensor<float>* const>(x4s), y, Mode::Train), ShapeError);
  CHECK_THROWS_WITH(conv.forward(Span<const Tensor<float>* const>(x4s), y, Mode::Train),
                    Contains("(2, 3, 8, 8)") && Contains("(2, 4, 8, 8)"));
  CHECK_THROWS_WITH(conv.forward(Span<const Tensor<float>* const>(bigs), y, Mode::Train),
                    Contains("(3, 3, 8, 8)"));
  // The output tensor must have the output shape of this batch.
  Tensor<float> y_wrong(Shape{2, 4, 8, 8});
  CHECK_THROWS_WITH(conv.forward(Span<const Tensor<float>* const>(xs), y_wrong, Mode::Train),
                    Contains("(2, 4, 4, 4)") && Contains("(2, 4, 8, 8)"));
  // Gradients must have the shapes of the output and the input.
  Tensor<float> dx_wrong(Shape{2, 3, 8, 7});
  Tensor<float>* dxs[] = {&dx_wrong};
  CHECK_THROWS_AS(
      conv.backward(Span<const Tensor<float>* const>(xs), y, y, Span<Tensor<float>* const>(dxs)),
      ShapeError);
  CHECK_THROWS_WITH(
      conv.backward(Span<const Tensor<float>* const>(xs), y, y, Span<Tensor<float>* const>(dxs)),
      Contains("(2, 3, 8, 8)") && Contains("(2, 3, 8, 7)"));
}
