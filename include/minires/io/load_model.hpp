// Loading a model for inference without repeating its architecture in code: load_model() reads a
// checkpoint's own architecture description and rebuilds the model with the first builder of a
// ModelRegistry whose model has exactly that architecture, then loads the parameters.
//
//   ModelRegistry<float> known;
//   known.add("my_resnet", [] { return my_resnet(); });
//   Model<float> model = load_model("model.mrm", known);
//   Tensor<float> probs = predict(model, images);
//
// models::fashion_mnist_models<T>() (models/fashion_mnist.hpp) registers the bundled models.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/graph/model.hpp"
#include "minires/io/checkpoint.hpp"

namespace minires {

// Named model builders: functions that return a freshly built (uninitialised) model.
template <class T>
class ModelRegistry {
 public:
  using Builder = std::function<Model<T>()>;

  ModelRegistry& add(std::string name, Builder build) {
    if (!build) throw ValueError("ModelRegistry::add: expected a builder for '" + name + "'");
    for (const auto& e : entries_) {
      if (e.first == name) {
        throw ValueError("ModelRegistry::add: a model named '" + name + "' is already registered");
      }
    }
    entries_.emplace_back(std::move(name), std::move(build));
    return *this;
  }
  const std::vector<std::pair<std::string, Builder>>& entries() const noexcept { return entries_; }
  // "a, b, c"
  std::string names() const {
    std::string s;
    for (const auto& e : entries_) s += (s.empty() ? "" : ", ") + e.first;
    return s.empty() ? "none" : s;
  }

 private:
  std::vector<std::pair<std::string, Builder>> entries_;
};

// The model saved in `path`, rebuilt by the registered builder whose architecture is the one the
// file describes (the metadata's "model" entry, when it names a registered model, is tried first)
// and loaded. `name` (optional) receives the builder's name, `metadata` the file's metadata.
// Throws FormatError naming the known models when none matches, and what load() throws.
template <class T>
Model<T> load_model(const std::string& path, const ModelRegistry<T>& known,
                    std::string* name = nullptr, Metadata* metadata = nullptr) {
  std::string architecture;
  const Metadata meta = read_metadata(path, &architecture);
  std::vector<std::size_t> order;
  const auto hint = meta.find("model");
  for (std::size_t i = 0; i < known.entries().size(); ++i) {
    if (hint != meta.end() && known.entries()[i].first == hint->second)
      order.insert(order.begin(), i);
    else
      order.push_back(i);
  }
  for (std::size_t i : order) {
    Model<T> model = known.entries()[i].second();
    model.plan(1);
    if (model.architecture() != architecture) continue;
    model.init(0);
    const Metadata loaded = load(model, path);
    if (name != nullptr) *name = known.entries()[i].first;
    if (metadata != nullptr) *metadata = loaded;
    return model;
  }
  const std::size_t eol = architecture.find('\n');
  throw FormatError("load_model '" + path + "': the file holds a model of none of the known " +
                    "architectures (" + known.names() + "); it starts with '" +
                    architecture.substr(0, eol) +
                    "': register a builder of that model, or build it and call load(model, path)");
}

}  // namespace minires
