// Optimizers: steps against values computed by hand (Python, the formulas in each header),
// on tensors with odd sizes so the SIMD body and the scalar tail both run; schedules.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "test_util.hpp"

using namespace minires;

namespace {

// One parameter tensor of n copies of p0 with gradient g0 everywhere.
template <class T>
struct Fixture {
  Tensor<T> p, g;
  Fixture(index_t n, double p0) : p(Shape{n}), g(Shape{n}) { p.fill(static_cast<T>(p0)); }
  std::vector<ParamRef<T>> refs() { return {{"w", &p, &g}}; }
  void grad(double g0) { g.fill(static_cast<T>(g0)); }
};

template <class T>
void check_all(const Tensor<T>& t, double expected, double tol) {
  for (index_t i = 0; i < t.size(); ++i)
    REQUIRE(static_cast<double>(t[i]) == Approx(expected).margin(tol));
}

}  // namespace

TEMPLATE_TEST_CASE("RMSprop follows Keras 2.0 (epsilon outside the square root)", "", float,
                   double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-7 : 1e-15;
  for (index_t n : {1, 7, 33}) {
    Fixture<T> f(n, 1.0);
    RMSprop<T> opt;  // lr 1e-3, rho 0.9, eps 1e-8
    CHECK(opt.learning_rate() == 1e-3);
    opt.attach(f.refs());
    f.grad(0.5);
    opt.step();
    // a = 0.1 * 0.25 = 0.025; p = 1 - 1e-3 * 0.5 / (sqrt(0.025) + 1e-8)
    check_all(f.p, 0.9968377225398316, tol);
    check_all(*opt.state()[0].value, 0.025, tol);
    f.grad(-0.25);
    opt.step();
    check_all(f.p, 0.9983121420144241, tol);
    check_all(*opt.state()[0].value, 0.02875, tol);
    CHECK(opt.iterations() == 2);
  }
  // coupled weight decay: g' = g + wd * p
  Fixture<T> f(5, 1.0);
  RMSprop<T> wd(RMSpropOptions{1e-3, 0.9, 1e-8, 0.01});
  wd.attach(f.refs());
  f.grad(0.5);
  wd.step();
  check_all(f.p, 0.9968377225359101, std::is_same_v<T, float> ? 2e-7 : 1e-15);
}

TEMPLATE_TEST_CASE("SGD with momentum and Nesterov", "", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  for (bool nesterov : {false, true}) {
    Fixture<T> f(17, 1.0);
    SGD<T> opt(SGDOptions{0.1, 0.9, nesterov, 0.0});
    opt.attach(f.refs());
    f.grad(0.5);
    opt.step();
    opt.step();
    // v = -0.05, then 0.9 * -0.05 - 0.05 = -0.095; plain p = 1 - 0.05 - 0.095,
    // Nesterov p = 1 + (0.9 * -0.05 - 0.05) + (0.9 * -0.095 - 0.05)
    check_all(f.p, nesterov ? 0.7695 : 0.855, tol);
    check_all(*opt.state()[0].value, -0.095, tol);
  }
  Fixture<T> plain(3, 2.0);
  SGD<T> opt(SGDOptions{0.5});
  opt.attach(plain.refs());
  plain.grad(1.0);
  opt.step();
  check_all(plain.p, 1.5, tol);
  CHECK_THROWS_AS(SGD<T>(SGDOptions{0.1, 0.0, true}), ValueError);
}

TEMPLATE_TEST_CASE("Adam and AdamW", "", float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 2e-7 : 1e-14;
  Fixture<T> f(19, 1.0);
  Adam<T> adam;
  adam.attach(f.refs());
  f.grad(0.5);
  adam.step();
  check_all(f.p, 0.9990000006324551, tol);  // the first step moves every weight by ~lr
  f.grad(-0.25);
  adam.step();
  check_all(f.p, 0.9987336637435179, tol);
  check_all(*adam.state()[0].value, 0.02, tol);        // m
  check_all(*adam.state()[1].value, 0.00031225, tol);  // v
  CHECK(adam.state()[2].name == "iterations");

  Fixture<T> w(9, 1.0);
  AdamW<T> adamw(AdamOptions{1e-3, 0.9, 0.999, 1e-8, 0.1});
  CHECK(std::string(adamw.name()) == "AdamW");
  adamw.attach(w.refs());
  w.grad(0.5);
  adamw.step();
  check_all(w.p, 0.9989000006324551, tol);  // p * (1 - lr*wd) first, then the Adam step
}

