// fmnist: train, evaluate and use residual networks on Fashion-MNIST with minires.
//
// clang-format off
//   fmnist train                    the default ResNet, sensible defaults, results in fmnist-out/
//   fmnist train --model seed       the 2017 notebook's model and settings (RMSprop, batch 128)
//   fmnist evaluate --model-file fmnist-out/best.mrm
//   fmnist predict --model-file fmnist-out/best.mrm --count 5
// clang-format on
//
// `fmnist --help` and `fmnist <command> --help` list every option.
#include <CLI/CLI.hpp>
#include <minires/minires.hpp>
#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "models.hpp"
#include "report.hpp"

using namespace minires;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// ---- Configuration --------------------------------------------------------------------------

// Everything that determines a training run. Saved in every checkpoint (so --resume continues
// the same run) and in metrics.json.
struct Config {
  std::string model = "resnet";
  index_t epochs = 0;  // 0: the model's default
  index_t batch_size = 0;
  std::string optimizer;  // "": the model's default
  double lr = 0;
  double weight_decay = -1;
  std::string schedule;
  index_t warmup_epochs = -1;
  int augment = -1;      // -1: the model's default, 0 off, 1 on (crops and flips), 2 flips only
  int standardize = -1;  // likewise
  std::uint64_t seed = 1;
  index_t limit = 0;        // train on the first N training images (0: all 55000)
  int keras_clip = -1;      // Keras 2.0's clipped cross-entropy gradient (-1: the model's default)
  index_t precise_bn = -1;  // batches for PreciseBN after each epoch (0: off; -1: default)
  int tta = -1;             // flip test-time augmentation in the final test (-1: default)
  index_t tta_shift = -1;   // shifted views in the final test, in pixels (0: none)
  double label_smoothing = -1;  // targets (1 - s) onehot + s / 10
  double ema = -1;              // weight-averaging decay (0: off)

  // Fills what the user left at "default" with the model's defaults: the notebook's settings
  // for the seed models, a tuned recipe for the ResNet.
  void apply_model_defaults() {
    const bool seed_model = model != "resnet";
    // The seed notebook's 20; the ResNet's 40 take ~26 minutes on 2 Zen 5 cores (docs/results.md).
    if (epochs == 0) epochs = seed_model ? 20 : 40;
    if (batch_size == 0) batch_size = 128;
    if (optimizer.empty()) optimizer = seed_model ? "rmsprop" : "sgd";
    if (lr == 0) lr = seed_model ? 1e-3 : 0.1;
    if (weight_decay < 0) weight_decay = seed_model ? 0.0 : 5e-4;
    if (schedule.empty()) schedule = seed_model ? "constant" : "cosine";
    if (warmup_epochs < 0) warmup_epochs = seed_model ? 0 : 1;
    if (augment < 0) augment = seed_model ? 0 : 1;
    if (standardize < 0) standardize = seed_model ? 0 : 1;
    if (keras_clip < 0) keras_clip = 0;  // docs/results.md: Keras 2.0's clip stalls the seed model
    if (precise_bn < 0) precise_bn = 0;
    // Mirror images only help a model that saw them in training (shoes all point left: the
    // seed model trained without flips loses 2.4 points with them, docs/results.md).
    if (tta < 0) tta = augment != 0 ? 1 : 0;
    if (tta_shift < 0) tta_shift = augment == 1 ? 1 : 0;  // likewise, for models trained on crops
    // docs/results.md: +0.9 points for the ResNet in 17 epochs; the seed keeps Keras' loss.
    if (label_smoothing < 0) label_smoothing = seed_model ? 0.0 : 0.1;
    if (ema < 0) ema = 0;
  }

  static int augment_mode(const std::string& name) {
    if (name == "off") return 0;
    if (name == "on") return 1;
    if (name == "flip") return 2;
    throw ValueError("augment: expected off, on or flip, found '" + name + "'");
  }
  std::string augment_name() const { return augment == 1 ? "on" : augment == 2 ? "flip" : "off"; }

