// Moving and mirroring one image plane: the one routine behind training augmentation
// (ImageDataset: random crops of a zero-padded image and flips) and test-time views (evaluate:
// the image shifted by a pixel and mirrored).
#pragma once

#include <algorithm>

#include "minires/core/shape.hpp"

namespace minires {

// What a shifted image holds where its source has no pixel.
enum class Border {
  Constant,  // a fill value (ImageDataset: the background, 0 before standardisation)
  Edge,      // the nearest pixel of the source (its edge rows and columns repeated)
};

// dst = the h x w image src, mirrored left-right when `flip`, then moved down by dy and right by
// dx pixels, each pixel passed through map():
//   dst(y, x) = map(src(y - dy, c(x - dx)))   with c(j) = w - 1 - j when flip, j otherwise,
// where (y - dy, x - dx) outside the image gives `fill` (Border::Constant) or the pixel at the
// nearest position inside (Border::Edge). src and dst must not overlap.
template <class S, class D, class Map>
void shift_flip_image(const S* src, D* dst, index_t h, index_t w, index_t dy, index_t dx, bool flip,
                      Border border, D fill, Map map) {
  const auto clamp = [](index_t i, index_t n) { return std::min(std::max(i, index_t(0)), n - 1); };
  const auto column = [&](index_t j) { return flip ? w - 1 - j : j; };
  // Columns x0 .. x1 - 1 of dst have a source pixel in their row; the others are border.
  const index_t x0 = std::min(w, std::max<index_t>(0, dx)), x1 = std::max(x0, std::min(w, w + dx));
  for (index_t y = 0; y < h; ++y, dst += w) {
    index_t sy = y - dy;
    if (sy < 0 || sy >= h) {
      if (border == Border::Constant) {
        std::fill(dst, dst + w, fill);
        continue;
      }
      sy = clamp(sy, h);
    }
    const S* row = src + sy * w;
    if (border == Border::Constant) {
      std::fill(dst, dst + x0, fill);
      std::fill(dst + x1, dst + w, fill);
    } else {
      for (index_t x = 0; x < x0; ++x) dst[x] = map(row[column(0)]);
      for (index_t x = x1; x < w; ++x) dst[x] = map(row[column(w - 1)]);
    }
    if (flip) {
      for (index_t x = x0; x < x1; ++x) dst[x] = map(row[w - 1 - (x - dx)]);
    } else {
      for (index_t x = x0; x < x1; ++x) dst[x] = map(row[x - dx]);
    }
  }
}

}  // namespace minires
