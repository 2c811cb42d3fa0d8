// minires version. Kept in sync with project(minires VERSION ...) in CMakeLists.txt
// (tests/test_core.cpp checks it).
#pragma once

#define MINIRES_VERSION_MAJOR 0
#define MINIRES_VERSION_MINOR 1
#define MINIRES_VERSION_PATCH 0
#define MINIRES_VERSION_STRING "0.1.0"

namespace minires {
inline constexpr int version_major = MINIRES_VERSION_MAJOR;
inline constexpr int version_minor = MINIRES_VERSION_MINOR;
inline constexpr int version_patch = MINIRES_VERSION_PATCH;
inline constexpr const char* version_string = MINIRES_VERSION_STRING;
}  // namespace minires
