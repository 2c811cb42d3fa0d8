// Reading and writing IDX files, the format of MNIST and Fashion-MNIST, gzip-compressed or not.
//
//   u8 0, u8 0          the magic number's first two bytes
//   u8 type             element type: 0x08 unsigned byte (the only one read here), 0x09 signed
//                       byte, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64
//   u8 rank             number of dimensions: 3 for images (count, rows, cols), 1 for labels
//   u32 dims[rank]      big endian, each > 0
//   the elements        row-major, exactly the product of the dimensions
//
// A file is read plain, or, when it starts with gzip's magic bytes (1f 8b), inflated by zlib as
// exactly one gzip member. The readers validate everything: that the path is a regular file, the
// gzip stream (its data, its CRC-32 and length trailer, nothing after it), the magic number, the
// dimensions, and that the data holds exactly the bytes the header promises (no fewer, no
// more). A file that cannot be opened or read throws IoError naming it; bad contents throw
// FormatError naming the file, what was expected and what was found. Writing is atomic
// (write_file_atomically).
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "minires/core/error.hpp"
#include "minires/core/file.hpp"
#include "minires/core/shape.hpp"
#include "minires/core/span.hpp"

namespace minires {

// Images of one channel stored as bytes: `count` images of rows x cols, row-major.
struct IdxImages {
  index_t count = 0, rows = 0, cols = 0;
  std::vector<std::uint8_t> pixels;  // count * rows * cols bytes

  index_t image_size() const noexcept { return rows * cols; }
  const std::uint8_t* image(index_t i) const noexcept { return pixels.data() + i * image_size(); }
};

// Images with one class label each: an IDX image file and its label file.
struct LabelledImages {
  IdxImages images;
  std::vector<std::uint8_t> labels;  // images.count labels

  index_t size() const noexcept { return images.count; }
};

namespace detail {

// The largest payload an IDX header may describe (1 TiB): a guard against corrupt headers
// whose dimensions multiply to nonsense or overflow.
inline constexpr std::uint64_t idx_max_bytes = std::uint64_t(1) << 40;
inline constexpr unsigned idx_unsigned_byte = 0x08;

inline std::string idx_hex(std::uint32_t v, int digits) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%0*X", digits, static_cast<unsigned>(v));
  return buf;
}

inline const char* idx_type_name(unsigned code) {
  switch (code) {
    case 0x08:
      return "unsigned byte";
    case 0x09:
      return "signed byte";
    case 0x0B:
      return "16-bit integer";
    case 0x0C:
      return "32-bit integer";
    case 0x0D:
      return "32-bit float";
    case 0x0E:
      return "64-bit float";
    default:
      return "not an IDX type";
  }
}

// The bytes of an IDX file, plain or gzip-compressed, read strictly: a .gz file must be exactly
// one gzip member whose trailer (CRC-32 and length) zlib verifies, with nothing after it. The raw
// bytes come from a regular file (InputFile) or from memory (for tests and fuzzing). `prefix()`
// ("who 'name': ") starts every error message.
class IdxInput {
 public:
  // From a file: regular files only; IoError when it cannot be opened or read.
  IdxInput(const std::string& path, const char* who)
      : file_(std::make_unique<InputFile>(path, who)), prefix_(file_->prefix()) {
    start();
  }
  // From memory: `name` stands for the file in messages.
  IdxInput(const void* data, std::size_t n, const std::string& name, const char* who)
      : mem_(static_cast<const unsigned char*>(data)),
        mem_left_(n),
        prefix_(std::string(who) + " '" + name + "': ") {
    start();
  }
  ~IdxInput() {
    if (gzip_) inflateEnd(&zs_);
  }
  IdxInput(const IdxInput&) = delete;
  IdxInput& operator=(const IdxInput&) = delete;

  bool gzip() const noexcept { return gzip_; }

