// Helpers shared by the layer tests: a one-call forward/backward and the "smaller batch than
// planned" check. (Gradient checks: require_gradients in gradcheck_summary.hpp.)
#pragma once

#include <catch2/catch.hpp>

#include <minires/layers/layer.hpp>
#include <minires/minires.hpp>
#include <minires/testing/layer_check.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "gradcheck_summary.hpp"
#include "test_util.hpp"

namespace minires::test {

// Output of a layer (already set up) for these inputs.
template <class T>
Tensor<T> forward(Layer<T>& layer, const std::vector<const Tensor<T>*>& x,
                  Mode mode = Mode::Train) {
  std::vector<Shape> shapes;
  for (const Tensor<T>* t : x) shapes.push_back(t->shape());
  Tensor<T> y(layer.output_shape(Span<const Shape>(shapes)));
  layer.forward(Span<const Tensor<T>* const>(x), y, mode);
  return y;
}

// Input gradients of a layer (after forward on x) for output gradient dy, from zero.
template <class T>
std::vector<Tensor<T>> backward(Layer<T>& layer, const std::vector<const Tensor<T>*>& x,
                                const Tensor<T>& y, const Tensor<T>& dy) {
  std::vector<Tensor<T>> dx;
  for (const Tensor<T>* t : x) dx.emplace_back(t->shape());
  std::vector<Tensor<T>*> ptr;
  for (auto& d : dx) ptr.push_back(&d);
  layer.backward(Span<const Tensor<T>* const>(x), y, dy, Span<Tensor<T>* const>(ptr));
  return dx;
}

inline bool same_values(const Tensor<double>& a, const Tensor<double>& b) {
  if (a.shape() != b.shape()) return false;
  for (index_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// A layer set up for batch `planned` runs a batch of `batch` < planned with the buffers of the
// plan, allocating no Tensor storage in forward/backward, and gives exactly what a layer set up
// for `batch` gives. `shapes` are the per-sample input shapes with any batch.
inline void check_smaller_batch(const std::function<std::unique_ptr<Layer<double>>()>& make,
                                const std::vector<Shape>& shapes, index_t planned, index_t batch) {
  Rng rng(1234);
  std::vector<Shape> big, small;
  for (const auto& s : shapes) {
    big.push_back(s.with_batch(planned));
    small.push_back(s.with_batch(batch));
  }
  std::vector<Tensor<double>> x;
  for (const auto& s : small) x.push_back(random_tensor<double>(rng, s));
  std::vector<const Tensor<double>*> xp;
  for (const auto& t : x) xp.push_back(&t);

  auto planned_layer = make();
  planned_layer->setup(Span<const Shape>(big));
  auto exact_layer = make();
  exact_layer->setup(Span<const Shape>(small));

  Tensor<double> y(planned_layer->output_shape(Span<const Shape>(small)));
  Tensor<double> dy = random_tensor<double>(rng, y.shape());
  std::vector<Tensor<double>> dx;
  for (const auto& s : small) dx.emplace_back(s);
  std::vector<Tensor<double>*> dxp;
  for (auto& d : dx) dxp.push_back(&d);

  const long long allocations = tensor_allocations();
  planned_layer->forward(Span<const Tensor<double>* const>(xp), y, Mode::Train);
  planned_layer->backward(Span<const Tensor<double>* const>(xp), y, dy,
                          Span<Tensor<double>* const>(dxp));
  CHECK(tensor_allocations() == allocations);

  const Tensor<double> y_exact = forward(*exact_layer, xp);
  const auto dx_exact = backward(*exact_layer, xp, y_exact, dy);
  CHECK(same_values(y, y_exact));
  for (std::size_t i = 0; i < dx.size(); ++i) CHECK(same_values(dx[i], dx_exact[i]));
}

}  // namespace minires::test
