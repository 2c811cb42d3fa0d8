// Model<T>: the functional graph API, shape inference and its errors, naming, summary, the
// residual builders, and a gradient check of a whole residual graph.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>
#include <minires/models/fashion_mnist.hpp>
#include <minires/testing/gradcheck.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "test_util.hpp"

using namespace minires;

using models::seed_resnet;

TEST_CASE("the seed model: shapes, names, parameter counts, summary") {
  auto m = seed_resnet<float>();
  m.init(1);
  CHECK(m.output_shape(m.output()) == Shape{10});
  // Keras' counts for the intended model: 34,426 parameters, 568 of them BN moving statistics.
  CHECK(m.trainable_count() == 33858);
  CHECK(m.non_trainable_count() == 568);
  const std::string s = m.summary();
  INFO(s);
  CHECK(s.find("Total params: 34,426") != std::string::npos);
  CHECK(s.find("Trainable params: 33,858") != std::string::npos);
  CHECK(s.find("Non-trainable params: 568") != std::string::npos);
  CHECK(s.find("Conv1 (Conv2D)") != std::string::npos);
  CHECK(s.find("(None, 64, 14, 14)") != std::string::npos);
  CHECK(s.find("a_2_add (Add)") != std::string::npos);
  CHECK(s.find("re_lu_1") == std::string::npos);  // snake_case of "ReLU" is "relu"
  CHECK(s.find("relu_1 (ReLU)") != std::string::npos);
  CHECK(s.find("(None, 64, 14, 14)") != std::string::npos);
  CHECK(s.find("max_pooling2d_1 (MaxPooling2D)") != std::string::npos);  // as Keras names it
  CHECK(m.layer("softmax10") != nullptr);
  CHECK_THROWS_AS(m.layer("nope"), ValueError);
}

TEST_CASE("the seed model as the notebook ran it, and the small ResNet") {
  auto w = seed_resnet<float>(/*as_written=*/true);
  w.init(1);
  CHECK(w.summary().find("MaxPooling2D") == std::string::npos);  // the pool was never connected
  auto intended = seed_resnet<float>();
  intended.init(1);
  CHECK(intended.summary().find("(MaxPooling2D)") != std::string::npos);
  CHECK(intended.summary().find("(AveragePooling2D)") != std::string::npos);
  CHECK(w.output_shape(Node{static_cast<int>(w.size()) - 2}) == Shape{12544});  // 64 x 14 x 14
  CHECK(w.trainable_count() + w.non_trainable_count() == 128506);
  auto r = models::small_resnet<float>();
  r.init(1);
  CHECK(r.output_shape(r.output()) == Shape{10});
  CHECK(r.trainable_count() > 300000);
  CHECK(r.trainable_count() < 500000);

  // Counts and summary through a const model agree with params() and state().
  const Model<float>& c = r;
  index_t trainable = 0, fixed = 0;
  for (const auto& p : r.params()) trainable += p.value->size();
  for (const auto& p : r.state()) fixed += p.value->size();
  CHECK(c.trainable_count() == trainable);
  CHECK(c.non_trainable_count() == fixed);
  CHECK(fixed > 0);
  CHECK(c.summary() == r.summary());
  CHECK(c.summary().find("Total params: ") != std::string::npos);
}

