// Replaces the global operator new to count every heap allocation of the test program
// (allocation_counter.hpp). Linked into one test program; it replaces AddressSanitizer's own
// new and delete there, which then checks these allocations as malloc and free.
//
// Every plain and nothrow form of new and delete is replaced, so that whatever form a library
// allocates with (Catch2 uses new(std::nothrow)), its delete is the matching replacement; a
// partial set pairs the runtime's new with this free(), which AddressSanitizer reports as an
// alloc-dealloc mismatch.
#include "allocation_counter.hpp"

#include <cstdlib>
#include <new>

// GCC cannot see that these replacements pair malloc with free, hence the pragma.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace minires::test {

std::atomic<long long> g_allocations{0};

namespace {

void* counted_malloc(std::size_t n) noexcept {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n == 0 ? 1 : n);
}

}  // namespace
}  // namespace minires::test

void* operator new(std::size_t n) {
  if (void* p = minires::test::counted_malloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  return operator new(n);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return minires::test::counted_malloc(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return minires::test::counted_malloc(n);
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
