// Tensor<T>: an owning, contiguous, 64-byte-aligned array of up to four dimensions (NCHW for
// images). Moves are cheap; copies are explicit (clone / copy_from). The storage keeps its
// capacity across resize(), so a smaller last batch reuses the buffer of a full one.
#pragma once

#include <Eigen/Core>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include "minires/core/error.hpp"
#include "minires/core/rng.hpp"
#include "minires/core/shape.hpp"

namespace minires {

inline constexpr std::size_t tensor_alignment = 64;

namespace detail {

// Counts every heap allocation made by Tensor storage; tests use it to prove that a training
// step allocates nothing once buffers are planned.
inline std::atomic<long long>& tensor_allocation_counter() noexcept {
  static std::atomic<long long> counter{0};
  return counter;
}

struct AlignedFree {
  void operator()(void* p) const noexcept { std::free(p); }
};

inline void* aligned_allocate(std::size_t bytes) {
  const std::size_t rounded = (bytes + tensor_alignment - 1) / tensor_alignment * tensor_alignment;
  void* p = std::aligned_alloc(tensor_alignment, rounded == 0 ? tensor_alignment : rounded);
  if (p == nullptr) throw std::bad_alloc();
  tensor_allocation_counter().fetch_add(1, std::memory_order_relaxed);
  return p;
}

}  // namespace detail

// Number of Tensor storage allocations made so far in this process.
inline long long tensor_allocations() noexcept {
  return detail::tensor_allocation_counter().load(std::memory_order_relaxed);
}

template <class T>
class Tensor {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "minires::Tensor supports float and double");

 public:
  using value_type = T;
  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using MatrixMap = Eigen::Map<Matrix, Eigen::Aligned64>;
  using ConstMatrixMap = Eigen::Map<const Matrix, Eigen::Aligned64>;
  using Vector = Eigen::Matrix<T, Eigen::Dynamic, 1>;
  using VectorMap = Eigen::Map<Vector, Eigen::Aligned64>;
  using ConstVectorMap = Eigen::Map<const Vector, Eigen::Aligned64>;

  Tensor() = default;

  // A zero-filled tensor of the given shape.
  explicit Tensor(const Shape& shape) { resize(shape); }
  Tensor(std::initializer_list<index_t> dims) : Tensor(Shape(dims)) {}

  Tensor(Tensor&& other) noexcept
      : data_(std::move(other.data_)),
        shape_(std::exchange(other.shape_, Shape{0})),
        capacity_(std::exchange(other.capacity_, 0)) {}
  Tensor& operator=(Tensor&& other) noexcept {
    data_ = std::move(other.data_);
    shape_ = std::exchange(other.shape_, Shape{0});
    capacity_ = std::exchange(other.capacity_, 0);
    return *this;
  }
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  // An explicit deep copy.
  Tensor clone() const {
    Tensor t(shape_);
    if (size() > 0) std::memcpy(t.data(), data(), static_cast<std::size_t>(size()) * sizeof(T));
    return t;
  }

  // Copies the values of `other`, whose shape must equal this one's.
  void copy_from(const Tensor& other) {
    check_same_shape(other.shape(), "copy_from");
    if (size() > 0) std::memcpy(data(), other.data(), static_cast<std::size_t>(size()) * sizeof(T));
  }

  // Values of a tensor of the other scalar type, converted (shape must match).
  template <class U>
  void convert_from(const Tensor<U>& other) {
    check_same_shape(other.shape(), "convert_from");
    for (index_t i = 0; i < size(); ++i) data()[i] = static_cast<T>(other.data()[i]);
  }

  const Shape& shape() const noexcept { return shape_; }
  int rank() const noexcept { return shape_.rank(); }
  index_t size() const noexcept { return shape_.size(); }
  index_t dim(int i) const { return shape_[i]; }
  // Elements the storage can hold without reallocating.
  index_t capacity() const noexcept { return capacity_; }
  bool empty() const noexcept { return size() == 0; }

  T* data() noexcept { return data_.get(); }
  const T* data() const noexcept { return data_.get(); }
  T* begin() noexcept { return data(); }
  T* end() noexcept { return data() + size(); }
  const T* begin() const noexcept { return data(); }
  const T* end() const noexcept { return data() + size(); }

  // Flat element access (no bounds check; use at() for a checked one).
  T& operator[](index_t i) noexcept { return data_.get()[i]; }
  const T& operator[](index_t i) const noexcept { return data_.get()[i]; }

  // Multi-index element access, row-major (no bounds check).
  T& operator()(index_t i0) noexcept { return data_.get()[i0]; }
  T& operator()(index_t i0, index_t i1) noexcept { return data_.get()[i0 * stride(0, 2) + i1]; }
  T& operator()(index_t i0, index_t i1, index_t i2) noexcept {
    return data_.get()[(i0 * shape_.data()[1] + i1) * shape_.data()[2] + i2];
  }
  T& operator()(index_t i0, index_t i1, index_t i2, index_t i3) noexcept {
    const index_t* d = shape_.data();
    return data_.get()[((i0 * d[1] + i1) * d[2] + i2) * d[3] + i3];
  }
  const T& operator()(index_t i0) const noexcept { return const_cast<Tensor&>(*this)(i0); }
  const T& operator()(index_t i0, index_t i1) const noexcept {
    return const_cast<Tensor&>(*this)(i0, i1);
  }
  const T& operator()(index_t i0, index_t i1, index_t i2) const noexcept {
    return const_cast<Tensor&>(*this)(i0, i1, i2);
  }
  const T& operator()(index_t i0, index_t i1, index_t i2, index_t i3) const noexcept {
    return const_cast<Tensor&>(*this)(i0, i1, i2, i3);
  }

