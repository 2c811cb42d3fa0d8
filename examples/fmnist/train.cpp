// fmnist train: trains a model, writes checkpoints, metrics.json and curves to --out, and tests
// the checkpoint with the best validation accuracy. With a time budget it plans the epochs
// that fit from the speed it measures (budget.hpp).
#include <minires/minires.hpp>
#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "budget.hpp"
#include "common.hpp"
#include "report.hpp"

namespace fmnist {
namespace {

namespace fs = std::filesystem;

// What `fmnist train` takes besides the Common options.
struct TrainArgs {
  Settings settings;               // the run's settings that were given
  std::string out = "fmnist-out";  // where the run writes
  std::string time_budget;         // --time-budget as given ("" if not)
  bool resume = false, overwrite = false;
  bool sync_bn = false;  // under mpirun: synchronised BatchNorm
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
  opt->set_decay_vectors(c.decay_vectors);
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

json evaluation_json(const EvalResult& r) {
  json per_class = json::object();
  const auto acc = per_class_accuracy(r);
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
// epoch (an interrupted run has them too), each atomically (write_file_atomically). It also
// hands the history to the checkpoint callback, which runs after it, so that --resume can
// restore it.
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

  // Replaces a field of metrics.json and of the checkpoints' metadata from the next write on
  // (a time budget that shortens the run updates the configuration and the plan).
  void set_field(const std::string& key, const json& value) { base_[key] = value; }
  void set_extra(const std::string& key, const std::string& value) { extra_[key] = value; }

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
    write_file_atomically(out_ + "/metrics.json", m.dump(2) + "\n", "fmnist");
    write_file_atomically(out_ + "/curves.csv", curves_csv(history_), "fmnist");
    write_file_atomically(
        out_ + "/curves.svg",
        curves_svg(history_, "minires fmnist: " + base_["config"]["model"].get<std::string>()),
        "fmnist");
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

// Every data set the run will use has the samples and labels the model takes, checked before
// the first step (not after the last epoch).
void check_data(const Model<float>& model, const FashionMnistSplit<float>& split) {
  minires::detail::check_dataset(model, split.train, "the training images");
  minires::detail::check_dataset(model, split.validation, "the validation images");
  minires::detail::check_dataset(model, split.test, "the test images");
}

// The model to distil from (--teacher), loaded and checked against the run's data: it must take
// the same inputs, standardised the same way, and predict the same classes. Its description for
// metrics.json goes to *record.
std::optional<Model<float>> load_teacher(const Config& cfg, const FashionMnistSplit<float>& split,
                                         json* record) {
  if (cfg.teacher.empty()) return std::nullopt;
  Config taught;
  Model<float> teacher = load_checkpoint(cfg.teacher, &taught);
  const std::string where = "--teacher '" + cfg.teacher + "'";
  if (taught.standardize != cfg.standardize) {
    throw ValueError(where + ": the teacher was trained on pixels " +
                     (taught.standardize ? "standardised" : "scaled to [0, 1]") +
                     " (--standardize " + (taught.standardize ? "on" : "off") +
                     "); expected the student's preprocessing, --standardize " +
                     (cfg.standardize ? "on" : "off"));
  }
  if (cfg.standardize && taught.validation != cfg.validation) {
    throw ValueError(
        where +
        ": the teacher standardised its pixels with the statistics of "
        "the training images outside its last " +
        std::to_string(taught.validation) + " (--validation " + std::to_string(taught.validation) +
        "); expected the student's statistics, --validation " + std::to_string(cfg.validation));
  }
  // Without standardisation the splits may differ, but the teacher must not have trained on
  // images the student validates on (the last cfg.validation): its soft targets would leak them.
  if (taught.validation < cfg.validation) {
    throw ValueError(where + ": the teacher trained on all but the last " +
                     std::to_string(taught.validation) + " training images (--validation " +
                     std::to_string(taught.validation) +
                     "), some of those the student validates on; expected a teacher with "
                     "--validation " +
                     std::to_string(cfg.validation) + " or more");
  }
  minires::detail::check_dataset(teacher, split.train, where.c_str());
  *record = {{"file", cfg.teacher},
             {"model", taught.model},
             {"parameters", teacher.trainable_count()},
             {"seed", taught.seed},
             {"epochs", taught.epochs}};
  return teacher;
}

// The files a run writes into its --out directory.
const char* const run_files[] = {"last.mrm", "best.mrm", "metrics.json", "curves.csv",
                                 "curves.svg"};

// Holds an exclusive lock on DIR/fmnist.lock while a run writes into DIR: a second run into the
// same directory fails at once instead of overwriting the first run's files.
class DirectoryLock {
 public:
  explicit DirectoryLock(const std::string& dir) {
    const std::string path = dir + "/fmnist.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      throw IoError("--out '" + dir + "': cannot create '" + path + "': " + std::strerror(errno));
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd_);
      throw IoError("--out '" + dir + "': another fmnist run is writing into this directory; " +
                    "wait for it to end or choose another --out");
    }
  }
  ~DirectoryLock() { ::close(fd_); }
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

// Creates --out (a directory).
void prepare_output_directory(const std::string& out) {
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw IoError("--out '" + out + "': cannot create the directory: " + ec.message());
}

// --overwrite is the only way to start a new run where one was saved before.
void refuse_to_overwrite(const std::string& out, const Common& common) {
  std::string found;
  std::error_code ec;
  for (const char* f : run_files)
    if (fs::exists(fs::path(out) / f, ec)) found += (found.empty() ? "" : ", ") + std::string(f);
  if (found.empty()) return;
  throw IoError("--out '" + out + "' already holds a run (" + found +
                "); continue it with: " + common.program + " train --out " + out +
                " --resume; or start a new run over it with --overwrite, or choose another --out");
}

// The settings given on the command line, besides --epochs, that differ from the stored run's
// (which win).
std::string resume_conflicts(const Settings& given, const Config& stored) {
  const json g = given.to_json(), st = stored.to_json();
  auto text = [](const json& v) {
    if (v.is_boolean()) return std::string(v.get<bool>() ? "on" : "off");
    if (v.is_string()) return v.get<std::string>();
    return v.dump();
  };
  std::string conflicts;
  for (const auto& [key, value] : g.items()) {
    if (key == "epochs" || value == st.at(key)) continue;
    std::string flag = key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    if (key == "warmup_epochs") flag = "warmup";
    conflicts += (conflicts.empty() ? "" : ", ") + std::string("--") + flag + " " + text(value) +
                 " (the run has " + text(st.at(key)) + ")";
  }
  return conflicts;
}

// ---- Time budget (budget.hpp) ---------------------------------------------------------------

// Training and evaluation speed of this model on this machine, global images per second: a
// scratch copy of the model (the run's own model and data order are not touched) trains a few
// batches of the run's per-rank size after two warm-up steps, then evaluates a few. With ranks,
// every rank measures its own and all use rank 0's figures, so all plan the same epochs.
struct Speeds {
  double train = 0, eval = 0;
};
Speeds measure_speeds(const Config& cfg, const FashionMnistSplit<float>& split, const Common& c) {
  using clock = std::chrono::steady_clock;
  const index_t shard = (cfg.batch_size + c.ranks() - 1) / c.ranks();
  const index_t bs = std::max<index_t>(1, std::min(shard, split.train.size()));
  Model<float> m = build_model<float>(cfg.model, cfg.zero_init_residual);
  m.init(cfg.seed + 1);
  auto optimizer = make_optimizer(cfg);
  optimizer->attach(m.params());
  SoftmaxCrossEntropy<float> loss;
  Tensor<float> x(Model<float>::batch_shape(split.train.sample_shape(), bs));
  std::vector<std::int32_t> labels(static_cast<std::size_t>(bs));
  std::vector<index_t> idx(static_cast<std::size_t>(bs));
  Rng rng(cfg.seed + 2);
  const auto batch_of = [&](const Dataset<float>& d, index_t b) {
    for (index_t i = 0; i < bs; ++i) idx[static_cast<std::size_t>(i)] = (b * bs + i) % d.size();
    d.get(Span<const index_t>(idx.data(), idx.size()), x, labels.data(),
          augmented(cfg) ? &rng : nullptr);
  };
  const auto step = [&](index_t b) {
    batch_of(split.train, b);
    m.zero_grad();
    loss.forward(m.forward(x, Mode::Train), Span<const std::int32_t>(labels.data(), labels.size()));
    m.backward(loss);
    optimizer->step();
  };
  for (index_t b = 0; b < 2; ++b) step(b);  // warm-up: first-touch of every buffer
  auto t0 = clock::now();
  index_t steps = 0;
  double seconds = 0;
  while (steps < 4 || (steps < 20 && seconds < 2.0)) {
    step(2 + steps++);
    seconds = std::chrono::duration<double>(clock::now() - t0).count();
  }
  Speeds s;
  s.train = static_cast<double>(steps * bs * c.ranks()) / seconds;
  const Dataset<float>& eval_set = split.validation.size() > 0 ? split.validation : split.train;
  batch_of(eval_set, 0);
  m.forward(x, Mode::Infer);  // warm-up
  t0 = clock::now();
  for (index_t b = 1; b <= 4; ++b) {
    batch_of(eval_set, b);
    m.forward(x, Mode::Infer);
  }
  seconds = std::chrono::duration<double>(clock::now() - t0).count();
  s.eval = static_cast<double>(4 * bs * c.ranks()) / seconds;
  if (c.group != nullptr) {
    double v[2] = {s.train, s.eval};
    c.group->broadcast(v, 2, 0);
    s = {v[0], v[1]};
  }
  return s;
}

// After each epoch (on rank 0), re-plans the run (replan: within the free epochs both ways at
// that epoch's speed, later at the mean speed of the last three: shorter when it would end late,
// longer in its first half when two or more epochs more fit). A change calls
// the on_change hook (which records the new length before the epoch's checkpoint and
// metrics.json are written: the guard runs before them) and asks fit() to stop;
// train_command continues with the new length.
class BudgetGuard : public Callback<float> {
 public:
  using clock = std::chrono::steady_clock;
  // `contents`: what an epoch's time includes besides its steps, for the messages
  // ("with validation", or "without validation" with --validation 0).
  BudgetGuard(double budget, clock::time_point start, index_t epochs, double test_seconds,
              index_t free_epochs, index_t max_epochs, std::string contents)
      : contents_(std::move(contents)),
        budget_(budget),
        start_(start),
        epochs_(epochs),
        test_seconds_(test_seconds),
        free_epochs_(free_epochs),
        max_epochs_(max_epochs) {
    last_ = clock::now();
  }
  void on_change(std::function<void(index_t epochs)> f) { on_change_ = std::move(f); }
  void on_epoch_begin(index_t) override {
    if (!started_) last_ = clock::now();
    started_ = true;
  }
  bool on_epoch_end(const EpochStats& s, Model<float>&, Optimizer<float>&) override {
    const auto now = clock::now();
    const double epoch_wall = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    // The speed: the mean of the last three epochs (one epoch alone varies by up to 10%).
    recent_.push_back(epoch_wall);
    if (recent_.size() > 3) recent_.erase(recent_.begin());
    double mean = 0;
    for (double t : recent_) mean += t / static_cast<double>(recent_.size());
    const index_t planned = epochs_;
    epochs_ = replan(budget_, elapsed, {mean, test_seconds_}, s.epoch, planned, free_epochs_,
                     max_epochs_);
    if (epochs_ == planned) return true;
    if (s.epoch <= free_epochs_) {
      std::printf(
          "time budget: epoch %lld took %s (%s); re-planned at that speed, with 10%% "
          "to spare: %lld epochs instead of %lld (the learning rate so far is the same for "
          "either length)\n",
          static_cast<long long>(s.epoch), format_duration(epoch_wall).c_str(), contents_.c_str(),
          static_cast<long long>(epochs_), static_cast<long long>(planned));
    } else {
      char change[160];  // what the rest of the plan does at this speed
      if (epochs_ > planned) {
        std::snprintf(change, sizeof change, "%lld more fit with 10%% to spare: lengthening",
                      static_cast<long long>(epochs_ - s.epoch));
      } else {
        std::snprintf(change, sizeof change, "%lld more would end after the %s budget: shortening",
                      static_cast<long long>(planned - s.epoch), format_duration(budget_).c_str());
      }
      std::printf(
          "time budget: after epoch %lld, epochs take %s (%s, the mean of the last %zu); %s the "
          "run to %lld epochs (the learning-rate schedule is recomputed for %lld epochs from "
          "here)\n",
          static_cast<long long>(s.epoch), format_duration(mean).c_str(), contents_.c_str(),
          recent_.size(), change, static_cast<long long>(epochs_), static_cast<long long>(epochs_));
    }
    std::fflush(stdout);
    changes_.push_back({{"after_epoch", s.epoch}, {"from", planned}, {"to", epochs_}});
    if (on_change_) on_change_(epochs_);
    return false;
  }
  index_t epochs() const noexcept { return epochs_; }
  // Each change of plan: {"after_epoch", "from", "to"}.
  const json& changes() const noexcept { return changes_; }
  // Whether `--epochs epochs()` repeats the run exactly: no change after the free epochs.
  bool reproducible() const {
    for (const auto& c : changes_)
      if (c["after_epoch"].get<index_t>() > free_epochs_) return false;
    return true;
  }

