// The cost of data-parallel training's communication (docs/distributed.md): the time of one
// in-place sum (minires::mpi::Communicator::sum, MPI_Allreduce) of n floats over the ranks,
// for the gradient sizes of the bundled models, median of `repeats` timed calls after warm-up.
//
//   mpirun -np 2 build/release/bench/allreduce                       # shared memory (vader)
//   mpirun -np 2 --mca btl tcp,self build/release/bench/allreduce    # loopback TCP
//   mpirun -np 2 build/release/bench/allreduce 1000 1000000          # other sizes (floats)
//
// Prints one JSON line per size (rank 0): floats, bytes, microseconds per call, and the "bus
// bandwidth" 2 (N - 1) / N x bytes / time (what a ring allreduce moves per rank).
#include <minires/distributed/mpi.hpp>
#include <minires/models/fashion_mnist.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

using namespace minires;

int main(int argc, char** argv) {
  mpi::Environment env(argc, argv);
  mpi::Communicator world;
  try {
    std::vector<index_t> sizes;
    for (int i = 1; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
    if (sizes.empty()) {  // the gradients of the bundled models
      Model<float> seed = models::seed_resnet<float>(), resnet = models::small_resnet<float>();
      for (Model<float>* m : {&seed, &resnet}) {
        m->init(1);
        sizes.push_back(m->trainable_count());
      }
    }
    for (index_t n : sizes) {
      std::vector<float> data(static_cast<std::size_t>(std::max<index_t>(n, 1)), 1.0f);
      const int repeats = n > (1 << 22) ? 20 : 200;
      for (int i = 0; i < 10; ++i) world.sum(data.data(), n);  // warm-up
      std::vector<double> us;
      for (int i = 0; i < repeats; ++i) {
        world.barrier();
        const auto t0 = std::chrono::steady_clock::now();
        world.sum(data.data(), n);
        us.push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                .count());
      }
      std::sort(us.begin(), us.end());
      double median = us[us.size() / 2];
      world.broadcast(&median, 1, 0);
      const double bytes = 4.0 * double(n), ranks = world.size();
      if (world.rank() == 0) {
        std::printf(
            "{\"ranks\": %d, \"floats\": %lld, \"bytes\": %.0f, \"us\": %.1f, "
            "\"bus_gbytes_per_s\": %.2f}\n",
            world.size(), static_cast<long long>(n), bytes, median,
            2.0 * (ranks - 1) / ranks * bytes / median / 1e3);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "allreduce: %s\n", e.what());
    world.abort(1);
  }
  return 0;
}
