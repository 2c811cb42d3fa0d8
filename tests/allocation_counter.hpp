// Counts every heap allocation of the test program that links allocation_counter.cpp, which
// replaces the global operator new (in the "training" test program only).
#pragma once

#include <atomic>

namespace minires::test {

// Heap allocations so far.
extern std::atomic<long long> g_allocations;

}  // namespace minires::test
