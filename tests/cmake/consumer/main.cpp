// Uses minires through the umbrella header: a tensor, a GEMM, and an element-wise kernel.
#include <minires/minires.hpp>

#include <cmath>
#include <cstdio>

int main() {
  using namespace minires;
  Rng rng(7);
  Tensor<float> a(Shape{3, 4}), b(Shape{4, 2}), c(Shape{3, 2});
  a.uniform(rng, -1.f, 1.f);
  b.uniform(rng, -1.f, 1.f);
  kernels::gemm(kernels::Trans::No, kernels::Trans::No, 3, 2, 4, 1.f, a.data(), b.data(), 0.f,
                c.data());
  const Tensor<float>::Matrix expected = a.matrix() * b.matrix();
  if ((expected - c.matrix()).cwiseAbs().maxCoeff() > 1e-5f) {
    std::puts("minires consumer: GEMM mismatch");
    return 1;
  }
  kernels::relu_forward(c.data(), c.data(), c.size());
  for (float v : c) {
    if (v < 0.f) return 1;
  }
  std::printf("minires %s\nminires consumer OK (%s)\n", version_string, MODE);
  return 0;
}
