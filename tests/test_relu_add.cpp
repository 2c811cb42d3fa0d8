// ReLU and Add: forward against direct loops (float and double, lengths with SIMD tails),
// gradient checks in double (several shapes, two to four inputs, inputs without gradients),
// the gradient at exactly 0, batches smaller than planned, and the errors for bad use.
#include <catch2/catch.hpp>

#include <minires/layers/add.hpp>
#include <minires/layers/relu.hpp>

#include <cmath>
#include <memory>
#include <vector>

#include "layer_test_util.hpp"

using namespace minires;
using minires::test::random_tensor;

namespace {

std::vector<Shape> repeat(const Shape& s, int n) {
  return std::vector<Shape>(static_cast<std::size_t>(n), s);
}

}  // namespace

TEMPLATE_TEST_CASE("ReLU forward and backward match direct loops", "", float, double) {
  using T = TestType;
  Rng rng(7);
  for (const Shape& shape : {Shape{1, 1}, Shape{3, 37}, Shape{2, 3, 7, 5}, Shape{5, 4, 9, 9}}) {
    INFO("shape " << shape.str());
    ReLU<T> relu;
    relu.setup(Span<const Shape>(&shape, 1));
    Tensor<T> x = random_tensor<T>(rng, shape);
    x[0] = T(0);  // the kink: y = 0 and no gradient
    if (x.size() > 2) x[2] = T(-0.0);
    const Tensor<T> y = test::forward<T>(relu, {&x});
    const Tensor<T> dy = random_tensor<T>(rng, shape);
    Tensor<T> dx = random_tensor<T>(rng, shape);
    const Tensor<T> dx0 = dx.clone();
    Tensor<T>* dxp[] = {&dx};
    const Tensor<T>* xp[] = {&x};
    relu.backward(Span<const Tensor<T>* const>(xp), y, dy, Span<Tensor<T>* const>(dxp));
    for (index_t i = 0; i < x.size(); ++i) {
      REQUIRE(y[i] == (x[i] > T(0) ? x[i] : T(0)));
      REQUIRE(dx[i] == dx0[i] + (x[i] > T(0) ? dy[i] : T(0)));
    }
    CHECK(dx[0] == dx0[0]);
  }
}

TEST_CASE("ReLU gradient check") {
  const Shape shapes[] = {{1, 1, 7, 5}, {2, 3, 4, 4}, {4, 9}, {3, 17}};
  Rng rng(1);
  for (const Shape& s : shapes) {
    ReLU<double> relu;
    test::require_gradients(relu, {s}, rng, s.str());
  }
  // Without the input gradient (dx[0] == nullptr) backward does nothing and does not fail.
  ReLU<double> relu;
  testing::LayerCheckOptions no_dx;
  no_dx.check_input = {false};
  const auto r = testing::check_layer(relu, {Shape{2, 5}}, rng, no_dx);
  CHECK(r.parts.empty());
}

TEST_CASE("ReLU runs a batch smaller than planned") {
  test::check_smaller_batch([] { return std::make_unique<ReLU<double>>(); }, {Shape{1, 3, 5, 7}}, 8,
                            3);
  test::check_smaller_batch([] { return std::make_unique<ReLU<double>>(); }, {Shape{1, 10}}, 4, 1);
}

TEST_CASE("ReLU rejects bad use") {
  ReLU<double> relu;
  const Shape two[] = {{2, 3}, {2, 3}};
  CHECK_THROWS_AS(relu.output_shape(Span<const Shape>(two)), ShapeError);
  CHECK_THROWS_WITH(relu.output_shape(Span<const Shape>(two)),
                    Catch::Contains("expected 1 input") && Catch::Contains("found 2"));
  const Shape planned{4, 3, 5, 5};
  relu.setup(Span<const Shape>(&planned, 1));
  Tensor<double> x(Shape{5, 3, 5, 5}), y(Shape{5, 3, 5, 5});
  const Tensor<double>* xp[] = {&x};
  CHECK_THROWS_WITH(relu.forward(Span<const Tensor<double>* const>(xp), y, Mode::Train),
                    Catch::Contains("(4, 3, 5, 5)") && Catch::Contains("found (5, 3, 5, 5)"));
  Tensor<double> x2(Shape{2, 3, 5, 5}), y2(Shape{2, 3, 5, 4});
  const Tensor<double>* xp2[] = {&x2};
  CHECK_THROWS_AS(relu.forward(Span<const Tensor<double>* const>(xp2), y2, Mode::Train),
                  ShapeError);
  CHECK_THROWS_WITH(relu.forward(Span<const Tensor<double>* const>(xp2), y2, Mode::Train),
                    Catch::Contains("expected output of shape (2, 3, 5, 5)") &&
                        Catch::Contains("found (2, 3, 5, 4)"));
  Tensor<double> y3(Shape{2, 3, 5, 5}), dy(Shape{2, 3, 5, 5}), dx(Shape{2, 3, 5, 4});
  Tensor<double>* dxp[] = {&dx};
  CHECK_THROWS_WITH(relu.backward(Span<const Tensor<double>* const>(xp2), y3, dy,
                                  Span<Tensor<double>* const>(dxp)),
                    Catch::Contains("expected input gradient of shape (2, 3, 5, 5)") &&
                        Catch::Contains("found (2, 3, 5, 4)"));
  ReLU<double> not_set_up;
  CHECK_THROWS_WITH(not_set_up.forward(Span<const Tensor<double>* const>(xp2), y3, Mode::Train),
                    Catch::Contains("setup()"));
}