TEST_CASE("shape mismatches are caught while building, naming layers and shapes") {
  Model<float> m;
  Node in = m.add_input(Shape{3, 8, 8});
  Node a = m.add(Conv2D<float>(4, 3, Conv2DOptions().same()), in, "conv_a");
  Node b = m.add(Conv2D<float>(5, 3, Conv2DOptions().same()), in, "conv_b");
  CHECK_THROWS_AS(m.add(Add<float>(), {a, b}, "merge"), ShapeError);
  try {
    m.add(Add<float>(), {a, b}, "merge");
  } catch (const ShapeError& e) {
    const std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("'merge'") != std::string::npos);
    CHECK(msg.find("'conv_a' (None, 4, 8, 8)") != std::string::npos);
    CHECK(msg.find("'conv_b' (None, 5, 8, 8)") != std::string::npos);
  }
  CHECK_THROWS_WITH(m.add(Dense<float>(3), a, "dense"),
                    Catch::Contains("'dense'") && Catch::Contains("conv_a"));
  CHECK_THROWS_WITH(m.add(Conv2D<float>(4, 3), a, "conv_a"), Catch::Contains("already exists"));
  CHECK_THROWS_AS(m.add(Add<float>(), {a}), ShapeError);  // Add needs two or more inputs
  CHECK_THROWS_AS(m.add(ReLU<float>(), Node{42}), ValueError);
  CHECK_THROWS_AS(m.add_input(Shape{1, 2, 3}), ValueError);  // one input only
  CHECK_THROWS_AS(identity_block(m, a, {4, 4, 8}), ShapeError);
  // a kernel larger than the input
  CHECK_THROWS_WITH(m.add(Conv2D<float>(2, 9), a), Catch::Contains("Conv2D"));

  Model<float> empty;
  Tensor<float> x(Shape{1, 3, 8, 8});
  CHECK_THROWS_AS(empty.forward(x, Mode::Infer), ValueError);
  Tensor<float> wrong(Shape{2, 3, 8, 9});
  m.add(ReLU<float>(), a);
  CHECK_THROWS_WITH(m.forward(wrong, Mode::Infer),
                    Catch::Contains("(None, 3, 8, 8)") && Catch::Contains("(2, 3, 8, 9)"));
}

TEST_CASE("residual builders: He blocks, projections, stages") {
  Model<float> m;
  Node x = m.add_input(Shape{3, 16, 16});
  x = m.add(Conv2D<float>(8, 3, Conv2DOptions().same()), x);
  x = basic_block(m, x, 8);  // identity shortcut
  const auto before = m.size();
  x = basic_block(m, x, 16, 2);   // projection shortcut: conv + BN more
  CHECK(m.size() - before == 9);  // 7 nodes + a conv and a BN on the shortcut
  CHECK(m.output_shape(x) == Shape{16, 8, 8});
  x = bottleneck_block(m, x, 4, 2);
  CHECK(m.output_shape(x) == Shape{16, 4, 4});
  x = resnet_stages(m, x, ResNetStages{{8, 16}, {2, 1}, {1, 2}, false, {}});
  CHECK(m.output_shape(x) == Shape{16, 2, 2});
  x = m.add(GlobalAvgPool2D<float>(), x);
  m.add(Dense<float>(10), x);
  m.init(3);
  Rng rng(1);
  auto in = test::random_tensor<float>(rng, Shape{2, 3, 16, 16});
  const auto& y = m.forward(in, Mode::Train);
  CHECK(y.shape() == Shape{2, 10});
  CHECK_THROWS_AS(resnet_stages(m, x, ResNetStages{{8}, {1, 2}, {1}, false, {}}), ValueError);
}

TEST_CASE("zero_init_residual: each block starts as its shortcut; small_resnet has the switch") {
  for (bool bottleneck : {false, true}) {
    INFO((bottleneck ? "bottleneck" : "basic"));
    for (bool zero : {false, true}) {
      Model<double> m;
      Node x = m.add_input(Shape{8, 6, 6});
      ResidualOptions o;
      o.zero_init_residual = zero;
      o.name = "b";
      x = bottleneck ? bottleneck_block(m, x, 2, 1, o) : basic_block(m, x, 8, 1, o);
      m.init(4);
      const auto* last =
          dynamic_cast<const BatchNorm<double>*>(m.layer(bottleneck ? "b_bn3" : "b_bn2"));
      const auto* first = dynamic_cast<const BatchNorm<double>*>(m.layer("b_bn1"));
      REQUIRE(last != nullptr);
      REQUIRE(first != nullptr);
      for (index_t c = 0; c < last->gamma.size(); ++c) CHECK(last->gamma[c] == (zero ? 0.0 : 1.0));
      for (index_t c = 0; c < first->gamma.size(); ++c) CHECK(first->gamma[c] == 1.0);
      Rng rng(2);
      const auto in = test::random_tensor<double>(rng, Shape{3, 8, 6, 6});
      const auto& y = m.forward(in, Mode::Train);
      double diff = 0;  // from relu(x), the block's output with a zero residual branch
      for (index_t i = 0; i < y.size(); ++i)
        diff = std::max(diff, std::abs(y[i] - std::max(in[i], 0.0)));
      if (zero) {
        CHECK(diff == 0.0);
      } else {
        CHECK(diff > 0.1);
      }
    }
  }
  auto r = models::small_resnet<float>(/*zero_init_residual=*/true);
  r.init(1);
  const auto* bn2 = dynamic_cast<const BatchNorm<float>*>(r.layer("res_s3b1_bn2"));
  const auto* proj = dynamic_cast<const BatchNorm<float>*>(r.layer("res_s3b1_bn_proj"));
  REQUIRE(bn2 != nullptr);
  REQUIRE(proj != nullptr);
  CHECK(bn2->gamma[0] == 0.0f);
  CHECK(proj->gamma[0] == 1.0f);  // the shortcut's projection keeps gamma = 1
  CHECK_THROWS_AS(BatchNorm<float>(BatchNormOptions{0.99, 1e-3, std::nan("")}), ValueError);
}