  json to_json() const {
    return {{"model", model},
            {"epochs", epochs},
            {"batch_size", batch_size},
            {"optimizer", optimizer},
            {"lr", lr},
            {"weight_decay", weight_decay},
            {"schedule", schedule},
            {"warmup_epochs", warmup_epochs},
            {"augment", augment_name()},
            {"standardize", standardize == 1},
            {"seed", seed},
            {"limit", limit},
            {"keras_clip", keras_clip == 1},
            {"precise_bn", precise_bn},
            {"tta", tta == 1},
            {"tta_shift", tta_shift},
            {"label_smoothing", label_smoothing},
            {"ema", ema}};
  }
  static Config from_json(const json& j) {
    Config c;
    c.model = j.at("model").get<std::string>();
    c.epochs = j.at("epochs").get<index_t>();
    c.batch_size = j.at("batch_size").get<index_t>();
    c.optimizer = j.at("optimizer").get<std::string>();
    c.lr = j.at("lr").get<double>();
    c.weight_decay = j.at("weight_decay").get<double>();
    c.schedule = j.at("schedule").get<std::string>();
    c.warmup_epochs = j.at("warmup_epochs").get<index_t>();
    const json& a = j.at("augment");  // "off", "on", "flip"; a bool in older checkpoints
    c.augment = a.is_boolean() ? (a.get<bool>() ? 1 : 0) : augment_mode(a.get<std::string>());
    c.standardize = j.at("standardize").get<bool>() ? 1 : 0;
    c.seed = j.at("seed").get<std::uint64_t>();
    c.limit = j.at("limit").get<index_t>();
    c.keras_clip = j.value("keras_clip", false) ? 1 : 0;  // older checkpoints lack it
    c.precise_bn = j.value("precise_bn", index_t(0));     // likewise
    c.tta = j.value("tta", false) ? 1 : 0;
    c.tta_shift = j.value("tta_shift", index_t(0));
    c.label_smoothing = j.value("label_smoothing", 0.0);
    c.ema = j.value("ema", 0.0);
    return c;
  }
};

std::unique_ptr<Optimizer<float>> make_optimizer(const Config& c) {
  std::unique_ptr<Optimizer<float>> opt;
  if (c.optimizer == "rmsprop")
    opt = std::make_unique<RMSprop<float>>(RMSpropOptions{c.lr, 0.9, 1e-8, c.weight_decay});
  else if (c.optimizer == "sgd")
    opt = std::make_unique<SGD<float>>(SGDOptions{c.lr, 0.9, true, c.weight_decay});
  else if (c.optimizer == "adam")
    opt = std::make_unique<Adam<float>>(AdamOptions{c.lr, 0.9, 0.999, 1e-8, c.weight_decay});
  else if (c.optimizer == "adamw")
    opt = std::make_unique<AdamW<float>>(AdamOptions{c.lr, 0.9, 0.999, 1e-8, c.weight_decay});
  else
    throw ValueError("unknown optimizer '" + c.optimizer + "'");
  opt->set_weight_averaging(c.ema);
  return opt;
}

Schedule make_schedule(const Config& c, index_t steps_per_epoch) {
  Schedule s = c.schedule == "cosine" ? Schedule::cosine(c.epochs * steps_per_epoch)
               : c.schedule == "step" ? Schedule::step(std::max<index_t>(1, c.epochs / 3), 0.1)
                                      : Schedule::constant();
  s.warmup(c.warmup_epochs * steps_per_epoch);
  return s;
}

// ---- History in checkpoints and metrics.json -------------------------------------------------

json epoch_json(const EpochStats& e) {
  auto num = [](double v) { return std::isnan(v) ? json(nullptr) : json(v); };
  return {{"epoch", e.epoch},
          {"train_loss", e.train_loss},
          {"train_accuracy", e.train_accuracy},
          {"val_loss", num(e.val_loss)},
          {"val_accuracy", num(e.val_accuracy)},
          {"learning_rate", e.learning_rate},
          {"seconds", e.seconds},
          {"images_per_second", e.images_per_second}};
}

EpochStats epoch_from_json(const json& j) {
  auto num = [](const json& v) { return v.is_null() ? std::nan("") : v.get<double>(); };
  EpochStats e;
  e.epoch = j.at("epoch").get<index_t>();
  e.train_loss = j.at("train_loss").get<double>();
  e.train_accuracy = j.at("train_accuracy").get<double>();
  e.val_loss = num(j.at("val_loss"));
  e.val_accuracy = num(j.at("val_accuracy"));
  e.learning_rate = j.at("learning_rate").get<double>();
  e.seconds = j.at("seconds").get<double>();
  e.images_per_second = j.at("images_per_second").get<double>();
  return e;
}

