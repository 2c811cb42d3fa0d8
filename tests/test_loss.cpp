// The Loss interface: MeanSquaredError against known values, double-precision finite differences
// and PyTorch's nn.MSELoss semantics; fit() trains with any Loss, not only SoftmaxCrossEntropy.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>
#include <minires/testing/gradcheck.hpp>

#include <cstdint>
#include <vector>

#include "synthetic.hpp"
#include "test_util.hpp"

using namespace minires;
using Labels = std::vector<std::int32_t>;
using test::random_tensor;

TEMPLATE_TEST_CASE("MeanSquaredError known values", "", float, double) {
  MeanSquaredError<TestType> loss;
  loss.setup(Shape{4, 3});
  Tensor<TestType> out(Shape{2, 3});
  // row 0: (0.5, 0, 0) vs (1, 0, 0); row 1: (1, 2, -1) vs (0, 0, 1)
  const TestType v[] = {0.5, 0, 0, 1, 2, -1};
  std::copy(v, v + 6, out.data());
  const Labels labels{0, 2};
  // squares: 0.25 + 0 + 0 + 1 + 4 + 4 = 9.25, over N K = 6
  CHECK(loss.forward(out, labels) == Approx(9.25 / 6).epsilon(1e-6));
  Tensor<TestType> d(Shape{2, 3});
  d.fill(TestType(1));
  loss.backward(d);  // accumulates 2 (out - y) / 6
  const TestType want[] = {1 - 1.0 / 6, 1, 1, 1 + 2.0 / 6, 1 + 4.0 / 6, 1 - 4.0 / 6};
  for (int i = 0; i < 6; ++i) CHECK(d[i] == Approx(want[i]).epsilon(1e-6));
  CHECK(std::string(loss.name()) == "mean_squared_error");
}

TEST_CASE("MeanSquaredError gradient check with respect to the outputs") {
  Rng rng(5);
  Tensor<double> z = random_tensor<double>(rng, Shape{5, 7}, -2.0, 2.0);
  const Labels labels{0, 6, 3, 3, 1};
  MeanSquaredError<double> loss;
  loss.setup(z.shape());
  for (const double scale : {1.0, 0.5}) {
    const auto r = test::check_loss_gradient(loss, z, labels, scale, rng);
    INFO(r.report());
    REQUIRE(r.ok());
  }
}

TEST_CASE("MeanSquaredError rejects bad use") {
  MeanSquaredError<float> loss;
  Tensor<float> out(Shape{2, 3}), d(Shape{2, 3});
  CHECK_THROWS_AS(loss.setup(Shape{3}), ShapeError);
  loss.setup(Shape{2, 3});
  CHECK_THROWS_AS(loss.backward(d), ValueError);  // no forward
  CHECK_THROWS_AS(loss.forward(out, Labels{0}), ShapeError);
  CHECK_THROWS_AS(loss.forward(out, Labels{0, 3}), ValueError);
  CHECK_THROWS_AS(loss.forward(Tensor<float>(Shape{3, 3}), Labels{0, 1, 2}), ShapeError);
}

TEST_CASE("fit trains with any Loss: mean squared error learns the synthetic task") {
  auto train = test::line_patterns<float>(512, 1);
  auto m = test::small_resnet<float>();
  m.init(3);
  MeanSquaredError<float> mse;
  Loss<float>& loss = mse;  // through the interface
  Adam<float> opt(AdamOptions{0.01});
  FitOptions o;
  o.epochs = 4;
  o.batch_size = 32;
  o.seed = 1;
  const History h = fit(m, loss, opt, train, o);
  REQUIRE(h.epochs.size() == 4);
  CHECK(h.epochs.back().train_loss < h.epochs.front().train_loss);
  CHECK(h.epochs.back().train_accuracy > 0.9);
}
