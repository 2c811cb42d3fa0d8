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
#include <optional>
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
  static constexpr index_t max_crop_pad = 13;  // below half of the 28-pixel side
  static constexpr index_t max_limit = 1000000000;
  static constexpr double max_lr = 100;
  static constexpr double max_ema = 0.999999;
  static constexpr double max_temperature = 100;
};

inline const std::vector<std::string>& optimizer_names() {
  static const std::vector<std::string> names = {"rmsprop", "sgd", "adam", "adamw"};
  return names;
}
inline const std::vector<std::string>& schedule_names() {
  static const std::vector<std::string> names = {"constant", "cosine", "step"};
  return names;
}

inline const std::vector<std::string>& precision_names() {
  static const std::vector<std::string> names = {"fp32", "bf16"};
  return names;
}

// --precision when not given: bf16 for the ResNet where this build and CPU have AMX (the step
// runs 1.6 times as fast, which buys a 30-minute budget 1.7 times the epochs: docs/results.md),
// fp32 otherwise (the seed models keep the notebook's fp32 numerics).
inline std::string default_precision(const std::string& model, bool amx) {
  return model == "resnet" && amx ? "bf16" : "fp32";
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

// How training images are augmented.
// On: random crops (pad crop_pad) and flips; Flip: flips only.
enum class Augment { Off, On, Flip };

inline Augment augment_mode(const std::string& name) {
  if (name == "off") return Augment::Off;
  if (name == "on") return Augment::On;
  if (name == "flip") return Augment::Flip;
  throw ValueError("augment: expected off, on or flip, found '" + name + "'");
}
inline std::string augment_name(Augment a) {
  return a == Augment::On ? "on" : a == Augment::Flip ? "flip" : "off";
}

// A setting's value as the stored configuration writes it.
template <class T>
json setting_json(const T& v) {
  return json(v);
}
inline json setting_json(Augment a) {
  return augment_name(a);
}

// Everything that determines a training run, complete. Saved in every checkpoint (so --resume
// continues the same run) and in metrics.json.
struct Config {
  std::string model = "resnet";
  index_t epochs = 40;
  index_t batch_size = 128;
  std::string optimizer = "sgd";
  double lr = 0.1;
  double weight_decay = 5e-4;
  std::string schedule = "cosine";
  index_t warmup_epochs = 1;
  Augment augment = Augment::On;
  index_t crop_pad = 2;  // Augment::On: shift by up to +-crop_pad pixels, filling with 0
  bool standardize = true;
  std::uint64_t seed = 1;
  index_t validation = minires::fashion_mnist_validation_size;  // the last N training images
                                                                // validate (0: none)
  index_t limit = 0;                // train on the first N training images (0: all)
  bool keras_clip = false;          // Keras 2.0's clipped cross-entropy gradient
  index_t precise_bn = 0;           // batches for PreciseBN after each epoch (0: off)
  bool tta = true;                  // flip test-time augmentation in the final test
  index_t tta_shift = 1;            // shifted views in the final test, in pixels (0: none)
  double label_smoothing = 0.1;     // targets (1 - s) onehot + s / 10
  double ema = 0;                   // weight-averaging decay (0: off)
  double erase = 0;                 // random-erasing probability (0: off)
  bool zero_init_residual = false;  // resnet: each block's last BatchNorm starts at gamma = 0
  bool decay_vectors = true;        // weight decay also on biases and BatchNorm's gamma, beta
  std::string teacher;              // a trained model's checkpoint to distil from ("": none)
  double distill_weight = 0.9;      // the teacher's soft targets' share of the loss
  double distill_temperature = 4;   // the soft targets' temperature
  std::string precision = "fp32";   // the convolutions' products: fp32 or bf16 (AMX only);
                                    // Settings::resolve picks default_precision

  // Checks a complete configuration: throws ValueError naming the first setting outside its
  // range, prefixed by `where`.
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
    int_range("validation", validation, 0, Limits::max_limit);
    int_range("limit", limit, 0, Limits::max_limit);
    int_range("precise_bn", precise_bn, 0, Limits::max_precise_bn);
    int_range("tta_shift", tta_shift, 0, Limits::max_tta_shift);
    int_range("crop_pad", crop_pad, 1, Limits::max_crop_pad);
    real_range("label_smoothing", label_smoothing, 0, 1, false);
    real_range("ema", ema, 0, Limits::max_ema, false);
    real_range("erase", erase, 0, 1, false);
    if (zero_init_residual && !has_zero_init_residual(model))
      fail("zero_init_residual", "off for the model '" + model + "' (only resnet has it)", "on");
    real_range("distill_weight", distill_weight, 0, 1, false);
    real_range("distill_temperature", distill_temperature, 0, Limits::max_temperature, true);
    if (!is_one_of(precision, precision_names()))
      fail("precision", "one of " + join(precision_names()), precision);
  }

  json to_json() const;
};