TEMPLATE_TEST_CASE("Add forward and backward match direct loops", "", float, double) {
  using T = TestType;
  Rng rng(11);
  for (int inputs = 2; inputs <= 4; ++inputs) {
    for (const Shape& shape : {Shape{1, 1}, Shape{3, 37}, Shape{2, 3, 7, 5}}) {
      INFO(inputs << " inputs of shape " << shape.str());
      Add<T> add;
      const auto shapes = repeat(shape, inputs);
      add.setup(Span<const Shape>(shapes));
      CHECK(add.output_shape(Span<const Shape>(shapes)) == shape);
      std::vector<Tensor<T>> x;
      for (int i = 0; i < inputs; ++i) x.push_back(random_tensor<T>(rng, shape));
      std::vector<const Tensor<T>*> xp;
      for (auto& t : x) xp.push_back(&t);
      const Tensor<T> y = test::forward<T>(add, xp);
      for (index_t k = 0; k < y.size(); ++k) {
        T s = x[0][k];
        for (int i = 1; i < inputs; ++i) s += x[static_cast<std::size_t>(i)][k];
        REQUIRE(y[k] == s);
      }
      // Gradient fans out; the input without a gradient slot is skipped.
      const Tensor<T> dy = random_tensor<T>(rng, shape);
      std::vector<Tensor<T>> dx, dx0;
      for (int i = 0; i < inputs; ++i) {
        dx.push_back(random_tensor<T>(rng, shape));
        dx0.push_back(dx.back().clone());
      }
      std::vector<Tensor<T>*> dxp;
      for (auto& t : dx) dxp.push_back(&t);
      dxp[1] = nullptr;
      add.backward(Span<const Tensor<T>* const>(xp), y, dy, Span<Tensor<T>* const>(dxp));
      for (int i = 0; i < inputs; ++i) {
        const auto u = static_cast<std::size_t>(i);
        for (index_t k = 0; k < y.size(); ++k) {
          REQUIRE(dx[u][k] == (i == 1 ? dx0[u][k] : dx0[u][k] + dy[k]));
        }
      }
    }
  }
}

TEST_CASE("Add gradient check") {
  Rng rng(20);
  for (const Shape& s : {Shape{1, 1, 7, 5}, Shape{2, 3, 4, 4}, Shape{3, 17}}) {
    for (int inputs = 2; inputs <= 3; ++inputs) {
      Add<double> add;
      test::require_gradients(add, repeat(s, inputs), rng,
                              std::to_string(inputs) + " inputs " + s.str());
    }
  }
  // Inputs whose gradient is not wanted get a nullptr slot.
  Add<double> add;
  testing::LayerCheckOptions options;
  options.check_input = {true, false, true};
  test::require_gradients(add, repeat(Shape{2, 3, 5, 5}, 3), rng,
                          "3 inputs (2, 3, 5, 5), input 1 without gradient", options);
  options.check_input = {false, true};
  Add<double> add2;
  test::require_gradients(add2, repeat(Shape{1, 7}, 2), rng,
                          "2 inputs (1, 7,), input 0 without gradient", options);
}

TEST_CASE("Add runs a batch smaller than planned") {
  test::check_smaller_batch([] { return std::make_unique<Add<double>>(); },
                            repeat(Shape{1, 2, 5, 3}, 3), 6, 2);
}

TEST_CASE("Add rejects bad use") {
  Add<double> add;
  CHECK(add.num_inputs() == -1);
  const Shape one[] = {{2, 3}};
  CHECK_THROWS_AS(add.output_shape(Span<const Shape>(one)), ShapeError);
  CHECK_THROWS_WITH(add.output_shape(Span<const Shape>(one)),
                    Catch::Contains("expected two or more inputs, found 1"));
  const Shape mismatch[] = {{2, 3, 4, 4}, {2, 3, 4, 4}, {2, 3, 4, 5}};
  CHECK_THROWS_AS(add.setup(Span<const Shape>(mismatch)), ShapeError);
  CHECK_THROWS_WITH(add.setup(Span<const Shape>(mismatch)),
                    Catch::Contains("input 2") && Catch::Contains("(2, 3, 4, 5)") &&
                        Catch::Contains("expected (2, 3, 4, 4)"));

  const auto planned = repeat(Shape{4, 3}, 2);
  add.setup(Span<const Shape>(planned));
  Tensor<double> a(Shape{4, 3}), b(Shape{4, 2}), c(Shape{4, 3}), y(Shape{4, 3});
  const Tensor<double>* bad[] = {&a, &b};
  CHECK_THROWS_WITH(
      add.forward(Span<const Tensor<double>* const>(bad), y, Mode::Train),
      Catch::Contains("input 1 has shape (4, 2)") && Catch::Contains("expected (4, 3)"));
  const Tensor<double>* three[] = {&a, &c, &c};
  CHECK_THROWS_WITH(add.forward(Span<const Tensor<double>* const>(three), y, Mode::Train),
                    Catch::Contains("set up for 2 inputs, found 3"));
  const Tensor<double>* good[] = {&a, &c};
  Tensor<double> dy(Shape{4, 3}), dx_bad(Shape{3, 4});
  Tensor<double>* dxp[] = {nullptr, &dx_bad};
  CHECK_THROWS_WITH(
      add.backward(Span<const Tensor<double>* const>(good), y, dy,
                   Span<Tensor<double>* const>(dxp)),
      Catch::Contains("input gradient 1 of shape (4, 3)") && Catch::Contains("found (3, 4)"));
  Tensor<double>* one_slot[] = {nullptr};
  CHECK_THROWS_WITH(
      add.backward(Span<const Tensor<double>* const>(good), y, dy,
                   Span<Tensor<double>* const>(one_slot)),
      Catch::Contains("expected 2 input gradient slots") && Catch::Contains("found 1"));
}