TEST_CASE("gradient check of a whole residual graph with a node that has two consumers") {
  Model<double> m;
  Node x = m.add_input(Shape{2, 5, 5});
  Node r = m.add(Conv2D<double>(3, 3, Conv2DOptions().same()), x);
  r = m.add(BatchNorm<double>(), r);
  r = m.add(ReLU<double>(), r);  // consumed by the conv below and by the add
  Node c = m.add(Conv2D<double>(3, 1), r);
  c = m.add(BatchNorm<double>(), c);
  Node a = m.add(Add<double>(), {r, c});
  a = m.add(MaxPool2D<double>(2, 1), a);
  a = m.add(Flatten<double>(), a);
  m.add(Dense<double>(4), a);
  m.init(5);

  Rng rng(9);
  auto in = test::random_tensor<double>(rng, Shape{3, 2, 5, 5});
  auto proj = test::random_tensor<double>(rng, Shape{3, 4});
  auto loss = [&] {
    const auto& y = m.forward(in, Mode::Train);
    return testing::compensated_dot(y.data(), proj.data(), y.size());
  };
  loss();
  m.zero_grad();
  loss();
  m.output_grad().copy_from(proj);
  m.backward();
  for (auto& p : m.params()) {
    Tensor<double> analytic = p.grad->clone();
    const auto r2 = testing::check_gradient(loss, p.value->data(), p.value->size(), analytic.data(),
                                            testing::GradCheckOptions{1e-6, 1e-5, 1e-7, 0});
    INFO(p.name << ": " << r2.report());
    CHECK(r2.ok());
  }
}

TEST_CASE("a second backward adds to the parameter gradients, not to the activation gradients") {
  // backward() starts each activation gradient afresh at its first writer, so calling it twice
  // with the same output gradient after one zero_grad() doubles every parameter gradient,
  // including those below the node with two consumers.
  Model<double> m;
  Node x = m.add_input(Shape{2, 5, 5});
  Node r = m.add(Conv2D<double>(3, 3, Conv2DOptions().same()), x, "first");
  r = m.add(ReLU<double>(), r);
  Node c = m.add(Conv2D<double>(3, 1), r);
  Node a = m.add(Add<double>(), {r, c});
  a = m.add(Flatten<double>(), a);
  m.add(Dense<double>(4), a);
  m.init(7);
  Rng rng(10);
  const auto in = test::random_tensor<double>(rng, Shape{3, 2, 5, 5});
  const auto proj = test::random_tensor<double>(rng, Shape{3, 4});
  m.zero_grad();
  m.forward(in, Mode::Train);
  m.output_grad().copy_from(proj);
  m.backward();
  std::vector<Tensor<double>> once;
  for (auto& p : m.params()) once.push_back(p.grad->clone());
  m.backward();
  const auto params = m.params();
  REQUIRE(params.size() == once.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    INFO(params[i].name);
    for (index_t j = 0; j < once[i].size(); ++j)
      CHECK((*params[i].grad)[j] == Approx(2 * once[i][j]).epsilon(1e-12).margin(1e-15));
  }
}