  // Reads up to n bytes of the (decompressed) data into dst and returns how many were read:
  // fewer than n only at the end of the data, or where a gzip stream is cut short (cut_short()).
  // A damaged gzip stream throws FormatError: corrupt data, a failed CRC-32 or length check, or
  // bytes after its end.
  std::size_t read(void* dst, std::size_t n) {
    auto* out = static_cast<unsigned char*>(dst);
    if (!gzip_) {
      const std::size_t from_buffer = std::min(n, in_len_ - in_pos_);
      std::memcpy(out, in_.data() + in_pos_, from_buffer);
      in_pos_ += from_buffer;
      return from_buffer + raw_read(out + from_buffer, n - from_buffer);
    }
    std::size_t got = 0;
    while (got < n && !ended_ && !cut_short_) {
      if (zs_.avail_in == 0) {
        in_len_ = raw_read(in_.data(), in_.size());
        zs_.next_in = in_.data();
        zs_.avail_in = static_cast<uInt>(in_len_);
        if (in_len_ == 0) {
          cut_short_ = true;
          break;
        }
      }
      const std::size_t want = std::min<std::size_t>(n - got, 1u << 30);
      zs_.next_out = out + got;
      zs_.avail_out = static_cast<uInt>(want);
      const int r = inflate(&zs_, Z_NO_FLUSH);
      got += want - zs_.avail_out;
      if (r == Z_STREAM_END) {
        ended_ = true;
        check_nothing_after_stream();
      } else if (r == Z_NEED_DICT || r == Z_DATA_ERROR) {
        throw FormatError(prefix_ + "corrupt gzip data: " +
                          (zs_.msg != nullptr ? zs_.msg : "invalid deflate stream"));
      } else if (r == Z_MEM_ERROR) {
        throw IoError(prefix_ + "zlib could not allocate memory");
      } else if (r != Z_OK && r != Z_BUF_ERROR) {
        throw FormatError(prefix_ + "gzip error " + std::to_string(r));
      }
    }
    return got;
  }

  // True when the file ended inside the gzip stream: its end, with the CRC-32 and length
  // trailer that verify the data, is missing.
  bool cut_short() const noexcept { return cut_short_; }
  // Why the data ended early, for "truncated" messages: empty for a plain end of file.
  std::string early_end_note() const {
    return cut_short_ ? " (the gzip stream ends early: its end, with the CRC-32 and length "
                        "trailer, is missing)"
                      : "";
  }

  const std::string& prefix() const noexcept { return prefix_; }

 private:
  std::size_t raw_read(unsigned char* dst, std::size_t n) {
    if (file_) return file_->read(dst, n);
    const std::size_t k = std::min(n, mem_left_);
    if (k > 0) std::memcpy(dst, mem_, k);
    mem_ += k;
    mem_left_ -= k;
    return k;
  }

  // Reads the first block and decides: gzip (1f 8b) or plain.
  void start() {
    in_.resize(std::size_t(1) << 17);
    in_len_ = raw_read(in_.data(), in_.size());
    gzip_ = in_len_ >= 2 && in_[0] == 0x1f && in_[1] == 0x8b;
    if (!gzip_) return;
    zs_ = z_stream{};
    if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) {  // 16: gzip only, with its trailer checked
      gzip_ = false;
      throw IoError(prefix_ + "zlib could not allocate its state");
    }
    zs_.next_in = in_.data();
    zs_.avail_in = static_cast<uInt>(in_len_);
  }

  void check_nothing_after_stream() {
    std::uint64_t extra = zs_.avail_in;
    for (std::size_t k; (k = raw_read(in_.data(), in_.size())) > 0;) extra += k;
    zs_.avail_in = 0;
    if (extra > 0) {
      throw FormatError(prefix_ + "unexpected data after the end of the gzip stream: expected " +
                        "the file to end, found " + std::to_string(extra) + " more bytes");
    }
  }

  std::unique_ptr<InputFile> file_;
  const unsigned char* mem_ = nullptr;
  std::size_t mem_left_ = 0;
  std::string prefix_;
  std::vector<unsigned char> in_;
  std::size_t in_len_ = 0, in_pos_ = 0;  // plain files: the first block, read from in_pos_
  bool gzip_ = false, ended_ = false, cut_short_ = false;
  z_stream zs_{};
};

// The dimensions and elements of an unsigned-byte IDX file of the given rank.
struct IdxArray {
  std::vector<index_t> dims;
  std::vector<std::uint8_t> data;
};

// A big-endian u32.
inline std::uint32_t idx_be32(const unsigned char* b) noexcept {
  return std::uint32_t(b[0]) << 24 | std::uint32_t(b[1]) << 16 | std::uint32_t(b[2]) << 8 | b[3];
}