  // Bounds-checked multi-index access; throws ShapeError naming the index and the shape.
  template <class... I>
  T& at(I... idx) {
    constexpr int n = static_cast<int>(sizeof...(I));
    const index_t ids[] = {static_cast<index_t>(idx)...};
    if (n != rank()) {
      throw ShapeError("Tensor::at: expected " + std::to_string(rank()) + " indices for shape " +
                       shape_.str() + ", found " + std::to_string(n));
    }
    index_t flat = 0;
    for (int i = 0; i < n; ++i) {
      if (ids[i] < 0 || ids[i] >= shape_.data()[i]) {
        throw ShapeError("Tensor::at: index " + std::to_string(ids[i]) + " of dimension " +
                         std::to_string(i) + " is out of range for shape " + shape_.str());
      }
      flat = flat * shape_.data()[i] + ids[i];
    }
    return data_.get()[flat];
  }
  template <class... I>
  const T& at(I... idx) const {
    return const_cast<Tensor&>(*this).at(idx...);
  }

  // Changes the shape without touching the data; the element count must stay the same.
  void reshape(const Shape& shape) {
    if (shape.size() != size()) {
      throw ShapeError("Tensor::reshape: expected a shape of " + std::to_string(size()) +
                       " elements (like " + shape_.str() + "), found " + shape.str() + " with " +
                       std::to_string(shape.size()));
    }
    shape_ = shape;
  }

  // Sets the shape, reallocating only when the capacity is too small. New storage is zeroed;
  // kept storage keeps its (now reinterpreted) values.
  void resize(const Shape& shape) {
    const index_t n = shape.size();
    if (n > capacity_) {
      data_.reset(
          static_cast<T*>(detail::aligned_allocate(static_cast<std::size_t>(n) * sizeof(T))));
      capacity_ = n;
      std::memset(data_.get(), 0, static_cast<std::size_t>(n) * sizeof(T));
    }
    shape_ = shape;
  }

  void zero() noexcept { fill(T(0)); }
  void fill(T value) noexcept {
    T* p = data();
    for (index_t i = 0, n = size(); i < n; ++i) p[i] = value;
  }
  // Uniform in [lo, hi) from a seeded generator.
  void uniform(Rng& rng, T lo, T hi) {
    T* p = data();
    for (index_t i = 0, n = size(); i < n; ++i) p[i] = static_cast<T>(rng.uniform(lo, hi));
  }
  // Normal(mean, stddev) from a seeded generator.
  void normal(Rng& rng, T mean, T stddev) {
    T* p = data();
    for (index_t i = 0, n = size(); i < n; ++i) p[i] = static_cast<T>(rng.normal(mean, stddev));
  }

  // Row-major matrix view of the data: rows x cols must equal size(). The default view has
  // dim(0) rows (a batch of flattened samples).
  MatrixMap matrix(index_t rows, index_t cols) {
    check_matrix(rows, cols);
    return MatrixMap(data(), rows, cols);
  }
  ConstMatrixMap matrix(index_t rows, index_t cols) const {
    check_matrix(rows, cols);
    return ConstMatrixMap(data(), rows, cols);
  }
  MatrixMap matrix() { return matrix(rows0(), rows0() ? size() / rows0() : 0); }
  ConstMatrixMap matrix() const { return matrix(rows0(), rows0() ? size() / rows0() : 0); }
  VectorMap vector() { return VectorMap(data(), size()); }
  ConstVectorMap vector() const { return ConstVectorMap(data(), size()); }

 private:
  index_t stride(int from, int to) const noexcept {
    index_t s = 1;
    for (int i = from + 1; i < to; ++i) s *= shape_.data()[i];
    return s;
  }
  index_t rows0() const noexcept { return rank() == 0 ? 1 : shape_.data()[0]; }
  void check_same_shape(const Shape& other, const char* what) const {
    if (other != shape_) {
      throw ShapeError(std::string("Tensor::") + what + ": expected shape " + shape_.str() +
                       ", found " + other.str());
    }
  }
  void check_matrix(index_t rows, index_t cols) const {
    if (rows < 0 || cols < 0 || rows * cols != size()) {
      throw ShapeError("Tensor::matrix: a " + std::to_string(rows) + "x" + std::to_string(cols) +
                       " view needs " + std::to_string(rows * cols) + " elements, shape " +
                       shape_.str() + " has " + std::to_string(size()));
    }
  }

  std::unique_ptr<T[], detail::AlignedFree> data_;
  Shape shape_{0};
  index_t capacity_ = 0;
};

}  // namespace minires
