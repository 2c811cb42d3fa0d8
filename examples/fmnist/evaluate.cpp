// fmnist evaluate: the validation and test accuracy of a saved model, with per-class accuracy and
// the confusion matrix; optionally with other test-time views or recomputed BatchNorm statistics.
#include <minires/minires.hpp>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common.hpp"
#include "report.hpp"

namespace fmnist {
namespace {

struct EvaluateArgs {
  std::string model_file;
  std::optional<bool> tta;           // unset: as the checkpoint was trained
  std::optional<index_t> tta_shift;  // likewise
  index_t precise_bn = 0;
  index_t test_limit = 0;  // the first N test images only (0: all)
};

int evaluate_command(const EvaluateArgs& args, const Common& common) {
  apply_threads(common);
  Config cfg;
  Model<float> model = load_checkpoint(args.model_file, &cfg, StoredPrecision::Use);
  auto split = load_data(common.data, cfg);
  if (args.test_limit > split.test.size()) {
    throw ValueError("--test-limit: expected at most the " + std::to_string(split.test.size()) +
                     " test images, found " + std::to_string(args.test_limit));
  }
  const index_t all_test = split.test.size();
  if (args.test_limit > 0) split.test = split.test.first(args.test_limit);
  std::printf("model %s from %s\n", cfg.model.c_str(), args.model_file.c_str());
  if (args.precise_bn > 0) {
    const index_t used = recompute_batch_norm_statistics(model, split.train, args.precise_bn,
                                                         cfg.batch_size, cfg.seed);
    std::printf("BatchNorm statistics recomputed over %lld training batches of %lld\n",
                static_cast<long long>(used), static_cast<long long>(cfg.batch_size));
  }
  EvalOptions eo;
  eo.batch_size = cfg.batch_size;
  eo.flip = args.tta.value_or(cfg.tta);
  eo.shift = args.tta_shift.value_or(cfg.tta_shift);
  print_views(eo);
  if (split.validation.size() > 0) {
    const EvalResult v = evaluate(model, split.validation, eo);
    std::printf("validation accuracy %.4f  loss %.4f\n", v.accuracy, v.loss);
  } else {
    std::printf(
        "no validation images: the model trained on all training images (--validation 0)\n");
  }
  if (split.test.size() < all_test)
    std::printf("test images: the first %lld of %lld\n", static_cast<long long>(split.test.size()),
                static_cast<long long>(all_test));
  const EvalResult r = evaluate(model, split.test, eo);
  print_evaluation(
      stdout, r,
      std::vector<std::string>(fashion_mnist_class_names.begin(), fashion_mnist_class_names.end()));
  return 0;
}

}  // namespace

Command add_evaluate_command(CLI::App& program, Common& common) {
  auto args = std::make_shared<EvaluateArgs>();
  CLI::App* evaluate_cmd =
      program.add_subcommand("evaluate", "Evaluate a saved model on the test set");
  add_shared_options(evaluate_cmd, common);
  add_model_file_option(evaluate_cmd, args->model_file);
  on_off_option(
      evaluate_cmd, "--tta", args->tta,
      "Average the predictions of each image and its mirror image: on or off (default: as "
      "the "
      "checkpoint was trained)");
  optional_option(evaluate_cmd, "--tta-shift", args->tta_shift,
                  "Also average the predictions of the views shifted by this many pixels up, "
                  "down, left and right; 0: none (default: as the checkpoint was trained)")
      ->check(in_range<index_t>(0, Limits::max_tta_shift));
  evaluate_cmd
      ->add_option("--precise-bn", args->precise_bn,
                   "First recompute the BatchNorm statistics over this many training batches")
      ->check(in_range<index_t>(0, Limits::max_precise_bn));
  evaluate_cmd
      ->add_option("--test-limit", args->test_limit,
                   "Test on the first N test images only (the 2017 notebook tested on the first "
                   "5000)")
      ->check(in_range<index_t>(1, Limits::max_limit));
  return {evaluate_cmd, [args, &common] { return evaluate_command(*args, common); }};
}

}  // namespace fmnist
