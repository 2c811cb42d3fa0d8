// The layer contract. Every layer lives in its own header under layers/, with its forward and
// backward passes next to each other and the math of the backward pass in a comment above it.
//
//   output_shape(in)   pure: the output shape for these input shapes, or a ShapeError saying
//                      what was expected and what was found.
//   setup(in)          sizes parameters (on the first call) and every scratch buffer for inputs
//                      of these shapes. Dimension 0 is the largest batch forward will be given;
//                      smaller batches reuse the same buffers. Nothing is allocated after this.
//   init(rng)          draws the parameters (Keras 2.0 defaults unless configured).
//   forward(x, y, m)   y = f(x) in Mode::Train or Mode::Infer (explicit, never inferred). y has
//                      the output shape for x's batch; it is sized by the caller.
//   backward(x, y, dy, dx)
//                      ACCUMULATES: dx[i] += dL/dx[i] and param.grad += dL/dparam, so a tensor
//                      that feeds several layers needs no special case. dx[i] may be nullptr
//                      when that input needs no gradient (the data). Uses what the forward of
//                      the same batch cached.
//   params()           trainable parameters, each with its gradient, by name.
//   state()            non-trainable tensors saved with the model (BatchNorm's moving stats).
//
// The scalar type T of every layer defaults to float, so a Model<float> is built without naming
// it: m.add(Conv2D(4, 3).same(), x). A Model<double> takes layers written Conv2D<double>(...).
#pragma once

#include <string>
#include <vector>

#include "minires/core/collective.hpp"
#include "minires/core/error.hpp"
#include "minires/core/rng.hpp"
#include "minires/core/shape.hpp"
#include "minires/core/span.hpp"
#include "minires/core/tensor.hpp"

namespace minires {

enum class Mode { Train, Infer };

// A named tensor of a layer: a trainable parameter (grad set) or saved state (grad null).
template <class T>
struct ParamRef {
  std::string name;
  Tensor<T>* value = nullptr;
  Tensor<T>* grad = nullptr;
};

template <class T>
class Layer {
 public:
  virtual ~Layer() = default;

  // Keras' class name of the layer ("Conv2D", "BatchNormalization", "MaxPooling2D", ...), as
  // Keras' summary prints it; the C++ class may use Keras' short alias (MaxPool2D). Saved in
  // the architecture description of every checkpoint.
  virtual const char* type() const = 0;
  // Inputs the layer takes: a fixed count, or -1 for "two or more" (Add).
  virtual int num_inputs() const { return 1; }
  // The layer's configuration in one line ("filters=4 kernel=3x3 strides=1x1 padding=valid"):
  // part of the architecture description saved with a model.
  virtual std::string config() const { return ""; }

  virtual Shape output_shape(Span<const Shape> inputs) const = 0;
  virtual void setup(Span<const Shape> inputs) = 0;
  virtual void init(Rng& /*rng*/) {}
  virtual void forward(Span<const Tensor<T>* const> x, Tensor<T>& y, Mode mode) = 0;
  virtual void backward(Span<const Tensor<T>* const> x, const Tensor<T>& y, const Tensor<T>& dy,
                        Span<Tensor<T>* const> dx) = 0;

  virtual std::vector<ParamRef<T>> params() { return {}; }
  virtual std::vector<ParamRef<T>> state() { return {}; }

  // ReLU fusion, used by Model (layers that support it: BatchNorm, Add). When on, forward
  // writes relu(f(x)) and backward takes the gradient of that ReLU's output, masking it with
  // y > 0 itself: the results equal the layer followed by a ReLU, bit for bit, with fewer passes
  // over memory. Model turns it on when a ReLU is the only consumer of the layer's output and
  // then skips that ReLU.
  virtual bool can_fuse_relu() const { return false; }
  virtual void set_fused_relu(bool on) {
    if (on) throw ValueError(std::string(type()) + ": cannot fuse a ReLU");
  }
  virtual bool fused_relu() const { return false; }
  // True for the ReLU layer: what Model fuses into a layer that can_fuse_relu().
  virtual bool is_relu() const { return false; }

  // Input-gradient overwriting, used by Model. backward() adds into dx (accumulates), the
  // default; a layer that can also write dx outright says so, and Model then tells it, per
  // input, whether its backward is the first to write that input's gradient. Where it is,
  // backward writes every element of dx[i] and reads none of what was there, and Model does
  // not zero the buffer first (where the layer writes dx directly: a pass over memory less, and
  // a read of dx less). Set at plan time; an empty or all-false mask restores accumulation.
  virtual bool can_overwrite_gradients() const { return false; }
  virtual void set_gradient_overwrite(const std::vector<bool>& first_writer) {
    for (bool first : first_writer)
      if (first) throw ValueError(std::string(type()) + ": cannot overwrite its input gradients");
  }

