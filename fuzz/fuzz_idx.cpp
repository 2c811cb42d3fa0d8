// libFuzzer target: the IDX reader (data/idx.hpp) on arbitrary bytes, plain or gzip, as an image
// file (rank 3) and as a label file (rank 1). Every input must either parse or throw a
// minires::Error; a crash, a sanitizer report, any other exception, a hang or an allocation
// beyond libFuzzer's memory limit is a bug.
#include <minires/data/idx.hpp>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const char* const image_dims[] = {"image count", "rows", "columns"};
  static const char* const label_dims[] = {"label count"};
  for (int rank : {3, 1}) {
    try {
      minires::detail::IdxInput in(data, size, "input", "fuzz_idx");
      const auto a = minires::detail::read_idx(in, rank, rank == 3 ? image_dims : label_dims);
      std::uint64_t total = 1;
      for (auto d : a.dims) total *= static_cast<std::uint64_t>(d);
      if (total != a.data.size()) __builtin_trap();  // parsed, but not what the header says
    } catch (const minires::Error&) {
    }
  }
  return 0;
}
