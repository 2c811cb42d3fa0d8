// Model<T>: a network as a directed acyclic graph of layers, built with a functional API like
// Keras' (the seed notebook's model is written that way):
//
//   Model<float> m;
//   Node x = m.add_input(Shape{1, 28, 28});
//   Node y = m.add(Conv2D(4, 3).same(), x);
//   Node z = m.add(Add(), {y, x});             // branches and merges
//   m.set_output(z);
//
// Shapes are inferred while building and a mismatch throws ShapeError naming the layers and
// shapes. Nodes are stored in the order they were added, which is a topological order: forward
// runs it front to back, backward back to front, and a node that feeds several consumers
// receives the sum of their gradients (the first layer to write a gradient in backward() writes
// it or finds it zeroed, the others add to it).
//
// Memory is planned once per batch size: plan(n) sizes every activation and layer scratch
// buffer for batches of up to n samples; later steps with n or fewer samples allocate nothing.
// The activation gradients are sized the same way, but only once a backward pass is asked for
// (zero_grad, output_grad or backward): a model that only runs forward (evaluation,
// prediction) holds no gradient buffers. ReLU fusion is planned by graph/fusion.hpp; the summary
// table, the architecture description and the profile report are written by graph/summary.hpp.
#pragma once

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/core/rng.hpp"
#include "minires/core/shape.hpp"
#include "minires/core/span.hpp"
#include "minires/core/tensor.hpp"
#include "minires/graph/fusion.hpp"
#include "minires/graph/node.hpp"
#include "minires/graph/summary.hpp"
#include "minires/kernels/elementwise.hpp"
#include "minires/layers/layer.hpp"
#include "minires/loss/loss.hpp"

namespace minires {

// A handle to a node of a Model (its index). Only meaningful for the model that made it.
template <class T>
class Model {
 public:
  Model() = default;
  Model(Model&&) noexcept = default;
  Model& operator=(Model&&) noexcept = default;

  // ---- Building --------------------------------------------------------------------------

  // Adds the model's input: the shape of one sample, without the batch dimension (e.g.
  // {1, 28, 28}). Builders are add_input / add / set_output; input() and output() query.
  Node add_input(const Shape& sample_shape, const std::string& name = "") {
    if (input_ >= 0)
      throw ValueError("Model::add_input: the model already has an input ('" + nodes_[input_].name +
                       "')");
    if (sample_shape.rank() >= Shape::max_rank) {
      throw ShapeError(
          "Model::add_input: expected a sample shape of rank <= 3 (the batch is added), found " +
          sample_shape.str());
    }
    NodeData n;
    n.name = unique_name(name, "input");
    n.sample_shape = sample_shape;
    nodes_.push_back(std::move(n));
    input_ = static_cast<int>(nodes_.size()) - 1;
    return Node{input_};
  }

  // Applies `layer` to the outputs of `inputs`; returns the new node.
  template <class L,
            class = std::enable_if_t<!std::is_base_of_v<Layer<T>, std::decay_t<L>> &&
                                     !std::is_convertible_v<L, std::unique_ptr<Layer<T>>>>,
            class = void>
  Node add(L&&, std::initializer_list<Node>, const std::string& = "") {
    static_assert(std::is_base_of_v<Layer<T>, std::decay_t<L>>,
                  "Model<T>::add: the layer's scalar type is not the model's; layers default to "
                  "float: for a Model<double> write Conv2D<double>(...), Dense<double>(...)");
    return Node{};
  }
  template <class L,
            class = std::enable_if_t<!std::is_base_of_v<Layer<T>, std::decay_t<L>> &&
                                     !std::is_convertible_v<L, std::unique_ptr<Layer<T>>>>,
            class = void>
  Node add(L&& layer, Node input, const std::string& name = "") {
    return add(std::forward<L>(layer), {input}, name);
  }
  template <class L, class = std::enable_if_t<std::is_base_of_v<Layer<T>, std::decay_t<L>>>>
  Node add(L&& layer, std::initializer_list<Node> inputs, const std::string& name = "") {
    return add(std::unique_ptr<Layer<T>>(new std::decay_t<L>(std::forward<L>(layer))),
               std::vector<Node>(inputs), name);
  }
  template <class L, class = std::enable_if_t<std::is_base_of_v<Layer<T>, std::decay_t<L>>>>
  Node add(L&& layer, Node input, const std::string& name = "") {
    return add(std::forward<L>(layer), {input}, name);
  }