  // Inference folding, used by Model (Model::set_folding). A layer whose Mode::Infer forward is
  // a per-channel affine map of its single input, y = x·scale[c] + shift[c] over axis 1 (then
  // its fused ReLU, if on), says so (BatchNorm with its moving statistics) and writes the map;
  // a layer that can apply such a map to its own output (Conv2D: folded into its kernel and
  // bias) runs forward_affine in its place, after set_affine_folding(true) has prepared its
  // buffers (at plan time, so forward allocates nothing).
  virtual bool is_inference_affine() const { return false; }
  virtual void inference_affine(T* /*scale*/, T* /*shift*/) const {
    throw Error(std::string(type()) + ": expected a layer with an inference affine map");
  }
  virtual bool can_fold_affine() const { return false; }
  virtual void set_affine_folding(bool on) {
    if (on) throw ValueError(std::string(type()) + ": cannot fold an affine map");
  }
  // y = relu?(forward(x)·scale[c] + shift[c]) in Mode::Infer.
  virtual void forward_affine(Span<const Tensor<T>* const> /*x*/, Tensor<T>& /*y*/,
                              const T* /*scale*/, const T* /*shift*/, bool /*relu*/) {
    throw Error(std::string(type()) + ": cannot fold an affine map");
  }

  // Scratch used only inside one forward or backward call (Conv2D: packed weights, per-thread
  // columns, partial gradients; nothing in it survives the call). A layer owns its scratch by
  // default; a Model shares one buffer among all its layers, which run one at a time: it calls
  // share_workspace(true) before setup (the layer then allocates none) and set_workspace() after
  // it with at least workspace_size() elements.
  virtual index_t workspace_size() const { return 0; }
  virtual void share_workspace(bool /*on*/) {}
  virtual void set_workspace(T* /*work*/) {}

  // The algorithm the layer chose at setup for its shapes, where it has a choice (Conv2D:
  // "shifted", "im2col", "pointwise"), shown by Model::profile_report; "" otherwise.
  virtual const char* algorithm() const { return ""; }

  // Layers that keep moving statistics of their inputs (BatchNorm): while averaging is on,
  // Mode::Train sets them to the plain average of the batch statistics seen since it was turned
  // on (PreciseBN: recompute_batch_norm_statistics). Returns false, and does nothing, for a
  // layer without such statistics.
  virtual bool set_statistics_averaging(bool /*on*/) { return false; }

  // Layers that normalise with batch statistics (BatchNorm): while `group` is set, Mode::Train
  // uses the statistics of the batch split over the group's processes (synchronised
  // BatchNorm; core/collective.hpp). Returns false, and does nothing, for other layers.
  virtual bool set_statistics_group(Collective* /*group*/) { return false; }

  // Number of trainable scalars (params()) and of saved non-trainable ones (state()), also for
  // a const layer: params() and state() only hand out pointers and change nothing, so asking
  // them through a const layer is safe.
  index_t param_count() const { return elements(const_cast<Layer*>(this)->params()); }
  index_t state_count() const { return elements(const_cast<Layer*>(this)->state()); }

 protected:
  static index_t elements(const std::vector<ParamRef<T>>& refs) {
    index_t n = 0;
    for (const auto& r : refs) n += r.value->size();
    return n;
  }

  // Throws unless `inputs` holds exactly `n` shapes.
  void expect_inputs(Span<const Shape> inputs, std::size_t n) const {
    if (inputs.size() != n) {
      throw ShapeError(std::string(type()) + ": expected " + std::to_string(n) + " input" +
                       (n == 1 ? "" : "s") + ", found " + std::to_string(inputs.size()));
    }
  }
  // Throws unless `s` has rank `rank`; `what` names the tensor for the message.
  void expect_rank(const Shape& s, int rank, const char* what = "input") const {
    if (s.rank() != rank) {
      throw ShapeError(std::string(type()) + ": expected a rank-" + std::to_string(rank) + " " +
                       what + ", found shape " + s.str() + " of rank " + std::to_string(s.rank()));
    }
  }
  // Throws unless the runtime input matches the planned shape in all but the batch dimension,
  // and its batch is at most the planned one.
  void expect_planned(const Shape& planned, const Shape& actual) const {
    bool ok = planned.rank() == actual.rank() && actual.rank() > 0 && actual[0] <= planned[0];
    for (int i = 1; ok && i < actual.rank(); ++i) ok = planned[i] == actual[i];
    if (!ok) {
      throw ShapeError(std::string(type()) + ": set up for inputs " + planned.str() +
                       " (any batch up to " + (planned.rank() ? std::to_string(planned[0]) : "0") +
                       "), found " + actual.str());
    }
  }
};

}  // namespace minires
