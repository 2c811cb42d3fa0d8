// Whole-model throughput: one training step (forward, loss, backward, optimizer) and one
// inference batch of the seed model and the default ResNet, batch 128, in images per second.
//
//   build/release/bench/bench_models --benchmark_min_time=2
#include <benchmark/benchmark.h>

#include "model_step.hpp"

namespace {

constexpr minires::index_t kBatch = 128;

void run(benchmark::State& state, const char* name, bool train) {
  minires::set_num_threads(static_cast<int>(state.range(0)));
  bench::ModelStep step(name, kBatch);
  if (train) {
    step.train_step();  // first step: optimizer slots, warm caches
  } else {
    step.inference();
  }
  for (auto _ : state) {
    if (train) {
      step.train_step();
    } else {
      step.inference();
    }
    benchmark::ClobberMemory();
  }
  state.counters["images/s"] = benchmark::Counter(static_cast<double>(kBatch),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

void BM_TrainStepSeed(benchmark::State& s) {
  run(s, "seed", true);
}
void BM_TrainStepResNet(benchmark::State& s) {
  run(s, "resnet", true);
}
void BM_InferenceSeed(benchmark::State& s) {
  run(s, "seed", false);
}
void BM_InferenceResNet(benchmark::State& s) {
  run(s, "resnet", false);
}

}  // namespace

BENCHMARK(BM_TrainStepSeed)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TrainStepResNet)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_InferenceSeed)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_InferenceResNet)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
