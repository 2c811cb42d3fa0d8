// ReLU fusion: BatchNorm and Add with a fused ReLU equal the layer followed by a ReLU, bit for
// bit (forward, backward, training and inference), pass the gradient check, and Model fuses
// exactly the ReLUs that are the only consumer of a BatchNorm or Add, with training steps
// bit-identical to the unfused model. Inference folding: a BatchNorm folded into the
// convolution before it gives the unfolded graph's outputs up to rounding. Gradient
// overwriting: every layer told to write an input's gradient gives what it adds into a zeroed
// one, a layer that cannot write refuses, and Model lets the first writer of each gradient
// write it.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>
#include <minires/models/fashion_mnist.hpp>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "gradcheck_summary.hpp"
#include "synthetic.hpp"
#include "test_util.hpp"

using namespace minires;
using minires::test::random_tensor;

namespace {

template <class T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
  return a.shape() == b.shape() &&
         (a.empty() || std::memcmp(a.data(), b.data(), sizeof(T) * a.size()) == 0);
}

template <class T>
Span<const Tensor<T>* const> inputs(const std::vector<const Tensor<T>*>& v) {
  return Span<const Tensor<T>* const>(v.data(), v.size());
}
template <class T>
Span<Tensor<T>* const> grads(const std::vector<Tensor<T>*>& v) {
  return Span<Tensor<T>* const>(v.data(), v.size());
}

// A layer's forward and backward followed by a separate ReLU, against the same layer type with
// the ReLU fused; the inputs are shared, every output compared bit for bit.
template <class L>
void check_fused_equals_separate(L& separate, L& fused, const std::vector<Shape>& shapes, Mode mode,
                                 Rng& rng) {
  using T = float;
  fused.set_fused_relu(true);
  REQUIRE(fused.fused_relu());
  REQUIRE_FALSE(separate.fused_relu());
  ReLU<T> relu;
  std::vector<Tensor<T>> xs;
  for (const auto& s : shapes) xs.push_back(random_tensor<T>(rng, s));
  std::vector<const Tensor<T>*> xp;
  for (auto& x : xs) xp.push_back(&x);
  separate.setup(Span<const Shape>(shapes.data(), shapes.size()));
  fused.setup(Span<const Shape>(shapes.data(), shapes.size()));
  const Shape out = separate.output_shape(Span<const Shape>(shapes.data(), shapes.size()));
  relu.setup(Span<const Shape>(&out, 1));

  Tensor<T> y_sep(out), z_sep(out), z_fused(out);
  separate.forward(inputs<T>(xp), y_sep, mode);
  relu.forward(inputs<T>({&y_sep}), z_sep, mode);
  fused.forward(inputs<T>(xp), z_fused, mode);
  CHECK(same_bits(z_sep, z_fused));

  const auto dz = random_tensor<T>(rng, out);
  Tensor<T> dy_sep(out);  // the layer's own output gradient, zeroed as Model does
  relu.backward(inputs<T>({&y_sep}), z_sep, dz, grads<T>({&dy_sep}));
  std::vector<Tensor<T>> dx_sep, dx_fused;
  for (const auto& s : shapes) {
    dx_sep.push_back(random_tensor<T>(rng, s));  // backward accumulates into what is there
    dx_fused.push_back(dx_sep.back().clone());
  }
  std::vector<Tensor<T>*> gs, gf;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    gs.push_back(&dx_sep[i]);
    gf.push_back(&dx_fused[i]);
  }
  separate.backward(inputs<T>(xp), y_sep, dy_sep, grads<T>(gs));
  fused.backward(inputs<T>(xp), z_fused, dz, grads<T>(gf));
  for (std::size_t i = 0; i < shapes.size(); ++i) CHECK(same_bits(dx_sep[i], dx_fused[i]));
  auto ps = separate.params();
  auto pf = fused.params();
  REQUIRE(ps.size() == pf.size());
  for (std::size_t i = 0; i < ps.size(); ++i) {
    INFO(ps[i].name);
    CHECK(same_bits(*ps[i].grad, *pf[i].grad));
  }
}