// The settings a user gave (on the command line): each one set or not. resolve() makes the
// complete Config: the model's defaults (the notebook's settings for the seed models, a tuned
// recipe for the ResNet), then every given setting.
struct Settings {
  std::optional<std::string> model;
  std::optional<index_t> epochs, batch_size;
  std::optional<std::string> optimizer;
  std::optional<double> lr, weight_decay;
  std::optional<std::string> schedule;
  std::optional<index_t> warmup_epochs;
  std::optional<Augment> augment;
  std::optional<index_t> crop_pad;
  std::optional<bool> standardize;
  std::optional<std::uint64_t> seed;
  std::optional<index_t> validation, limit;
  std::optional<bool> keras_clip;
  std::optional<index_t> precise_bn;
  std::optional<bool> tta;
  std::optional<index_t> tta_shift;
  std::optional<double> label_smoothing, ema, erase;
  std::optional<bool> zero_init_residual, decay_vectors;
  std::optional<std::string> teacher;
  std::optional<double> distill_weight, distill_temperature;
  std::optional<std::string> precision;

  // amx: whether this build and CPU have AMX (default_precision).
  Config resolve(bool amx = minires::kernels::amx_available()) const;
  // The given settings only, keyed and written as in Config::to_json.
  json to_json() const;
};

// Every setting, by its key in the stored configuration: f(key, setting, config field).
template <class S, class C, class F>
void for_each_setting(S& s, C& c, F&& f) {
  f("model", s.model, c.model);
  f("epochs", s.epochs, c.epochs);
  f("batch_size", s.batch_size, c.batch_size);
  f("optimizer", s.optimizer, c.optimizer);
  f("lr", s.lr, c.lr);
  f("weight_decay", s.weight_decay, c.weight_decay);
  f("schedule", s.schedule, c.schedule);
  f("warmup_epochs", s.warmup_epochs, c.warmup_epochs);
  f("augment", s.augment, c.augment);
  f("crop_pad", s.crop_pad, c.crop_pad);
  f("standardize", s.standardize, c.standardize);
  f("seed", s.seed, c.seed);
  f("validation", s.validation, c.validation);
  f("limit", s.limit, c.limit);
  f("keras_clip", s.keras_clip, c.keras_clip);
  f("precise_bn", s.precise_bn, c.precise_bn);
  f("tta", s.tta, c.tta);
  f("tta_shift", s.tta_shift, c.tta_shift);
  f("label_smoothing", s.label_smoothing, c.label_smoothing);
  f("ema", s.ema, c.ema);
  f("erase", s.erase, c.erase);
  f("zero_init_residual", s.zero_init_residual, c.zero_init_residual);
  f("decay_vectors", s.decay_vectors, c.decay_vectors);
  f("teacher", s.teacher, c.teacher);
  f("distill_weight", s.distill_weight, c.distill_weight);
  f("distill_temperature", s.distill_temperature, c.distill_temperature);
  f("precision", s.precision, c.precision);
}

inline json Config::to_json() const {
  json j = json::object();
  const Settings none;
  for_each_setting(none, *this,
                   [&](const char* key, const auto&, const auto& v) { j[key] = setting_json(v); });
  return j;
}

