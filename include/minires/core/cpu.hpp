// Properties of the CPU the kernels size their blocks to, read once from the system. Blocking
// decisions use them; results never depend on them.
#pragma once

#include <unistd.h>

#include "minires/core/shape.hpp"

namespace minires {

namespace detail {

inline index_t cache_bytes(int name, index_t fallback) noexcept {
  const long v = sysconf(name);
  return v >= 4096 && v <= (long(1) << 30) ? index_t(v) : fallback;
}

}  // namespace detail

// Bytes of L2 cache per core (sysconf; 512 KiB, the smallest of the x86 cores we target, when
// the system does not say).
inline index_t l2_cache_bytes() noexcept {
#ifdef _SC_LEVEL2_CACHE_SIZE
  static const index_t bytes = detail::cache_bytes(_SC_LEVEL2_CACHE_SIZE, index_t(512) << 10);
  return bytes;
#else
  return index_t(512) << 10;
#endif
}

}  // namespace minires