  Node add(std::unique_ptr<Layer<T>> layer, const std::vector<Node>& inputs,
           const std::string& name = "") {
    if (!layer) throw ValueError("Model::add: expected a layer, found null");
    const std::string node_name = unique_name(name, snake_case(layer->type()));
    const int arity = layer->num_inputs();
    const bool arity_ok =
        arity < 0 ? inputs.size() >= 2 : inputs.size() == static_cast<std::size_t>(arity);
    if (!arity_ok) {
      throw ShapeError(
          "Model::add: layer '" + node_name + "' (" + layer->type() + ") expects " +
          (arity < 0 ? std::string("two or more inputs") : std::to_string(arity) + " input(s)") +
          ", found " + std::to_string(inputs.size()));
    }
    std::vector<Shape> in_shapes;
    std::vector<int> ids;
    for (Node in : inputs) {
      check_node(in, "Model::add");
      ids.push_back(in.id);
      in_shapes.push_back(nodes_[static_cast<std::size_t>(in.id)].sample_shape.prepend_batch(1));
    }
    Shape out;
    try {
      out = layer->output_shape(Span<const Shape>(in_shapes));
    } catch (const ShapeError& e) {
      std::string from;
      for (int id : ids) {
        from += (from.empty() ? "'" : ", '") + nodes_[static_cast<std::size_t>(id)].name + "' " +
                detail::batch_str(nodes_[static_cast<std::size_t>(id)].sample_shape);
      }
      throw ShapeError("Model::add: layer '" + node_name + "' (" + layer->type() +
                       ") cannot take " + from + ": " + e.what());
    }
    NodeData n;
    n.name = node_name;
    n.layer = std::move(layer);
    n.inputs = ids;
    n.sample_shape = drop_batch(out);
    nodes_.push_back(std::move(n));
    planned_batch_ = 0;
    return Node{static_cast<int>(nodes_.size()) - 1};
  }

  // Marks the node whose activation is the model's output (the logits). Defaults to the last
  // node added. A change re-plans at the next step (fusion and the gradients' starts depend on
  // which node is the output).
  void set_output(Node n) {
    check_node(n, "Model::set_output");
    if (n.id != output_) planned_batch_ = 0;
    output_ = n.id;
  }

  // ---- Parameters --------------------------------------------------------------------------

  // Draws every layer's parameters from a generator seeded with `seed`, layer by layer in node
  // order, so the same seed gives the same model.
  void init(std::uint64_t seed) {
    check_built();
    Rng rng(seed);
    plan(1);  // layers create their parameters in their first setup
    for (auto& n : nodes_)
      if (n.layer) n.layer->init(rng);
  }

  // Trainable parameters, named "<node>/<param>" (e.g. "conv2d_1/kernel").
  std::vector<ParamRef<T>> params() { return collect(false); }
  // Non-trainable saved state (BatchNorm moving statistics), named like params().
  std::vector<ParamRef<T>> state() { return collect(true); }

  index_t trainable_count() const {
    index_t n = 0;
    for (const auto& node : nodes_)
      if (node.layer) n += node.layer->param_count();
    return n;
  }
  index_t non_trainable_count() const {
    index_t n = 0;
    for (const auto& node : nodes_)
      if (node.layer) n += node.layer->state_count();
    return n;
  }

  // ---- Running ---------------------------------------------------------------------------

  // Sizes all buffers for batches of up to `batch` samples. Called by forward() when needed;
  // call it yourself to move the allocation out of the first step.
  void plan(index_t batch) {
    check_built();
    if (batch < 1)
      throw ValueError("Model::plan: expected a batch of at least 1, found " +
                       std::to_string(batch));
    if (batch <= planned_batch_) return;
    setup_layers(batch);
    share_workspace();
    plan_fusion();
    for (auto& n : nodes_) {
      n.x_ptrs.clear();
      n.dx_ptrs.clear();
      if (n.fused_into >= 0) {  // runs inside the layer it follows: no buffers of its own
        n.y = Tensor<T>();
        n.dy = Tensor<T>();
        continue;
      }
      for (int input : n.inputs) {
        const int id = resolve(input);
        n.x_ptrs.push_back(&nodes_[static_cast<std::size_t>(id)].y);
        n.dx_ptrs.push_back(id == input_ ? nullptr : &nodes_[static_cast<std::size_t>(id)].dy);
      }
    }
    plan_gradient_zeroing();
    resize_buffers(batch);
    param_cache_ = params();
    planned_batch_ = batch;
  }

