// What the fmnist example shows and writes: the per-epoch table, per-class accuracy, the
// confusion matrix, curves.csv and curves.svg (loss and accuracy per epoch).
#pragma once

#include <minires/minires.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

namespace fmnist {

using minires::EpochStats;
using minires::EvalResult;
using minires::index_t;

inline std::string fixed(double v, int digits = 4) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

inline void print_epoch_table(std::FILE* out, const std::vector<EpochStats>& epochs) {
  std::fprintf(out, "\n%6s %10s %9s %10s %9s %9s %10s %9s\n", "epoch", "loss", "acc", "val_loss",
               "val_acc", "seconds", "img/s", "lr");
  for (const auto& e : epochs) {
    std::fprintf(out, "%6lld %10s %9s %10s %9s %9.1f %10.0f %9.3g\n",
                 static_cast<long long>(e.epoch), fixed(e.train_loss).c_str(),
                 fixed(e.train_accuracy).c_str(), fixed(e.val_loss).c_str(),
                 fixed(e.val_accuracy).c_str(), e.seconds, e.images_per_second, e.learning_rate);
  }
}

// Accuracy of each class: the diagonal of the confusion matrix over its row sums.
inline std::vector<double> per_class_accuracy(const EvalResult& r) {
  std::vector<double> acc(static_cast<std::size_t>(r.classes), 0.0);
  for (index_t i = 0; i < r.classes; ++i) {
    index_t row = 0;
    for (index_t j = 0; j < r.classes; ++j)
      row += r.confusion[static_cast<std::size_t>(i * r.classes + j)];
    acc[static_cast<std::size_t>(i)] =
        row ? static_cast<double>(r.confusion[static_cast<std::size_t>(i * r.classes + i)]) /
                  static_cast<double>(row)
            : 0.0;
  }
  return acc;
}

inline void print_evaluation(std::FILE* out, const EvalResult& r,
                             const std::vector<std::string>& names) {
  std::fprintf(out, "\ntest accuracy %.4f   test loss %.4f\n\n%-14s %8s\n", r.accuracy, r.loss,
               "class", "accuracy");
  const auto acc = per_class_accuracy(r);
  for (index_t i = 0; i < r.classes; ++i) {
    std::fprintf(out, "%-14s %8.4f\n", names[static_cast<std::size_t>(i)].c_str(),
                 acc[static_cast<std::size_t>(i)]);
  }
  std::fprintf(out, "\nconfusion matrix (rows: true class, columns: predicted)\n%14s", "");
  for (index_t j = 0; j < r.classes; ++j) std::fprintf(out, " %5lld", static_cast<long long>(j));
  std::fputc('\n', out);
  for (index_t i = 0; i < r.classes; ++i) {
    std::fprintf(out, "%2lld %-11s", static_cast<long long>(i),
                 names[static_cast<std::size_t>(i)].substr(0, 11).c_str());
    for (index_t j = 0; j < r.classes; ++j) {
      std::fprintf(
          out, " %5lld",
          static_cast<long long>(r.confusion[static_cast<std::size_t>(i * r.classes + j)]));
    }
    std::fputc('\n', out);
  }
}

// curves.csv: one row per epoch.
inline std::string curves_csv(const std::vector<EpochStats>& epochs) {
  std::ostringstream f;
  f << "epoch,train_loss,train_accuracy,val_loss,val_accuracy,seconds,images_per_second,learning_"
       "rate\n";
  for (const auto& e : epochs) {
    f << e.epoch << ',' << e.train_loss << ',' << e.train_accuracy << ',' << e.val_loss << ','
      << e.val_accuracy << ',' << e.seconds << ',' << e.images_per_second << ',' << e.learning_rate
      << '\n';
  }
  return f.str();
}

namespace detail {

struct Series {
  std::string label, color;
  std::vector<double> values;  // one per epoch; NaN skipped
};

// One panel of the curves picture: a framed plot at (x0, y0) of size w x h.
inline std::string svg_panel(double x0, double y0, double w, double h, const std::string& title,
                             const std::vector<Series>& series, index_t epochs) {
  double lo = 1e300, hi = -1e300;
  for (const auto& s : series)
    for (double v : s.values)
      if (!std::isnan(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (lo > hi) lo = 0, hi = 1;
  if (hi - lo < 1e-9) hi = lo + 1e-3;
  const double pad = 0.05 * (hi - lo);
  lo = lo >= 0 ? std::max(0.0, lo - pad) : lo - pad;  // losses and accuracies never go below 0
  hi += pad;
  auto px = [&](double epoch) {
    return x0 + w * (epochs > 1 ? (epoch - 1) / static_cast<double>(epochs - 1) : 0.5);
  };
  auto py = [&](double v) { return y0 + h - h * (v - lo) / (hi - lo); };
  char buf[512];
  std::string s;
  std::snprintf(buf, sizeof buf,
                "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' stroke='#444'/>\n"
                "<text x='%.1f' y='%.1f' font-size='15' text-anchor='middle'>%s</text>\n",
                x0, y0, w, h, x0 + w / 2, y0 - 12, title.c_str());
  s += buf;
  for (int t = 0; t <= 4; ++t) {  // y ticks
    const double v = lo + (hi - lo) * t / 4.0;
    std::snprintf(buf, sizeof buf,
                  "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' stroke='#ddd'/>\n"
                  "<text x='%.1f' y='%.1f' font-size='11' text-anchor='end'>%.3f</text>\n",
                  x0, x0 + w, py(v), py(v), x0 - 6, py(v) + 4, v);
    s += buf;
  }
  const index_t step = std::max<index_t>(1, epochs / 10);
  for (index_t e = 1; e <= epochs; e += step) {  // x ticks
    std::snprintf(buf, sizeof buf,
                  "<text x='%.1f' y='%.1f' font-size='11' text-anchor='middle'>%lld</text>\n",
                  px(static_cast<double>(e)), y0 + h + 16, static_cast<long long>(e));
    s += buf;
  }
  std::snprintf(buf, sizeof buf,
                "<text x='%.1f' y='%.1f' font-size='12' text-anchor='middle'>epoch</text>\n",
                x0 + w / 2, y0 + h + 34);
  s += buf;
  for (std::size_t k = 0; k < series.size(); ++k) {
    const auto& ser = series[k];
    std::string points;
    for (std::size_t e = 0; e < ser.values.size(); ++e) {
      if (std::isnan(ser.values[e])) continue;
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", px(static_cast<double>(e + 1)),
                    py(ser.values[e]));
      points += buf;
    }
    s += "<polyline fill='none' stroke-width='2' stroke='" + ser.color + "' points='" + points +
         "'/>\n";
    std::snprintf(buf, sizeof buf,
                  "<line x1='%.1f' x2='%.1f' y1='%.1f' y2='%.1f' stroke-width='2' stroke='%s'/>"
                  "<text x='%.1f' y='%.1f' font-size='12'>%s</text>\n",
                  x0 + 10, x0 + 30, y0 + 16 + 18.0 * static_cast<double>(k),
                  y0 + 16 + 18.0 * static_cast<double>(k), ser.color.c_str(), x0 + 36,
                  y0 + 20 + 18.0 * static_cast<double>(k), ser.label.c_str());
    s += buf;
  }
  return s;
}

}  // namespace detail

// Loss and accuracy curves (train and validation) side by side, as the notebook plotted them.
inline std::string curves_svg(const std::vector<EpochStats>& epochs, const std::string& title) {
  std::vector<double> tl, vl, ta, va;
  for (const auto& e : epochs) {
    tl.push_back(e.train_loss);
    vl.push_back(e.val_loss);
    ta.push_back(e.train_accuracy);
    va.push_back(e.val_accuracy);
  }
  const auto n = static_cast<index_t>(epochs.size());
  std::string svg =
      "<?xml version='1.0' encoding='UTF-8'?>\n"
      "<svg xmlns='http://www.w3.org/2000/svg' width='1000' height='420' "
      "font-family='sans-serif'>\n"
      "<rect width='1000' height='420' fill='white'/>\n"
      "<text x='500' y='24' font-size='17' text-anchor='middle'>" +
      title + "</text>\n";
  svg += detail::svg_panel(70, 60, 400, 300, "loss",
                           {{"train", "#1f77b4", tl}, {"validation", "#d62728", vl}}, n);
  svg += detail::svg_panel(570, 60, 400, 300, "accuracy",
                           {{"train", "#1f77b4", ta}, {"validation", "#d62728", va}}, n);
  svg += "</svg>\n";
  return svg;
}

}  // namespace fmnist