// Reads an unsigned-byte IDX file of rank 1 to 3; dim_names name the dimensions in messages.
inline IdxArray read_idx(IdxInput& in, int rank, const char* const* dim_names) {
  if (rank < 1 || rank > 3) {
    throw ValueError(in.prefix() + "expected a rank in [1, 3], found " + std::to_string(rank));
  }
  const std::size_t header_bytes = 4 + 4 * static_cast<std::size_t>(rank);
  unsigned char header[4 + 4 * 3];
  std::size_t got = in.read(header, 4);
  const std::uint32_t expected_magic = idx_unsigned_byte << 8 | static_cast<unsigned>(rank);
  const std::string expected = "expected the magic number " + idx_hex(expected_magic, 8) +
                               " (unsigned bytes, " + std::to_string(rank) + " dimension" +
                               (rank == 1 ? "" : "s") + ")";
  if (got < 4) {
    throw FormatError(in.prefix() + "the file is truncated: " + expected + ", found only " +
                      std::to_string(got) + " bytes");
  }
  const std::uint32_t magic = idx_be32(header);
  if (header[0] != 0 || header[1] != 0) {
    throw FormatError(in.prefix() + "not an IDX file: " + expected + ", found " +
                      idx_hex(magic, 8));
  }
  if (header[2] != idx_unsigned_byte) {
    throw FormatError(in.prefix() + "wrong element type: " + expected + ", found " +
                      idx_hex(magic, 8) + " (type code " + idx_hex(header[2], 2) + ", " +
                      idx_type_name(header[2]) + ")");
  }
  if (header[3] != rank) {
    throw FormatError(in.prefix() + "wrong number of dimensions: " + expected + ", found " +
                      idx_hex(magic, 8) + " (" + std::to_string(header[3]) + " dimensions)");
  }
  got += in.read(header + 4, header_bytes - 4);
  if (got < header_bytes) {
    throw FormatError(in.prefix() + "the file is truncated: expected a " +
                      std::to_string(header_bytes) + "-byte header, found " + std::to_string(got) +
                      " bytes");
  }

  IdxArray a;
  std::uint64_t total = 1;
  std::string dims_text;
  for (int i = 0; i < rank; ++i) {
    const std::uint32_t d = idx_be32(header + 4 + 4 * i);
    if (d == 0) {
      throw FormatError(in.prefix() + "dimension " + std::to_string(i) + " (" + dim_names[i] +
                        ") is 0; expected a positive size");
    }
    dims_text += (i ? " x " : "") + std::to_string(d);
    if (d > idx_max_bytes / total) {  // total * d > limit, without overflowing
      throw FormatError(in.prefix() + "the dimensions " + dims_text + (i + 1 < rank ? " ..." : "") +
                        " describe more than the " + std::to_string(idx_max_bytes) +
                        "-byte limit of an IDX file");
    }
    total *= d;
    a.dims.push_back(static_cast<index_t>(d));
  }

  // Grow the buffer as the data arrives rather than trusting the header with one allocation: a
  // corrupt header then costs a truncation error, not an out-of-memory.
  const auto expected_bytes = static_cast<std::size_t>(total);
  std::size_t have = 0;
  while (have < expected_bytes) {
    a.data.resize(std::min(expected_bytes, std::max<std::size_t>(2 * have, std::size_t(1) << 20)));
    const std::size_t want = a.data.size() - have;
    const std::size_t n = in.read(a.data.data() + have, want);
    have += n;
    if (n < want) {
      throw FormatError(in.prefix() + "the file is truncated: the header (" + dims_text +
                        ") promises " + std::to_string(expected_bytes) +
                        " bytes of data after it, found " + std::to_string(have) +
                        in.early_end_note());
    }
  }
  unsigned char extra[4096];
  std::size_t trailing = 0;
  for (std::size_t n; (n = in.read(extra, sizeof extra)) > 0;) trailing += n;
  if (trailing > 0) {
    throw FormatError(in.prefix() + "unexpected data after the end: the header (" + dims_text +
                      ") promises " + std::to_string(expected_bytes) + " bytes of data, found " +
                      std::to_string(trailing) + " more");
  }
  if (in.cut_short()) {
    throw FormatError(in.prefix() + "the gzip stream ends early: after the " +
                      std::to_string(expected_bytes) +
                      " bytes of data the header promises, expected the end of the stream with "
                      "its CRC-32 and length trailer, found the end of the file");
  }
  return a;
}

inline IdxArray read_idx(const std::string& path, const char* who, int rank,
                         const char* const* dim_names) {
  IdxInput in(path, who);
  return read_idx(in, rank, dim_names);
}

// The gzip member (RFC 1952, one member with its CRC-32 and length trailer) holding `bytes`.
inline std::vector<unsigned char> gzip_compress(const std::vector<unsigned char>& bytes,
                                                const std::string& prefix) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    throw IoError(prefix + "zlib could not allocate its state");
  }
  std::vector<unsigned char> out(deflateBound(&zs, static_cast<uLong>(bytes.size())) + 64);
  zs.next_in = const_cast<unsigned char*>(bytes.data());
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  const int r = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  if (r != Z_STREAM_END)
    throw IoError(prefix + "zlib failed to compress (" + std::to_string(r) + ")");
  return out;
}

