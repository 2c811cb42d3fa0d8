// fmnist: train, evaluate and use residual networks on Fashion-MNIST with minires.
//
// clang-format off
//   fmnist train                    the default ResNet, sensible defaults, results in fmnist-out/
//   fmnist train --model seed       the 2017 notebook's model and settings (RMSprop, batch 128)
//   fmnist evaluate --model-file fmnist-out/best.mrm
//   fmnist predict --model-file fmnist-out/best.mrm --count 5
//   mpirun -np 2 fmnist train       data-parallel training on 2 ranks (built with MPI)
// clang-format on
//
// `fmnist --help` and `fmnist <command> --help` list every option. Each command is in its own
// file (train.cpp, evaluate.cpp, predict.cpp); common.hpp has what they share.
#include <CLI/CLI.hpp>
#include <minires/minires.hpp>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <string>

#ifdef MINIRES_FMNIST_MPI
#include <minires/distributed/mpi.hpp>
#endif

#include "common.hpp"

using namespace minires;

int main(int argc, char** argv) {
  CLI::App app{"fmnist: train residual networks on Fashion-MNIST with minires " +
               std::string(version_string)};
  app.require_subcommand(1);
  // A file-size limit (ulimit -f) then fails a write with EFBIG, reported like a full disk,
  // instead of killing the program mid-save.
  std::signal(SIGXFSZ, SIG_IGN);
  fmnist::Common common;
#ifdef MINIRES_FMNIST_MPI
  // Started by mpirun: every rank runs this program; rank 0 prints and writes --out.
  std::optional<mpi::Environment> mpi_env;
  std::optional<mpi::Communicator> world;
  if (mpi::launched_by_mpirun()) {
    try {
      mpi_env.emplace(argc, argv);
      world.emplace();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "fmnist: %s\n", e.what());
      return 1;
    }
    if (world->size() > 1) common.group = &*world;
    if (world->rank() != 0 && std::freopen("/dev/null", "w", stdout) == nullptr) return 1;
  }
  // A rank that fails ends the whole job, so that the others do not wait for it.
  const auto fail = [&](int code) {
    if (world && world->size() > 1) world->abort(code);
    return code;
  };
#else
  const auto fail = [](int code) { return code; };
#endif
  if (argc > 0 && argv[0] != nullptr && std::strchr(argv[0], '/') != nullptr)
    common.program = fmnist::shell_quoted(argv[0]);
  common.command_line = common.program;
  for (int i = 1; i < argc; ++i) common.command_line += " " + fmnist::shell_quoted(argv[i]);
  const fmnist::Command commands[] = {fmnist::add_train_command(app, common),
                                      fmnist::add_evaluate_command(app, common),
                                      fmnist::add_predict_command(app, common)};

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (const auto& command : commands)
      if (*command.app) return command.run();
  } catch (const minires::Error& e) {
    std::fprintf(stderr, "fmnist: %s\n", e.what());
    return fail(1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fmnist: %s\n", e.what());
    return fail(1);
  }
  return 0;
}
