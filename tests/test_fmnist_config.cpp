// The fmnist example's stored-run parsing (examples/fmnist/config.hpp): what --resume and
// `evaluate` read from a checkpoint's metadata. Every malformed field is a FormatError naming the
// file and the field, never a raw std::stoll / std::map::at / JSON exception.
#include <catch2/catch.hpp>

#include <string>

#include "../examples/fmnist/budget.hpp"
#include "../examples/fmnist/config.hpp"

using namespace minires;
using Catch::Contains;

namespace {

// The metadata fmnist train writes after epoch 2 of a seed-model run.
Metadata good_metadata() {
  fmnist::Settings given;
  given.model = "seed";
  const fmnist::Config c = given.resolve();
  fmnist::json history = fmnist::json::array();
  for (index_t e = 1; e <= 2; ++e) {
    EpochStats s;
    s.epoch = e;
    s.train_loss = 1.0 / static_cast<double>(e);
    s.train_accuracy = 0.5;
    s.val_accuracy = 0.4 + 0.1 * static_cast<double>(e);
    s.val_loss = 1.0;
    s.learning_rate = 1e-3;
    s.seconds = 2;
    s.images_per_second = 1000;
    history.push_back(fmnist::epoch_json(s));
  }
  return {{"config", c.to_json().dump()}, {"history", history.dump()}, {"epoch", "2"},
          {"best", "0.600000"},           {"best_epoch", "2"},         {"model", "seed"}};
}

std::string error_of(const Metadata& m) {
  try {
    fmnist::stored_run(m, "run/last.mrm");
  } catch (const FormatError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("a stored run reads back what fmnist train wrote") {
  const fmnist::StoredRun run = fmnist::stored_run(good_metadata(), "run/last.mrm");
  CHECK(run.config.model == "seed");
  CHECK(run.config.optimizer == "rmsprop");
  CHECK(run.epoch == 2);
  CHECK(run.best_epoch == 2);
  CHECK(run.best == Approx(0.6));
  REQUIRE(run.history.size() == 2);
  CHECK(run.history[1].val_accuracy == Approx(0.6));
}

TEST_CASE("every malformed field of a stored run is a FormatError naming file and field") {
  auto with = [](const std::string& key, const std::string& value) {
    Metadata m = good_metadata();
    m[key] = value;
    return error_of(m);
  };
  auto without = [](const std::string& key) {
    Metadata m = good_metadata();
    m.erase(key);
    return error_of(m);
  };
  CHECK_THAT(without("config"), Contains("run/last.mrm") && Contains("'config'"));
  CHECK_THAT(without("best_epoch"), Contains("'best_epoch'"));
  CHECK_THAT(with("epoch", "two"), Contains("metadata 'epoch'") && Contains("'two'"));
  CHECK_THAT(with("epoch", "9223372036854775808"), Contains("metadata 'epoch'"));
  CHECK_THAT(with("epoch", "3"), Contains("'history'") && Contains("expected 3 epochs"));
  CHECK_THAT(with("best", "1e999"), Contains("metadata 'best'"));
  CHECK_THAT(with("best", "nan"), Contains("metadata 'best'"));
  CHECK_THAT(with("best_epoch", "5"), Contains("metadata 'best_epoch'") && Contains("0 to 2"));
  CHECK_THAT(with("config", "{not json"), Contains("'config'") && Contains("valid JSON"));
  CHECK_THAT(with("config", "[1, 2]"), Contains("'config'") && Contains("JSON object"));
  CHECK_THAT(with("history", "{}"), Contains("'history'") && Contains("array"));
  CHECK_THAT(with("history", "[1, 2]"), Contains("'history'") && Contains("entry 0"));

  auto config_with = [&](const std::string& key, const fmnist::json& value) {
    fmnist::json c = fmnist::json::parse(good_metadata().at("config"));
    c[key] = value;
    return with("config", c.dump());
  };
  auto config_without = [&](const std::string& key) {
    fmnist::json c = fmnist::json::parse(good_metadata().at("config"));
    c.erase(key);
    return with("config", c.dump());
  };
  CHECK_THAT(config_without("lr"), Contains("field 'lr'"));
  CHECK_THAT(config_with("lr", "fast"), Contains("field 'lr'") && Contains("a number"));
  CHECK_THAT(config_with("lr", -1.0), Contains("'lr'") && Contains("above 0"));
  CHECK_THAT(config_with("epochs", 1.5), Contains("field 'epochs'") && Contains("integer"));
  CHECK_THAT(config_with("epochs", 9223372036854775807LL), Contains("'epochs'"));
  CHECK_THAT(config_with("batch_size", 0), Contains("'batch_size'"));
  CHECK_THAT(config_with("seed", -1), Contains("field 'seed'") && Contains("non-negative"));
  CHECK_THAT(config_with("model", "vgg"), Contains("'model'") && Contains("resnet"));
  CHECK_THAT(config_with("augment", "sideways"), Contains("field 'augment'"));
  CHECK_THAT(config_with("standardize", 1), Contains("field 'standardize'"));
  CHECK_THAT(config_with("tta_shift", 99), Contains("'tta_shift'"));
  CHECK_THAT(config_with("erase", 1.5), Contains("'erase'") && Contains("from 0 to 1"));
  CHECK_THAT(config_with("crop_pad", 0), Contains("'crop_pad'") && Contains("from 1 to 13"));
  CHECK_THAT(config_with("crop_pad", 28), Contains("'crop_pad'"));
  CHECK_THAT(config_with("validation", -1), Contains("'validation'") && Contains("from 0"));
  CHECK_THAT(config_with("validation", "none"), Contains("field 'validation'"));
  CHECK_THAT(config_with("decay_vectors", 1), Contains("field 'decay_vectors'"));
  CHECK_THAT(config_with("precision", "fp16"), Contains("'precision'") && Contains("bf16"));
  CHECK_THAT(config_with("teacher", 3), Contains("field 'teacher'") && Contains("a string"));
  CHECK_THAT(config_with("distill_weight", 1.5),
             Contains("'distill_weight'") && Contains("from 0 to 1"));
  CHECK_THAT(config_with("distill_temperature", 0.0),
             Contains("'distill_temperature'") && Contains("above 0"));
  CHECK_THAT(config_with("zero_init_residual", true),  // the seed model has no such blocks
             Contains("'zero_init_residual'") && Contains("only resnet"));
}

TEST_CASE("checkpoints written before a field existed still read, with the old defaults") {
  Metadata m = good_metadata();
  fmnist::json c = fmnist::json::parse(m.at("config"));
  for (const char* key : {"keras_clip", "precise_bn", "tta", "tta_shift", "label_smoothing", "ema",
                          "erase", "precision", "crop_pad"})
    c.erase(key);
  c["augment"] = false;  // a bool before "flip" existed
  m["config"] = c.dump();
  m["best_epoch"] = "0";  // what a resume wrote before the best epoch was carried over
  const fmnist::StoredRun run = fmnist::stored_run(m, "old.mrm");
  CHECK(run.config.augment == fmnist::Augment::Off);
  CHECK(run.config.ema == 0.0);
  CHECK(run.config.erase == 0.0);
  CHECK(run.config.decay_vectors);
  CHECK(run.config.teacher.empty());  // before distillation: no teacher
  CHECK(run.config.distill_weight == 0.9);
  CHECK(run.config.distill_temperature == 4.0);
  CHECK(run.config.validation == 5000);   // before --validation: the notebook's split
  CHECK(run.config.precision == "fp32");  // before --precision: fp32 throughout
  CHECK(run.config.crop_pad == 2);        // before --crop-pad: crops of pad 2
  CHECK(run.best_epoch == 0);

  // A ResNet run from before zero_init_residual and decay_vectors trained without the one and
  // with the other.
  fmnist::Settings resnet;
  resnet.model = "resnet";
  resnet.zero_init_residual = true;
  resnet.decay_vectors = false;
  fmnist::json r = resnet.resolve().to_json();
  r.erase("zero_init_residual");
  r.erase("decay_vectors");
  m["config"] = r.dump();
  m["model"] = "resnet";
  const fmnist::StoredRun old_resnet = fmnist::stored_run(m, "old.mrm");
  CHECK_FALSE(old_resnet.config.zero_init_residual);
  CHECK(old_resnet.config.decay_vectors);
}

TEST_CASE("zero_init_residual and decay_vectors: off and on by default, given ones win") {
  fmnist::Settings s;
  fmnist::Config c = s.resolve();
  CHECK(c.model == "resnet");
  CHECK_FALSE(c.zero_init_residual);
  CHECK(c.decay_vectors);
  s.zero_init_residual = true;
  s.decay_vectors = false;
  c = s.resolve();
  CHECK(c.zero_init_residual);
  CHECK_FALSE(c.decay_vectors);
  c.validate("");
  for (const char* seed : {"seed", "seed-as-written"}) {
    fmnist::Settings n;
    n.model = seed;
    c = n.resolve();
    CHECK_FALSE(c.zero_init_residual);
    CHECK(c.decay_vectors);
    n.zero_init_residual = true;
    CHECK_THROWS_WITH(n.resolve().validate(""), Contains("zero_init_residual"));
  }
}

TEST_CASE("distillation settings: none by default, stored, and only with a teacher") {
  fmnist::Settings s;
  s.model = "seed";
  fmnist::Config c = s.resolve();
  CHECK(c.teacher.empty());
  CHECK(c.distill_weight == 0.9);
  CHECK(c.distill_temperature == 4.0);
  s.distill_weight = 0.5;
  CHECK_THROWS_WITH(s.resolve(), Contains("expected --teacher FILE with them"));
  s.distill_weight.reset();
  s.distill_temperature = 2.0;
  CHECK_THROWS_AS(s.resolve(), ValueError);
  s.teacher = "runs/resnet/best.mrm";
  s.distill_weight = 0.5;
  c = s.resolve();
  CHECK(c.teacher == "runs/resnet/best.mrm");
  CHECK(c.distill_weight == 0.5);
  CHECK(c.distill_temperature == 2.0);
  const fmnist::Config back = fmnist::config_from_json(c.to_json(), "");
  CHECK(back.teacher == c.teacher);
  CHECK(back.distill_weight == 0.5);
  CHECK(back.distill_temperature == 2.0);
  c.distill_temperature = 101;
  CHECK_THROWS_WITH(c.validate(""), Contains("distill_temperature"));
}

TEST_CASE("validation: the notebook's 5000 images by default, stored, 0 allowed") {
  fmnist::Settings s;
  CHECK(s.resolve().validation == 5000);
  s.model = "seed";
  CHECK(s.resolve().validation == 5000);
  s.validation = 0;
  fmnist::Config c = s.resolve();
  CHECK(c.validation == 0);
  c.validate("");
  CHECK(fmnist::config_from_json(c.to_json(), "").validation == 0);
  CHECK(s.to_json().at("validation") == 0);
  c.validation = -3;
  CHECK_THROWS_WITH(c.validate(""), Contains("'validation'") && Contains("found -3"));
}

TEST_CASE("strict number parsing for flags and metadata") {
  index_t v = 0;
  CHECK(fmnist::parse_index("42", v));
  CHECK(v == 42);
  CHECK(fmnist::parse_index("-3", v));
  CHECK(v == -3);
  for (const char* bad : {"", " 1", "1 ", "1e3", "0x10", "9223372036854775808", "+1", "--1"})
    CHECK_FALSE(fmnist::parse_index(bad, v));
  std::uint64_t u = 0;
  CHECK(fmnist::parse_u64("18446744073709551615", u));
  CHECK_FALSE(fmnist::parse_u64("18446744073709551616", u));
  CHECK_FALSE(fmnist::parse_u64("-1", u));
  double d = 0;
  CHECK(fmnist::parse_finite("1e-3", d));
  CHECK_FALSE(fmnist::parse_finite("1e400", d));
  CHECK_FALSE(fmnist::parse_finite("inf", d));
  CHECK_FALSE(fmnist::parse_finite("nan", d));
  CHECK_FALSE(fmnist::parse_finite("0.1x", d));
}

TEST_CASE("settings: the model's defaults, then what was given") {
  fmnist::Settings s;
  const fmnist::Config resnet = s.resolve();
  CHECK(resnet.model == "resnet");
  CHECK(resnet.optimizer == "sgd");
  CHECK(resnet.augment == fmnist::Augment::On);
  CHECK(resnet.tta);
  CHECK(resnet.tta_shift == 1);
  CHECK(s.to_json() == fmnist::json::object());  // nothing given
  s.model = "seed";
  const fmnist::Config seed = s.resolve();  // the notebook's settings
  CHECK(seed.epochs == 50);
  CHECK(seed.batch_size == 128);
  CHECK(seed.optimizer == "rmsprop");
  CHECK(seed.lr == 1e-3);
  CHECK(seed.schedule == "constant");
  CHECK(seed.augment == fmnist::Augment::Off);
  CHECK(!seed.standardize);
  CHECK(!seed.tta);  // no test-time views for a model trained without flips
  CHECK(seed.tta_shift == 0);
  s.augment = fmnist::Augment::Flip;
  s.lr = 0.01;
  const fmnist::Config flips = s.resolve();
  CHECK(flips.lr == 0.01);
  CHECK(flips.tta);             // flips in training: mirror views in the test
  CHECK(flips.tta_shift == 0);  // but no crops: no shifted views
  s.tta = false;
  CHECK(!s.resolve().tta);  // a given setting wins over what follows from another
  CHECK(s.to_json() ==
        fmnist::json{{"model", "seed"}, {"augment", "flip"}, {"lr", 0.01}, {"tta", false}});
  // Every key of a complete configuration is a setting; to_json and config_from_json agree.
  CHECK(fmnist::config_from_json(flips.to_json(), "").to_json() == flips.to_json());
  CHECK(flips.to_json().size() == 27);
}

TEST_CASE("fmnist --time-budget: durations, and the epochs that fit") {
  using fmnist::parse_duration;
  CHECK(parse_duration("90s") == 90);
  CHECK(parse_duration("30m") == 1800);
  CHECK(parse_duration("1h") == 3600);
  CHECK(parse_duration("1h30m") == 5400);
  CHECK(parse_duration("2.5m") == 150);
  for (const char* bad : {"", "30", "m", "10x", "1.2.3s", "-5s", "5 s", "0s", "200h", "1h30"}) {
    INFO(bad);
    CHECK_THROWS_WITH(parse_duration(bad), Catch::Contains("--time-budget: expected a duration"));
  }
  CHECK(fmnist::format_duration(45) == "45 s");
  CHECK(fmnist::format_duration(27 * 60) == "27.0 min");
  CHECK(fmnist::format_duration(3900) == "1 h 05 min");
  // 55000 training images at 1000/s, 5000 validation and 10000 x 2 test views at 4000/s.
  const fmnist::RunCosts c = fmnist::run_costs(55000, 5000, 10000, 2, 0, 128, 1000, 4000);
  CHECK(c.epoch_seconds == Approx(55 + 1.25 + 0.2));
  CHECK(c.test_seconds == Approx(5));
  // 30 minutes, 10 s gone, 10% of each epoch kept free: (1800 - 10 - 5 - 56) / 62.095 = 27.8
  // -> 27 epochs.
  CHECK(fmnist::epochs_within(1800, 10, c, 1000) == 27);
  // An epoch as fast as measured keeps the plan when it is made again after that epoch.
  CHECK(fmnist::replan(1800, 10 + c.epoch_seconds, c, 1, 27, 1, 1000) == 27);
  CHECK(fmnist::epochs_within(1800, 10, c, 20) == 20);  // at most the limit
  CHECK(fmnist::epochs_within(30, 10, c, 1000) == 1);   // at least one epoch
  CHECK(fmnist::epochs_left(30, 10, c) == 0);
}

TEST_CASE("fmnist --time-budget: the plan after each epoch") {
  using fmnist::replan;
  CHECK(fmnist::free_epochs("cosine", 1) == 1);
  CHECK(fmnist::free_epochs("cosine", 0) == 0);  // its first epoch's rate depends on the length
  CHECK(fmnist::free_epochs("constant", 0) == 1);
  CHECK(fmnist::free_epochs("step", 0) == 1);
  // 1800 s budget, 5 s of test, margin 56 s; epochs of 60 s.
  const fmnist::RunCosts e60{60, 5};
  // After the first (free) epoch the plan follows the speed both ways, keeping 10% of each
  // epoch's time free: 100 s gone, (1800 - 100 - 5 - 56) / 66 = 24.8 -> 1 + 24 = 25 epochs.
  CHECK(replan(1800, 100, e60, 1, 19, 1, 1000) == 25);  // the calibration was too slow
  CHECK(replan(1800, 100, e60, 1, 40, 1, 1000) == 25);  // ... or too fast
  CHECK(replan(1800, 100, e60, 1, 25, 1, 1000) == 25);
  CHECK(replan(1800, 100, e60, 1, 19, 1, 20) == 20);    // at most the limit
  CHECK(replan(1800, 100, e60, 1, 1, 1, 1000) == 25);   // a one-epoch plan grows too
  CHECK(replan(1800, 1790, e60, 1, 19, 1, 1000) == 1);  // nothing more fits: stop after it
  // The headroom holds: epochs 9% slower than the first keep the plan.
  CHECK(replan(1800, 100 + 23 * 65.4, {65.4, 5}, 24, 25, 1, 1000) == 25);
  CHECK(replan(1800, 100 + 10 * 65.4, {65.4, 5}, 11, 25, 1, 1000) == 25);
  // After the free epochs (or without one) a plan grows in its first half, when two or more
  // epochs more fit with the headroom: (1800 - 400 - 5 - 56) / 66 = 20.3 -> 5 + 20 = 25.
  CHECK(replan(1800, 100, e60, 1, 19, 0, 1000) == 25);
  CHECK(replan(1800, 400, e60, 5, 20, 1, 1000) == 25);
  CHECK(replan(1800, 400, e60, 5, 20, 1, 22) == 22);    // at most the limit
  CHECK(replan(1800, 400, e60, 5, 24, 1, 1000) == 24);  // one more epoch: not worth a change
  CHECK(replan(1800, 460, e60, 6, 25, 1, 1000) == 25);  // the grown plan holds at that speed
  // ... never in its second half ...
  CHECK(replan(1800, 700, e60, 10, 19, 1, 1000) == 19);
  // ... and shrinks only when the rest would end late: 10 epochs in 1000 s, 9 more of 60 s and
  // the test end at 1545 s (kept); at 120 s an epoch they would end at 2085 s, so the run
  // shrinks to the (1800 - 1000 - 5 - 56) / 120 = 6.2 -> 6 more that fit.
  CHECK(replan(1800, 1000, e60, 10, 19, 1, 1000) == 19);
  CHECK(replan(1800, 1000, {120, 5}, 10, 19, 1, 1000) == 16);
  CHECK(replan(1800, 1790, {120, 5}, 10, 19, 1, 1000) == 10);  // never below the epochs done
  CHECK(replan(1800, 1000, {120, 5}, 19, 19, 1, 1000) == 19);  // the last epoch: nothing left
}

TEST_CASE("precision: bf16 for the resnet where AMX is, fp32 otherwise; a given one wins") {
  fmnist::Settings s;
  CHECK(s.resolve(/*amx=*/true).precision == "bf16");
  CHECK(s.resolve(/*amx=*/false).precision == "fp32");
  CHECK(s.to_json() == fmnist::json::object());  // the default is not a given setting
  s.model = "seed";                              // the notebook's fp32 numerics on any CPU
  CHECK(s.resolve(true).precision == "fp32");
  s.model = "seed-as-written";
  CHECK(s.resolve(true).precision == "fp32");
  s.model = "resnet";
  s.precision = "fp32";
  CHECK(s.resolve(true).precision == "fp32");
  s.model = "seed";
  s.precision = "bf16";
  CHECK(s.resolve(false).precision == "bf16");  // apply_precision refuses it without AMX
}

TEST_CASE("crop_pad: 2 by default, stored, and only with --augment on") {
  fmnist::Settings s;
  s.model = "seed";
  CHECK(s.resolve().crop_pad == 2);
  s.crop_pad = 1;
  CHECK_THROWS_WITH(s.resolve(), Contains("--crop-pad") && Contains("--augment on") &&
                                     Contains("found --augment off"));
  s.augment = fmnist::Augment::Flip;
  CHECK_THROWS_WITH(s.resolve(), Contains("found --augment flip"));
  s.augment = fmnist::Augment::On;
  const fmnist::Config c = s.resolve();
  CHECK(c.crop_pad == 1);
  CHECK(c.tta_shift == 1);  // crops: shifted test views by default
  CHECK(fmnist::config_from_json(c.to_json(), "").crop_pad == 1);
  CHECK(fmnist::Settings{}.resolve().crop_pad == 2);  // the ResNet's crops
}