 private:
  std::string contents_;
  double budget_;
  clock::time_point start_, last_;
  index_t epochs_;
  double test_seconds_;
  index_t free_epochs_, max_epochs_;
  bool started_ = false;
  std::vector<double> recent_;  // the last epochs' wall times
  json changes_ = json::array();
  std::function<void(index_t)> on_change_;
};

// The time budget in seconds (0: none): --time-budget, or 30 minutes for the ResNet when
// --epochs is not given; never when resuming (the run continues with its stored epochs).
double time_budget(const TrainArgs& args, const Config& cfg) {
  const bool epochs_given = args.settings.epochs.has_value();
  if (!args.time_budget.empty()) {
    if (args.resume)
      throw ValueError("--time-budget: a resumed run continues with its stored epochs; drop it");
    if (epochs_given) throw ValueError("--time-budget and --epochs both set the length: give one");
    return parse_duration(args.time_budget);
  }
  return !args.resume && !epochs_given && cfg.model == "resnet" ? 30 * 60 : 0;
}

// The run that --resume continues: its stored settings (which win over the given ones, and
// which the given ones must not contradict; --epochs may extend the run) and history. Without
// --resume, checks that --out holds no earlier run unless --overwrite. Only reads: a bad
// --resume or --out fails before the data loads.
StoredRun stored_or_new_run(const TrainArgs& args, const Common& common, Config& cfg) {
  const std::string& out = args.out;
  const std::string last = out + "/last.mrm";
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_directory(out, ec))
    throw IoError("--out '" + out + "': expected a directory, found a file");
  StoredRun stored;
  if (!args.resume) {
    if (!args.overwrite && common.lead()) refuse_to_overwrite(out, common);
    return stored;
  }
  if (!fs::exists(last, ec))
    throw IoError("--resume: no checkpoint at '" + last + "' (train without --resume first)");
  stored = stored_run(read_metadata(last), last);
  const std::string conflicts = resume_conflicts(args.settings, stored.config);
  if (!conflicts.empty()) {
    throw ValueError("--resume continues the run in '" + out + "' with its stored settings; " +
                     conflicts + " would change it: drop the flag, or start a new run with " +
                     "another --out (or --overwrite)");
  }
  cfg = stored.config;
  if (args.settings.epochs) {
    const index_t epochs = *args.settings.epochs;
    if (epochs < stored.epoch) {
      throw ValueError("--epochs " + std::to_string(epochs) + ": the run in '" + out +
                       "' already completed epoch " + std::to_string(stored.epoch) +
                       "; expected at least that many");
    }
    cfg.epochs = epochs;  // continue further than first planned
  }
  return stored;
}

// What an epoch's time includes besides its steps, as the budget messages say it.
std::string epoch_contents(const FashionMnistSplit<float>& split) {
  return split.validation.size() > 0 ? "with validation" : "without validation";
}

// The plan of a run with a time budget: the epochs that fit from the speed measured now
// (cfg.epochs is set to them), the line that tells the user, and its record for metrics.json.
struct BudgetPlan {
  double test_seconds = 0;  // the final test's estimated time
  std::string line;         // "time budget 30.0 min: 21 epochs of 430 steps at ..."
  json record;              // metrics.json's "time_budget"
};
BudgetPlan plan_budget(double budget, std::chrono::steady_clock::time_point started, index_t steps,
                       Config& cfg, const FashionMnistSplit<float>& split, const Common& common) {
  const Speeds speed = measure_speeds(cfg, split, common);
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const index_t views = (cfg.tta ? 2 : 1) * (cfg.tta_shift > 0 ? 5 : 1);
  const RunCosts costs = run_costs(split.train.size(), split.validation.size(), split.test.size(),
                                   views, cfg.precise_bn, cfg.batch_size, speed.train, speed.eval);
  cfg.epochs = epochs_within(budget, elapsed, costs, Limits::max_epochs);
  const auto ends = [&](const RunCosts& c) {
    return elapsed + static_cast<double>(cfg.epochs) * c.epoch_seconds + c.test_seconds;
  };
  const double total = ends(costs), slower = ends(with_headroom(costs));
  char line[512];
  std::snprintf(
      line, sizeof line,
      "time budget %s: %lld epochs of %lld steps at ~%.0f images/s (measured): ~%s per epoch "
      "%s, ~%s of test; ends in ~%s at that speed, ~%s if epochs are 10%% slower "
      "(%s so far)%s\n",
      format_duration(budget).c_str(), static_cast<long long>(cfg.epochs),
      static_cast<long long>(steps), speed.train, format_duration(costs.epoch_seconds).c_str(),
      epoch_contents(split).c_str(), format_duration(costs.test_seconds).c_str(),
      format_duration(total).c_str(), format_duration(slower).c_str(),
      format_duration(elapsed).c_str(),
      slower > budget ? " (one epoch is the least a run trains: over budget)" : "");
  return {costs.test_seconds,
          line,
          {{"seconds", budget},
           {"measured_train_images_per_second", speed.train},
           {"measured_eval_images_per_second", speed.eval},
           {"planned_epochs", cfg.epochs},
           {"epochs", cfg.epochs},
           {"changes", json::array()},
           {"same_as_epochs_flag", true}}};
}

// The run's first lines: the program, model, threads, data, ranks, configuration and the model.
void print_run_header(const Config& cfg, Model<float>& model, const FashionMnistSplit<float>& split,
                      const TrainArgs& args, const Common& common) {
  std::printf(
      "minires %s  model %s  precision %s  threads %d  train %lld  validation %lld  test %lld\n",
      version_string, cfg.model.c_str(), cfg.precision.c_str(), num_threads(),
      static_cast<long long>(split.train.size()), static_cast<long long>(split.validation.size()),
      static_cast<long long>(split.test.size()));
  if (common.ranks() > 1) {
    std::printf(
        "data parallel: %d ranks x %d threads, global batch %lld (%lld or %lld per rank), "
        "BatchNorm statistics %s\n",
        common.ranks(), num_threads(), static_cast<long long>(cfg.batch_size),
        static_cast<long long>(cfg.batch_size / common.ranks()),
        static_cast<long long>((cfg.batch_size + common.ranks() - 1) / common.ranks()),
        args.sync_bn ? "synchronised over the ranks (--sync-bn)" : "per rank");
  }
  std::printf("config %s\n", cfg.to_json().dump().c_str());
  std::fputs(model.summary().c_str(), stdout);
}

// The final test: the checkpoint with the best validation accuracy (read by rank 0, sent to the
// others; the test set is then shared among the ranks), with the configured test-time views;
// recorded in metrics.json.
void final_test(Model<float>& model, const Config& cfg, const ImageDataset<float>& test_set,
                const std::string& best, const Recorder& recorder, const Common& common) {
  StoredRun best_run;
  if (common.lead()) {
    const Metadata best_meta = load(model, best);
    best_run = stored_run(best_meta, best);
    std::printf("\nbest %s accuracy %.6f at epoch %lld (%s)\n",
                cfg.validation > 0 ? "validation" : "training", best_run.best,
                static_cast<long long>(best_run.best_epoch), best.c_str());
  }
  if (common.group != nullptr) broadcast_model(model, *common.group);
  EvalOptions eo;
  eo.replicas = common.group;
  eo.batch_size = (cfg.batch_size + common.ranks() - 1) / common.ranks();  // the planned buffers
  eo.flip = cfg.tta;
  eo.shift = cfg.tta_shift;
  print_views(eo);
  const EvalResult test = evaluate(model, test_set, eo);
  print_evaluation(
      stdout, test,
      std::vector<std::string>(fashion_mnist_class_names.begin(), fashion_mnist_class_names.end()));
  json t = evaluation_json(test);
  t["checkpoint"] = best;
  t["best_epoch"] = best_run.best_epoch;
  if (common.lead()) recorder.write(&t);
}

// --precision: the convolutions' products in fp32, or in bfloat16 on AMX tiles (set before any
// model is built: layers read it at setup).
void apply_precision(const Config& cfg) {
  if (cfg.precision != "bf16") {
    set_matmul_precision(MatmulPrecision::Highest);
    return;
  }
  if (!minires::kernels::amx_available()) {
    throw ValueError(
        "--precision bf16: expected a CPU with AMX-BF16 and a build for it (-march=native on "
        "that CPU), found neither here; use --precision fp32");
  }
  set_matmul_precision(MatmulPrecision::BF16);
}

int train_command(const TrainArgs& args, const Common& common) {
  const auto started = std::chrono::steady_clock::now();  // the time budget's clock
  const std::string& out = args.out;
  if (args.resume && args.overwrite)
    throw ValueError("--resume continues the run in --out and --overwrite replaces it: give one");
  Config cfg = args.settings.resolve();
  const double budget = time_budget(args, cfg);
  std::signal(SIGINT, on_sigint);  // from here on Ctrl-C stops cleanly, also while loading
  apply_threads(common);
  const std::string last = out + "/last.mrm", best = out + "/best.mrm";
  const StoredRun stored = stored_or_new_run(args, common, cfg);
  cfg.validate("");
  apply_precision(cfg);  // before the first model is built

  Model<float> model = build_model<float>(cfg.model, cfg.zero_init_residual);
  model.init(cfg.seed);
  auto split = load_data(common.data, cfg);
  check_data(model, split);
  json teacher_record;  // null: no teacher
  std::optional<Model<float>> teacher = load_teacher(cfg, split, &teacher_record);

  // Now the run writes into --out (rank 0 only): lock it, clear what a killed run left, and for
  // --overwrite delete the earlier run.
  std::optional<DirectoryLock> lock;
  std::error_code ec;
  if (common.lead()) {
    prepare_output_directory(out);
    lock.emplace(out);
    for (const auto& name : remove_stale_temporaries(out))
      std::printf("removed %s/%s, left by a run that was killed while saving\n", out.c_str(),
                  name.c_str());
    if (args.overwrite)
      for (const char* f : run_files) fs::remove(fs::path(out) / f, ec);
  }
  const index_t steps = (split.train.size() + cfg.batch_size - 1) / cfg.batch_size;
  auto optimizer = make_optimizer(cfg);
  optimizer->attach(model.params());
  if (args.resume) load(model, last, optimizer.get());

  BudgetPlan plan;  // none: a null record
  if (budget > 0) plan = plan_budget(budget, started, steps, cfg, split, common);
  print_run_header(cfg, model, split, args, common);  // with the planned epochs
  if (teacher) {
    std::printf(
        "distilling from %s (model %s, %lld parameters): soft-target weight %g, "
        "temperature %g\n",
        cfg.teacher.c_str(), teacher_record["model"].get<std::string>().c_str(),
        static_cast<long long>(teacher->trainable_count()), cfg.distill_weight,
        cfg.distill_temperature);
  }
  if (args.resume) {
    std::printf("resuming after epoch %lld from %s, with the settings stored there%s\n",
                static_cast<long long>(stored.epoch), last.c_str(),
                cfg.epochs != stored.config.epochs ? " (--epochs extends the run)" : "");
  }
  std::fputs(plan.line.c_str(), stdout);

  FitOptions fo;
  fo.epochs = cfg.epochs;
  fo.batch_size = cfg.batch_size;
  fo.seed = cfg.seed;
  fo.augment = augmented(cfg);
  fo.schedule = make_schedule(cfg, steps);
  fo.initial_epoch = stored.epoch;
  fo.precise_bn_batches = cfg.precise_bn;
  fo.interrupt = g_interrupted;
  if (common.group != nullptr) {
    fo.replicas = *common.group;
    fo.sync_batch_norm = args.sync_bn;
  }

  const Metadata extra = {
      {"model", cfg.model}, {"config", cfg.to_json().dump()}, {"minires", version_string}};
  ModelCheckpoint<float> checkpoint(last, best, Monitor::ValAccuracy, extra);
  if (args.resume) checkpoint.set_best(stored.best, stored.best_epoch);
  json base = {
      {"minires_version", version_string},
      {"config", cfg.to_json()},
      {"threads", num_threads()},
      {"ranks", common.ranks()},
      {"sync_bn", args.sync_bn},
      {"teacher", teacher_record},
      {"time_budget", plan.record},
      {"parameters",
       {{"trainable", model.trainable_count()}, {"non_trainable", model.non_trainable_count()}}},
      {"data",
       {{"train", split.train.size()},
        {"validation", split.validation.size()},
        {"test", split.test.size()}}}};
  Recorder recorder(out, base, stored.history, &checkpoint, extra);
  ProgressBar<float> progress;
  SoftmaxCrossEntropyOptions loss_options;
  loss_options.keras_clip = cfg.keras_clip;
  loss_options.label_smoothing = cfg.label_smoothing;
  SoftmaxCrossEntropy<float> cross_entropy(loss_options);
  std::optional<Distillation<float>> distillation;
  if (teacher) {
    DistillationOptions o;
    o.weight = cfg.distill_weight;
    o.temperature = cfg.distill_temperature;
    o.hard = loss_options;
    distillation.emplace(*teacher, o);
  }
  Loss<float>& loss = distillation ? static_cast<Loss<float>&>(*distillation) : cross_entropy;

  fo.validation = split.validation;
  BudgetGuard guard(budget, started, cfg.epochs, plan.test_seconds,
                    free_epochs(cfg.schedule, cfg.warmup_epochs), Limits::max_epochs,
                    epoch_contents(split));
  // A change of plan is recorded before the epoch's checkpoint and metrics.json are written,
  // so both (and a --resume from them) hold the new length.
  guard.on_change([&](index_t epochs) {
    cfg.epochs = epochs;
    plan.record["epochs"] = epochs;
    plan.record["changes"] = guard.changes();
    plan.record["same_as_epochs_flag"] = guard.reproducible();
    recorder.set_field("time_budget", plan.record);
    recorder.set_field("config", cfg.to_json());
    recorder.set_extra("config", cfg.to_json().dump());
  });
  fo.callbacks = {progress};  // fit() runs them on rank 0 only, in this order
  if (budget > 0) fo.callbacks.push_back(guard);
  fo.callbacks.push_back(recorder);
  fo.callbacks.push_back(checkpoint);
  History h = fit(model, loss, *optimizer, split.train, fo);
  bool any_epoch = !h.epochs.empty();
  // A budget guard that stopped the run: continue with the epochs that fit now (the same count
  // on every rank: rank 0's).
  while (budget > 0 && h.stopped_early && !h.interrupted && !h.epochs.empty()) {
    double epochs = static_cast<double>(guard.epochs());
    if (common.group != nullptr) common.group->broadcast(&epochs, 1, 0);
    const index_t done = h.epochs.back().epoch;
    cfg.epochs = static_cast<index_t>(epochs);
    if (cfg.epochs <= done) break;
    fo.epochs = cfg.epochs;
    fo.initial_epoch = done;
    fo.schedule = make_schedule(cfg, steps);
    h = fit(model, loss, *optimizer, split.train, fo);
    any_epoch = any_epoch || !h.epochs.empty();
  }
  std::signal(SIGINT, SIG_DFL);
  print_epoch_table(stdout, recorder.history());
  if (distillation) {
    std::printf("teacher: ran on %lld training samples, %lld more served from its cache\n",
                static_cast<long long>(distillation->teacher_samples()),
                static_cast<long long>(distillation->cache_hits()));
  }
  if (h.interrupted || g_interrupted.load()) {
    if (recorder.history().empty()) {
      std::printf(
          "\ninterrupted before the first epoch ended: no checkpoint was written, so "
          "there is nothing to resume; start again with: %s\n",
          common.command_line.c_str());
    } else {
      std::printf("\ninterrupted: %s holds epoch %lld; continue with: %s train --out %s --resume\n",
                  last.c_str(), static_cast<long long>(recorder.history().back().epoch),
                  common.program.c_str(), out.c_str());
    }
    return 130;
  }
  if ((!any_epoch && stored.history.empty()) || (common.lead() && !fs::exists(best, ec)))
    throw Error("training ran no epoch: nothing to evaluate (epochs " + std::to_string(cfg.epochs) +
                ")");
  final_test(model, cfg, split.test, best, recorder, common);
  std::printf("\nwrote %s/{best.mrm,last.mrm,metrics.json,curves.csv,curves.svg}\n", out.c_str());
  return 0;
}

}  // namespace

Command add_train_command(CLI::App& program, Common& common) {
  auto args = std::make_shared<TrainArgs>();
  Settings& s = args->settings;
  CLI::App* train = program.add_subcommand(
      "train", "Train a model; writes checkpoints, metrics and curves to --out");
  add_shared_options(train, common);
  optional_option(train, "--model", s.model, "Model to train (default resnet)")
      ->check(CLI::IsMember(model_names()));
  optional_option(
      train, "--epochs", s.epochs,
      "Epochs (default: 50 seed, as the notebook; resnet: as many as fit in --time-budget)")
      ->check(in_range<index_t>(1, Limits::max_epochs));
  train->add_option("--time-budget", args->time_budget,
                    "Train as many epochs as fit, with validation and the final test, in this "
                    "time (90s, 30m, 1h, 1h30m), measured on this machine; the learning-rate "
                    "schedule spans them (default: 30m for resnet unless --epochs is given)");
  optional_option(train, "--batch-size", s.batch_size, "Batch size (default 128)")
      ->check(in_range<index_t>(1, Limits::max_batch_size));
  optional_option(train, "--optimizer", s.optimizer,
                  "rmsprop, sgd (Nesterov momentum 0.9), adam or adamw (default: rmsprop seed, "
                  "sgd resnet)")
      ->check(CLI::IsMember(optimizer_names()));
  optional_option(train, "--lr", s.lr, "Base learning rate (default: 1e-3 seed, 0.1 resnet)")
      ->check(in_range<double>(0, Limits::max_lr, /*open_lo=*/true));
  optional_option(train, "--weight-decay", s.weight_decay,
                  "Weight decay (default: 0 seed, 5e-4 resnet)")
      ->check(in_range<double>(0, 1));
  optional_option(train, "--schedule", s.schedule,
                  "Learning-rate schedule: constant, cosine or step (default: constant seed, "
                  "cosine resnet)")
      ->check(CLI::IsMember(schedule_names()));
  optional_option(train, "--warmup", s.warmup_epochs,
                  "Linear warm-up epochs (default: 0 seed, 1 resnet)")
      ->check(in_range<index_t>(0, Limits::max_warmup));
  train
      ->add_option_function<std::string>(
          "--augment", [&s](const std::string& v) { s.augment = augment_mode(v); },
          "Random crops (pad --crop-pad) and horizontal flips: on, off, or flip (flips only) "
          "(default: off seed, on resnet)")
      ->check(CLI::IsMember({"on", "off", "flip"}));
  optional_option(train, "--crop-pad", s.crop_pad,
                  "With --augment on: the random crops shift each image by up to this many "
                  "pixels on each axis, filling with zeros (default 2)")
      ->check(in_range<index_t>(1, Limits::max_crop_pad));
  on_off_option(
      train, "--standardize", s.standardize,
      "Standardise pixels with the training mean/std: on or off (default: off seed, on resnet)");
  on_off_option(train, "--keras-clip", s.keras_clip,
                "Keras 2.0's clipped cross-entropy: samples with p(label) < 1e-7 give no "
                "gradient: on or off (default: off)");
  optional_option(train, "--precise-bn", s.precise_bn,
                  "After each epoch, recompute the BatchNorm moving statistics as the average "
                  "over this many training batches (PreciseBN); 0: Keras' momentum averages "
                  "(default 0)")
      ->check(in_range<index_t>(0, Limits::max_precise_bn));
  on_off_option(
      train, "--tta", s.tta,
      "Test-time augmentation in the final test: average the predictions of each "
      "image and its mirror image: on or off (default: as --augment, whose flips it assumes)");
  optional_option(train, "--tta-shift", s.tta_shift,
                  "Test-time augmentation in the final test: also average the predictions of "
                  "the views shifted by this many pixels up, down, left and right (default: 1 "
                  "with --augment on, else 0)")
      ->check(in_range<index_t>(0, Limits::max_tta_shift));
  optional_option(train, "--label-smoothing", s.label_smoothing,
                  "Train against targets (1 - s) * onehot + s / 10 (default: 0 seed, 0.1 resnet)")
      ->check(in_range<double>(0, 1));
  optional_option(train, "--ema", s.ema,
                  "Validate, checkpoint and test an exponential moving average of the weights "
                  "with this decay per step, e.g. 0.999 (training itself is unchanged; use with "
                  "--precise-bn so the BatchNorm statistics follow the averaged weights); 0: off "
                  "(default 0)")
      ->check(in_range<double>(0, Limits::max_ema));
  optional_option(train, "--erase", s.erase,
                  "Random erasing: with this probability, set a random rectangle of 2% to 40% of "
                  "each training image to the mean pixel (Zhong et al. 2017) (default 0: off)")
      ->check(in_range<double>(0, 1));
  on_off_option(train, "--zero-init-residual", s.zero_init_residual,
                "resnet: the last BatchNorm of each residual branch starts with gamma = 0, so "
                "each block starts as its shortcut (Goyal et al. 2017): on or off (default off)");
  on_off_option(train, "--decay-vectors", s.decay_vectors,
                "Apply the weight decay to biases and BatchNorm's gamma and beta too, not only "
                "to the kernels and Dense weights: on or off (default on)");
  optional_option(train, "--teacher", s.teacher,
                  "Distil from this trained model (a checkpoint, e.g. another run's best.mrm, "
                  "trained with the same --standardize): train against its predictions on each "
                  "augmented batch as well as against the labels (Hinton et al. 2015)")
      ->check(CLI::ExistingFile);
  optional_option(train, "--distill-weight", s.distill_weight,
                  "With --teacher: the share of the teacher's soft targets in the loss, the "
                  "rest is the labels' cross-entropy (default 0.9)")
      ->check(in_range<double>(0, 1));
  optional_option(train, "--distill-temperature", s.distill_temperature,
                  "With --teacher: the temperature of the teacher's and the student's softmax "
                  "in the soft-target term (default 4)")
      ->check(in_range<double>(0, Limits::max_temperature, /*open_lo=*/true));
  optional_option(train, "--precision", s.precision,
                  "The convolutions' products: fp32, or bf16 (both operands rounded to bfloat16, "
                  "sums in fp32) on Intel AMX tiles, where the CPU has them (default: bf16 for "
                  "the resnet on a CPU with AMX, else fp32)")
      ->check(CLI::IsMember(precision_names()));
  optional_option(train, "--seed", s.seed,
                  "Seed of initialisation, shuffling and augmentation, 0 to 2^64 - 1 (default 1)")
      ->check(seed_value());
  optional_option(train, "--validation", s.validation,
                  "Hold out the last N of the 60000 training images to validate after each epoch "
                  "and choose best.mrm (default 5000, the notebook's split); 0: train on all of "
                  "them, with no validation, and best.mrm is the epoch with the best training "
                  "accuracy")
      ->check(in_range<index_t>(0, Limits::max_limit));
  optional_option(train, "--limit", s.limit, "Train on the first N training images only")
      ->check(in_range<index_t>(1, Limits::max_limit));
  train->add_option("--out", args->out, "Output directory")->capture_default_str();
  train->add_flag("--resume", args->resume,
                  "Continue the run saved in --out (its last complete epoch) with its stored "
                  "settings; --epochs may extend it, other settings must agree with it");
  train->add_flag("--sync-bn", args->sync_bn,
                  "Under mpirun: BatchNorm uses the statistics of the whole global batch, summed "
                  "over the ranks (synchronised BatchNorm), so N ranks train as one process; "
                  "default: each rank's own shard");
  train->add_flag("--overwrite", args->overwrite,
                  "Start a new run in an --out that holds an earlier run, deleting that run's "
                  "checkpoints, metrics and curves");
  return {train, [args, &common] { return train_command(*args, common); }};
}

}  // namespace fmnist