  // Runs the model on x, a batch of shape (n, sample shape...); returns the output activation
  // (valid until the next forward).
  const Tensor<T>& forward(const Tensor<T>& x, Mode mode) {
    check_built();
    const NodeData& in = nodes_[static_cast<std::size_t>(input_)];
    if (x.rank() != in.sample_shape.rank() + 1 || drop_batch(x.shape()) != in.sample_shape) {
      throw ShapeError("Model::forward: expected a batch of shape " +
                       detail::batch_str(in.sample_shape) + ", found " + x.shape().str());
    }
    const index_t batch = x.dim(0);
    plan(batch);
    resize_buffers(batch);
    nodes_[static_cast<std::size_t>(input_)].y.copy_from(x);
    const bool fold = mode == Mode::Infer;
    for (auto& n : nodes_) {
      if (!n.layer || n.fused_into >= 0 || (fold && n.folded)) continue;
      const auto t0 = profiling_ ? Clock::now() : Clock::time_point();
      const Span<const Tensor<T>* const> xs(n.x_ptrs.data(), n.x_ptrs.size());
      if (fold && n.folds_into >= 0) {
        NodeData& a = nodes_[static_cast<std::size_t>(n.folds_into)];
        a.layer->inference_affine(a.fold_scale.data(), a.fold_shift.data());
        n.layer->forward_affine(xs, a.y, a.fold_scale.data(), a.fold_shift.data(),
                                a.layer->fused_relu());
      } else {
        n.layer->forward(xs, n.y, mode);
      }
      if (profiling_) {
        n.forward_s += std::chrono::duration<double>(Clock::now() - t0).count();
        ++n.forward_calls;
      }
    }
    folded_forward_ = fold && any_folded_;
    return output_node().y;
  }

  // Zeroes every parameter gradient and the output's gradient (once per step: layers and the
  // loss accumulate into them). The other activation gradients start in backward(): the first
  // layer that writes each one writes it outright where it can, else it is zeroed just before
  // that layer (a fill of the whole graph's gradients up front cost a pass over memory that no
  // cache kept, and every layer then read it back). The ones zeroed here are zeroed over their
  // whole capacity, not just the current batch: zero_grad() runs before forward() sets the
  // step's batch size, and a smaller batch in between (a last partial batch, a validation
  // pass) must not leave the next full batch with a previous step's gradients.
  void zero_grad() {
    need_gradients();
    for (auto& n : nodes_)
      if (!n.started_in_backward) kernels::fill(n.dy.data(), n.dy.capacity(), T(0));
    for (auto& p : param_cache_) kernels::fill(p.grad->data(), p.grad->size(), T(0));
  }

  // The gradient of the loss with respect to the output, for the loss to accumulate into.
  Tensor<T>& output_grad() {
    need_gradients();
    return output_node().dy;
  }

  // The loss's gradient for the last forward, back-propagated: loss.backward(output_grad()),
  // then backward(). What PyTorch's loss.backward() does.
  void backward(const Loss<T>& loss) {
    loss.backward(output_grad());
    backward();
  }

  // Back-propagates output_grad() through the graph into every parameter gradient. The
  // activation gradients below the output start afresh in every call; the parameter gradients
  // and the output's gradient (which a loss adds into) keep what earlier calls left.
  void backward() {
    if (folded_forward_) {
      throw Error(
          "Model::backward: expected a forward to differentiate, found a Mode::Infer forward "
          "with BatchNorm folded into the layers before it (call set_folding(false) to "
          "differentiate in inference mode)");
    }
    need_gradients();
    for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
      NodeData& n = *it;
      if (!n.layer || n.fused_into >= 0) continue;
      const auto t0 = profiling_ ? Clock::now() : Clock::time_point();
      for (Tensor<T>* g : n.zero_first) kernels::fill(g->data(), g->size(), T(0));
      n.layer->backward(Span<const Tensor<T>* const>(n.x_ptrs.data(), n.x_ptrs.size()), n.y, n.dy,
                        Span<Tensor<T>* const>(n.dx_ptrs.data(), n.dx_ptrs.size()));
      if (profiling_) {
        n.backward_s += std::chrono::duration<double>(Clock::now() - t0).count();
        ++n.backward_calls;
      }
    }
  }

  // ---- Profiling ---------------------------------------------------------------------------

  // While enabled, forward() and backward() time every layer (wall clock, two clock reads per
  // layer call). Enabling resets the figures.
  void set_profiling(bool on) {
    profiling_ = on;
    if (on)
      for (auto& n : nodes_) n.forward_s = n.backward_s = 0, n.forward_calls = n.backward_calls = 0;
  }
  bool profiling() const noexcept { return profiling_; }

