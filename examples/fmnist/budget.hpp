// fmnist train --time-budget: durations ("90s", "30m", "1h", "1h30m") and the plan that fits a
// run into one: how many epochs, from the measured speed, so that training, validation and the
// final test end within the budget.
#pragma once

#include <minires/core/error.hpp>
#include <minires/core/shape.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>

namespace fmnist {

using minires::index_t;

// Seconds in a duration written as one or more <number><unit> parts, unit s, m or h: "90s",
// "30m", "1h", "1h30m", "2.5m". Throws ValueError saying what was expected otherwise.
inline double parse_duration(const std::string& text, const std::string& what = "--time-budget") {
  const auto fail = [&]() -> double {
    throw minires::ValueError(
        what + ": expected a duration such as 90s, 30m, 1h or 1h30m, found '" + text + "'");
  };
  double total = 0;
  std::size_t i = 0;
  if (text.empty()) return fail();
  while (i < text.size()) {
    const std::size_t start = i;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
      ++i;
    if (i == start || i == text.size()) return fail();
    double v = 0;
    try {
      std::size_t used = 0;
      v = std::stod(text.substr(start, i - start), &used);
      if (used != i - start) return fail();
    } catch (const std::exception&) {
      return fail();
    }
    const char unit = text[i++];
    if (unit == 's') {
      total += v;
    } else if (unit == 'm') {
      total += 60 * v;
    } else if (unit == 'h') {
      total += 3600 * v;
    } else {
      return fail();
    }
  }
  if (!(total >= 1 && total <= 7 * 24 * 3600)) {
    throw minires::ValueError(what + ": expected a duration from 1s to 168h, found '" + text + "'");
  }
  return total;
}

// "45 s", "27 min", "1 h 05 min".
inline std::string format_duration(double seconds) {
  char buf[48];
  const long s = std::lround(std::max(0.0, seconds));
  if (s < 120) {
    std::snprintf(buf, sizeof buf, "%ld s", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%.1f min", static_cast<double>(s) / 60.0);
  } else {
    std::snprintf(buf, sizeof buf, "%ld h %02ld min", s / 3600, (s % 3600) / 60);
  }
  return buf;
}

// What one epoch and the final test cost, from measured speeds.
struct RunCosts {
  double epoch_seconds = 0;  // training steps, PreciseBN, validation, checkpoints
  double test_seconds = 0;   // the final test of the best checkpoint, all its views
};

inline RunCosts run_costs(index_t train_images, index_t val_images, index_t test_images,
                          index_t test_views, index_t precise_bn_batches, index_t batch,
                          double train_images_per_s, double eval_images_per_s) {
  RunCosts c;
  const double eval = std::max(eval_images_per_s, 1e-9);
  c.epoch_seconds = static_cast<double>(train_images) / std::max(train_images_per_s, 1e-9) +
                    static_cast<double>(val_images + precise_bn_batches * batch) / eval +
                    0.2;  // two checkpoints and metrics.json
  c.test_seconds = static_cast<double>(test_images * test_views) / eval;
  return c;
}

// What a plan keeps free for what the estimate misses: 3% of the budget plus 2 s.
inline double budget_margin(double budget) {
  return 0.03 * budget + 2.0;
}

// The epochs that fit into what is left of the budget (budget - elapsed) with the final test
// and the margin: 0 or more.
inline index_t epochs_left(double budget, double elapsed, const RunCosts& c) {
  const double left = budget - elapsed - c.test_seconds - budget_margin(budget);
  const double n = std::floor(left / std::max(c.epoch_seconds, 1e-9));
  return static_cast<index_t>(std::clamp(n, 0.0, 1e9));
}

// The share of an epoch's time that a plan keeps free for the speed to vary: consecutive
// epochs of one run differ by up to about 10% on a shared host.
constexpr double epoch_headroom = 0.10;

inline RunCosts with_headroom(const RunCosts& c) {
  return {c.epoch_seconds * (1 + epoch_headroom), c.test_seconds};
}

// The epochs a run plans: those that fit with the headroom, at least 1 (a run trains at least
// one epoch, even over budget), at most max_epochs.
inline index_t epochs_within(double budget, double elapsed, const RunCosts& c, index_t max_epochs) {
  return std::clamp<index_t>(epochs_left(budget, elapsed, with_headroom(c)), 1, max_epochs);
}

// The epochs during which a run may re-plan its length both ways: the first, when its learning
// rate does not depend on the length (a warm-up, a constant or a step schedule: a cosine decay
// without warm-up already depends on it); none otherwise.
inline index_t free_epochs(const std::string& schedule, index_t warmup_epochs) {
  return schedule == "cosine" && warmup_epochs < 1 ? 0 : 1;
}

// The plan after an epoch: `done` epochs of `planned` took `elapsed` seconds of the budget, and
// epochs now take `at_this_speed.epoch_seconds` (with validation if any; the mean of the last
// few).
// Within the free epochs the plan becomes the epochs that fit at that speed with the headroom,
// as the first plan did (at least `done`, at most max_epochs), so a run that only changed there
// equals `--epochs N`. Later it shrinks when the rest would end after the budget itself, to what
// fits with the margin (so a run that keeps slowing does not shrink by one epoch after every
// epoch); and it grows, in the first half of the plan only (while a longer schedule changes the
// learning rate little), when at least `min_growth` more epochs fit with the headroom (a first
// epoch slower than the rest, or a host that sped up, would otherwise leave minutes unused).
// Between the two, a change of speed within the headroom keeps the plan.
inline constexpr index_t min_growth = 2;

inline index_t replan(double budget, double elapsed, const RunCosts& at_this_speed, index_t done,
                      index_t planned, index_t free, index_t max_epochs) {
  const auto fits_with_headroom = [&] {
    return done + epochs_left(budget, elapsed, with_headroom(at_this_speed));
  };
  if (done <= free) {
    return std::clamp(fits_with_headroom(), std::max<index_t>(done, 1), std::max(max_epochs, done));
  }
  if (done >= planned) return planned;
  const double projected = elapsed +
                           static_cast<double>(planned - done) * at_this_speed.epoch_seconds +
                           at_this_speed.test_seconds;
  if (projected > budget)
    return std::max(done, std::min(planned, done + epochs_left(budget, elapsed, at_this_speed)));
  if (2 * done <= planned) {
    const index_t fit = std::min(fits_with_headroom(), std::max(max_epochs, planned));
    if (fit >= planned + min_growth) return fit;
  }
  return planned;
}

}  // namespace fmnist