TEST_CASE("set_output after planning re-plans: the loss gradient of a node with consumers") {
  // The output's gradient is the loss's to start; a model planned with another output must not
  // let a consumer of the new output write over it.
  auto build = [](bool output_first) {
    Model<double> m;
    Node x = m.add_input(Shape{2, 5, 5});
    Node r = m.add(Conv2D<double>(3, 3, Conv2DOptions().same()), x);
    r = m.add(ReLU<double>(), r);
    Node c = m.add(Conv2D<double>(2, 1), r);
    c = m.add(Flatten<double>(), c);
    m.add(Dense<double>(3), c);
    if (output_first) m.set_output(r);
    m.init(4);  // plans
    if (!output_first) m.set_output(r);
    return m;
  };
  Model<double> planned_first = build(false), output_first = build(true);
  Rng rng(13);
  const auto in = test::random_tensor<double>(rng, Shape{3, 2, 5, 5});
  const auto proj = test::random_tensor<double>(rng, Shape{3, 3, 5, 5});
  for (Model<double>* m : {&planned_first, &output_first}) {
    m->zero_grad();
    m->forward(in, Mode::Train);
    m->output_grad().copy_from(proj);
    m->backward();
  }
  const auto a = planned_first.params(), b = output_first.params();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name);
    CHECK(std::equal(a[i].grad->begin(), a[i].grad->end(), b[i].grad->begin()));
  }
}

TEST_CASE("memory is planned once: later steps reuse every buffer") {
  auto m = seed_resnet<float>();
  m.init(2);
  Rng rng(4);
  auto big = test::random_tensor<float>(rng, Shape{16, 1, 28, 28});
  auto small = test::random_tensor<float>(rng, Shape{5, 1, 28, 28});
  m.zero_grad();  // a first step sizes every buffer, gradients included
  m.forward(big, Mode::Train);
  m.output_grad().fill(0.1f);
  m.backward();
  const float* out_data = m.activation(m.output()).data();
  const long long allocations = tensor_allocations();
  for (int i = 0; i < 3; ++i) {
    m.zero_grad();
    m.forward(i == 1 ? small : big, Mode::Train);
    m.output_grad().fill(0.1f);
    m.backward();
  }
  CHECK(tensor_allocations() == allocations);
  CHECK(m.activation(m.output()).data() == out_data);
  CHECK(m.planned_batch() == 16);
  CHECK(m.activation(m.output()).shape() == Shape{16, 10});
}

TEST_CASE("a model that only runs forward holds no gradient buffers") {
  Rng rng(5);
  const auto x = test::random_tensor<float>(rng, Shape{8, 1, 28, 28});
  auto m = seed_resnet<float>();
  m.init(3);
  m.forward(x, Mode::Infer);
  m.forward(x, Mode::Train);
  CHECK(m.activation_bytes() > 0);
  CHECK(m.gradient_bytes() == 0);
  // The first backward pass sizes them, and its gradients equal a model's that had them from
  // the start.
  auto step = [&](Model<float>& model) {
    model.zero_grad();
    model.forward(x, Mode::Train);
    model.output_grad().fill(0.1f);
    model.backward();
  };
  step(m);
  CHECK(m.gradient_bytes() == m.activation_bytes());
  auto fresh = seed_resnet<float>();
  fresh.init(3);
  step(fresh);
  auto pf = fresh.params(), pm = m.params();
  REQUIRE(pf.size() == pm.size());
  for (std::size_t i = 0; i < pf.size(); ++i) {
    INFO(pf[i].name);
    CHECK(std::equal(pf[i].grad->begin(), pf[i].grad->end(), pm[i].grad->begin()));
  }
  // Gradients asked for after a forward on a smaller batch than planned: shaped like it.
  auto late = seed_resnet<float>();
  late.init(3);
  late.plan(16);
  late.forward(x, Mode::Train);
  CHECK(late.output_grad().shape() == Shape{8, 10});
  CHECK(late.gradient_bytes() == late.activation_bytes());
}

TEST_CASE("zero_grad clears activation gradients beyond a smaller batch run in between") {
  // zero_grad() runs before forward() sets the batch: a step on 16 images, then a forward on
  // 5 (a validation pass), then a step on 16 must give the gradients of that step alone.
  Rng rng(6);
  const auto big = test::random_tensor<float>(rng, Shape{16, 1, 28, 28});
  const auto small = test::random_tensor<float>(rng, Shape{5, 1, 28, 28});
  auto step = [&](Model<float>& m) {
    m.zero_grad();
    m.forward(big, Mode::Train);
    m.output_grad().fill(0.1f);
    m.backward();
  };
  auto fresh = seed_resnet<float>();
  fresh.init(3);
  step(fresh);
  auto m = seed_resnet<float>();
  m.init(3);
  step(m);
  m.forward(small, Mode::Infer);
  step(m);
  auto pf = fresh.params(), pm = m.params();
  REQUIRE(pf.size() == pm.size());
  for (std::size_t i = 0; i < pf.size(); ++i) {
    INFO(pf[i].name);
    CHECK(std::equal(pf[i].grad->begin(), pf[i].grad->end(), pm[i].grad->begin()));
  }
}

