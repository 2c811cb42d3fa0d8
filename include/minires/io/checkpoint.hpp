// Saving and loading models (and, for resuming, optimizer state) in a versioned binary format.
//
//   "MINIRES\x1a"        8-byte magic
//   u32 version          format version (1)
//   str architecture     Model::architecture(): loading checks the model matches it
//   u32 n_meta           then n_meta pairs (str key, str value): epoch, seed, config, ...
//   u32 n_tensors        then per tensor: str name, u8 bytes per element (4 float, 8 double),
//                        u8 rank, i64 dims[rank], the elements (little endian)
//   u32 crc32            zlib's CRC-32 of every byte before it
// where str is a u32 length and the bytes. Writing is atomic (write_file_atomically: a
// temporary file in the same directory, flushed and synced, then renamed over the target), so
// an interrupted save never corrupts an existing file. Loading reads regular files only, checks
// the magic number and version before reading the rest, and validates everything (size,
// checksum, every declared length against the file, architecture, every name, shape and value)
// before it changes the model, so a bad file leaves the model as it was.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/core/file.hpp"
#include "minires/core/tensor.hpp"
#include "minires/graph/model.hpp"
#include "minires/optim/optimizer.hpp"

namespace minires {

using Metadata = std::map<std::string, std::string>;

namespace detail {

inline constexpr char checkpoint_magic[8] = {'M', 'I', 'N', 'I', 'R', 'E', 'S', '\x1a'};
inline constexpr std::uint32_t checkpoint_version = 1;

// Files written before the pooling layers reported Keras' class names hold the short aliases
// (MaxPool2D, AvgPool2D, GlobalAvgPool2D) as types and the default node names made from them
// (max_pool2d_1, ...). Reading such a file translates both, so those checkpoints still load.
// Each line of an architecture description is "name type config <- inputs shape", the last
// "output name"; names, types and shapes are separated by single spaces.
inline std::string with_current_type_names(const std::string& architecture) {
  static const std::pair<const char*, const char*> types[] = {
      {"MaxPool2D", "MaxPooling2D"},
      {"AvgPool2D", "AveragePooling2D"},
      {"GlobalAvgPool2D", "GlobalAveragePooling2D"}};
  static const std::pair<const char*, const char*> default_names[] = {
      {"max_pool2d_", "max_pooling2d_"},
      {"avg_pool2d_", "average_pooling2d_"},
      {"global_avg_pool2d_", "global_average_pooling2d_"}};
  std::vector<std::string> lines;
  bool old_types = false;
  for (std::size_t start = 0; start < architecture.size();) {
    std::size_t end = architecture.find('\n', start);
    end = end == std::string::npos ? architecture.size() : end + 1;
    std::string line = architecture.substr(start, end - start);
    const std::size_t at = line.find(' ');
    const std::size_t type_end = at == std::string::npos ? at : line.find(' ', at + 1);
    if (type_end != std::string::npos) {
      const std::string type = line.substr(at + 1, type_end - at - 1);
      for (const auto& [old_name, name] : types) {
        if (type == old_name) {
          line.replace(at + 1, type.size(), name);
          old_types = true;
        }
      }
    }
    lines.push_back(line);
    start = end;
  }
  std::string out;
  for (const std::string& line : lines) {
    if (!old_types) {
      out += line;
      continue;
    }
    // an old file: its default node names follow the old type names too
    for (std::size_t start = 0; start <= line.size();) {
      std::size_t end = line.find_first_of(" \n", start);
      if (end == std::string::npos) end = line.size();
      std::string token = line.substr(start, end - start);
      for (const auto& [old_prefix, prefix] : default_names) {
        const std::size_t n = std::char_traits<char>::length(old_prefix);
        if (token.size() > n && token.compare(0, n, old_prefix) == 0 &&
            token.find_first_not_of("0123456789", n) == std::string::npos) {
          token = prefix + token.substr(n);
        }
      }
      out += token;
      if (end < line.size()) out += line[end];
      start = end + 1;
    }
  }
  return out;
}

class ByteWriter {
 public:
  template <class U>
  void pod(U v) {
    const auto* p = reinterpret_cast<const unsigned char*>(&v);
    bytes_.insert(bytes_.end(), p, p + sizeof(U));
  }
  void raw(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    bytes_.insert(bytes_.end(), p, p + n);
  }
  void str(const std::string& s) {
    pod(static_cast<std::uint32_t>(s.size()));
    raw(s.data(), s.size());
  }
  std::vector<unsigned char>& bytes() { return bytes_; }

