// ReLU fusion planning: which ReLUs of a graph run inside the layer before them. A ReLU fuses
// when its only input is a layer that supports it (Layer::can_fuse_relu), the ReLU is that
// output's only consumer, and neither is the model's output. The fused layer then writes
// relu(f(x)) and masks the incoming gradient itself (Layer::set_fused_relu).
#pragma once

#include <cstddef>
#include <vector>

namespace minires::detail {

// nodes: the graph in topological order; each node has `layer` (a pointer-like to a Layer, null
// for the input), `inputs` (node ids) and `fused_into` (set here: the id of the layer a fused
// ReLU runs in, else -1). Every fusion is first switched off; with `enabled` false none is
// switched on again.
template <class Nodes>
void plan_relu_fusion(Nodes& nodes, int output, bool enabled) {
  std::vector<int> uses(nodes.size(), 0);
  for (const auto& n : nodes)
    for (int id : n.inputs) ++uses[static_cast<std::size_t>(id)];
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

}  // namespace minires::detail