// The layer's backward writing the input gradients marked in `writes` (set_gradient_overwrite;
// those buffers start as NaN, which must not leak through) against the same backward adding
// into zeroed buffers; the others start equal and are added to. Equal values (a written −0 is
// an added +0).
template <class L>
void check_overwrite_equals_zeroed(L& layer, const std::vector<Shape>& shapes, Mode mode,
                                   const std::vector<bool>& writes, Rng& rng) {
  using T = float;
  std::vector<Tensor<T>> xs;
  for (const auto& s : shapes) xs.push_back(random_tensor<T>(rng, s));
  std::vector<const Tensor<T>*> xp;
  for (auto& x : xs) xp.push_back(&x);
  layer.setup(Span<const Shape>(shapes.data(), shapes.size()));
  layer.init(rng);
  const Shape out = layer.output_shape(Span<const Shape>(shapes.data(), shapes.size()));
  Tensor<T> y(out);
  layer.forward(inputs<T>(xp), y, mode);
  const auto dy = random_tensor<T>(rng, out);
  std::vector<Tensor<T>> added, written;
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    added.push_back(writes[i] ? Tensor<T>(shapes[i]) : random_tensor<T>(rng, shapes[i]));
    written.push_back(added.back().clone());
    if (writes[i]) written.back().fill(std::numeric_limits<T>::quiet_NaN());
  }
  std::vector<Tensor<T>*> ga, gw;
  for (std::size_t i = 0; i < shapes.size(); ++i)
    ga.push_back(&added[i]), gw.push_back(&written[i]);
  layer.set_gradient_overwrite({});
  layer.backward(inputs<T>(xp), y, dy, grads<T>(ga));
  layer.set_gradient_overwrite(writes);
  layer.backward(inputs<T>(xp), y, dy, grads<T>(gw));
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    INFO("input " << i << (writes[i] ? " written" : " added to"));
    CHECK(std::equal(added[i].begin(), added[i].end(), written[i].begin()));
  }
}

// A few training steps of a model; returns the logits of every step and the final parameters.
template <class T>
std::vector<Tensor<T>> train_steps(Model<T>& m, const Shape& in, index_t classes, int steps) {
  m.init(5);
  SoftmaxCrossEntropy<T> loss;
  loss.setup(Shape{in[0], classes});
  SGDOptions o;
  o.lr = 0.05;
  o.momentum = 0.9;
  SGD<T> opt(o);
  opt.attach(m.params());
  Rng rng(11);
  std::vector<Tensor<T>> out;
  for (int s = 0; s < steps; ++s) {
    const auto x = random_tensor<T>(rng, in);
    std::vector<std::int32_t> labels(static_cast<std::size_t>(in[0]));
    for (auto& l : labels) l = static_cast<std::int32_t>(rng.uniform_int(classes));
    m.zero_grad();
    const Tensor<T>& logits = m.forward(x, Mode::Train);
    out.push_back(logits.clone());
    loss.forward(logits, Span<const std::int32_t>(labels.data(), labels.size()));
    loss.backward(m.output_grad());
    m.backward();
    opt.step();
  }
  out.push_back(m.forward(random_tensor<T>(rng, in), Mode::Infer).clone());
  for (auto& p : m.params()) out.push_back(p.value->clone());
  for (auto& p : m.state()) out.push_back(p.value->clone());
  return out;
}

}  // namespace

TEST_CASE("BatchNorm with a fused ReLU equals BatchNorm then ReLU, bit for bit") {
  Rng rng(1);
  for (const Shape& s : {Shape{6, 5, 7, 7}, Shape{3, 4, 33, 20}, Shape{9, 13}}) {
    INFO(s.str());
    BatchNorm<float> a, b;
    check_fused_equals_separate(a, b, {s}, Mode::Train, rng);
    BatchNorm<float> c, d;
    check_fused_equals_separate(c, d, {s}, Mode::Infer, rng);
  }
}

TEST_CASE("Add with a fused ReLU equals Add then ReLU, bit for bit") {
  Rng rng(2);
  for (int k : {2, 3}) {
    for (const Shape& s : {Shape{4, 3, 9, 9}, Shape{2, 37}}) {
      INFO(k << " inputs, " << s.str());
      Add<float> a, b;
      check_fused_equals_separate(a, b, std::vector<Shape>(static_cast<std::size_t>(k), s),
                                  Mode::Train, rng);
    }
  }
}

