// The fmnist example's run configuration and what its checkpoints record about a run, with the
// strict parsing that --resume and `evaluate` rely on: every field of a stored run is checked for
// its type and range, and a bad one is a FormatError naming the file and the field.
#pragma once

#include <minires/minires.hpp>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "models.hpp"

namespace fmnist {

using json = nlohmann::json;
using minires::EpochStats;
using minires::FormatError;
using minires::index_t;
using minires::Metadata;
using minires::ValueError;

// Bounds of the settings: far beyond any useful run, well inside what the arithmetic of a run
// (epochs x steps x batch) can hold.
struct Limits {
  static constexpr index_t max_epochs = 100000;
  static constexpr index_t max_batch_size = 4096;
  static constexpr index_t max_warmup = 100000;
  static constexpr index_t max_precise_bn = 100000;
  static constexpr index_t max_tta_shift = 13;
  static constexpr index_t max_limit = 1000000000;
  static constexpr double max_lr = 100;
  static constexpr double max_ema = 0.999999;
};

inline const std::vector<std::string>& optimizer_names() {
  static const std::vector<std::string> names = {"rmsprop", "sgd", "adam", "adamw"};
  return names;
}
inline const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names = {"constant", "cosine", "step"};
  return names;
}

inline bool is_one_of(const std::string& s, const std::vector<std::string>& names) {
  for (const auto& n : names)
    if (n == s) return true;
  return false;
}

inline std::string join(const std::vector<std::string>& names) {
  std::string r;
  for (const auto& n : names) r += (r.empty() ? "" : ", ") + n;
  return r;
}

// A number for messages: %g, so that 1e-3 stays 0.001 and 1e300 stays short.
inline std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Strict conversions of a whole string: digits only (an optional '-' for signed), no spaces, no
// trailing characters, within range. They return false instead of throwing.
inline bool parse_u64(const std::string& s, std::uint64_t& out) {
  if (s.empty() || s.size() > 20 || s.find_first_not_of("0123456789") != std::string::npos)
    return false;
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || end != s.c_str() + s.size()) return false;
  out = v;
  return true;
}
inline bool parse_index(const std::string& s, index_t& out) {
  const bool neg = !s.empty() && s[0] == '-';
  std::uint64_t u = 0;
  if (!parse_u64(neg ? s.substr(1) : s, u)) return false;
  if (u > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max())) return false;
  out = neg ? -static_cast<index_t>(u) : static_cast<index_t>(u);
  return true;
}
inline bool parse_finite(const std::string& s, double& out) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (errno == ERANGE || end != s.c_str() + s.size() || !std::isfinite(v)) return false;
  out = v;
  return true;
}

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
    // The seed notebook's 20; the ResNet's 40 (docs/results.md: the accuracy per epoch).
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

  // Checks a complete configuration (after apply_model_defaults, or read from a file): throws
  // ValueError naming the first setting outside its range, prefixed by `where`.
  void validate(const std::string& where) const {
    auto fail = [&](const std::string& field, const std::string& expected,
                    const std::string& found) {
      throw ValueError(where + "setting '" + field + "': expected " + expected + ", found " +
                       found);
    };
    auto int_range = [&](const char* field, index_t v, index_t lo, index_t hi) {
      if (v < lo || v > hi)
        fail(field, "an integer from " + std::to_string(lo) + " to " + std::to_string(hi),
             std::to_string(v));
    };
    auto real_range = [&](const char* field, double v, double lo, double hi, bool open_lo) {
      if (!std::isfinite(v) || v > hi || (open_lo ? v <= lo : v < lo))
        fail(field,
             std::string("a number ") + (open_lo ? "above " : "from ") + num(lo) +
                 (open_lo ? ", at most " : " to ") + num(hi),
             num(v));
    };
    if (!is_one_of(model, model_names())) fail("model", "one of " + join(model_names()), model);
    int_range("epochs", epochs, 1, Limits::max_epochs);
    int_range("batch_size", batch_size, 1, Limits::max_batch_size);
    if (!is_one_of(optimizer, optimizer_names()))
      fail("optimizer", "one of " + join(optimizer_names()), optimizer);
    real_range("lr", lr, 0, Limits::max_lr, true);
    real_range("weight_decay", weight_decay, 0, 1, false);
    if (!is_one_of(schedule, schedule_names()))
      fail("schedule", "one of " + join(schedule_names()), schedule);
    int_range("warmup_epochs", warmup_epochs, 0, Limits::max_warmup);
    int_range("augment", augment, 0, 2);
    int_range("standardize", standardize, 0, 1);
    int_range("limit", limit, 0, Limits::max_limit);
    int_range("keras_clip", keras_clip, 0, 1);
    int_range("precise_bn", precise_bn, 0, Limits::max_precise_bn);
    int_range("tta", tta, 0, 1);
    int_range("tta_shift", tta_shift, 0, Limits::max_tta_shift);
    real_range("label_smoothing", label_smoothing, 0, 1, false);
    real_range("ema", ema, 0, Limits::max_ema, false);
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
};

