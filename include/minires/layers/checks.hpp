// Argument checks shared by the layers' forward and backward passes. They allocate nothing
// unless they throw.
#pragma once

#include <string>

#include "minires/core/error.hpp"
#include "minires/core/shape.hpp"

namespace minires::detail {

// Throws ShapeError "<layer>: expected <what> of shape E, found F" unless the shapes match.
inline void expect_shape(const char* layer, const char* what, const Shape& expected,
                         const Shape& found) {
  if (expected != found) {
    throw ShapeError(std::string(layer) + ": expected " + what + " of shape " + expected.str() +
                     ", found " + found.str());
  }
}

}  // namespace minires::detail