TEST_CASE("fused BatchNorm+ReLU and Add+ReLU pass the gradient check") {
  Rng rng(3);
  BatchNorm<double> bn;
  bn.set_fused_relu(true);
  test::require_gradients(bn, {Shape{4, 3, 3, 3}}, rng, "fused relu, train");
  Add<double> add;
  add.set_fused_relu(true);
  test::require_gradients(add, {Shape{2, 3, 4, 4}, Shape{2, 3, 4, 4}}, rng, "fused relu");
}

namespace {

// A layer that cannot write its input gradient: y = -x, dx += -dy (Layer's default).
class Negate final : public UnaryLayer<float> {
 public:
  const char* type() const override { return "Negate"; }
  Shape output_shape(Span<const Shape> inputs) const override {
    expect_inputs(inputs, 1);
    return inputs[0];
  }
  void setup(Span<const Shape> inputs) override { plan(inputs); }
  void forward(Span<const Tensor<float>* const> x, Tensor<float>& y, Mode /*mode*/) override {
    const Tensor<float>& in = forward_input(x, y);
    for (index_t i = 0; i < in.size(); ++i) y.data()[i] = -in.data()[i];
  }
  void backward(Span<const Tensor<float>* const> x, const Tensor<float>& y, const Tensor<float>& dy,
                Span<Tensor<float>* const> dx) override {
    Tensor<float>* dx0 = backward_grad(x, y, dy, dx);
    if (dx0 == nullptr) return;
    for (index_t i = 0; i < dy.size(); ++i) dx0->data()[i] -= dy.data()[i];
  }
};

}  // namespace

TEST_CASE("every layer writes its input gradients when told to, as added to zeros") {
  Rng rng(4);
  for (const Shape& s : {Shape{6, 5, 7, 7}, Shape{3, 4, 33, 20}, Shape{9, 13}}) {
    for (bool relu : {false, true}) {
      for (Mode mode : {Mode::Train, Mode::Infer}) {
        INFO(s.str() << (relu ? " fused relu" : "") << (mode == Mode::Train ? " train" : " infer"));
        BatchNorm<float> bn;
        bn.set_fused_relu(relu);
        CHECK(bn.can_overwrite_gradients());
        check_overwrite_equals_zeroed(bn, {s}, mode, {true}, rng);
      }
    }
  }
  for (bool relu : {false, true}) {
    for (const std::vector<bool>& writes :
         {std::vector<bool>{true, false}, std::vector<bool>{false, true},
          std::vector<bool>{true, true, false}}) {
      INFO((relu ? "fused relu, " : "") << writes.size() << " inputs");
      Add<float> add;
      add.set_fused_relu(relu);
      CHECK(add.can_overwrite_gradients());
      const Shape s{3, 4, 9, 9};
      check_overwrite_equals_zeroed(add, std::vector<Shape>(writes.size(), s), Mode::Train, writes,
                                    rng);
    }
  }
  // Every algorithm: shifted (stride 1 and 2, and 1x3 at stride 2, which leaves phases without
  // a tap), Winograd, im2col, pointwise; and, on an AMX CPU, the bf16 paths.
  struct Case {
    index_t channels, size, filters, kh, kw, stride;
  };
  const Case cases[] = {{32, 14, 32, 3, 3, 1},  {32, 28, 32, 3, 3, 2}, {32, 9, 8, 1, 3, 2},
                        {128, 4, 128, 3, 3, 1}, {32, 14, 64, 1, 1, 2}, {16, 7, 8, 1, 1, 1},
                        {3, 10, 5, 3, 3, 1}};
  std::vector<MatmulPrecision> precisions{MatmulPrecision::Highest};
  if (kernels::amx_available()) precisions.push_back(MatmulPrecision::BF16);
  struct Restore {
    ~Restore() { set_matmul_precision(MatmulPrecision::Highest); }
  } restore;
  for (MatmulPrecision precision : precisions) {
    set_matmul_precision(precision);
    for (const Case& c : cases) {
      Conv2D<float> conv(c.filters, c.kh, c.kw, Conv2DOptions().same().strides(c.stride));
      INFO(c.channels << "->" << c.filters << " " << c.kh << "x" << c.kw << " s" << c.stride << " @"
                      << c.size << (precision == MatmulPrecision::BF16 ? " bf16" : ""));
      CHECK(conv.can_overwrite_gradients());
      const Shape in{5, c.channels, c.size, c.size};
      conv.setup(Span<const Shape>(&in, 1));
      INFO(conv.algorithm());
      check_overwrite_equals_zeroed(conv, {in}, Mode::Train, {true}, rng);
    }
  }
  // The other single-input layers. Pooling: the 2x2 fast path, windows that leave the last row
  // and column out (2x2 on 7x7), overlapping ones (3x3 stride 2) and 'same' padding.
  {
    ReLU<float> relu;
    check_overwrite_equals_zeroed(relu, {Shape{4, 3, 5, 5}}, Mode::Train, {true}, rng);
    Flatten<float> flatten;
    check_overwrite_equals_zeroed(flatten, {Shape{4, 3, 5, 5}}, Mode::Train, {true}, rng);
    GlobalAvgPool2D<float> gap;
    check_overwrite_equals_zeroed(gap, {Shape{4, 6, 7, 7}}, Mode::Train, {true}, rng);
    for (const DenseOptions& o : {DenseOptions(), DenseOptions().no_bias()}) {
      Dense<float> dense(7, o);
      check_overwrite_equals_zeroed(dense, {Shape{5, 13}}, Mode::Train, {true}, rng);
    }
    const Pool2DOptions pools[] = {Pool2DOptions(), Pool2DOptions().pool(3).strides(2),
                                   Pool2DOptions().pool(3).strides(2).same()};
    for (const Shape& s : {Shape{3, 4, 8, 8}, Shape{3, 4, 7, 7}, Shape{2, 3, 9, 9}}) {
      for (const Pool2DOptions& o : pools) {
        INFO(s.str() << " pool " << o.pool_h << " strides " << o.stride_h
                     << (o.padding == kernels::Padding::Same ? " same" : " valid"));
        MaxPool2D<float> max_pool(o);
        CHECK(max_pool.can_overwrite_gradients());
        check_overwrite_equals_zeroed(max_pool, {s}, Mode::Train, {true}, rng);
        AvgPool2D<float> avg_pool(o);
        check_overwrite_equals_zeroed(avg_pool, {s}, Mode::Train, {true}, rng);
      }
    }
  }
}

