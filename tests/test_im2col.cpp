// im2col / col2im against direct loops, on random geometries with odd sizes, rectangular
// kernels, strides and zero padding; the Keras padding rules; geometry errors.
#include <catch2/catch.hpp>

#include <minires/minires.hpp>

#include "test_util.hpp"

#include <vector>

using namespace minires;
using kernels::ConvGeometry;
using kernels::Padding;
using minires::test::random_vector;

namespace {

// Value of input pixel (c, ih, iw), 0 in the padding.
template <class T>
T pixel(const std::vector<T>& x, const ConvGeometry& g, index_t c, index_t ih, index_t iw) {
  if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) return T(0);
  return x[static_cast<std::size_t>((c * g.height + ih) * g.width + iw)];
}

template <class T>
std::vector<T> naive_im2col(const std::vector<T>& x, const ConvGeometry& g, index_t ld) {
  std::vector<T> col(static_cast<std::size_t>(g.col_rows() * ld), T(-7));
  for (index_t c = 0; c < g.channels; ++c)
    for (index_t i = 0; i < g.kernel_h; ++i)
      for (index_t j = 0; j < g.kernel_w; ++j)
        for (index_t oh = 0; oh < g.out_h; ++oh)
          for (index_t ow = 0; ow < g.out_w; ++ow) {
            const index_t r = (c * g.kernel_h + i) * g.kernel_w + j;
            col[static_cast<std::size_t>(r * ld + oh * g.out_w + ow)] =
                pixel(x, g, c, oh * g.stride_h - g.pad_top + i, ow * g.stride_w - g.pad_left + j);
          }
  return col;
}

template <class T>
void naive_col2im(const std::vector<T>& col, const ConvGeometry& g, index_t ld, std::vector<T>& x) {
  for (index_t c = 0; c < g.channels; ++c)
    for (index_t i = 0; i < g.kernel_h; ++i)
      for (index_t j = 0; j < g.kernel_w; ++j)
        for (index_t oh = 0; oh < g.out_h; ++oh)
          for (index_t ow = 0; ow < g.out_w; ++ow) {
            const index_t ih = oh * g.stride_h - g.pad_top + i;
            const index_t iw = ow * g.stride_w - g.pad_left + j;
            if (ih < 0 || ih >= g.height || iw < 0 || iw >= g.width) continue;
            const index_t r = (c * g.kernel_h + i) * g.kernel_w + j;
            x[static_cast<std::size_t>((c * g.height + ih) * g.width + iw)] +=
                col[static_cast<std::size_t>(r * ld + oh * g.out_w + ow)];
          }
}

}  // namespace

TEMPLATE_TEST_CASE("im2col and col2im match direct loops on random geometries", "", float, double) {
  using T = TestType;
  Rng rng(99);
  for (int trial = 0; trial < 300; ++trial) {
    const index_t C = 1 + static_cast<index_t>(rng.uniform_int(4));
    const index_t H = 1 + static_cast<index_t>(rng.uniform_int(11));
    const index_t W = 1 + static_cast<index_t>(rng.uniform_int(11));
    const index_t kh = 1 + static_cast<index_t>(rng.uniform_int(5));
    const index_t kw = 1 + static_cast<index_t>(rng.uniform_int(5));
    const index_t sh = 1 + static_cast<index_t>(rng.uniform_int(3));
    const index_t sw = 1 + static_cast<index_t>(rng.uniform_int(3));
    const index_t pt = static_cast<index_t>(rng.uniform_int(4)),
                  pb = static_cast<index_t>(rng.uniform_int(4));
    const index_t pl = static_cast<index_t>(rng.uniform_int(4)),
                  pr = static_cast<index_t>(rng.uniform_int(4));
    if (kh > H + pt + pb || kw > W + pl + pr) continue;
    const auto g = ConvGeometry::explicit_padding(C, H, W, kh, kw, sh, sw, pt, pb, pl, pr);
    const index_t ld = g.col_cols() + static_cast<index_t>(rng.uniform_int(3));
    INFO("C=" << C << " H=" << H << " W=" << W << " k=" << kh << "x" << kw << " s=" << sh << "x"
              << sw << " pad=" << pt << "," << pb << "," << pl << "," << pr << " ld=" << ld);
    REQUIRE(g.out_h == (H + pt + pb - kh) / sh + 1);
    REQUIRE(g.out_w == (W + pl + pr - kw) / sw + 1);

    const auto x = random_vector<T>(rng, g.in_size());
    std::vector<T> col(static_cast<std::size_t>(g.col_rows() * ld), T(-7));
    kernels::im2col(x.data(), g, col.data(), ld);
    REQUIRE(col == naive_im2col(x, g, ld));  // exact: im2col only moves values

    const auto dcol = random_vector<T>(rng, g.col_rows() * ld);
    auto dx = random_vector<T>(rng, g.in_size());  // col2im accumulates into what is there
    auto ref = dx;
    auto scratch = dcol;  // col2im may zero the entries that fall into the padding
    kernels::col2im(scratch.data(), g, dx.data(), ld);
    naive_col2im(dcol, g, ld, ref);
    for (std::size_t i = 0; i < dx.size(); ++i) REQUIRE(dx[i] == Approx(ref[i]).margin(1e-5));
  }
}