// Typed access to a JSON object's fields; every failure is a FormatError that says where.
class JsonFields {
 public:
  JsonFields(const json& j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object()) fail("", "a JSON object", type(j_));
  }
  bool has(const char* key) const { return j_.contains(key); }
  const json& at(const char* key) const {
    if (!j_.contains(key)) fail(key, "the field", "none");
    return j_[key];
  }
  std::string str(const char* key) const {
    const json& v = at(key);
    if (!v.is_string()) fail(key, "a string", type(v));
    return v.get<std::string>();
  }
  index_t integer(const char* key) const {
    const json& v = at(key);
    if (!v.is_number_integer()) fail(key, "an integer", type(v));
    if (v.is_number_unsigned() &&
        v.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max()))
      fail(key, "an integer below 2^63", v.dump());
    return v.get<index_t>();
  }
  std::uint64_t unsigned_integer(const char* key) const {
    const json& v = at(key);
    if (!v.is_number_unsigned()) fail(key, "a non-negative integer", type(v) + " " + v.dump());
    return v.get<std::uint64_t>();
  }
  double number(const char* key) const {
    const json& v = at(key);
    if (!v.is_number()) fail(key, "a number", type(v));
    const double d = v.get<double>();
    if (!std::isfinite(d)) fail(key, "a finite number", v.dump());
    return d;
  }
  // A number, or null for "none" (NaN).
  double number_or_null(const char* key) const {
    if (at(key).is_null()) return std::nan("");
    return number(key);
  }
  bool boolean(const char* key) const {
    const json& v = at(key);
    if (!v.is_boolean()) fail(key, "true or false", type(v));
    return v.get<bool>();
  }
  [[noreturn]] void fail(const std::string& key, const std::string& expected,
                         const std::string& found) const {
    throw FormatError(where_ + (key.empty() ? "" : "field '" + key + "': ") + "expected " +
                      expected + ", found " + found);
  }

 private:
  static std::string type(const json& v) { return v.type_name(); }
  const json& j_;
  std::string where_;
};

// Parses JSON text, turning nlohmann's parse errors into a FormatError that says where.
inline json parse_json(const std::string& text, const std::string& where) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    throw FormatError(where + "expected valid JSON, found '" +
                      (text.size() > 60 ? text.substr(0, 60) + "..." : text) + "'");
  return j;
}

// A configuration stored by to_json(): every field present, typed and in range. `where`
// ("fmnist: 'path': metadata 'config': ") starts every message.
inline Config config_from_json(const json& j, const std::string& where) {
  const JsonFields f(j, where);
  Config c;
  c.model = f.str("model");
  c.epochs = f.integer("epochs");
  c.batch_size = f.integer("batch_size");
  c.optimizer = f.str("optimizer");
  c.lr = f.number("lr");
  c.weight_decay = f.number("weight_decay");
  c.schedule = f.str("schedule");
  c.warmup_epochs = f.integer("warmup_epochs");
  if (f.at("augment").is_boolean()) {  // older checkpoints store a bool
    c.augment = f.boolean("augment") ? 1 : 0;
  } else {
    const std::string a = f.str("augment");
    if (a != "off" && a != "on" && a != "flip") f.fail("augment", "off, on or flip", "'" + a + "'");
    c.augment = Config::augment_mode(a);
  }
  c.standardize = f.boolean("standardize") ? 1 : 0;
  c.seed = f.unsigned_integer("seed");
  c.limit = f.integer("limit");
  // Fields added after the first checkpoints: older files lack them.
  c.keras_clip = f.has("keras_clip") && f.boolean("keras_clip") ? 1 : 0;
  c.precise_bn = f.has("precise_bn") ? f.integer("precise_bn") : 0;
  c.tta = f.has("tta") && f.boolean("tta") ? 1 : 0;
  c.tta_shift = f.has("tta_shift") ? f.integer("tta_shift") : 0;
  c.label_smoothing = f.has("label_smoothing") ? f.number("label_smoothing") : 0.0;
  c.ema = f.has("ema") ? f.number("ema") : 0.0;
  try {
    c.validate("");
  } catch (const ValueError& e) {
    throw FormatError(where + e.what());
  }
  return c;
}