TEST_CASE("Model: the first writer of each gradient writes it, also with repeated inputs") {
  // Add({r, r}) takes the same node twice (the buffer is zeroed, not written, then both add),
  // r also feeds the 1x1 convolution (which adds after the Add wrote), the BatchNorms write
  // their convolutions' gradients and the second convolution the first one's: the whole graph
  // passes the gradient check.
  Model<double> m;
  Node x = m.add_input(Shape{2, 4, 4});
  Node r = m.add(Conv2D<double>(4, 3, Conv2DOptions().same()), x);
  r = m.add(Conv2D<double>(3, 3, Conv2DOptions().same()), r);  // writes the first one's gradient
  r = m.add(BatchNorm<double>(), r);
  r = m.add(ReLU<double>(), r);
  Node c = m.add(Conv2D<double>(3, 1), r);
  c = m.add(BatchNorm<double>(), c);
  Node twice = m.add(Add<double>(), {r, r});
  Node a = m.add(Add<double>(), {twice, c});
  a = m.add(ReLU<double>(), a);
  a = m.add(Flatten<double>(), a);
  m.add(Dense<double>(3), a);
  m.init(8);
  Rng rng(12);
  const auto in = random_tensor<double>(rng, Shape{3, 2, 4, 4});
  const auto proj = random_tensor<double>(rng, Shape{3, 3});
  auto loss = [&] {
    const auto& y = m.forward(in, Mode::Train);
    return testing::compensated_dot(y.data(), proj.data(), y.size());
  };
  loss();
  m.zero_grad();
  m.output_grad().copy_from(proj);
  m.backward();
  for (auto& p : m.params()) {
    Tensor<double> analytic = p.grad->clone();
    const auto result =
        testing::check_gradient(loss, p.value->data(), p.value->size(), analytic.data(),
                                testing::GradCheckOptions{1e-6, 1e-5, 1e-7, 0});
    INFO(p.name << ": " << result.report());
    CHECK(result.ok());
  }
}

