// Graph rewrites planned by Model::plan. ReLU fusion: which ReLUs of a graph run inside the
// layer before them. A ReLU fuses
// when its only input is a layer that supports it (Layer::can_fuse_relu), the ReLU is that
// output's only consumer, and neither is the model's output. The fused layer then writes
// relu(f(x)) and masks the incoming gradient itself (Layer::set_fused_relu).
#pragma once

#include <cstddef>
#include <vector>

namespace minires::detail {

// How many inputs of other nodes read each node's output.
template <class Nodes>
std::vector<int> consumer_counts(const Nodes& nodes) {
  std::vector<int> uses(nodes.size(), 0);
  for (const auto& n : nodes)
    for (int id : n.inputs) ++uses[static_cast<std::size_t>(id)];
  return uses;
}

// nodes: the graph in topological order; each node has `layer` (a pointer-like to a Layer, null
// for the input), `inputs` (node ids) and `fused_into` (set here: the id of the layer a fused
// ReLU runs in, else -1). Every fusion is first switched off; with `enabled` false none is
// switched on again.
template <class Nodes>
void plan_relu_fusion(Nodes& nodes, int output, bool enabled) {
  const std::vector<int> uses = consumer_counts(nodes);
  for (auto& n : nodes) {
    n.fused_into = -1;
    if (n.layer && n.layer->can_fuse_relu()) n.layer->set_fused_relu(false);
  }
  if (!enabled) return;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    auto& n = nodes[i];
    if (static_cast<int>(i) == output || n.inputs.size() != 1 || !n.layer || !n.layer->is_relu()) {
      continue;
    }
    const int p = n.inputs[0];
    auto& producer = nodes[static_cast<std::size_t>(p)].layer;
    if (p == output || !producer || !producer->can_fuse_relu() || producer->fused_relu() ||
        uses[static_cast<std::size_t>(p)] != 1) {
      continue;
    }
    producer->set_fused_relu(true);
    n.fused_into = p;
  }
}

// Inference folding planning: which per-channel affine layers (Layer::is_inference_affine,
// BatchNorm) run, in Mode::Infer, inside the layer before them (Layer::can_fold_affine,
// Conv2D). A node folds when it has one input, that input is a layer that can fold and the
// node is its only consumer, and the input is not the model's output. Sets `folds_into` on the
// producer (the id of the affine node whose output it then writes) and `folded` on the affine
// node, and switches the producers' folding buffers on or off (Layer::set_affine_folding).
template <class Nodes>
void plan_affine_folding(Nodes& nodes, int output, bool enabled) {
  const std::vector<int> uses = consumer_counts(nodes);
  for (auto& n : nodes) {
    n.folds_into = -1;
    n.folded = false;
  }
  for (std::size_t i = 0; enabled && i < nodes.size(); ++i) {
    auto& n = nodes[i];
    if (n.inputs.size() != 1 || !n.layer || !n.layer->is_inference_affine()) continue;
    const int p = n.inputs[0];
    auto& producer = nodes[static_cast<std::size_t>(p)];
    if (p == output || !producer.layer || !producer.layer->can_fold_affine() ||
        producer.folds_into >= 0 || uses[static_cast<std::size_t>(p)] != 1) {
      continue;
    }
    producer.folds_into = static_cast<int>(i);
    n.folded = true;
  }
  for (auto& n : nodes)
    if (n.layer && n.layer->can_fold_affine()) n.layer->set_affine_folding(n.folds_into >= 0);
}

}  // namespace minires::detail