TEMPLATE_TEST_CASE("weight averaging: an exponential moving average with TensorFlow's warm-up", "",
                   float, double) {
  using T = TestType;
  const double tol = std::is_same_v<T, float> ? 1e-6 : 1e-14;
  Fixture<T> f(21, 1.0);
  SGD<T> opt(SGDOptions{0.1});
  opt.set_weight_averaging(0.5);  // before attach: the averages start at the weights
  opt.attach(f.refs());
  // Reference in double: p_t = p_{t-1} - 0.1 * g_t, a_t = d_t a_{t-1} + (1 - d_t) p_t with
  // d_t = min(0.5, (1 + t) / (10 + t)), t = steps before this one.
  double p = 1.0, a = 1.0;
  const double grads[] = {0.5, -1.0, 2.0, 0.25};
  for (int t = 0; t < 4; ++t) {
    f.grad(grads[t]);
    opt.step();
    p -= 0.1 * grads[t];
    const double d = std::min(0.5, (1.0 + t) / (10.0 + t));
    a = d * a + (1 - d) * p;
    check_all(f.p, p, tol);  // training itself is unchanged
  }
  const auto state = opt.state();
  REQUIRE(state.size() == 3);  // velocity, average, iterations
  CHECK(state[1].name == "w/average");
  check_all(*state[1].value, a, tol);
  opt.swap_averages();  // the model now holds the average, the optimizer the raw weights
  check_all(f.p, a, tol);
  check_all(*state[1].value, p, tol);
  opt.swap_averages();
  check_all(f.p, p, tol);

  opt.set_weight_averaging(0.0);  // off: no averages, nothing to swap
  CHECK(opt.state().size() == 2);
  CHECK_THROWS_AS(opt.swap_averages(), ValueError);
  CHECK_THROWS_WITH(opt.set_weight_averaging(1.0),
                    Catch::Contains("[0, 1)") && Catch::Contains("1.0"));
  CHECK_THROWS_AS(opt.set_weight_averaging(-0.1), ValueError);
}

TEST_CASE("optimizers check their arguments and state") {
  CHECK_THROWS_AS(RMSprop<float>(RMSpropOptions{-1.0}), ValueError);
  CHECK_THROWS_WITH(RMSprop<float>(RMSpropOptions{1e-3, 1.5}),
                    Catch::Contains("rho") && Catch::Contains("1.5"));
  CHECK_THROWS_AS(Adam<float>(AdamOptions{1e-3, 1.0}), ValueError);
  RMSprop<float> opt;
  CHECK_THROWS_AS(opt.step(), ValueError);  // not attached
  CHECK_THROWS_AS(opt.set_learning_rate(std::nan("")), ValueError);
  Tensor<float> p(Shape{3}), g(Shape{4});
  CHECK_THROWS_WITH(opt.attach({{"w", &p, &g}}), Catch::Contains("'w'"));
  CHECK(opt.config().find("rho=0.9") != std::string::npos);
}

TEST_CASE("learning-rate schedules") {
  const auto c = Schedule::constant();
  CHECK(c.at(0.1, 1000, 10) == 0.1);

  const auto s = Schedule::step(10, 0.5);  // halve every 10 epochs; 100 steps per epoch
  CHECK(s.at(0.1, 0, 100) == 0.1);
  CHECK(s.at(0.1, 999, 100) == 0.1);
  CHECK(s.at(0.1, 1000, 100) == Approx(0.05));
  CHECK(s.at(0.1, 2500, 100) == Approx(0.025));

  const auto cos = Schedule::cosine(100, 0.001);
  CHECK(cos.at(0.1, 0, 10) == Approx(0.1));
  CHECK(cos.at(0.1, 50, 10) == Approx(0.001 + 0.099 * 0.5));
  CHECK(cos.at(0.1, 100, 10) == Approx(0.001));
  CHECK(cos.at(0.1, 500, 10) == Approx(0.001));  // held at the minimum after the end

  auto warm = Schedule::cosine(110, 0.0).warmup(10);
  CHECK(warm.at(0.1, 0, 10) == Approx(0.01));
  CHECK(warm.at(0.1, 9, 10) == Approx(0.1));
  CHECK(warm.at(0.1, 10, 10) == Approx(0.1));
  CHECK(warm.at(0.1, 60, 10) == Approx(0.05));
  CHECK(warm.str().find("warmup") != std::string::npos);

  CHECK_THROWS_AS(Schedule::step(0, 0.5), ValueError);
  CHECK_THROWS_AS(Schedule::cosine(0), ValueError);
}