TEST_CASE("a Model<float> is built without naming the scalar type, with fluent Conv2D settings") {
  Model<float> m;
  Node x = m.add_input(Shape{1, 12, 12});
  x = m.add(Conv2D(4, 3).same(), x, "conv");
  x = m.add(BatchNorm(), x);
  x = m.add(ReLU(), x);
  x = m.add(MaxPool2D(2), x);
  Node y = m.add(Conv2D(4, 1).strides(1).no_bias(), x);
  x = m.add(Add(), {x, y});
  x = m.add(GlobalAvgPool2D(), x);
  m.add(Dense(3), x);
  m.init(1);
  m.plan(2);
  CHECK(m.output_shape(Node{1}) == Shape{4, 12, 12});  // 'same' took effect
  const std::string arch = m.architecture();
  CHECK(arch.find("conv Conv2D filters=4 kernel=3x3 strides=1x1 padding=same use_bias=true") !=
        std::string::npos);
  CHECK(arch.find("kernel=1x1 strides=1x1 padding=valid use_bias=false") != std::string::npos);
  static_assert(std::is_same_v<decltype(Conv2D(4, 3)), Conv2D<float>>);
  CHECK_THROWS_AS(Conv2D(4, 3).strides(0), ValueError);
}

TEST_CASE("a Model's layers share one workspace and compute as standalone layers do") {
  // Two convolutions of different algorithms (shifted, Winograd) and sizes in one Model use one
  // scratch buffer; their outputs equal the same layers run standalone with their own, bit for
  // bit (nothing in the scratch survives a call).
  Rng rng(21);
  Model<float> m;
  Node in = m.add_input(Shape{128, 9, 9});
  Node a = m.add(Conv2D<float>(128, 3, Conv2DOptions().same()), in, "a");
  m.add(Conv2D<float>(8, 3, Conv2DOptions().same().strides(2)), a, "b");
  m.init(3);
  Tensor<float> x(Shape{4, 128, 9, 9});
  x.uniform(rng, -1.0f, 1.0f);
  const Tensor<float>& y = m.forward(x, Mode::Infer);
  CHECK(std::string(m.layer("a")->algorithm()) == "winograd");
  CHECK(m.layer("a")->workspace_size() > 0);

  Conv2D<float> sa(128, 3, Conv2DOptions().same()), sb(8, 3, Conv2DOptions().same().strides(2));
  const Shape sin = x.shape(), mid{4, 128, 9, 9};
  sa.setup(Span<const Shape>(&sin, 1));
  sb.setup(Span<const Shape>(&mid, 1));
  sa.kernel.copy_from(static_cast<Conv2D<float>*>(m.layer("a"))->kernel);
  sa.bias.copy_from(static_cast<Conv2D<float>*>(m.layer("a"))->bias);
  sb.kernel.copy_from(static_cast<Conv2D<float>*>(m.layer("b"))->kernel);
  sb.bias.copy_from(static_cast<Conv2D<float>*>(m.layer("b"))->bias);
  Tensor<float> ya(mid), yb(y.shape());
  const Tensor<float>* xs[] = {&x};
  sa.forward(Span<const Tensor<float>* const>(xs), ya, Mode::Infer);
  const Tensor<float>* as[] = {&ya};
  sb.forward(Span<const Tensor<float>* const>(as), yb, Mode::Infer);
  REQUIRE(yb.size() == y.size());
  for (index_t i = 0; i < y.size(); ++i) REQUIRE(yb[i] == y[i]);

  // A layer told to share allocates none and says so if it is run without one.
  Conv2D<float> lonely(4, 3);
  lonely.share_workspace(true);
  lonely.setup(Span<const Shape>(&sin, 1));
  Tensor<float> yl(lonely.output_shape(Span<const Shape>(&sin, 1)));
  CHECK_THROWS_WITH(lonely.forward(Span<const Tensor<float>* const>(xs), yl, Mode::Infer),
                    Catch::Contains("found no workspace"));
}