json evaluation_json(const EvalResult& r) {
  json per_class = json::object();
  const auto acc = fmnist::per_class_accuracy(r);
  for (index_t i = 0; i < r.classes; ++i)
    per_class[fashion_mnist_class_names[static_cast<std::size_t>(i)]] =
        acc[static_cast<std::size_t>(i)];
  json confusion = json::array();
  for (index_t i = 0; i < r.classes; ++i) {
    json row = json::array();
    for (index_t j = 0; j < r.classes; ++j)
      row.push_back(r.confusion[static_cast<std::size_t>(i * r.classes + j)]);
    confusion.push_back(row);
  }
  return {{"accuracy", r.accuracy},
          {"loss", r.loss},
          {"per_class_accuracy", per_class},
          {"confusion_matrix", confusion}};
}

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Keeps the run's history and rewrites metrics.json, curves.csv and curves.svg after each
// epoch (an interrupted run has them too). It also hands the history to the checkpoint
// callback, which runs after it, so that --resume can restore it.
class Recorder : public Callback<float> {
 public:
  Recorder(std::string out, json base, std::vector<EpochStats> history,
           ModelCheckpoint<float>* ckpt, Metadata extra)
      : out_(std::move(out)),
        base_(std::move(base)),
        history_(std::move(history)),
        ckpt_(ckpt),
        extra_(std::move(extra)) {}

  bool on_epoch_end(const EpochStats& s, Model<float>&, Optimizer<float>&) override {
    history_.push_back(s);
    json h = json::array();
    for (const auto& e : history_) h.push_back(epoch_json(e));
    Metadata meta = extra_;
    meta["history"] = h.dump();
    ckpt_->set_extra(meta);
    write(nullptr);
    return true;
  }

  const std::vector<EpochStats>& history() const noexcept { return history_; }

  // metrics.json (with the test evaluation when given), curves.csv, curves.svg.
  void write(const json* test) const {
    json m = base_;
    json epochs = json::array();
    double seconds = 0, images = 0;
    for (const auto& e : history_) {
      epochs.push_back(epoch_json(e));
      seconds += e.seconds;
      images += e.images_per_second * e.seconds;
    }
    m["epochs"] = epochs;
    m["timings"] = {{"train_seconds", seconds},
                    {"mean_images_per_second", seconds > 0 ? images / seconds : 0.0}};
    if (test != nullptr) m["test"] = *test;
    m["written"] = now_utc();
    std::ofstream f(out_ + "/metrics.json");
    if (!f) throw IoError("cannot write '" + out_ + "/metrics.json'");
    f << m.dump(2) << '\n';
    fmnist::write_curves_csv(out_ + "/curves.csv", history_);
    fmnist::write_curves_svg(out_ + "/curves.svg", history_,
                             "minires fmnist: " + base_["config"]["model"].get<std::string>());
  }

 private:
  std::string out_;
  json base_;
  std::vector<EpochStats> history_;
  ModelCheckpoint<float>* ckpt_;
  Metadata extra_;
};

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) {
  g_interrupted.store(true);
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C ends the program at once
}

// ---- Commands --------------------------------------------------------------------------------

struct Common {
  std::string data = default_fashion_mnist_dir();
  int threads = 0;
};

void apply_threads(const Common& c) {
  if (c.threads > 0) set_num_threads(c.threads);
}

// Says which views of each image an evaluation averages (test-time augmentation), if more than one.
void print_views(const EvalOptions& eo) {
  if (!eo.flip && eo.shift == 0) return;
  std::string views = "the image";
  if (eo.flip) views += " and its mirror image";
  if (eo.shift > 0)
    views += ", shifted by " + std::to_string(eo.shift) + " pixel(s) up, down, left and right";
  std::printf("test-time augmentation: %s\n", views.c_str());
}

FashionMnistSplit<float> load_data(const std::string& dir, const Config& c) {
  const FashionMnist data = load_fashion_mnist(dir);
  ImageDatasetOptions options;
  if (c.standardize == 1)
    options.standardize(pixel_statistics(data.train->images, 0,
                                         data.train->images.count - fashion_mnist_validation_size));
  if (c.augment == 1) options.augmentation();
  if (c.augment == 2) options.augmentation(0);  // flips only
  auto split = split_fashion_mnist<float>(data, options);
  if (c.limit > 0) split.train = split.train.first(c.limit);
  return split;
}

