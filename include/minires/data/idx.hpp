// Reading and writing IDX files, the format of MNIST and Fashion-MNIST, gzip-compressed or not.
//
//   u8 0, u8 0          the magic number's first two bytes
//   u8 type             element type: 0x08 unsigned byte (the only one read here), 0x09 signed
//                       byte, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64
//   u8 rank             number of dimensions: 3 for images (count, rows, cols), 1 for labels
//   u32 dims[rank]      big endian, each > 0
//   the elements        row-major, exactly the product of the dimensions
//
// Files are read through zlib's gz functions, which read a .gz file and a plain one alike. The
// readers validate everything: the magic number, the dimensions, that the data holds exactly
// the bytes the header promises (no fewer, no more) and the gzip stream itself. A file that
// cannot be opened or read throws IoError naming it; bad contents throw FormatError naming the
// file, what was expected and what was found.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "minires/core/error.hpp"
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

// A file opened for reading through zlib (gzip or plain); closes on destruction. `who` and the
// path start every error message.
class GzInput {
 public:
  GzInput(const std::string& path, const char* who) : path_(path), who_(who) {
    errno = 0;
    f_ = gzopen(path.c_str(), "rb");
    if (f_ == nullptr) {
      throw IoError(prefix() + "cannot open the file: " +
                    (errno != 0 ? std::strerror(errno) : "zlib could not allocate its state"));
    }
    gzbuffer(f_, 1u << 17);
  }
  ~GzInput() { gzclose_r(f_); }
  GzInput(const GzInput&) = delete;
  GzInput& operator=(const GzInput&) = delete;

  // Reads up to n bytes into dst and returns how many were read: fewer than n only at the end of
  // the data. A corrupt gzip stream throws FormatError, a failing read IoError.
  std::size_t read(void* dst, std::size_t n) {
    auto* p = static_cast<unsigned char*>(dst);
    std::size_t got = 0;
    while (got < n) {
      const auto chunk = static_cast<unsigned>(std::min<std::size_t>(n - got, 1u << 30));
      const int r = gzread(f_, p + got, chunk);
      if (r < 0) throw_stream_error();
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    return got;
  }

  // Why the data ended early, for "truncated" messages: empty for a plain end of file.
  std::string early_end_note() const {
    int err = Z_OK;
    const char* msg = gzerror(f_, &err);
    if (err == Z_BUF_ERROR) return std::string(" (the gzip stream ends early: ") + msg + ")";
    return "";
  }

  std::string prefix() const { return std::string(who_) + " '" + path_ + "': "; }

 private:
  [[noreturn]] void throw_stream_error() const {
    int err = Z_OK;
    const char* msg = gzerror(f_, &err);
    if (err == Z_ERRNO) throw IoError(prefix() + "cannot read the file: " + std::strerror(errno));
    throw FormatError(prefix() + "corrupt gzip data: " + msg);
  }

  gzFile f_ = nullptr;
  std::string path_;
  const char* who_;
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
inline IdxArray read_idx(const std::string& path, const char* who, int rank,
                         const char* const* dim_names) {
  if (rank < 1 || rank > 3) {
    throw ValueError(std::string(who) + ": expected a rank in [1, 3], found " +
                     std::to_string(rank));
  }
  GzInput in(path, who);
  const std::size_t header_bytes = 4 + 4 * static_cast<std::size_t>(rank);
  unsigned char header[4 + 4 * 3];
  std::size_t got = in.read(header, 4);
  const std::uint32_t expected_magic = idx_unsigned_byte << 8 | static_cast<unsigned>(rank);
  const std::string expected = "expected the magic number " + idx_hex(expected_magic, 8) +
                               " (unsigned bytes, " + std::to_string(rank) + " dimension" +
                               (rank == 1 ? "" : "s") + ")";
  if (got < 4) {
    throw FormatError(in.prefix() + "the file is truncated: " + expected + ", found only " +
                      std::to_string(got) + " bytes" + in.early_end_note());
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
                      " bytes" + in.early_end_note());
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
    a.data.resize(std::min(expected_bytes, std::max<std::size_t>(2 * have, std::size_t(64) << 20)));
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
  return a;
}

// Writes an unsigned-byte IDX file, gzip-compressed or plain. On failure the partial file is
// removed and IoError thrown.
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
  std::vector<unsigned char> header = {0, 0, idx_unsigned_byte,
                                       static_cast<unsigned char>(dims.size())};
  for (index_t d : dims) {
    const auto u = static_cast<std::uint32_t>(d);
    for (int shift = 24; shift >= 0; shift -= 8) {
      header.push_back(static_cast<unsigned char>(u >> shift));
    }
  }
  errno = 0;
  gzFile f = gzopen(path.c_str(), gzip ? "wb" : "wbT");  // T: plain, through the same calls
  if (f == nullptr) {
    throw IoError(std::string(who) + " '" + path + "': cannot create the file: " +
                  (errno != 0 ? std::strerror(errno) : "zlib could not allocate its state"));
  }
  bool ok = gzwrite(f, header.data(), static_cast<unsigned>(header.size())) ==
            static_cast<int>(header.size());
  for (std::size_t done = 0; ok && done < n;) {
    const auto chunk = static_cast<unsigned>(std::min<std::size_t>(n - done, 1u << 30));
    ok = gzwrite(f, data + done, chunk) == static_cast<int>(chunk);
    done += chunk;
  }
  std::string why = ok ? "" : gzerror(f, nullptr);
  const int err = errno;
  if (gzclose_w(f) != Z_OK && ok) {
    ok = false;
    why = std::strerror(errno);
  } else if (!ok && why.empty()) {
    why = std::strerror(err);
  }
  if (!ok) {
    std::remove(path.c_str());
    throw IoError(std::string(who) + " '" + path + "': writing failed: " + why);
  }
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