  using LayerTime = minires::LayerTime;
  std::vector<LayerTime> profile() const {
    std::vector<LayerTime> out;
    for (const auto& n : nodes_) {
      if (!n.layer) continue;
      const std::string algorithm = n.layer->algorithm();
      out.push_back({n.name,
                     std::string(n.layer->type()) + (n.layer->fused_relu() ? "+ReLU" : "") +
                         (algorithm.empty() ? "" : " (" + algorithm + ")"),
                     n.forward_s, n.backward_s, n.forward_calls, n.backward_calls});
    }
    return out;
  }

  // The profile as a table: milliseconds per call forward and backward, and each layer's share
  // of the total, slowest first.
  std::string profile_report() const { return detail::profile_table(profile()); }

  // ---- Inspection --------------------------------------------------------------------------

  std::size_t size() const noexcept { return nodes_.size(); }
  const std::string& name(Node n) const { return node(n).name; }
  Shape output_shape(Node n) const { return node(n).sample_shape; }
  Layer<T>* layer(Node n) { return node(n).layer.get(); }
  const Layer<T>* layer(Node n) const { return node(n).layer.get(); }
  // The nodes whose outputs node n takes.
  std::vector<Node> inputs(Node n) const {
    std::vector<Node> out;
    for (int id : node(n).inputs) out.push_back(Node{id});
    return out;
  }
  Layer<T>* layer(const std::string& name) {
    for (auto& n : nodes_)
      if (n.name == name) return n.layer.get();
    throw ValueError("Model::layer: no layer named '" + name + "'");
  }
  // The input node (add_input) and the output node (set_output, else the last node added).
  Node output() const { return Node{output_id()}; }
  Node input() const {
    if (input_ < 0) throw ValueError("Model: the model has no input; call add_input() first");
    return Node{input_};
  }
  // (n, sample shape...)
  static Shape batch_shape(const Shape& sample, index_t n) { return sample.prepend_batch(n); }
  // The output of node n for the last forward. With ReLU fusion on, a BatchNorm or Add whose
  // only consumer is a ReLU holds that ReLU's output, and the ReLU's activation is the same
  // tensor.
  const Tensor<T>& activation(Node n) const {
    node(n);  // checks n
    return nodes_[static_cast<std::size_t>(resolve(n.id))].y;
  }

  // ReLU fusion (on by default): a ReLU that is the only consumer of a BatchNorm or Add runs
  // inside that layer (Layer::set_fused_relu), saving two passes over the activation in each
  // direction and the ReLU's buffers. Results are bit-identical either way. Takes effect at the
  // next plan().
  void set_fusion(bool on) {
    if (on != fusion_) planned_batch_ = 0;
    fusion_ = on;
  }
  bool fusion() const noexcept { return fusion_; }

  // Inference folding (on by default): in Mode::Infer, a BatchNorm (any layer with an inference
  // affine map) whose input is a Conv2D (any layer that can fold one) read by nothing else runs
  // inside that layer: the convolution's kernel and bias are scaled and shifted by the
  // BatchNorm's moving statistics at each call, and a fused ReLU is applied in place, so the
  // BatchNorm's pass over the activation disappears. Results equal the unfolded graph up to
  // rounding (the product of the folded kernel rounds differently; about 1e-6 relative in float).
  // Mode::Train is unaffected. backward() after a folded Mode::Infer forward throws. Takes
  // effect at the next plan().
  void set_folding(bool on) {
    if (on != folding_) planned_batch_ = 0;
    folding_ = on;
  }
  bool folding() const noexcept { return folding_; }
  // True when node n is a ReLU that runs fused into its input's layer (valid after plan()).
  bool is_fused(Node n) const { return node(n).fused_into >= 0; }
  index_t planned_batch() const noexcept { return planned_batch_; }

  // Synchronised batch statistics in data-parallel training: every layer that normalises with
  // batch statistics (Layer::set_statistics_group) uses those of the batch split over `group`
  // in Mode::Train; null turns it off. Returns how many layers took it.
  int set_statistics_group(Collective* group) {
    int n = 0;
    for (auto& node : nodes_)
      if (node.layer && node.layer->set_statistics_group(group)) ++n;
    return n;
  }
  // Bytes held by the activations and by their gradients (0 until a backward pass is asked
  // for), at their planned capacity.
  std::size_t activation_bytes() const noexcept { return buffer_bytes(&NodeData::y); }
  std::size_t gradient_bytes() const noexcept { return buffer_bytes(&NodeData::dy); }