TEST_CASE("Model zeroes the gradient a layer that cannot write it starts") {
  // Negate is the first (and only) writer of the convolution's output gradient and cannot
  // write it, so Model zeroes that buffer just before Negate's backward: a second step gives
  // the same gradients, bit for bit, instead of adding the first step's into them.
  Model<float> m;
  Node x = m.add_input(Shape{2, 6, 6});
  x = m.add(Conv2D(3, 3, Conv2DOptions().same()), x);
  x = m.add(Negate(), x);
  x = m.add(Flatten(), x);
  m.add(Dense(4), x);
  m.init(3);
  Rng rng(6);
  const auto in = random_tensor<float>(rng, Shape{5, 2, 6, 6});
  const auto proj = random_tensor<float>(rng, Shape{5, 4});
  std::vector<Tensor<float>> first;
  for (int step = 0; step < 2; ++step) {
    m.zero_grad();
    m.forward(in, Mode::Train);
    m.output_grad().copy_from(proj);
    m.backward();
    const auto params = m.params();
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (step == 0) {
        first.push_back(params[i].grad->clone());
      } else {
        INFO(params[i].name);
        CHECK(same_bits(first[i], *params[i].grad));
      }
    }
  }
  REQUIRE(first.size() == 4);
}

TEST_CASE("layers without fusion or gradient overwriting refuse them") {
  Conv2D<float> conv(4, 3);
  CHECK_FALSE(conv.can_fuse_relu());
  CHECK_NOTHROW(conv.set_fused_relu(false));
  CHECK_THROWS_AS(conv.set_fused_relu(true), ValueError);
  Negate negate;
  CHECK_FALSE(negate.can_overwrite_gradients());
  CHECK_NOTHROW(negate.set_gradient_overwrite({false}));
  CHECK_NOTHROW(negate.set_gradient_overwrite({}));
  CHECK_THROWS_WITH(negate.set_gradient_overwrite({true}),
                    "Negate: cannot overwrite its input gradients");
}

TEST_CASE("Model fuses each ReLU that is the only consumer of a BatchNorm or Add") {
  Model<float> m;
  Node x = m.add_input(Shape{2, 6, 6});
  Node c = m.add(Conv2D<float>(4, 3, Conv2DOptions().same()), x, "conv");
  Node relu_conv = m.add(ReLU<float>(), c, "relu_conv");  // Conv2D: no fusion
  Node bn = m.add(BatchNorm<float>(), relu_conv, "bn");
  Node relu_bn = m.add(ReLU<float>(), bn, "relu_bn");  // fused
  Node add = m.add(Add<float>(), {relu_bn, relu_conv}, "add");
  Node relu_add = m.add(ReLU<float>(), add, "relu_add");  // fused
  Node bn2 = m.add(BatchNorm<float>(), relu_add, "bn2");
  Node relu_a = m.add(ReLU<float>(), bn2, "relu_a");  // bn2 has two consumers: not fused
  Node relu_b = m.add(ReLU<float>(), bn2, "relu_b");
  Node sum = m.add(Add<float>(), {relu_a, relu_b}, "sum");
  Node out = m.add(ReLU<float>(), sum, "out");  // the model output: not fused
  m.init(1);
  CHECK_FALSE(m.is_fused(relu_conv));
  CHECK(m.is_fused(relu_bn));
  CHECK(m.is_fused(relu_add));
  CHECK_FALSE(m.is_fused(relu_a));
  CHECK_FALSE(m.is_fused(relu_b));
  CHECK_FALSE(m.is_fused(out));

  Rng rng(4);
  const auto input = random_tensor<float>(rng, Shape{3, 2, 6, 6});
  m.forward(input, Mode::Train);
  // A fused ReLU's activation is its input layer's tensor, holding the ReLU's output.
  CHECK(&m.activation(relu_bn) == &m.activation(bn));
  for (float v : m.activation(relu_bn)) CHECK(v >= 0.0f);

  m.set_fusion(false);
  m.forward(input, Mode::Train);
  CHECK_FALSE(m.is_fused(relu_bn));
  CHECK(&m.activation(relu_bn) != &m.activation(bn));
}

