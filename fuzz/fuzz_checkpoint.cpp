// libFuzzer target: the checkpoint parser (io/checkpoint.hpp) on arbitrary bytes. Each input is
// parsed as it is and, so that mutations get past the checksum, once more with its last four
// bytes replaced by the CRC-32 of the rest. Every input must either parse or throw a
// minires::Error; anything else is a bug.
#include <minires/io/checkpoint.hpp>

#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    minires::detail::parse_checkpoint(data, size, "input");
  } catch (const minires::Error&) {
  }
  if (size < 4) return 0;
  std::vector<unsigned char> fixed(data, data + size);
  const auto crc = static_cast<std::uint32_t>(::crc32(0L, fixed.data(), uInt(size - 4)));
  std::memcpy(fixed.data() + size - 4, &crc, 4);
  try {
    const auto file = minires::detail::parse_checkpoint(fixed.data(), fixed.size(), "input");
    for (const auto& [name, t] : file.tensors)
      if (t.shape.size() != static_cast<minires::index_t>(t.values.size())) __builtin_trap();
  } catch (const minires::Error&) {
  }
  return 0;
}