 private:
  std::vector<unsigned char> bytes_;
};

class ByteReader {
 public:
  ByteReader(const unsigned char* p, std::size_t n, const std::string& path)
      : p_(p), n_(n), path_(path) {}
  template <class U>
  U pod(const char* what) {
    U v;
    std::memcpy(&v, take(sizeof(U), what), sizeof(U));
    return v;
  }
  const unsigned char* take(std::size_t n, const char* what) {
    if (n > n_ - pos_) {
      throw FormatError("load '" + path_ + "': the file is truncated: expected " +
                        std::to_string(n) + " more bytes for the " + what + " at offset " +
                        std::to_string(pos_) + ", found " + std::to_string(n_ - pos_));
    }
    const unsigned char* r = p_ + pos_;
    pos_ += n;
    return r;
  }
  std::string str(const char* what) {
    const auto len = pod<std::uint32_t>(what);
    const auto* s = take(len, what);
    return std::string(reinterpret_cast<const char*>(s), len);
  }
  std::size_t remaining() const { return n_ - pos_; }

 private:
  const unsigned char* p_;
  std::size_t n_, pos_ = 0;
  const std::string& path_;
};

// A tensor as stored in a file (values kept in double so float and double files load alike).
struct StoredTensor {
  int elem_bytes = 4;
  Shape shape;
  std::vector<double> values;
};

struct CheckpointFile {
  std::string architecture;
  Metadata metadata;
  std::map<std::string, StoredTensor> tensors;
};

template <class T>
void write_tensor(ByteWriter& w, const std::string& name, const Tensor<T>& t) {
  w.str(name);
  w.pod(static_cast<std::uint8_t>(sizeof(T)));
  w.pod(static_cast<std::uint8_t>(t.rank()));
  for (int i = 0; i < t.rank(); ++i) w.pod(static_cast<std::int64_t>(t.dim(i)));
  w.raw(t.data(), static_cast<std::size_t>(t.size()) * sizeof(T));
}

// Parses a checkpoint held in memory; `path` names it in messages. Checks the size, magic,
// version and checksum before anything else, then every declared length against what is left.
inline CheckpointFile parse_checkpoint(const unsigned char* data, std::size_t size,
                                       const std::string& path) {
  const std::size_t min_size = sizeof checkpoint_magic + 4 + 4;
  if (size < min_size) {
    throw FormatError("load '" + path + "': not a minires model: expected at least " +
                      std::to_string(min_size) + " bytes, found " + std::to_string(size));
  }
  if (std::memcmp(data, checkpoint_magic, sizeof checkpoint_magic) != 0) {
    throw FormatError("load '" + path + "': not a minires model (bad magic number)");
  }
  ByteReader r(data, size - 4, path);
  r.take(sizeof checkpoint_magic, "magic");
  const auto version = r.pod<std::uint32_t>("version");
  if (version != checkpoint_version) {
    throw FormatError("load '" + path + "': expected format version " +
                      std::to_string(checkpoint_version) + ", found " + std::to_string(version));
  }
  std::uint32_t stored_crc;
  std::memcpy(&stored_crc, data + size - 4, 4);
  auto crc = ::crc32(0L, Z_NULL, 0);
  for (std::size_t done = 0; done < size - 4;) {  // crc32 takes at most 4 GiB a call
    const std::size_t chunk = std::min<std::size_t>(size - 4 - done, std::size_t(1) << 30);
    crc = ::crc32(crc, data + done, static_cast<uInt>(chunk));
    done += chunk;
  }
  if (static_cast<std::uint32_t>(crc) != stored_crc) {
    throw FormatError("load '" + path + "': checksum mismatch (the file is corrupt or truncated)");
  }
  CheckpointFile file;
  file.architecture = with_current_type_names(r.str("architecture"));
  const auto n_meta = r.pod<std::uint32_t>("metadata count");
  for (std::uint32_t i = 0; i < n_meta; ++i) {
    std::string k = r.str("metadata key");
    file.metadata[k] = r.str("metadata value");
  }
  const auto n_tensors = r.pod<std::uint32_t>("tensor count");
  for (std::uint32_t i = 0; i < n_tensors; ++i) {
    const std::string name = r.str("tensor name");
    StoredTensor t;
    t.elem_bytes = r.pod<std::uint8_t>("element size");
    const int rank = r.pod<std::uint8_t>("rank");
    if ((t.elem_bytes != 4 && t.elem_bytes != 8) || rank > Shape::max_rank) {
      throw FormatError("load '" + path + "': tensor '" + name +
                        "' has an invalid header (element size " + std::to_string(t.elem_bytes) +
                        ", rank " + std::to_string(rank) + ")");
    }
    index_t dims[Shape::max_rank];
    index_t count = 1;
    for (int d = 0; d < rank; ++d) {
      dims[d] = static_cast<index_t>(r.pod<std::int64_t>("dimension"));
      if (dims[d] < 0 || (dims[d] > 0 && count > static_cast<index_t>(r.remaining()) / dims[d])) {
        throw FormatError("load '" + path + "': tensor '" + name + "' has an invalid dimension " +
                          std::to_string(dims[d]));
      }
      count *= dims[d];
    }
    t.shape = Shape::from(dims, rank);
    const auto* values = r.take(
        static_cast<std::size_t>(count) * static_cast<std::size_t>(t.elem_bytes), "tensor data");
    t.values.resize(static_cast<std::size_t>(count));
    for (index_t k = 0; k < count; ++k) {
      if (t.elem_bytes == 4) {
        float v;
        std::memcpy(&v, values + k * 4, 4);
        t.values[static_cast<std::size_t>(k)] = v;
      } else {
        std::memcpy(&t.values[static_cast<std::size_t>(k)], values + k * 8, 8);
      }
    }
    if (!file.tensors.emplace(name, std::move(t)).second) {
      throw FormatError("load '" + path + "': tensor '" + name + "' appears twice");
    }
  }
  if (r.remaining() != 0) {
    throw FormatError("load '" + path + "': " + std::to_string(r.remaining()) +
                      " unexpected bytes after the last tensor");
  }
  return file;
}

// Reads a checkpoint file: a regular file only (IoError otherwise), whose magic number and
// version are checked before the rest is read; then exactly the size the file has is read.
inline CheckpointFile read_checkpoint(const std::string& path) {
  InputFile in(path, "load");
  const std::uint64_t size = in.size();
  const std::size_t head = sizeof checkpoint_magic + 4;
  std::vector<unsigned char> bytes(static_cast<std::size_t>(std::min<std::uint64_t>(size, head)));
  if (in.read(bytes.data(), bytes.size()) != bytes.size()) {
    throw FormatError("load '" + path + "': the file shrank while it was read");
  }
  if (bytes.size() < head ||
      std::memcmp(bytes.data(), checkpoint_magic, sizeof checkpoint_magic) != 0) {
    return parse_checkpoint(bytes.data(), bytes.size(), path);  // says what is wrong
  }
  std::uint32_t version;
  std::memcpy(&version, bytes.data() + sizeof checkpoint_magic, 4);
  if (version != checkpoint_version) {
    throw FormatError("load '" + path + "': expected format version " +
                      std::to_string(checkpoint_version) + ", found " + std::to_string(version));
  }
  if (size > std::numeric_limits<std::size_t>::max() / 2) {
    throw FormatError("load '" + path + "': the file is too large (" + std::to_string(size) +
                      " bytes)");
  }
  try {
    bytes.resize(static_cast<std::size_t>(size));
  } catch (const std::bad_alloc&) {
    throw IoError("load '" + path + "': cannot allocate memory for the file's " +
                  std::to_string(size) + " bytes");
  }
  if (in.read(bytes.data() + head, bytes.size() - head) != bytes.size() - head) {
    throw FormatError("load '" + path + "': the file shrank while it was read");
  }
  return parse_checkpoint(bytes.data(), bytes.size(), path);
}

// First line where two architecture descriptions differ, for the error message.
inline std::string first_difference(const std::string& a, const std::string& b) {
  std::size_t pa = 0, pb = 0;
  while (pa < a.size() || pb < b.size()) {
    const std::size_t ea = std::min(a.find('\n', pa), a.size());
    const std::size_t eb = std::min(b.find('\n', pb), b.size());
    const std::string la = a.substr(pa, ea - pa), lb = b.substr(pb, eb - pb);
    if (la != lb) return "expected '" + la + "', found '" + lb + "'";
    pa = ea + 1;
    pb = eb + 1;
  }
  return "";
}

// Checks that every tensor in `targets` is in the file with the same shape and finite values,
// then copies them. Nothing is written unless everything checks out.
template <class T>
void assign_tensors(const CheckpointFile& file, const std::vector<ParamRef<T>>& targets,
                    const std::string& path) {
  for (const auto& p : targets) {
    auto it = file.tensors.find(p.name);
    if (it == file.tensors.end()) {
      throw FormatError("load '" + path + "': the file has no tensor '" + p.name + "'");
    }
    if (it->second.shape != p.value->shape()) {
      throw FormatError("load '" + path + "': tensor '" + p.name + "' has shape " +
                        it->second.shape.str() + ", the model expects " + p.value->shape().str());
    }
    for (double v : it->second.values) {
      if (!std::isfinite(v)) {
        throw FormatError("load '" + path + "': tensor '" + p.name + "' holds a non-finite value");
      }
    }
  }
  for (const auto& p : targets) {
    const auto& values = file.tensors.at(p.name).values;
    for (index_t k = 0; k < p.value->size(); ++k)
      (*p.value)[k] = static_cast<T>(values[static_cast<std::size_t>(k)]);
  }
}

template <class T>
std::vector<ParamRef<T>> model_tensors(Model<T>& model) {
  auto all = model.params();
  for (auto& s : model.state()) all.push_back(s);
  return all;
}

template <class T>
std::vector<ParamRef<T>> optimizer_tensors(Optimizer<T>& opt) {
  auto all = opt.state();
  for (auto& s : all) s.name = "optimizer/" + s.name;
  return all;
}

}  // namespace detail

// Writes the model's parameters and state (and the optimizer's, when given) to `path`.
template <class T>
void save(Model<T>& model, const std::string& path, const Metadata& metadata = {},
          Optimizer<T>* optimizer = nullptr) {
  model.plan(1);  // parameters exist from the first plan on
  detail::ByteWriter w;
  w.raw(detail::checkpoint_magic, sizeof detail::checkpoint_magic);
  w.pod(detail::checkpoint_version);
  w.str(model.architecture());
  w.pod(static_cast<std::uint32_t>(metadata.size()));
  for (const auto& [k, v] : metadata) {
    w.str(k);
    w.str(v);
  }
  auto tensors = detail::model_tensors(model);
  if (optimizer != nullptr) {
    for (auto& t : detail::optimizer_tensors(*optimizer)) tensors.push_back(t);
  }
  w.pod(static_cast<std::uint32_t>(tensors.size()));
  for (const auto& t : tensors) detail::write_tensor(w, t.name, *t.value);
  const auto crc = static_cast<std::uint32_t>(
      ::crc32(0L, w.bytes().data(), static_cast<uInt>(w.bytes().size())));
  w.pod(crc);
  write_file_atomically(path, w.bytes().data(), w.bytes().size(), "save");
}

// Loads parameters and state saved by save() into `model`, which must have the same
// architecture; with `optimizer`, also its state (the file must hold it). Returns the metadata.
// Throws IoError / FormatError and leaves model and optimizer unchanged on any problem.
template <class T>
Metadata load(Model<T>& model, const std::string& path, Optimizer<T>* optimizer = nullptr) {
  const detail::CheckpointFile file = detail::read_checkpoint(path);
  model.plan(1);
  const std::string arch = model.architecture();
  if (file.architecture != arch) {
    throw FormatError("load '" + path + "': the file holds another architecture: " +
                      detail::first_difference(arch, file.architecture));
  }
  auto targets = detail::model_tensors(model);
  if (optimizer != nullptr) {
    for (auto& t : detail::optimizer_tensors(*optimizer)) targets.push_back(t);
  }
  detail::assign_tensors(file, targets, path);
  return file.metadata;
}

// Reads only the metadata and architecture of a saved model (e.g. to rebuild it first).
inline Metadata read_metadata(const std::string& path, std::string* architecture = nullptr) {
  detail::CheckpointFile file = detail::read_checkpoint(path);
  if (architecture != nullptr) *architecture = file.architecture;
  return file.metadata;
}

}  // namespace minires
