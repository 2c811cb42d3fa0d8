// Where a training step spends its time, layer by layer.
//
//   build/release/bench/profile_step [seed|resnet] [threads] [steps] [nofuse] [bf16]
//
// Runs `steps` training steps (batch 128) after two warm-up steps with Model profiling on and
// prints milliseconds per call, forward and backward, for every layer, slowest first. `nofuse`
// turns ReLU fusion off (Model::set_fusion) for comparison; `bf16` sets MatmulPrecision::BF16.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "model_step.hpp"

int main(int argc, char** argv) {
  try {
    const std::string name = argc > 1 ? argv[1] : "resnet";
    const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
    const int steps = argc > 3 ? std::atoi(argv[3]) : 20;
    if (threads < 1 || steps < 1) {
      std::fprintf(stderr, "usage: profile_step [seed|resnet] [threads >= 1] [steps >= 1]\n");
      return 2;
    }
    minires::set_num_threads(threads);
    bool fuse = true;
    for (int i = 4; i < argc; ++i) {
      if (std::string(argv[i]) == "nofuse") fuse = false;
      if (std::string(argv[i]) == "bf16")
        minires::set_matmul_precision(minires::MatmulPrecision::BF16);
    }
    bench::ModelStep step(name, 128, fuse);
    step.train_step();
    step.train_step();
    step.model.set_profiling(true);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) step.train_step();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s, %d thread(s), batch 128, fusion %s: %.2f ms per step, %.0f images/s\n\n",
                name.c_str(), threads, fuse ? "on" : "off", 1e3 * s / steps, 128.0 * steps / s);
    std::printf("%s", step.model.profile_report().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "profile_step: %s\n", e.what());
    return 1;
  }
}
