// The models the fmnist example trains, by name (see minires/models/fashion_mnist.hpp).
#pragma once

#include <minires/minires.hpp>
#include <minires/models/fashion_mnist.hpp>

#include <string>
#include <vector>

namespace fmnist {

inline const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = {"resnet", "seed", "seed-as-written"};
  return names;
}

// Whether the model has residual blocks that zero_init_residual applies to (only resnet: the
// seed models' Keras blocks have no such option).
inline bool has_zero_init_residual(const std::string& name) {
  return name == "resnet";
}

// zero_init_residual: resnet's blocks start as their shortcuts (small_resnet).
template <class T>
minires::Model<T> build_model(const std::string& name, bool zero_init_residual = false) {
  if (zero_init_residual && !has_zero_init_residual(name)) {
    throw minires::ValueError("model '" + name +
                              "': expected zero_init_residual off (only resnet "
                              "has it), found on");
  }
  if (name == "seed") return minires::models::seed_resnet<T>();
  if (name == "seed-as-written") return minires::models::seed_resnet<T>(/*as_written=*/true);
  if (name == "resnet") return minires::models::small_resnet<T>(zero_init_residual);
  std::string known;
  for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
  throw minires::ValueError("unknown model '" + name + "': expected one of " + known);
}

}  // namespace fmnist