inline json Settings::to_json() const {
  json j = json::object();
  const Config unused;
  for_each_setting(*this, unused, [&](const char* key, const auto& given, const auto&) {
    if (given) j[key] = setting_json(*given);
  });
  return j;
}

inline Config Settings::resolve(bool amx) const {
  Config c;
  c.model = model.value_or("resnet");
  if (c.model != "resnet") {  // the notebook's settings
    c.epochs = 50;
    c.optimizer = "rmsprop";
    c.lr = 1e-3;
    c.weight_decay = 0;
    c.schedule = "constant";
    c.warmup_epochs = 0;
    c.augment = Augment::Off;
    c.standardize = false;
    c.label_smoothing = 0;  // the seed keeps Keras' loss
  }
  // (The ResNet's 40 epochs are only a fallback: fmnist train gives a new ResNet run a
  // 30-minute budget unless --epochs is given, and a resumed run keeps its stored length.
  // Keras 2.0's clip stalls the seed model, so it is off for both: docs/results.md.)
  for_each_setting(*this, c, [](const char*, const auto& given, auto& value) {
    if (given) value = *given;
  });
  // Test-time views only help a model that saw them in training (shoes all point left: the
  // seed model trained without flips loses 2.4 points with them, docs/results.md).
  if (!tta) c.tta = c.augment != Augment::Off;
  if (!tta_shift) c.tta_shift = c.augment == Augment::On ? 1 : 0;
  if (!precision) c.precision = default_precision(c.model, amx);
  if (crop_pad && c.augment != Augment::On)
    throw ValueError("--crop-pad: expected --augment on with it, found --augment " +
                     augment_name(c.augment));
  if (c.teacher.empty() && (distill_weight || distill_temperature))
    throw ValueError(
        "--distill-weight and --distill-temperature: expected --teacher FILE with them, found "
        "none");
  return c;
}

// Whether training draws augmentations (crops, flips or random erasing).
inline bool augmented(const Config& c) {
  return c.augment != Augment::Off || c.erase > 0;
}

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
    c.augment = f.boolean("augment") ? Augment::On : Augment::Off;
  } else {
    const std::string a = f.str("augment");
    if (a != "off" && a != "on" && a != "flip") f.fail("augment", "off, on or flip", "'" + a + "'");
    c.augment = augment_mode(a);
  }
  c.standardize = f.boolean("standardize");
  c.seed = f.unsigned_integer("seed");
  c.limit = f.integer("limit");
  // Fields added after the first checkpoints: older files lack them.
  c.validation =
      f.has("validation") ? f.integer("validation") : minires::fashion_mnist_validation_size;
  c.keras_clip = f.has("keras_clip") && f.boolean("keras_clip");
  c.precise_bn = f.has("precise_bn") ? f.integer("precise_bn") : 0;
  c.tta = f.has("tta") && f.boolean("tta");
  c.tta_shift = f.has("tta_shift") ? f.integer("tta_shift") : 0;
  c.label_smoothing = f.has("label_smoothing") ? f.number("label_smoothing") : 0.0;
  c.ema = f.has("ema") ? f.number("ema") : 0.0;
  c.erase = f.has("erase") ? f.number("erase") : 0.0;
  c.zero_init_residual = f.has("zero_init_residual") && f.boolean("zero_init_residual");
  c.decay_vectors = !f.has("decay_vectors") || f.boolean("decay_vectors");
  c.teacher = f.has("teacher") ? f.str("teacher") : std::string();
  c.distill_weight = f.has("distill_weight") ? f.number("distill_weight") : 0.9;
  c.distill_temperature = f.has("distill_temperature") ? f.number("distill_temperature") : 4.0;
  c.precision = f.has("precision") ? f.str("precision") : std::string("fp32");
  c.crop_pad = f.has("crop_pad") ? f.integer("crop_pad") : 2;
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
  double best = 0;                  // the best validation accuracy so far (training accuracy under
                                    // --validation 0), reached at best_epoch
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