TEST_CASE("the step count stays exact past 2^24 steps in float, and a loaded count is taken") {
  Tensor<float> w(Shape{1}), g(Shape{1});
  SGD<float> opt(SGDOptions{0.01});
  opt.attach({{"w", &w, &g}});
  Tensor<float>* stored = nullptr;
  for (auto& s : opt.state())
    if (s.name == "iterations") stored = s.value;
  REQUIRE(stored != nullptr);
  (*stored)[0] = 16777216.0f;  // 2^24, as a checkpoint would restore it
  CHECK(opt.iterations() == 16777216);
  for (int i = 0; i < 3; ++i) opt.step();
  CHECK(opt.iterations() == 16777219);  // a float counter would stay at 2^24
  (*stored)[0] = 5.0f;                  // another checkpoint
  opt.step();
  CHECK(opt.iterations() == 6);
}

TEST_CASE("Adam's weight decay mode is named: L2 or decoupled (AdamW)") {
  CHECK(std::string(Adam<float>(AdamOptions{}, WeightDecay::Decoupled).name()) == "AdamW");
  CHECK(std::string(Adam<float>(AdamOptions{}).name()) == "Adam");
  CHECK(std::string(AdamW<float>().name()) == "AdamW");
}

TEST_CASE("weight decay on vectors: off exempts one-dimensional parameters, for every optimizer") {
  // Three copies of a kernel (3x4) and a bias (5): decay with vectors, decay without, no decay.
  struct Params {
    Tensor<double> w{Shape{3, 4}}, dw{Shape{3, 4}}, b{Shape{5}}, db{Shape{5}};
    Params() {
      for (index_t i = 0; i < w.size(); ++i) w[i] = 0.5 + 0.1 * static_cast<double>(i);
      for (index_t i = 0; i < b.size(); ++i) b[i] = -0.3 + 0.2 * static_cast<double>(i);
      for (index_t i = 0; i < dw.size(); ++i) dw[i] = 0.05 * static_cast<double>(i % 3) - 0.04;
      for (index_t i = 0; i < db.size(); ++i) db[i] = 0.07 - 0.03 * static_cast<double>(i);
    }
    std::vector<ParamRef<double>> refs() { return {{"w", &w, &dw}, {"b", &b, &db}}; }
  };
  using Make = std::function<std::unique_ptr<Optimizer<double>>(double wd)>;
  const std::vector<std::pair<const char*, Make>> optimizers = {
      {"SGD",
       [](double wd) {
         return std::make_unique<SGD<double>>(SGDOptions{0.1, 0.9, true, wd});
       }},
      {"RMSprop",
       [](double wd) {
         return std::make_unique<RMSprop<double>>(RMSpropOptions{1e-2, 0.9, 1e-8, wd});
       }},
      {"Adam",
       [](double wd) {
         return std::make_unique<Adam<double>>(AdamOptions{1e-2, 0.9, 0.999, 1e-8, wd});
       }},
      {"AdamW", [](double wd) {
         return std::make_unique<AdamW<double>>(AdamOptions{1e-2, 0.9, 0.999, 1e-8, wd});
       }}};
  for (const auto& [name, make] : optimizers) {
    INFO(name);
    Params with, without, none;
    auto a = make(0.05), b = make(0.05), c = make(0.0);
    CHECK(a->decay_vectors());
    b->set_decay_vectors(false);
    CHECK_FALSE(b->decay_vectors());
    CHECK(a->config().find("decay_vectors") == std::string::npos);
    CHECK(b->config().find("decay_vectors=false") != std::string::npos);
    a->attach(with.refs());
    b->attach(without.refs());
    c->attach(none.refs());
    for (int step = 0; step < 3; ++step) {
      a->step();
      b->step();
      c->step();
    }
    for (index_t i = 0; i < with.w.size(); ++i) {
      CHECK(without.w[i] == with.w[i]);  // kernels decay either way
      CHECK(with.w[i] != none.w[i]);
    }
    for (index_t i = 0; i < with.b.size(); ++i) {
      CHECK(without.b[i] == none.b[i]);  // vectors: no decay when off
      CHECK(with.b[i] != none.b[i]);
    }
  }
}