  // A one-line-per-node description of the architecture (names, types, configuration, inputs,
  // output shapes): saved with the weights so a file is only loaded into the same model.
  std::string architecture() const { return detail::architecture_text(*this); }

  // A Keras-style summary table.
  std::string summary() const { return detail::summary_table(*this); }

 private:
  struct NodeData {
    std::string name;
    std::unique_ptr<Layer<T>> layer;  // null for the input
    std::vector<int> inputs;
    Shape sample_shape;  // output shape without the batch
    Tensor<T> y, dy;     // activation and its gradient, planned for the largest batch
    std::vector<const Tensor<T>*> x_ptrs;
    std::vector<Tensor<T>*> dx_ptrs;       // null where no gradient is needed (the model input)
    std::vector<Tensor<T>*> zero_first;    // gradients this backward writes first: zeroed before
    bool started_in_backward = false;      // dy is written or zeroed first in backward()
    double forward_s = 0, backward_s = 0;  // profiling totals
    long forward_calls = 0, backward_calls = 0;
    int fused_into = -1;  // a ReLU run by this node's layer (see set_fusion)
    int folds_into = -1;  // Mode::Infer: runs the affine node folds_into too (see set_folding)
    bool folded = false;  // Mode::Infer: an affine node its input's layer runs
    Tensor<T> fold_scale, fold_shift;  // the folded node's affine map (per channel)
  };
  using Clock = std::chrono::steady_clock;

  static Shape drop_batch(const Shape& s) { return Shape::from(s.data() + 1, s.rank() - 1); }
  // "BatchNormalization" -> "batch_normalization", "Conv2D" -> "conv2d", "ReLU" -> "relu":
  // a word starts at a capital between a lower-case letter and a lower-case letter.
  static std::string snake_case(const std::string& type) {
    auto lower = [&](std::size_t i) {
      return i < type.size() && std::islower(static_cast<unsigned char>(type[i])) != 0;
    };
    std::string s;
    for (std::size_t i = 0; i < type.size(); ++i) {
      const auto c = static_cast<unsigned char>(type[i]);
      if (std::isupper(c) && i > 0 && lower(i - 1) && lower(i + 1)) s += '_';
      s += static_cast<char>(std::tolower(c));
    }
    return s;
  }

  std::string unique_name(const std::string& given, const std::string& base) {
    if (!given.empty()) {
      for (const auto& n : nodes_)
        if (n.name == given)
          throw ValueError("Model: a layer named '" + given + "' already exists");
      return given;
    }
    const int k = ++name_counts_[base];
    std::string candidate = base + "_" + std::to_string(k);
    for (const auto& n : nodes_)
      if (n.name == candidate) return unique_name("", base);
    return candidate;
  }

  void check_node(Node n, const char* where) const {
    if (n.id < 0 || n.id >= static_cast<int>(nodes_.size())) {
      throw ValueError(std::string(where) + ": node " + std::to_string(n.id) +
                       " does not belong to this model (it has " + std::to_string(nodes_.size()) +
                       " nodes)");
    }
  }
  void check_built() const {
    if (input_ < 0) throw ValueError("Model: the model has no input; call add_input() first");
    if (nodes_.size() < 2) throw ValueError("Model: the model has no layers");
  }
  int output_id() const { return output_ >= 0 ? output_ : static_cast<int>(nodes_.size()) - 1; }
  NodeData& output_node() { return nodes_[static_cast<std::size_t>(output_id())]; }
  const NodeData& node(Node n) const {
    check_node(n, "Model");
    return nodes_[static_cast<std::size_t>(n.id)];
  }

  int resolve(int id) const {
    const int f = nodes_[static_cast<std::size_t>(id)].fused_into;
    return f >= 0 ? f : id;
  }