int train_command(Config cfg, const Common& common, const std::string& out, bool resume,
                  bool epochs_given) {
  apply_threads(common);
  fs::create_directories(out);
  const std::string last = out + "/last.mrm", best = out + "/best.mrm";

  std::vector<EpochStats> history;
  double best_value = 0;
  bool has_best = false;
  Metadata resumed;
  if (resume) {
    if (!fs::exists(last))
      throw IoError("--resume: no checkpoint at '" + last + "' (train without --resume first)");
    resumed = read_metadata(last);
    const index_t epochs = cfg.epochs;
    cfg = Config::from_json(json::parse(resumed.at("config")));
    if (epochs_given) cfg.epochs = epochs;  // continue further than first planned
    for (const auto& e : json::parse(resumed.at("history"))) history.push_back(epoch_from_json(e));
    best_value = std::stod(resumed.at("best"));
    has_best = true;
  }
  cfg.apply_model_defaults();

  Model<float> model = fmnist::build_model<float>(cfg.model);
  model.init(cfg.seed);
  auto split = load_data(common.data, cfg);
  const index_t steps = (split.train.size() + cfg.batch_size - 1) / cfg.batch_size;
  auto optimizer = make_optimizer(cfg);
  optimizer->attach(model.params());
  index_t initial_epoch = 0;
  if (resume) {
    load(model, last, optimizer.get());
    initial_epoch = std::stoll(resumed.at("epoch"));
  }

  std::printf(
      "minires %s  model %s  threads %d  train %lld  validation %lld  test %lld\n", version_string,
      cfg.model.c_str(), num_threads(), static_cast<long long>(split.train.size()),
      static_cast<long long>(split.validation.size()), static_cast<long long>(split.test.size()));
  std::printf("config %s\n", cfg.to_json().dump().c_str());
  std::fputs(model.summary().c_str(), stdout);
  if (resume)
    std::printf("resuming after epoch %lld from %s\n", static_cast<long long>(initial_epoch),
                last.c_str());

  FitOptions fo;
  fo.epochs = cfg.epochs;
  fo.batch_size = cfg.batch_size;
  fo.seed = cfg.seed;
  fo.augment = cfg.augment != 0;
  fo.schedule = make_schedule(cfg, steps);
  fo.initial_epoch = initial_epoch;
  fo.precise_bn_batches = cfg.precise_bn;
  fo.interrupt = &g_interrupted;

  const Metadata extra = {
      {"model", cfg.model}, {"config", cfg.to_json().dump()}, {"minires", version_string}};
  ModelCheckpoint<float> checkpoint(last, best, Monitor::ValAccuracy, extra);
  if (has_best) checkpoint.set_best(best_value);
  json base = {
      {"minires_version", version_string},
      {"config", cfg.to_json()},
      {"threads", num_threads()},
      {"parameters",
       {{"trainable", model.trainable_count()}, {"non_trainable", model.non_trainable_count()}}},
      {"data",
       {{"train", split.train.size()},
        {"validation", split.validation.size()},
        {"test", split.test.size()}}}};
  Recorder recorder(out, base, history, &checkpoint, extra);
  ProgressBar<float> progress;
  SoftmaxCrossEntropyOptions loss_options;
  loss_options.keras_clip = cfg.keras_clip == 1;
  loss_options.label_smoothing = cfg.label_smoothing;
  SoftmaxCrossEntropy<float> loss(loss_options);

  std::signal(SIGINT, on_sigint);
  const History h = fit(model, loss, *optimizer, split.train, &split.validation, fo,
                        {&progress, &recorder, &checkpoint});
  std::signal(SIGINT, SIG_DFL);
  fmnist::print_epoch_table(stdout, recorder.history());
  if (h.interrupted) {
    const index_t done = recorder.history().empty() ? 0 : recorder.history().back().epoch;
    std::printf(
        "\ninterrupted: %s holds epoch %lld; continue with: fmnist train --out %s --resume\n",
        last.c_str(), static_cast<long long>(done), out.c_str());
    return 130;
  }
  if (!fs::exists(best))
    throw Error("training ran no epoch: nothing to evaluate (epochs " + std::to_string(cfg.epochs) +
                ")");

  // Test accuracy of the checkpoint with the best validation accuracy.
  const Metadata best_meta = load(model, best);
  std::printf("\nbest validation accuracy %s at epoch %s (%s)\n", best_meta.at("best").c_str(),
              best_meta.at("best_epoch").c_str(), best.c_str());
  EvalOptions eo;
  eo.batch_size = cfg.batch_size;  // the planned buffers
  eo.flip = cfg.tta == 1;
  eo.shift = cfg.tta_shift;
  print_views(eo);
  const EvalResult test = evaluate(model, split.test, eo);
  fmnist::print_evaluation(
      stdout, test,
      std::vector<std::string>(fashion_mnist_class_names.begin(), fashion_mnist_class_names.end()));
  json t = evaluation_json(test);
  t["checkpoint"] = best;
  t["best_epoch"] = std::stoll(best_meta.at("best_epoch"));
  recorder.write(&t);
  std::printf("\nwrote %s/{best.mrm,last.mrm,metrics.json,curves.csv,curves.svg}\n", out.c_str());
  return 0;
}