inline json epoch_json(const EpochStats& e) {
  auto number = [](double v) { return std::isnan(v) ? json(nullptr) : json(v); };
  return {{"epoch", e.epoch},
          {"train_loss", e.train_loss},
          {"train_accuracy", e.train_accuracy},
          {"val_loss", number(e.val_loss)},
          {"val_accuracy", number(e.val_accuracy)},
          {"learning_rate", e.learning_rate},
          {"seconds", e.seconds},
          {"images_per_second", e.images_per_second}};
}

inline EpochStats epoch_from_json(const json& j, const std::string& where) {
  const JsonFields f(j, where);
  EpochStats e;
  e.epoch = f.integer("epoch");
  e.train_loss = f.number("train_loss");
  e.train_accuracy = f.number("train_accuracy");
  e.val_loss = f.number_or_null("val_loss");
  e.val_accuracy = f.number_or_null("val_accuracy");
  e.learning_rate = f.number("learning_rate");
  e.seconds = f.number("seconds");
  e.images_per_second = f.number("images_per_second");
  return e;
}

// What a checkpoint written by `fmnist train` records about its run.
struct StoredRun {
  Config config;
  std::vector<EpochStats> history;  // epochs 1 .. epoch
  index_t epoch = 0;                // the last complete epoch
  double best = 0;                  // the best validation accuracy so far, reached at best_epoch
  index_t best_epoch = 0;
};

// The metadata of a checkpoint written by `fmnist train`, checked field by field. `path` names
// the file in messages. With `training_state` false only the configuration is read (enough to
// rebuild and evaluate the model).
inline StoredRun stored_run(const Metadata& meta, const std::string& path,
                            bool training_state = true) {
  const std::string file = "'" + path + "': ";
  auto field = [&](const char* key) -> const std::string& {
    auto it = meta.find(key);
    if (it == meta.end()) {
      throw FormatError(file + "expected the metadata field '" + std::string(key) +
                        "' of a checkpoint written by fmnist train, found none");
    }
    return it->second;
  };
  StoredRun run;
  const std::string where_config = file + "metadata 'config': ";
  run.config = config_from_json(parse_json(field("config"), where_config), where_config);
  if (!training_state) return run;

  auto integer = [&](const char* key, index_t lo, index_t hi) {
    index_t v = 0;
    if (!parse_index(field(key), v) || v < lo || v > hi) {
      throw FormatError(file + "metadata '" + key + "': expected an integer from " +
                        std::to_string(lo) + " to " + std::to_string(hi) + ", found '" +
                        field(key) + "'");
    }
    return v;
  };
  run.epoch = integer("epoch", 1, Limits::max_epochs);
  run.best_epoch =
      integer("best_epoch", 0, run.epoch);  // 0: what older versions wrote after a resume
  if (!parse_finite(field("best"), run.best) || run.best < 0 || run.best > 1) {
    throw FormatError(file + "metadata 'best': expected an accuracy from 0 to 1, found '" +
                      field("best") + "'");
  }
  const std::string where_history = file + "metadata 'history': ";
  const json h = parse_json(field("history"), where_history);
  if (!h.is_array()) {
    throw FormatError(where_history + "expected a JSON array, found " + h.type_name());
  }
  if (static_cast<index_t>(h.size()) != run.epoch) {
    throw FormatError(where_history + "expected " + std::to_string(run.epoch) +
                      " epochs (one per completed epoch), found " + std::to_string(h.size()));
  }
  for (std::size_t i = 0; i < h.size(); ++i) {
    const std::string where = where_history + "entry " + std::to_string(i) + ": ";
    run.history.push_back(epoch_from_json(h[i], where));
    if (run.history.back().epoch != static_cast<index_t>(i) + 1) {
      throw FormatError(where + "expected epoch " + std::to_string(i + 1) + ", found " +
                        std::to_string(run.history.back().epoch));
    }
  }
  return run;
}

}  // namespace fmnist
