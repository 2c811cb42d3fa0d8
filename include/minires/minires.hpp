// minires: a header-only C++17 library for training residual networks on multicore CPUs.
// Including this header brings in the whole library, level by level (docs/architecture.md); each
// header is also usable alone. The Fashion-MNIST models and loader are not part of it: include
// <minires/models/fashion_mnist.hpp> for them.
#pragma once

#include "minires/version.hpp"

#include "minires/core/error.hpp"
#include "minires/core/file.hpp"
#include "minires/core/parallel.hpp"
#include "minires/core/precision.hpp"
#include "minires/core/rng.hpp"
#include "minires/core/shape.hpp"
#include "minires/core/span.hpp"
#include "minires/core/tensor.hpp"

#include "minires/kernels/elementwise.hpp"
#include "minires/kernels/gemm.hpp"
#include "minires/kernels/im2col.hpp"

#include "minires/data/dataset.hpp"
#include "minires/data/idx.hpp"
#include "minires/data/image_dataset.hpp"
#include "minires/data/image_ops.hpp"

#include "minires/init/initializers.hpp"

#include "minires/layers/add.hpp"
#include "minires/layers/avg_pool2d.hpp"
#include "minires/layers/batch_norm.hpp"
#include "minires/layers/conv2d.hpp"
#include "minires/layers/dense.hpp"
#include "minires/layers/flatten.hpp"
#include "minires/layers/global_avg_pool2d.hpp"
#include "minires/layers/layer.hpp"
#include "minires/layers/max_pool2d.hpp"
#include "minires/layers/relu.hpp"

#include "minires/loss/loss.hpp"
#include "minires/loss/mean_squared_error.hpp"
#include "minires/loss/softmax_cross_entropy.hpp"

#include "minires/graph/model.hpp"
#include "minires/graph/residual.hpp"

#include "minires/optim/adam.hpp"
#include "minires/optim/optimizer.hpp"
#include "minires/optim/rmsprop.hpp"
#include "minires/optim/schedule.hpp"
#include "minires/optim/sgd.hpp"

#include "minires/io/checkpoint.hpp"
#include "minires/io/load_model.hpp"

#include "minires/train/callbacks.hpp"
#include "minires/train/distillation.hpp"
#include "minires/train/evaluate.hpp"
#include "minires/train/fit.hpp"
#include "minires/train/precise_bn.hpp"