// Trains the model `make` builds with fusion on and off; every result must agree bit for bit.
template <class Make>
void check_fusion_bit_identical(Make make, const Shape& batch, index_t classes) {
  auto fused = make();
  auto unfused = make();
  unfused.set_fusion(false);
  const auto ra = train_steps(fused, batch, classes, 3);
  const auto rb = train_steps(unfused, batch, classes, 3);
  REQUIRE(ra.size() == rb.size());
  for (std::size_t i = 0; i < ra.size(); ++i) CHECK(same_bits(ra[i], rb[i]));
}

TEST_CASE("fused and unfused models train bit-identically") {
  SECTION("seed model") {
    check_fusion_bit_identical([] { return models::seed_resnet<float>(); }, Shape{4, 1, 28, 28},
                               10);
  }
  SECTION("residual blocks") {
    check_fusion_bit_identical([] { return test::small_resnet<float>(); }, Shape{5, 1, 8, 8}, 4);
  }
}

namespace {

// in -> conv -> BN -> ReLU -> conv (no bias) -> BN [output]; and a convolution read by two
// layers (BN and Add), which must not fold.
Model<float> folding_model() {
  Model<float> m;
  Node in = m.add_input(Shape{3, 9, 9});
  Node c1 = m.add(Conv2D<float>(8, 3, Conv2DOptions().same()), in, "c1");
  Node b1 = m.add(BatchNorm<float>(), c1, "b1");
  Node r1 = m.add(ReLU<float>(), b1, "r1");
  Node c2 = m.add(Conv2D<float>(8, 3, Conv2DOptions().same()), r1, "c2");
  Node b2 = m.add(BatchNorm<float>(), c2, "b2");
  Node a = m.add(Add<float>(), {b2, c2}, "add");  // c2 has two readers: b2 stays separate
  Node c3 = m.add(Conv2D<float>(8, 3, Conv2DOptions().same().no_bias()), a, "c3");
  m.add(BatchNorm<float>(), c3, "b3");
  m.init(5);
  // Statistics and affine parameters far from the identity.
  Rng rng(6);
  for (const char* name : {"b1", "b2", "b3"}) {
    auto* bn = static_cast<BatchNorm<float>*>(m.layer(name));
    const Shape in_shape{2, 8, 9, 9};
    bn->setup(Span<const Shape>(&in_shape, 1));
    bn->gamma.uniform(rng, 0.5f, 2.0f);
    bn->beta.uniform(rng, -1.0f, 1.0f);
    bn->moving_mean.uniform(rng, -0.5f, 0.5f);
    bn->moving_variance.uniform(rng, 0.2f, 3.0f);
  }
  return m;
}

}  // namespace

TEST_CASE("Inference folding: BatchNorm runs inside the convolution before it, up to rounding") {
  Model<float> folded = folding_model(), plain = folding_model();
  plain.set_folding(false);
  REQUIRE(folded.folding());
  Rng rng(7);
  const auto x = random_tensor<float>(rng, Shape{4, 3, 9, 9});
  const Tensor<float> yf = folded.forward(x, Mode::Infer).clone();
  const Tensor<float>& yp = plain.forward(x, Mode::Infer);
  REQUIRE(yf.shape() == yp.shape());
  double worst = 0;
  for (index_t i = 0; i < yp.size(); ++i)
    worst =
        std::max(worst, std::abs(double(yf[i]) - double(yp[i])) / (1.0 + std::abs(double(yp[i]))));
  CHECK(worst <= 1e-5);
  CHECK(worst > 0);  // folding really changed the arithmetic

  // A folded inference forward cannot be differentiated; the unfolded one can.
  CHECK_THROWS_WITH(folded.backward(), Catch::Contains("set_folding(false)"));
  plain.output_grad().fill(1.0f);
  CHECK_NOTHROW(plain.backward());

  // Training is unaffected: bit for bit the same as the unfolded model, and backward works.
  const Tensor<float> tf = folded.forward(x, Mode::Train).clone();
  const Tensor<float>& tp = plain.forward(x, Mode::Train);
  CHECK(same_bits(tf, tp));
  folded.output_grad().fill(1.0f);
  CHECK_NOTHROW(folded.backward());
}