TEST_CASE("col2im is the adjoint of im2col") {
  Rng rng(3);
  const auto g = ConvGeometry::explicit_padding(3, 9, 7, 3, 2, 2, 1, 1, 2, 0, 1);
  const index_t ld = g.col_cols();
  const auto x = random_vector<double>(rng, g.in_size());
  const auto y = random_vector<double>(rng, g.col_rows() * ld);
  std::vector<double> col(y.size()), xt(x.size(), 0.0);
  kernels::im2col(x.data(), g, col.data(), ld);
  auto scratch = y;
  kernels::col2im(scratch.data(), g, xt.data(), ld);
  double lhs = 0, rhs = 0;
  for (std::size_t i = 0; i < y.size(); ++i) lhs += col[i] * y[i];
  for (std::size_t i = 0; i < x.size(); ++i) rhs += x[i] * xt[i];
  CHECK(lhs == Approx(rhs).epsilon(1e-12));
}

TEST_CASE("Keras padding rules") {
  // valid: floor((in - k)/s) + 1
  auto v = ConvGeometry::keras(1, 28, 28, 3, 3, 1, 1, Padding::Valid);
  CHECK(v.out_h == 26);
  CHECK(v.pad_top + v.pad_bottom + v.pad_left + v.pad_right == 0);
  v = ConvGeometry::keras(4, 28, 28, 2, 2, 2, 2, Padding::Valid);
  CHECK(v.out_h == 14);
  v = ConvGeometry::keras(4, 7, 7, 2, 2, 2, 2, Padding::Valid);
  CHECK(v.out_h == 3);  // the odd last row is dropped
  // same, stride 1, odd kernel: symmetric
  auto s = ConvGeometry::keras(1, 28, 28, 3, 3, 1, 1, Padding::Same);
  CHECK(s.out_h == 28);
  CHECK(s.pad_top == 1);
  CHECK(s.pad_bottom == 1);
  // same, stride 2: TensorFlow puts the extra row/column at the bottom/right
  s = ConvGeometry::keras(1, 28, 28, 3, 3, 2, 2, Padding::Same);
  CHECK(s.out_h == 14);
  CHECK(s.pad_top == 0);
  CHECK(s.pad_bottom == 1);
  CHECK(s.pad_left == 0);
  CHECK(s.pad_right == 1);
  // same, even kernel: asymmetric even at stride 1
  s = ConvGeometry::keras(1, 5, 6, 2, 4, 1, 1, Padding::Same);
  CHECK(s.out_h == 5);
  CHECK(s.out_w == 6);
  CHECK(s.pad_top == 0);
  CHECK(s.pad_bottom == 1);
  CHECK(s.pad_left == 1);
  CHECK(s.pad_right == 2);
}

TEST_CASE("bad geometries throw with the sizes in the message") {
  CHECK_THROWS_AS(ConvGeometry::keras(1, 2, 2, 3, 3, 1, 1, Padding::Valid), ShapeError);
  CHECK_THROWS_WITH(ConvGeometry::keras(1, 2, 2, 3, 3, 1, 1, Padding::Valid),
                    Catch::Contains("kernel 3x3") && Catch::Contains("padded input 2x2"));
  CHECK_NOTHROW(ConvGeometry::keras(1, 2, 2, 3, 3, 1, 1, Padding::Same));
  CHECK_THROWS_AS(ConvGeometry::keras(1, 8, 8, 3, 3, 0, 1, Padding::Valid), ValueError);
  CHECK_THROWS_AS(ConvGeometry::keras(0, 8, 8, 3, 3, 1, 1, Padding::Valid), ShapeError);
  CHECK_THROWS_AS(ConvGeometry::explicit_padding(1, 8, 8, 3, 3, 1, 1, -1, 0, 0, 0), ValueError);
}
