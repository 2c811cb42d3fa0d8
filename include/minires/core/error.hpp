// The exception hierarchy. Everything minires throws derives from minires::Error, and every
// message says what was expected and what was found.
#pragma once

#include <stdexcept>
#include <string>

namespace minires {

// Root of all minires exceptions.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A tensor or layer received a shape it cannot work with.
class ShapeError : public Error {
 public:
  using Error::Error;
};

// An argument is out of its valid range (a negative stride, a label >= classes, ...).
class ValueError : public Error {
 public:
  using Error::Error;
};

// A file could not be opened, read or written.
class IoError : public Error {
 public:
  using Error::Error;
};

// A file was read but its contents are not what they must be (bad magic, truncated, checksum).
class FormatError : public Error {
 public:
  using Error::Error;
};

// Training produced a non-finite loss or parameter.
class NumericalError : public Error {
 public:
  using Error::Error;
};

}  // namespace minires
