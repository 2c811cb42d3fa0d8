// What the fmnist subcommands share: the options every command has (--data, --threads), the
// validators of the command line, loading the data and a checkpoint, and the Command each of
// train.cpp, evaluate.cpp and predict.cpp adds to the program.
#pragma once

#include <CLI/CLI.hpp>
#include <minires/minires.hpp>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "config.hpp"
#include "models.hpp"

namespace fmnist {

using namespace minires;

// The settings every command shares, and how the program was started.
struct Common {
  std::string program = "fmnist";  // argv[0], for commands the user can paste
  std::string command_line;        // the whole command, quoted for a POSIX shell
  std::string data = default_fashion_mnist_dir();
  int threads = 0;
  // Data-parallel training (started by mpirun): the ranks; rank 0 prints and writes --out.
  Collective* group = nullptr;
  bool lead() const { return group == nullptr || group->rank() == 0; }
  int ranks() const { return group != nullptr ? group->size() : 1; }
};

// A subcommand: its CLI11 app, with its options, and what runs it once the command line is
// parsed (its options' values live in the closure).
struct Command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

Command add_train_command(CLI::App& program, Common& common);
Command add_evaluate_command(CLI::App& program, Common& common);
Command add_predict_command(CLI::App& program, Common& common);

// ---- The command line ----------------------------------------------------------------------

// A validator for a number from lo to hi: the whole argument must be one number of V's kind (an
// integer for integral V; finite), with a message that says what was expected and what was found.
template <class V>
CLI::Validator in_range(V lo, V hi, bool open_lo = false) {
  const std::string range =
      std::is_integral<V>::value
          ? std::string("an integer from ") + std::to_string(lo) + " to " + std::to_string(hi)
          : std::string("a number ") + (open_lo ? "above " : "from ") +
                num(static_cast<double>(lo)) + (open_lo ? ", at most " : " to ") +
                num(static_cast<double>(hi));
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        bool ok = false;
        if constexpr (std::is_integral<V>::value) {
          index_t v = 0;
          ok = parse_index(text, v) && v >= static_cast<index_t>(lo) &&
               v <= static_cast<index_t>(hi);
        } else {
          double v = 0;
          ok = parse_finite(text, v) && (open_lo ? v > lo : v >= lo) && v <= hi;
        }
        return ok ? std::string() : "expected " + range + ", found '" + text + "'";
      },
      "[" + num(static_cast<double>(lo)) + ", " + num(static_cast<double>(hi)) + "]");
}

// --seed: a whole non-negative integer below 2^64 (no sign: "-1" is not 2^64 - 1).
inline CLI::Validator seed_value() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        std::uint64_t v = 0;
        return parse_u64(text, v)
                   ? std::string()
                   : "expected an integer from 0 to 18446744073709551615, found '" + text + "'";
      },
      "UINT64");
}

// An option that sets `target` when given and leaves it unset otherwise.
template <class T>
CLI::Option* optional_option(CLI::App* app, const std::string& name, std::optional<T>& target,
                             const std::string& help) {
  return app->add_option_function<T>(
      name, [&target](const T& v) { target = v; }, help);
}

// An option "on" or "off" that sets `target` when given.
inline CLI::Option* on_off_option(CLI::App* app, const std::string& name,
                                  std::optional<bool>& target, const std::string& help) {
  return app
      ->add_option_function<std::string>(
          name, [&target](const std::string& v) { target = v == "on"; }, help)
      ->check(CLI::IsMember({"on", "off"}));
}

// The options every command has: --data and --threads.
inline void add_shared_options(CLI::App* command, Common& common) {
  command->add_option("--data", common.data, "Directory with the Fashion-MNIST IDX files")
      ->capture_default_str();
  command
      ->add_option("--threads", common.threads,
                   "Threads (default: OMP_NUM_THREADS, else all cores; at most " +
                       std::to_string(max_threads) + ")")
      ->check(in_range<int>(1, max_threads));
}

// --model-file, for the commands that use a saved model.
inline void add_model_file_option(CLI::App* command, std::string& path) {
  command->add_option("--model-file", path, "A checkpoint written by fmnist train")
      ->required()
      ->check(CLI::ExistingFile);
}

