// How fp32 convolutions may multiply, process-wide (the idea of PyTorch's
// torch.set_float32_matmul_precision):
//   MatmulPrecision::Highest  fp32 products throughout: the default, and Keras' numerics
//   MatmulPrecision::BF16     products may round both operands to bfloat16 (8 significant bits)
//                             and sum them in fp32, where the CPU multiplies bfloat16 in hardware
//                             (Intel AMX, kernels/amx_gemm.hpp); fp32 elsewhere
// Layers read the setting when they are set up (like the thread count), so set it before a
// model is built or loaded. Results stay deterministic for a given setting.
#pragma once

#include <atomic>

namespace minires {

enum class MatmulPrecision { Highest, BF16 };

namespace detail {
inline std::atomic<MatmulPrecision>& matmul_precision_setting() noexcept {
  static std::atomic<MatmulPrecision> p{MatmulPrecision::Highest};
  return p;
}
}  // namespace detail

inline void set_matmul_precision(MatmulPrecision p) noexcept {
  detail::matmul_precision_setting().store(p);
}

inline MatmulPrecision matmul_precision() noexcept {
  return detail::matmul_precision_setting().load();
}

}  // namespace minires
