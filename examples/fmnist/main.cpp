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
// `fmnist --help` and `fmnist <command> --help` list every option.
#include <CLI/CLI.hpp>
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
#include <memory>
#include <optional>
#include <string>
#include <vector>

#ifdef MINIRES_FMNIST_MPI
#include <minires/distributed/mpi.hpp>
#endif

#include "budget.hpp"
#include "config.hpp"
#include "models.hpp"
#include "report.hpp"

using namespace minires;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// ---- Configuration (config.hpp: Config, the stored run, limits) ------------------------------

using fmnist::Config;
using fmnist::Limits;

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
    for (const auto& e : history_) h.push_back(fmnist::epoch_json(e));
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
      epochs.push_back(fmnist::epoch_json(e));
      seconds += e.seconds;
      images += e.images_per_second * e.seconds;
    }
    m["epochs"] = epochs;
    m["timings"] = {{"train_seconds", seconds},
                    {"mean_images_per_second", seconds > 0 ? images / seconds : 0.0}};
    if (test != nullptr) m["test"] = *test;
    m["written"] = now_utc();
    write_file_atomically(out_ + "/metrics.json", m.dump(2) + "\n", "fmnist");
    write_file_atomically(out_ + "/curves.csv", fmnist::curves_csv(history_), "fmnist");
    write_file_atomically(
        out_ + "/curves.svg",
        fmnist::curves_svg(history_,
                           "minires fmnist: " + base_["config"]["model"].get<std::string>()),
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

// ---- Commands --------------------------------------------------------------------------------

struct Common {
  std::string program = "fmnist";  // argv[0], for commands the user can paste
  std::string command_line;        // the whole command, quoted for a POSIX shell
  std::string data = default_fashion_mnist_dir();
  int threads = 0;
  // Data-parallel training (started by mpirun): the ranks; rank 0 prints and writes --out.
  Collective* group = nullptr;
  bool sync_bn = false;
  std::string time_budget;  // --time-budget as given ("" if not)
  bool lead() const { return group == nullptr || group->rank() == 0; }
  int ranks() const { return group != nullptr ? group->size() : 1; }
};

// --threads, or else OMP_NUM_THREADS, checked before any parallel region starts; a count above
// the hardware threads is allowed with a warning.
void apply_threads(const Common& c) {
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
void print_views(const EvalOptions& eo) {
  if (!eo.flip && eo.shift == 0) return;
  std::string views = "the image";
  if (eo.flip) views += " and its mirror image";
  if (eo.shift > 0)
    views += ", shifted by " + std::to_string(eo.shift) + " pixel(s) up, down, left and right";
  std::printf("test-time augmentation: %s\n", views.c_str());
}

FashionMnistSplit<float> load_data(const std::string& dir, const Config& c) {
  FashionMnist data;
  try {
    data = load_fashion_mnist(dir);
  } catch (const IoError& e) {
    throw IoError(std::string(e.what()) + " (--data DIR reads them from another directory)");
  }
  ImageDatasetOptions options;
  if (c.standardize == 1)
    options.standardize(pixel_statistics(data.train->images, 0,
                                         data.train->images.count - fashion_mnist_validation_size));
  if (c.augment == 1) options.augmentation();
  if (c.augment == 2) options.augmentation(0);  // flips only
  auto split = split_fashion_mnist<float>(data, options);
  if (c.limit > split.train.size()) {
    throw ValueError("--limit: expected at most the " + std::to_string(split.train.size()) +
                     " training images, found " + std::to_string(c.limit));
  }
  if (c.limit > 0) split.train = split.train.first(c.limit);
  return split;
}

// Every data set the run will use has the samples and labels the model takes, checked before
// the first step (not after the last epoch).
void check_data(const Model<float>& model, const FashionMnistSplit<float>& split) {
  detail::check_dataset(model, split.train, "the training images");
  detail::check_dataset(model, split.validation, "the validation images");
  detail::check_dataset(model, split.test, "the test images");
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

// The settings given on the command line that differ from the stored run's (which win).
std::string resume_conflicts(const Config& given_cfg, const std::vector<std::string>& given,
                             const Config& stored) {
  const json g = given_cfg.to_json(), st = stored.to_json();
  auto text = [](const json& v) {
    if (v.is_boolean()) return std::string(v.get<bool>() ? "on" : "off");
    if (v.is_string()) return v.get<std::string>();
    return v.dump();
  };
  std::string conflicts;
  for (const auto& key : given) {
    if (g.at(key) != st.at(key)) {
      std::string flag = key;
      std::replace(flag.begin(), flag.end(), '_', '-');
      if (key == "warmup_epochs") flag = "warmup";
      conflicts += (conflicts.empty() ? "" : ", ") + std::string("--") + flag + " " +
                   text(g.at(key)) + " (the run has " + text(st.at(key)) + ")";
    }
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
  Model<float> m = fmnist::build_model<float>(cfg.model);
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
          cfg.augment != 0 ? &rng : nullptr);
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

// After each epoch (on rank 0), re-plans the run at the speed of the epoch just done
// (fmnist::replan: after the first epoch both ways, later only shorter). A change asks fit() to
// stop; train_command continues with the new length.
class BudgetGuard : public Callback<float> {
 public:
  using clock = std::chrono::steady_clock;
  BudgetGuard(double budget, clock::time_point start, index_t epochs, double test_seconds,
              index_t free_epochs, index_t max_epochs)
      : budget_(budget),
        start_(start),
        epochs_(epochs),
        test_seconds_(test_seconds),
        free_epochs_(free_epochs),
        max_epochs_(max_epochs) {
    last_ = clock::now();
  }
  void on_epoch_begin(index_t) override {
    if (!started_) last_ = clock::now();
    started_ = true;
  }
  bool on_epoch_end(const EpochStats& s, Model<float>&, Optimizer<float>&) override {
    const auto now = clock::now();
    const double epoch_wall = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const index_t planned = epochs_;
    epochs_ = fmnist::replan(budget_, elapsed, {epoch_wall, test_seconds_}, s.epoch, planned,
                             free_epochs_, max_epochs_);
    if (epochs_ == planned) return true;
    if (epochs_ > planned || s.epoch <= free_epochs_) {
      std::printf(
          "time budget: epoch %lld took %s (with validation); re-planned at that speed: %lld "
          "epochs instead of %lld (the learning rate so far is the same for either length)\n",
          static_cast<long long>(s.epoch), fmnist::format_duration(epoch_wall).c_str(),
          static_cast<long long>(epochs_), static_cast<long long>(planned));
    } else {
      std::printf(
          "time budget: epoch %lld took %s (with validation); %lld more would end after the %s "
          "budget: shortening the run to %lld epochs (the learning-rate schedule is recomputed "
          "for %lld epochs from here)\n",
          static_cast<long long>(s.epoch), fmnist::format_duration(epoch_wall).c_str(),
          static_cast<long long>(planned - s.epoch), fmnist::format_duration(budget_).c_str(),
          static_cast<long long>(epochs_), static_cast<long long>(epochs_));
    }
    std::fflush(stdout);
    changes_.push_back({{"after_epoch", s.epoch}, {"from", planned}, {"to", epochs_}});
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
  double budget_;
  clock::time_point start_, last_;
  index_t epochs_;
  double test_seconds_;
  index_t free_epochs_, max_epochs_;
  bool started_ = false;
  json changes_ = json::array();
};

// `given`: the config keys set on the command line; `epochs_given`: --epochs was one of them.
int train_command(Config cfg, const std::vector<std::string>& given, const Common& common,
                  const std::string& out, bool resume, bool overwrite) {
  const auto started = std::chrono::steady_clock::now();  // the time budget's clock
  if (resume && overwrite)
    throw ValueError("--resume continues the run in --out and --overwrite replaces it: give one");
  const bool epochs_given = std::find(given.begin(), given.end(), "epochs") != given.end();
  // The time budget: given, or 30 minutes for the ResNet when --epochs is not; never when
  // resuming (the run continues with its stored epochs).
  double budget = 0;
  if (!common.time_budget.empty()) {
    if (resume)
      throw ValueError("--time-budget: a resumed run continues with its stored epochs; drop it");
    if (epochs_given) throw ValueError("--time-budget and --epochs both set the length: give one");
    budget = fmnist::parse_duration(common.time_budget);
  } else if (!resume && !epochs_given && cfg.model == "resnet") {
    budget = 30 * 60;
  }
  std::signal(SIGINT, on_sigint);  // from here on Ctrl-C stops cleanly, also while loading
  apply_threads(common);
  const std::string last = out + "/last.mrm", best = out + "/best.mrm";
  std::error_code ec;
  if (fs::exists(out, ec) && !fs::is_directory(out, ec))
    throw IoError("--out '" + out + "': expected a directory, found a file");

  // Checks that only read come first: a bad --resume or --out fails before the data loads.
  std::vector<EpochStats> history;
  fmnist::StoredRun stored;
  if (resume) {
    if (!fs::exists(last, ec)) {
      throw IoError("--resume: no checkpoint at '" + last + "' (train without --resume first)");
    }
    stored = fmnist::stored_run(read_metadata(last), last);
    // The stored settings win; --epochs may extend the run; any other flag must agree.
    std::vector<std::string> compared;
    for (const auto& key : given)
      if (key != "epochs") compared.push_back(key);
    const std::string conflicts = resume_conflicts(cfg, compared, stored.config);
    if (!conflicts.empty()) {
      throw ValueError("--resume continues the run in '" + out + "' with its stored settings; " +
                       conflicts + " would change it: drop the flag, or start a new run with " +
                       "another --out (or --overwrite)");
    }
    const index_t epochs = cfg.epochs;
    cfg = stored.config;
    if (epochs_given) {
      if (epochs < stored.epoch) {
        throw ValueError("--epochs " + std::to_string(epochs) + ": the run in '" + out +
                         "' already completed epoch " + std::to_string(stored.epoch) +
                         "; expected at least that many");
      }
      cfg.epochs = epochs;  // continue further than first planned
    }
    history = stored.history;
  } else if (!overwrite && common.lead()) {
    refuse_to_overwrite(out, common);
  }
  cfg.apply_model_defaults();
  cfg.validate("");

  Model<float> model = fmnist::build_model<float>(cfg.model);
  model.init(cfg.seed);
  auto split = load_data(common.data, cfg);
  check_data(model, split);

  // Now the run writes into --out (rank 0 only): lock it, clear what a killed run left, and for
  // --overwrite delete the earlier run.
  std::optional<DirectoryLock> lock;
  if (common.lead()) {
    prepare_output_directory(out);
    lock.emplace(out);
    for (const auto& name : remove_stale_temporaries(out))
      std::printf("removed %s/%s, left by a run that was killed while saving\n", out.c_str(),
                  name.c_str());
    if (overwrite)
      for (const char* f : run_files) fs::remove(fs::path(out) / f, ec);
  }
  const index_t steps = (split.train.size() + cfg.batch_size - 1) / cfg.batch_size;
  auto optimizer = make_optimizer(cfg);
  optimizer->attach(model.params());
  if (resume) load(model, last, optimizer.get());

  std::printf(
      "minires %s  model %s  threads %d  train %lld  validation %lld  test %lld\n", version_string,
      cfg.model.c_str(), num_threads(), static_cast<long long>(split.train.size()),
      static_cast<long long>(split.validation.size()), static_cast<long long>(split.test.size()));
  if (common.ranks() > 1) {
    std::printf(
        "data parallel: %d ranks x %d threads, global batch %lld (%lld or %lld per rank), "
        "BatchNorm statistics %s\n",
        common.ranks(), num_threads(), static_cast<long long>(cfg.batch_size),
        static_cast<long long>(cfg.batch_size / common.ranks()),
        static_cast<long long>((cfg.batch_size + common.ranks() - 1) / common.ranks()),
        common.sync_bn ? "synchronised over the ranks (--sync-bn)" : "per rank");
  }
  std::printf("config %s\n", cfg.to_json().dump().c_str());
  std::fputs(model.summary().c_str(), stdout);
  if (resume) {
    std::printf("resuming after epoch %lld from %s, with the settings stored there%s\n",
                static_cast<long long>(stored.epoch), last.c_str(),
                cfg.epochs != stored.config.epochs ? " (--epochs extends the run)" : "");
  }

  // With a time budget: the epochs that fit, from the speed measured now.
  json budget_json = nullptr;
  double test_seconds = 0;
  if (budget > 0) {
    const Speeds speed = measure_speeds(cfg, split, common);
    const index_t views = (cfg.tta == 1 ? 2 : 1) * (cfg.tta_shift > 0 ? 5 : 1);
    const fmnist::RunCosts costs =
        fmnist::run_costs(split.train.size(), split.validation.size(), split.test.size(), views,
                          cfg.precise_bn, cfg.batch_size, speed.train, speed.eval);
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    cfg.epochs = fmnist::epochs_within(budget, elapsed, costs, Limits::max_epochs);
    test_seconds = costs.test_seconds;
    const double total =
        elapsed + static_cast<double>(cfg.epochs) * costs.epoch_seconds + costs.test_seconds;
    std::printf(
        "time budget %s: %lld epochs of %lld steps at ~%.0f images/s (measured): ~%s per epoch "
        "with validation, ~%s of test; ends in ~%s (%s so far)%s\n",
        fmnist::format_duration(budget).c_str(), static_cast<long long>(cfg.epochs),
        static_cast<long long>(steps), speed.train,
        fmnist::format_duration(costs.epoch_seconds).c_str(),
        fmnist::format_duration(costs.test_seconds).c_str(), fmnist::format_duration(total).c_str(),
        fmnist::format_duration(elapsed).c_str(),
        total > budget ? " (one epoch is the least a run trains: over budget)" : "");
    budget_json = {{"seconds", budget},
                   {"measured_train_images_per_second", speed.train},
                   {"measured_eval_images_per_second", speed.eval},
                   {"planned_epochs", cfg.epochs},
                   {"epochs", cfg.epochs},
                   {"changes", json::array()},
                   {"same_as_epochs_flag", true}};
  }

  FitOptions fo;
  fo.epochs = cfg.epochs;
  fo.batch_size = cfg.batch_size;
  fo.seed = cfg.seed;
  fo.augment = cfg.augment != 0;
  fo.schedule = make_schedule(cfg, steps);
  fo.initial_epoch = stored.epoch;
  fo.precise_bn_batches = cfg.precise_bn;
  fo.interrupt = g_interrupted;
  if (common.group != nullptr) {
    fo.replicas = *common.group;
    fo.sync_batch_norm = common.sync_bn;
  }

  const Metadata extra = {
      {"model", cfg.model}, {"config", cfg.to_json().dump()}, {"minires", version_string}};
  ModelCheckpoint<float> checkpoint(last, best, Monitor::ValAccuracy, extra);
  if (resume) checkpoint.set_best(stored.best, stored.best_epoch);
  json base = {
      {"minires_version", version_string},
      {"config", cfg.to_json()},
      {"threads", num_threads()},
      {"ranks", common.ranks()},
      {"sync_bn", common.sync_bn},
      {"time_budget", budget_json},
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

  fo.validation = split.validation;
  fo.callbacks = {progress, recorder, checkpoint};  // fit() runs them on rank 0 only
  BudgetGuard guard(budget, started, cfg.epochs, test_seconds,
                    fmnist::free_epochs(cfg.schedule, cfg.warmup_epochs), Limits::max_epochs);
  if (budget > 0) fo.callbacks.push_back(guard);
  History h = fit(model, loss, *optimizer, split.train, fo);
  bool any_epoch = !h.epochs.empty();
  // A budget guard that stopped the run: continue with the epochs that fit now (the same count
  // on every rank: rank 0's).
  while (budget > 0 && h.stopped_early && !h.interrupted && !h.epochs.empty()) {
    double epochs = static_cast<double>(guard.epochs());
    if (common.group != nullptr) common.group->broadcast(&epochs, 1, 0);
    const index_t done = h.epochs.back().epoch;
    cfg.epochs = static_cast<index_t>(epochs);
    budget_json["epochs"] = cfg.epochs;
    budget_json["changes"] = guard.changes();
    budget_json["same_as_epochs_flag"] = guard.reproducible();
    recorder.set_field("time_budget", budget_json);
    recorder.set_field("config", cfg.to_json());
    recorder.set_extra("config", cfg.to_json().dump());
    if (cfg.epochs <= done) break;
    fo.epochs = cfg.epochs;
    fo.initial_epoch = done;
    fo.schedule = make_schedule(cfg, steps);
    h = fit(model, loss, *optimizer, split.train, fo);
    any_epoch = any_epoch || !h.epochs.empty();
  }
  std::signal(SIGINT, SIG_DFL);
  fmnist::print_epoch_table(stdout, recorder.history());
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
  if ((!any_epoch && history.empty()) || (common.lead() && !fs::exists(best, ec)))
    throw Error("training ran no epoch: nothing to evaluate (epochs " + std::to_string(cfg.epochs) +
                ")");

  // Test accuracy of the checkpoint with the best validation accuracy (read by rank 0, sent to
  // the others; the test set is then shared among the ranks).
  fmnist::StoredRun best_run;
  if (common.lead()) {
    const Metadata best_meta = load(model, best);
    best_run = fmnist::stored_run(best_meta, best);
    std::printf("\nbest validation accuracy %.6f at epoch %lld (%s)\n", best_run.best,
                static_cast<long long>(best_run.best_epoch), best.c_str());
  }
  if (common.group != nullptr) broadcast_model(model, *common.group);
  EvalOptions eo;
  eo.replicas = common.group;
  eo.batch_size = (cfg.batch_size + common.ranks() - 1) / common.ranks();  // the planned buffers
  eo.flip = cfg.tta == 1;
  eo.shift = cfg.tta_shift;
  print_views(eo);
  const EvalResult test = evaluate(model, split.test, eo);
  fmnist::print_evaluation(
      stdout, test,
      std::vector<std::string>(fashion_mnist_class_names.begin(), fashion_mnist_class_names.end()));
  json t = evaluation_json(test);
  t["checkpoint"] = best;
  t["best_epoch"] = best_run.best_epoch;
  if (common.lead()) recorder.write(&t);
  std::printf("\nwrote %s/{best.mrm,last.mrm,metrics.json,curves.csv,curves.svg}\n", out.c_str());
  return 0;
}

// Builds the model a checkpoint was trained as and loads it.
Model<float> load_checkpoint(const std::string& path, Config* cfg) {
  *cfg = fmnist::stored_run(read_metadata(path), path, /*training_state=*/false).config;
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
    const Shape sample = split.test.sample_shape();
    if (li->images.rows != sample[1] || li->images.cols != sample[2]) {
      throw ShapeError("--images '" + images_path + "': the model takes " +
                       std::to_string(sample[1]) + "x" + std::to_string(sample[2]) +
                       " images, found " + std::to_string(li->images.rows) + "x" +
                       std::to_string(li->images.cols));
    }
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

// ---- Command line -----------------------------------------------------------------------------

// A validator for a number from lo to hi: the whole argument must be one number of V's kind (an
// integer for integral V; finite), with a message that says what was expected and what was found.
template <class V>
CLI::Validator in_range(V lo, V hi, bool open_lo = false) {
  const std::string range =
      std::is_integral<V>::value
          ? std::string("an integer from ") + std::to_string(lo) + " to " + std::to_string(hi)
          : std::string("a number ") + (open_lo ? "above " : "from ") +
                fmnist::num(static_cast<double>(lo)) + (open_lo ? ", at most " : " to ") +
                fmnist::num(static_cast<double>(hi));
  return CLI::Validator(
      [=](std::string& text) -> std::string {
        bool ok = false;
        if constexpr (std::is_integral<V>::value) {
          index_t v = 0;
          ok = fmnist::parse_index(text, v) && v >= static_cast<index_t>(lo) &&
               v <= static_cast<index_t>(hi);
        } else {
          double v = 0;
          ok = fmnist::parse_finite(text, v) && (open_lo ? v > lo : v >= lo) && v <= hi;
        }
        return ok ? std::string() : "expected " + range + ", found '" + text + "'";
      },
      "[" + fmnist::num(static_cast<double>(lo)) + ", " + fmnist::num(static_cast<double>(hi)) +
          "]");
}

// --seed: a whole non-negative integer below 2^64 (no sign: "-1" is not 2^64 - 1).
CLI::Validator seed_value() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        std::uint64_t v = 0;
        return fmnist::parse_u64(text, v)
                   ? std::string()
                   : "expected an integer from 0 to 18446744073709551615, found '" + text + "'";
      },
      "UINT64");
}

// `arg` as one word for a POSIX shell: unchanged when it is plain, else in single quotes.
std::string shell_quoted(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789-_./=:,+@%") == std::string::npos)
    return arg;
  std::string q = "'";
  for (char c : arg) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fmnist: train residual networks on Fashion-MNIST with minires " +
               std::string(version_string)};
  app.require_subcommand(1);
  // A file-size limit (ulimit -f) then fails a write with EFBIG, reported like a full disk,
  // instead of killing the program mid-save.
  std::signal(SIGXFSZ, SIG_IGN);
  Common common;
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
    common.program = shell_quoted(argv[0]);
  common.command_line = common.program;
  for (int i = 1; i < argc; ++i) common.command_line += " " + shell_quoted(argv[i]);
  auto add_common = [&](CLI::App* sub) {
    sub->add_option("--data", common.data, "Directory with the Fashion-MNIST IDX files")
        ->capture_default_str();
    sub->add_option("--threads", common.threads,
                    "Threads (default: OMP_NUM_THREADS, else all cores; at most " +
                        std::to_string(max_threads) + ")")
        ->check(in_range<int>(1, max_threads));
  };

  Config cfg;
  std::string out = "fmnist-out";
  bool resume = false, overwrite = false;
  std::string augment, standardize, keras_clip, tta;
  auto* train =
      app.add_subcommand("train", "Train a model; writes checkpoints, metrics and curves to --out");
  add_common(train);
  // Each setting's option, by the key it has in the stored configuration (for --resume).
  std::vector<std::pair<std::string, CLI::Option*>> settings;
  settings.emplace_back("model", train->add_option("--model", cfg.model, "Model to train")
                                     ->check(CLI::IsMember(fmnist::model_names()))
                                     ->capture_default_str());
  settings.emplace_back(
      "epochs",
      train
          ->add_option("--epochs", cfg.epochs,
                       "Epochs (default: 20 seed; resnet: as many as fit in --time-budget)")
          ->check(in_range<index_t>(1, Limits::max_epochs)));
  train->add_option("--time-budget", common.time_budget,
                    "Train as many epochs as fit, with validation and the final test, in this "
                    "time (90s, 30m, 1h, 1h30m), measured on this machine; the learning-rate "
                    "schedule spans them (default: 30m for resnet unless --epochs is given)");
  settings.emplace_back(
      "batch_size", train->add_option("--batch-size", cfg.batch_size, "Batch size (default 128)")
                        ->check(in_range<index_t>(1, Limits::max_batch_size)));
  settings.emplace_back(
      "optimizer",
      train
          ->add_option("--optimizer", cfg.optimizer,
                       "rmsprop, sgd (Nesterov momentum 0.9), adam or adamw (default: rmsprop "
                       "seed, sgd resnet)")
          ->check(CLI::IsMember(fmnist::optimizer_names())));
  settings.emplace_back(
      "lr", train->add_option("--lr", cfg.lr, "Base learning rate (default: 1e-3 seed, 0.1 resnet)")
                ->check(in_range<double>(0, Limits::max_lr, /*open_lo=*/true)));
  settings.emplace_back("weight_decay",
                        train
                            ->add_option("--weight-decay", cfg.weight_decay,
                                         "Weight decay (default: 0 seed, 5e-4 resnet)")
                            ->check(in_range<double>(0, 1)));
  settings.emplace_back(
      "schedule", train
                      ->add_option("--schedule", cfg.schedule,
                                   "Learning-rate schedule: constant, cosine or step (default: "
                                   "constant seed, cosine resnet)")
                      ->check(CLI::IsMember(fmnist::schedule_names())));
  settings.emplace_back("warmup_epochs",
                        train
                            ->add_option("--warmup", cfg.warmup_epochs,
                                         "Linear warm-up epochs (default: 0 seed, 1 resnet)")
                            ->check(in_range<index_t>(0, Limits::max_warmup)));
  settings.emplace_back(
      "augment",
      train
          ->add_option("--augment", augment,
                       "Random crops (pad 2) and horizontal flips: on, off, or flip (flips only) "
                       "(default: off seed, on resnet)")
          ->check(CLI::IsMember({"on", "off", "flip"})));
  settings.emplace_back("standardize",
                        train
                            ->add_option("--standardize", standardize,
                                         "Standardise pixels with the training mean/std: on or off "
                                         "(default: off seed, on resnet)")
                            ->check(CLI::IsMember({"on", "off"})));
  settings.emplace_back(
      "keras_clip",
      train
          ->add_option("--keras-clip", keras_clip,
                       "Keras 2.0's clipped cross-entropy: samples with p(label) < 1e-7 give no "
                       "gradient: on or off (default: off)")
          ->check(CLI::IsMember({"on", "off"})));
  settings.emplace_back(
      "precise_bn",
      train
          ->add_option("--precise-bn", cfg.precise_bn,
                       "After each epoch, recompute the BatchNorm moving statistics as the average "
                       "over this many training batches (PreciseBN); 0: Keras' momentum averages "
                       "(default 0)")
          ->check(in_range<index_t>(0, Limits::max_precise_bn)));
  settings.emplace_back(
      "tta", train
                 ->add_option("--tta", tta,
                              "Test-time augmentation in the final test: average the predictions "
                              "of each image and its mirror image: on or off (default: as "
                              "--augment, whose flips it assumes)")
                 ->check(CLI::IsMember({"on", "off"})));
  settings.emplace_back(
      "tta_shift",
      train
          ->add_option("--tta-shift", cfg.tta_shift,
                       "Test-time augmentation in the final test: also average the predictions of "
                       "the views shifted by this many pixels up, down, left and right (default: 1 "
                       "with --augment on, else 0)")
          ->check(in_range<index_t>(0, Limits::max_tta_shift)));
  settings.emplace_back(
      "label_smoothing",
      train
          ->add_option("--label-smoothing", cfg.label_smoothing,
                       "Train against targets (1 - s) * onehot + s / 10 (default: 0 seed, 0.1 "
                       "resnet)")
          ->check(in_range<double>(0, 1)));
  settings.emplace_back(
      "ema",
      train
          ->add_option("--ema", cfg.ema,
                       "Validate, checkpoint and test an exponential moving average of the weights "
                       "with this decay per step, e.g. 0.999 (training itself is unchanged; use "
                       "with --precise-bn so the BatchNorm statistics follow the averaged "
                       "weights); 0: off (default 0)")
          ->check(in_range<double>(0, Limits::max_ema)));
  settings.emplace_back("seed", train
                                    ->add_option("--seed", cfg.seed,
                                                 "Seed of initialisation, shuffling and "
                                                 "augmentation, 0 to 2^64 - 1")
                                    ->check(seed_value())
                                    ->capture_default_str());
  settings.emplace_back(
      "limit", train->add_option("--limit", cfg.limit, "Train on the first N training images only")
                   ->check(in_range<index_t>(1, Limits::max_limit)));
  train->add_option("--out", out, "Output directory")->capture_default_str();
  train->add_flag("--resume", resume,
                  "Continue the run saved in --out (its last complete epoch) with its stored "
                  "settings; --epochs may extend it, other settings must agree with it");
  train->add_flag("--sync-bn", common.sync_bn,
                  "Under mpirun: BatchNorm uses the statistics of the whole global batch, summed "
                  "over the ranks (synchronised BatchNorm), so N ranks train as one process; "
                  "default: each rank's own shard");
  train->add_flag("--overwrite", overwrite,
                  "Start a new run in an --out that holds an earlier run, deleting that run's "
                  "checkpoints, metrics and curves");

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
      ->check(in_range<index_t>(0, Limits::max_tta_shift));
  evaluate_cmd
      ->add_option("--precise-bn", eval_precise_bn,
                   "First recompute the BatchNorm statistics over this many training batches")
      ->check(in_range<index_t>(0, Limits::max_precise_bn));

  auto* predict_cmd = app.add_subcommand("predict", "Classify images with a saved model");
  add_common(predict_cmd);
  predict_cmd->add_option("--model-file", model_file, "A checkpoint written by fmnist train")
      ->required()
      ->check(CLI::ExistingFile);
  predict_cmd->add_option("--images", images, "An IDX image file (default: the test set)")
      ->check(CLI::ExistingFile);
  predict_cmd->add_option("--count", count, "How many images to classify")
      ->check(in_range<index_t>(1, Limits::max_limit))
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
  std::vector<std::string> given;
  for (const auto& [key, option] : settings)
    if (option->count() > 0) given.push_back(key);
  try {
    if (*train) return train_command(cfg, given, common, out, resume, overwrite);
    if (*evaluate_cmd)
      return evaluate_command(model_file, common, eval_tta.empty() ? -1 : eval_tta == "on",
                              eval_tta_shift, eval_precise_bn);
    if (*predict_cmd) return predict_command(model_file, images, count, common);
  } catch (const minires::Error& e) {
    std::fprintf(stderr, "fmnist: %s\n", e.what());
    return fail(1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fmnist: %s\n", e.what());
    return fail(1);
  }
  return 0;
}