// `arg` as one word for a POSIX shell: unchanged when it is plain, else in single quotes.
inline std::string shell_quoted(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789-_./=:,+@%") == std::string::npos)
    return arg;
  std::string q = "'";
  for (char c : arg) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// ---- What the commands do alike --------------------------------------------------------------

// --threads, or else OMP_NUM_THREADS, checked before any parallel region starts; a count above
// the hardware threads is allowed with a warning.
inline void apply_threads(const Common& c) {
  if (c.threads > 0) set_num_threads(c.threads);
  check_num_threads();
  if (oversubscribed(num_threads())) {
    std::fprintf(stderr,
                 "fmnist: warning: %d threads on %d hardware threads: they share cores, and "
                 "training runs slower than with --threads %d\n",
                 num_threads(), hardware_threads(), hardware_threads());
  }
}

// Says which views of each image an evaluation averages (test-time augmentation), if more than one.
inline void print_views(const EvalOptions& eo) {
  if (!eo.flip && eo.shift == 0) return;
  std::string views = "the image";
  if (eo.flip) views += " and its mirror image";
  if (eo.shift > 0)
    views += ", shifted by " + std::to_string(eo.shift) + " pixel(s) up, down, left and right";
  std::printf("test-time augmentation: %s\n", views.c_str());
}

// The data set as configuration `c` preprocesses it: standardised with the training images'
// statistics, augmented, the last --validation training images held out to validate, the
// first --limit of the others.
inline FashionMnistSplit<float> load_data(const std::string& dir, const Config& c) {
  FashionMnist data;
  try {
    data = load_fashion_mnist(dir);
  } catch (const IoError& e) {
    throw IoError(std::string(e.what()) + " (--data DIR reads them from another directory)");
  }
  ImageDatasetOptions options;
  const index_t all = data.train->images.count;
  if (c.validation >= all) {
    throw ValueError("--validation: expected fewer than the " + std::to_string(all) +
                     " training images (some must train), found " + std::to_string(c.validation));
  }
  if (c.standardize)
    options.standardize(pixel_statistics(data.train->images, 0, all - c.validation));
  if (c.augment == Augment::On) options.augmentation(c.crop_pad);
  if (c.augment == Augment::Flip) options.augmentation(0);  // flips only
  if (c.erase > 0) options.erasing(c.erase);
  auto split = split_fashion_mnist<float>(data, options, c.validation);
  if (c.limit > split.train.size()) {
    throw ValueError("--limit: expected at most the " + std::to_string(split.train.size()) +
                     " training images, found " + std::to_string(c.limit));
  }
  if (c.limit > 0) split.train = split.train.first(c.limit);
  return split;
}

// What load_checkpoint does with the precision a checkpoint trained in: Keep the process's
// setting (train's teacher), or Use it (evaluate, predict): a model trained with --precision
// bf16 runs as it was tested where the CPU has AMX, in fp32 elsewhere (saying so).
enum class StoredPrecision { Keep, Use };

// Builds the model a checkpoint was trained as and loads it.
inline Model<float> load_checkpoint(const std::string& path, Config* cfg,
                                    StoredPrecision precision = StoredPrecision::Keep) {
  *cfg = stored_run(read_metadata(path), path, /*training_state=*/false).config;
  if (precision == StoredPrecision::Use) {  // before the model is built: layers read it at setup
    const bool bf16 = cfg->precision == "bf16", amx = minires::kernels::amx_available();
    if (bf16 && !amx) {
      std::fprintf(stderr,
                   "note: '%s' trained with --precision bf16, which needs AMX; this CPU has none: "
                   "running in fp32 (results may differ slightly from its training run's)\n",
                   path.c_str());
    }
    set_matmul_precision(bf16 && amx ? MatmulPrecision::BF16 : MatmulPrecision::Highest);
  }
  Model<float> model = build_model<float>(cfg->model);
  model.init(0);
  load(model, path);
  return model;
}

}  // namespace fmnist
