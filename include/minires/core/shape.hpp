// Shape: up to four extents. Images are NCHW: (batch, channels, height, width).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "minires/core/error.hpp"

namespace minires {

using index_t = std::ptrdiff_t;

class Shape {
 public:
  static constexpr int max_rank = 4;

  // Rank 0: a scalar, size 1.
  constexpr Shape() noexcept = default;

  Shape(std::initializer_list<index_t> dims) {
    if (dims.size() > static_cast<std::size_t>(max_rank)) {
      throw ShapeError("Shape: expected at most " + std::to_string(max_rank) +
                       " dimensions, found " + std::to_string(dims.size()));
    }
    for (index_t d : dims) push_back(d);
  }

  // Builds a shape from `rank` extents at `dims`.
  static Shape from(const index_t* dims, int rank) {
    if (rank < 0 || rank > max_rank) {
      throw ShapeError("Shape: expected a rank in [0, 4], found " + std::to_string(rank));
    }
    Shape s;
    for (int i = 0; i < rank; ++i) s.push_back(dims[i]);
    return s;
  }

  int rank() const noexcept { return rank_; }

  // Extent of dimension i; negative i counts from the back (-1 is the last dimension).
  index_t operator[](int i) const {
    const int j = i < 0 ? i + rank_ : i;
    if (j < 0 || j >= rank_) {
      throw ShapeError("Shape" + str() + ": dimension index " + std::to_string(i) +
                       " is out of range for rank " + std::to_string(rank_));
    }
    return dims_[static_cast<std::size_t>(j)];
  }

  // Number of elements (product of extents; 1 for rank 0).
  index_t size() const noexcept {
    index_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<std::size_t>(i)];
    return n;
  }

  const index_t* data() const noexcept { return dims_.data(); }

  // A batch of n samples of this shape: (n, this shape...). Throws at max_rank.
  Shape prepend_batch(index_t n) const {
    if (rank_ >= max_rank) {
      throw ShapeError("Shape: expected a sample shape of rank below " + std::to_string(max_rank) +
                       " to add a batch dimension to, found " + str());
    }
    index_t d[max_rank];
    d[0] = n;
    for (int i = 0; i < rank_; ++i) d[i + 1] = dims_[static_cast<std::size_t>(i)];
    return from(d, rank_ + 1);
  }

  // This batched shape with its batch (dimension 0) replaced by n (to plan for a batch size).
  Shape with_batch(index_t n) const {
    if (rank_ == 0) throw ShapeError("Shape(): a scalar has no batch dimension");
    Shape s = *this;
    s.check_extent(n);
    s.dims_[0] = n;
    return s;
  }

  // "(128, 4, 28, 28)"
  std::string str() const {
    std::string s = "(";
    for (int i = 0; i < rank_; ++i) {
      if (i) s += ", ";
      s += std::to_string(dims_[static_cast<std::size_t>(i)]);
    }
    if (rank_ == 1) s += ",";
    return s + ")";
  }

  friend bool operator==(const Shape& a, const Shape& b) noexcept {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i) {
      if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) {
        return false;
      }
    }
    return true;
  }
  friend bool operator!=(const Shape& a, const Shape& b) noexcept { return !(a == b); }

 private:
  void check_extent(index_t d) const {
    if (d < 0) {
      throw ShapeError("Shape: extents must be >= 0, found " + std::to_string(d));
    }
  }
  void push_back(index_t d) {
    check_extent(d);
    dims_[static_cast<std::size_t>(rank_++)] = d;
  }

  std::array<index_t, max_rank> dims_{};
  int rank_ = 0;
};

}  // namespace minires
