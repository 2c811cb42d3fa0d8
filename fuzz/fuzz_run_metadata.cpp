// libFuzzer target: what `fmnist train --resume` and `fmnist evaluate` read from a checkpoint's
// metadata (examples/fmnist/config.hpp: the run's configuration and history as JSON, the epoch
// and best figures as numbers). The input is a sequence of key NUL value NUL pairs. Every input
// must either parse or throw a minires::Error (never a JSON library or standard library
// exception); anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <string>

#include "../examples/fmnist/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  minires::Metadata meta;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    const std::size_t k_end = bytes.find('\0', pos);
    if (k_end == std::string::npos) break;
    std::size_t v_end = bytes.find('\0', k_end + 1);
    if (v_end == std::string::npos) v_end = bytes.size();
    meta[bytes.substr(pos, k_end - pos)] = bytes.substr(k_end + 1, v_end - k_end - 1);
    pos = v_end + 1;
  }
  for (bool training_state : {true, false}) {
    try {
      const fmnist::StoredRun run = fmnist::stored_run(meta, "input", training_state);
      run.config.validate("");  // a parsed configuration is always a valid one
      if (training_state && static_cast<minires::index_t>(run.history.size()) != run.epoch)
        __builtin_trap();
    } catch (const minires::Error&) {
    }
  }
  return 0;
}