// Writes an unsigned-byte IDX file, gzip-compressed or plain, atomically
// (write_file_atomically): on failure the old file is unchanged and IoError thrown.
inline void write_idx(const std::string& path, const char* who, const std::vector<index_t>& dims,
                      const std::uint8_t* data, std::size_t n, bool gzip) {
  std::uint64_t total = 1;
  for (index_t d : dims) {
    if (d <= 0 || static_cast<std::uint64_t>(d) > UINT32_MAX) {
      throw ValueError(std::string(who) + " '" + path +
                       "': expected dimensions in [1, 2^32), found " + std::to_string(d));
    }
    total *= static_cast<std::uint64_t>(d);
  }
  if (total != n) {
    throw ValueError(std::string(who) + " '" + path + "': the dimensions describe " +
                     std::to_string(total) + " bytes, found " + std::to_string(n));
  }
  if (n > UINT32_MAX / 2) {
    throw ValueError(std::string(who) + " '" + path + "': expected at most 2 GiB of data, found " +
                     std::to_string(n) + " bytes");
  }
  std::vector<unsigned char> bytes = {0, 0, idx_unsigned_byte,
                                      static_cast<unsigned char>(dims.size())};
  for (index_t d : dims) {
    const auto u = static_cast<std::uint32_t>(d);
    for (int shift = 24; shift >= 0; shift -= 8) {
      bytes.push_back(static_cast<unsigned char>(u >> shift));
    }
  }
  bytes.insert(bytes.end(), data, data + n);
  if (gzip) bytes = gzip_compress(bytes, std::string(who) + " '" + path + "': ");
  write_file_atomically(path, bytes.data(), bytes.size(), who);
}

// Position of the first label >= num_classes; labels.size() when there is none.
inline std::size_t first_label_outside(const std::vector<std::uint8_t>& labels,
                                       index_t num_classes) noexcept {
  return static_cast<std::size_t>(
      std::find_if(labels.begin(), labels.end(),
                   [num_classes](std::uint8_t l) { return l >= num_classes; }) -
      labels.begin());
}

}  // namespace detail

// Reads an IDX file of unsigned-byte images (magic 0x00000803: count x rows x cols).
inline IdxImages read_idx_images(const std::string& path) {
  static const char* const names[] = {"image count", "rows", "columns"};
  detail::IdxArray a = detail::read_idx(path, "read_idx_images", 3, names);
  IdxImages im;
  im.count = a.dims[0];
  im.rows = a.dims[1];
  im.cols = a.dims[2];
  im.pixels = std::move(a.data);
  return im;
}

// Reads an IDX file of unsigned-byte labels (magic 0x00000801: one dimension).
inline std::vector<std::uint8_t> read_idx_labels(const std::string& path) {
  static const char* const names[] = {"label count"};
  return detail::read_idx(path, "read_idx_labels", 1, names).data;
}

// Reads an image file and its label file, checking that there is one label per image and that
// every label is in [0, num_classes) (FormatError naming the label file, position and value).
inline LabelledImages read_idx_labelled(const std::string& images_path,
                                        const std::string& labels_path, index_t num_classes) {
  if (num_classes < 1 || num_classes > 256) {
    throw ValueError("read_idx_labelled: expected num_classes in [1, 256], found " +
                     std::to_string(num_classes));
  }
  LabelledImages d;
  d.images = read_idx_images(images_path);
  d.labels = read_idx_labels(labels_path);
  if (static_cast<index_t>(d.labels.size()) != d.images.count) {
    throw FormatError("read_idx_labelled: expected one label per image: '" + images_path +
                      "' holds " + std::to_string(d.images.count) + " images, '" + labels_path +
                      "' holds " + std::to_string(d.labels.size()) + " labels");
  }
  const std::size_t i = detail::first_label_outside(d.labels, num_classes);
  if (i < d.labels.size()) {
    throw FormatError("read_idx_labelled '" + labels_path + "': label " +
                      std::to_string(d.labels[i]) + " at position " + std::to_string(i) +
                      " is outside [0, " + std::to_string(num_classes) + ")");
  }
  return d;
}

// Writes images as an IDX file (gzip-compressed when `gzip`). Throws ValueError when the pixel
// count does not match the dimensions, IoError when the file cannot be written.
inline void write_idx_images(const std::string& path, const IdxImages& images, bool gzip) {
  detail::write_idx(path, "write_idx_images", {images.count, images.rows, images.cols},
                    images.pixels.data(), images.pixels.size(), gzip);
}

// Writes labels as an IDX file (gzip-compressed when `gzip`).
inline void write_idx_labels(const std::string& path, Span<const std::uint8_t> labels, bool gzip) {
  detail::write_idx(path, "write_idx_labels", {static_cast<index_t>(labels.size())}, labels.data(),
                    labels.size(), gzip);
}

}  // namespace minires