  // Which backward starts each activation gradient: the first, in backward order, of the
  // layers that write it. That layer writes it outright where it can
  // (Layer::can_overwrite_gradients, and the buffer is not among its inputs twice); else the
  // buffer is zeroed just before it. The output's gradient (the loss writes it first) and
  // gradients no layer writes stay with zero_grad().
  void plan_gradient_zeroing() {
    for (auto& n : nodes_) n.zero_first.clear(), n.started_in_backward = false;
    for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
      if (!it->layer || it->fused_into >= 0) continue;
      const bool can_write = it->layer->can_overwrite_gradients();
      std::vector<bool> writes(it->dx_ptrs.size(), false);
      for (std::size_t i = 0; i < it->dx_ptrs.size(); ++i) {
        Tensor<T>* g = it->dx_ptrs[i];  // the gradient of node resolve(inputs[i]), or null
        if (g == nullptr || g == &output_node().dy) continue;
        NodeData& target = nodes_[static_cast<std::size_t>(resolve(it->inputs[i]))];
        if (target.started_in_backward) continue;
        target.started_in_backward = true;
        if (can_write && std::count(it->dx_ptrs.begin(), it->dx_ptrs.end(), g) == 1) {
          writes[i] = true;
        } else {
          it->zero_first.push_back(g);
        }
      }
      if (can_write) it->layer->set_gradient_overwrite(writes);
    }
  }

  // Marks each ReLU that runs inside its input's layer (graph/fusion.hpp).
  void plan_fusion() {
    detail::plan_relu_fusion(nodes_, output_id(), fusion_);
    detail::plan_affine_folding(nodes_, output_id(), folding_);
    any_folded_ = false;
    for (auto& n : nodes_) {
      any_folded_ = any_folded_ || n.folded;
      if (n.folded) {
        n.fold_scale.resize(Shape{n.sample_shape[0]});
        n.fold_shift.resize(Shape{n.sample_shape[0]});
      } else {
        n.fold_scale = Tensor<T>();
        n.fold_shift = Tensor<T>();
      }
    }
  }

  // Shapes every node's y and dy for `batch` samples (fused ReLUs have none); within the planned
  // batch this only changes the shapes, not the storage.
  void resize_buffers(index_t batch) {
    for (auto& n : nodes_) {
      if (n.fused_into >= 0) continue;
      n.y.resize(n.sample_shape.prepend_batch(batch));
      if (gradients_) n.dy.resize(n.sample_shape.prepend_batch(batch));
    }
  }

  std::size_t buffer_bytes(Tensor<T> NodeData::*buffer) const noexcept {
    std::size_t bytes = 0;
    for (const auto& n : nodes_) bytes += std::size_t((n.*buffer).capacity()) * sizeof(T);
    return bytes;
  }

  // Sizes the activation gradients like the activations (the planned batch, shaped as the
  // last forward's) the first time a backward pass is asked for.
  void need_gradients() {
    if (gradients_) return;
    gradients_ = true;
    if (planned_batch_ == 0) return;  // plan() will size them
    for (auto& n : nodes_) {
      if (n.fused_into >= 0) continue;
      n.dy.resize(n.sample_shape.prepend_batch(planned_batch_));
      n.dy.resize(n.y.shape());
    }
  }

  // One scratch buffer for all layers (Layer::workspace_size): they run one at a time.
  void share_workspace() {
    index_t size = 0;
    for (auto& n : nodes_)
      if (n.layer) size = std::max(size, n.layer->workspace_size());
    workspace_.resize(Shape{std::max<index_t>(size, 1)});
    for (auto& n : nodes_)
      if (n.layer) n.layer->set_workspace(workspace_.data());
  }

  void setup_layers(index_t batch) {
    for (auto& n : nodes_) {
      if (!n.layer) continue;
      n.layer->share_workspace(true);
      std::vector<Shape> in;
      for (int id : n.inputs)
        in.push_back(nodes_[static_cast<std::size_t>(id)].sample_shape.prepend_batch(batch));
      n.layer->setup(Span<const Shape>(in));
    }
  }

  std::vector<ParamRef<T>> collect(bool state) {
    std::vector<ParamRef<T>> out;
    for (auto& n : nodes_) {
      if (!n.layer) continue;
      for (auto& p : state ? n.layer->state() : n.layer->params()) {
        p.name = n.name + "/" + p.name;
        out.push_back(p);
      }
    }
    return out;
  }

  std::vector<NodeData> nodes_;
  std::vector<ParamRef<T>> param_cache_;  // params(), gathered by plan() for zero_grad()
  Tensor<T> workspace_;                   // the layers' shared scratch (share_workspace)
  std::map<std::string, int> name_counts_;
  int input_ = -1;
  int output_ = -1;
  index_t planned_batch_ = 0;
  bool profiling_ = false;
  bool fusion_ = true;
  bool folding_ = true;
  bool any_folded_ = false;      // plan() folded at least one node
  bool folded_forward_ = false;  // the last forward ran folded (backward() would be wrong)
  bool gradients_ = false;       // activation gradients are sized (need_gradients)
};

}  // namespace minires