// Builds the model a checkpoint was trained as and loads it.
Model<float> load_checkpoint(const std::string& path, Config* cfg) {
  const Metadata meta = read_metadata(path);
  auto it = meta.find("config");
  if (it == meta.end())
    throw FormatError("'" + path + "' was not written by fmnist (no config in its metadata)");
  *cfg = Config::from_json(json::parse(it->second));
  Model<float> model = fmnist::build_model<float>(cfg->model);
  model.init(0);
  load(model, path);
  return model;
}

// tta / tta_shift / precise_bn: -1 keeps what the checkpoint's training used.
int evaluate_command(const std::string& path, const Common& common, int tta, index_t tta_shift,
                     index_t precise_bn) {
  apply_threads(common);
  Config cfg;
  Model<float> model = load_checkpoint(path, &cfg);
  const auto split = load_data(common.data, cfg);
  std::printf("model %s from %s\n", cfg.model.c_str(), path.c_str());
  if (precise_bn > 0) {
    const index_t used =
        recompute_batch_norm_statistics(model, split.train, precise_bn, cfg.batch_size, cfg.seed);
    std::printf("BatchNorm statistics recomputed over %lld training batches of %lld\n",
                static_cast<long long>(used), static_cast<long long>(cfg.batch_size));
  }
  EvalOptions eo;
  eo.batch_size = cfg.batch_size;
  eo.flip = (tta < 0 ? cfg.tta : tta) == 1;
  eo.shift = tta_shift < 0 ? cfg.tta_shift : tta_shift;
  print_views(eo);
  const EvalResult v = evaluate(model, split.validation, eo);
  std::printf("validation accuracy %.4f  loss %.4f\n", v.accuracy, v.loss);
  const EvalResult r = evaluate(model, split.test, eo);
  fmnist::print_evaluation(
      stdout, r,
      std::vector<std::string>(fashion_mnist_class_names.begin(), fashion_mnist_class_names.end()));
  return 0;
}

