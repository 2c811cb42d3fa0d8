// minires: a header-only C++17 library for training residual networks on multicore CPUs.
// Including this header brings in the whole public API; each header is also usable alone.
#pragma once

#include "minires/version.hpp"

#include "minires/core/error.hpp"
#include "minires/core/parallel.hpp"
#include "minires/core/rng.hpp"
#include "minires/core/shape.hpp"
#include "minires/core/span.hpp"
#include "minires/core/tensor.hpp"

#include "minires/kernels/elementwise.hpp"
#include "minires/kernels/gemm.hpp"
#include "minires/kernels/im2col.hpp"