int predict_command(const std::string& path, const std::string& images_path, index_t count,
                    const Common& common) {
  apply_threads(common);
  Config cfg;
  Model<float> model = load_checkpoint(path, &cfg);
  // The same preprocessing as in training (the standardisation uses the training images).
  auto split = load_data(common.data, cfg);
  std::shared_ptr<const LabelledImages> custom;
  ImageDataset<float> set = split.test;
  bool labelled = true;
  if (!images_path.empty()) {
    auto li = std::make_shared<LabelledImages>();
    li->images = read_idx_images(images_path);
    li->labels.assign(static_cast<std::size_t>(li->images.count), 0);
    custom = li;
    ImageDatasetOptions o;
    o.mean = split.test.options().mean;
    o.stddev = split.test.options().stddev;
    set = ImageDataset<float>(custom, fashion_mnist_classes, o);
    labelled = false;
  }
  const index_t n = std::min(count, set.size());
  Tensor<float> x(Shape{n, 1, 28, 28});
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  std::vector<index_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), index_t(0));
  set.get(Span<const index_t>(idx), x, labels.data(), nullptr);
  const Tensor<float> p = predict(model, x);
  for (index_t i = 0; i < n; ++i) {
    std::vector<index_t> order(10);
    std::iota(order.begin(), order.end(), index_t(0));
    std::sort(order.begin(), order.end(), [&](index_t a, index_t b) { return p(i, a) > p(i, b); });
    std::printf("image %lld: %-12s %.4f", static_cast<long long>(i),
                fashion_mnist_class_names[static_cast<std::size_t>(order[0])],
                static_cast<double>(p(i, order[0])));
    std::printf("   (then %s %.4f, %s %.4f)",
                fashion_mnist_class_names[static_cast<std::size_t>(order[1])],
                static_cast<double>(p(i, order[1])),
                fashion_mnist_class_names[static_cast<std::size_t>(order[2])],
                static_cast<double>(p(i, order[2])));
    if (labelled) {
      const auto truth = labels[static_cast<std::size_t>(i)];
      std::printf("   true: %s%s", fashion_mnist_class_names[static_cast<std::size_t>(truth)],
                  truth == order[0] ? "" : "  <- wrong");
    }
    std::printf("\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fmnist: train residual networks on Fashion-MNIST with minires " +
               std::string(version_string)};
  app.require_subcommand(1);
  Common common;
  auto add_common = [&](CLI::App* sub) {
    sub->add_option("--data", common.data, "Directory with the Fashion-MNIST IDX files")
        ->capture_default_str();
    sub->add_option("--threads", common.threads,
                    "Threads (default: OMP_NUM_THREADS, else all cores)")
        ->check(CLI::PositiveNumber);
  };

  Config cfg;
  std::string out = "fmnist-out";
  bool resume = false;
  std::string augment, standardize, keras_clip, tta;
  auto* train =
      app.add_subcommand("train", "Train a model; writes checkpoints, metrics and curves to --out");
  add_common(train);
  train->add_option("--model", cfg.model, "Model to train")
      ->check(CLI::IsMember(fmnist::model_names()))
      ->capture_default_str();
  auto* epochs_opt =
      train->add_option("--epochs", cfg.epochs, "Epochs (default: 20 seed, 40 resnet)")
          ->check(CLI::PositiveNumber);
  train->add_option("--batch-size", cfg.batch_size, "Batch size (default 128)")
      ->check(CLI::PositiveNumber);
  train
      ->add_option(
          "--optimizer", cfg.optimizer,
          "rmsprop, sgd (Nesterov momentum 0.9), adam or adamw (default: rmsprop seed, sgd resnet)")
      ->check(CLI::IsMember({"rmsprop", "sgd", "adam", "adamw"}));
  train->add_option("--lr", cfg.lr, "Base learning rate (default: 1e-3 seed, 0.1 resnet)")
      ->check(CLI::PositiveNumber);
  train
      ->add_option("--weight-decay", cfg.weight_decay,
                   "Weight decay (default: 0 seed, 5e-4 resnet)")
      ->check(CLI::Range(0.0, 1.0));
  train
      ->add_option("--schedule", cfg.schedule,
                   "Learning-rate schedule: constant, cosine or step (default: constant seed, "
                   "cosine resnet)")
      ->check(CLI::IsMember({"constant", "cosine", "step"}));
  train
      ->add_option("--warmup", cfg.warmup_epochs,
                   "Linear warm-up epochs (default: 0 seed, 1 resnet)")
      ->check(CLI::NonNegativeNumber);
  train
      ->add_option(
          "--augment", augment,
          "Random crops (pad 2) and horizontal flips: on, off, or flip (flips only) (default: "
          "off seed, on resnet)")
      ->check(CLI::IsMember({"on", "off", "flip"}));
  train
      ->add_option(
          "--standardize", standardize,
          "Standardise pixels with the training mean/std: on or off (default: off seed, on resnet)")
      ->check(CLI::IsMember({"on", "off"}));
  train
      ->add_option("--keras-clip", keras_clip,
                   "Keras 2.0's clipped cross-entropy: samples with p(label) < 1e-7 give no "
                   "gradient: on or off (default: off)")
      ->check(CLI::IsMember({"on", "off"}));
  train
      ->add_option("--precise-bn", cfg.precise_bn,
                   "After each epoch, recompute the BatchNorm moving statistics as the average "
                   "over this many training batches (PreciseBN); 0: Keras' momentum averages "
                   "(default 0)")
      ->check(CLI::NonNegativeNumber);
  train
      ->add_option(
          "--tta", tta,
          "Test-time augmentation in the final test: average the predictions of each "
          "image and its mirror image: on or off (default: as --augment, whose flips it assumes)")
      ->check(CLI::IsMember({"on", "off"}));
  train
      ->add_option(
          "--tta-shift", cfg.tta_shift,
          "Test-time augmentation in the final test: also average the predictions of "
          "the views shifted by this many pixels up, down, left and right (default: 1 with "
          "--augment on, else 0)")
      ->check(CLI::Range(0, 13));
  train
      ->add_option("--label-smoothing", cfg.label_smoothing,
                   "Train against targets (1 - s) * onehot + s / 10 (default: 0 seed, 0.1 resnet)")
      ->check(CLI::Range(0.0, 1.0));
  train
      ->add_option("--ema", cfg.ema,
                   "Validate, checkpoint and test an exponential moving average of the weights "
                   "with this decay per step, e.g. 0.999 (training itself is unchanged; use with "
                   "--precise-bn so the BatchNorm statistics follow the averaged weights); 0: off "
                   "(default 0)")
      ->check(CLI::Range(0.0, 0.999999));
  train->add_option("--seed", cfg.seed, "Seed of initialisation, shuffling and augmentation")
      ->capture_default_str();
  train->add_option("--limit", cfg.limit, "Train on the first N training images only")
      ->check(CLI::PositiveNumber);
  train->add_option("--out", out, "Output directory")->capture_default_str();
  train->add_flag("--resume", resume, "Continue the run saved in --out (its last complete epoch)");

  std::string model_file, images;
  index_t count = 10;
  auto* evaluate_cmd = app.add_subcommand("evaluate", "Evaluate a saved model on the test set");
  add_common(evaluate_cmd);
  evaluate_cmd->add_option("--model-file", model_file, "A checkpoint written by fmnist train")
      ->required()
      ->check(CLI::ExistingFile);
  std::string eval_tta;
  index_t eval_precise_bn = 0, eval_tta_shift = -1;
  evaluate_cmd
      ->add_option("--tta", eval_tta,
                   "Average the predictions of each image and its mirror image: on or off "
                   "(default: as the checkpoint was trained)")
      ->check(CLI::IsMember({"on", "off"}));
  evaluate_cmd
      ->add_option("--tta-shift", eval_tta_shift,
                   "Also average the predictions of the views shifted by this many pixels up, "
                   "down, left and right; 0: none (default: as the checkpoint was trained)")
      ->check(CLI::Range(0, 13));
  evaluate_cmd
      ->add_option("--precise-bn", eval_precise_bn,
                   "First recompute the BatchNorm statistics over this many training batches")
      ->check(CLI::NonNegativeNumber);

  auto* predict_cmd = app.add_subcommand("predict", "Classify images with a saved model");
  add_common(predict_cmd);
  predict_cmd->add_option("--model-file", model_file, "A checkpoint written by fmnist train")
      ->required()
      ->check(CLI::ExistingFile);
  predict_cmd->add_option("--images", images, "An IDX image file (default: the test set)")
      ->check(CLI::ExistingFile);
  predict_cmd->add_option("--count", count, "How many images to classify")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (!augment.empty()) cfg.augment = Config::augment_mode(augment);
  if (!standardize.empty()) cfg.standardize = standardize == "on";
  if (!keras_clip.empty()) cfg.keras_clip = keras_clip == "on";
  if (!tta.empty()) cfg.tta = tta == "on";
  try {
    if (*train) return train_command(cfg, common, out, resume, epochs_opt->count() > 0);
    if (*evaluate_cmd)
      return evaluate_command(model_file, common, eval_tta.empty() ? -1 : eval_tta == "on",
                              eval_tta_shift, eval_precise_bn);
    if (*predict_cmd) return predict_command(model_file, images, count, common);
  } catch (const minires::Error& e) {
    std::fprintf(stderr, "fmnist: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fmnist: %s\n", e.what());
    return 1;
  }
  return 0;
}
