#!/usr/bin/env bash
# minires quick start: installs what is missing, builds, and then
#   train [fmnist args...]  trains the Fashion-MNIST example (fmnist train; --help lists options)
#   test                    builds and runs the whole test suite (release, then ASan+UBSan,
#                           then each fuzz target for MINIRES_FUZZ_SECONDS, default 60)
#   deps                    only installs the Debian packages minires needs
# Works on a fresh Debian 12 machine as root or with sudo; idempotent.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

packages=(cmake make g++ libeigen3-dev libxsimd-dev catch2 libbenchmark-dev zlib1g-dev
          libcli11-dev nlohmann-json3-dev
          libopenmpi-dev openmpi-bin
          dataset-fashion-mnist)
# The test command also builds the fuzz targets with clang's libFuzzer (and its OpenMP).
test_packages=(clang libclang-rt-dev libomp-dev)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

install_deps() {  # install_deps [extra packages...]
  local missing=() p
  local wanted=("${packages[@]}" "$@")
  if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${wanted[@]}"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
  else
    missing=("${wanted[@]}")
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "minires: apt-get not found. Install these (Debian package names) with your package manager:" >&2
    echo "  ${missing[*]}" >&2
    echo "  (CMake >= 3.25, a C++17 compiler with OpenMP, Eigen 3.4, xsimd 8, Catch2 2.13," >&2
    echo "   Google Benchmark, zlib, optionally Open MPI, and the Fashion-MNIST .gz files)" >&2
    exit 1
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "minires: not root and sudo not found; as root run: apt-get install ${missing[*]}" >&2
      exit 1
    fi
    sudo=(sudo)
  fi
  log "installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

jobs="$(nproc 2>/dev/null || echo 2)"

build() {  # build <preset> [targets...]
  local preset="$1"; shift
  log "configuring and building preset '$preset'"
  cmake --preset "$preset" >/dev/null
  if [ $# -gt 0 ]; then
    cmake --build --preset "$preset" -j "$jobs" --target "$@"
  else
    cmake --build --preset "$preset" -j "$jobs"
  fi
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  deps)
    install_deps "${test_packages[@]}"
    ;;
  test)
    install_deps "${test_packages[@]}"
    build release
    log "running the test suite (release)"
    ctest --preset release
    build asan
    log "running the test suite (ASan + UBSan)"
    ctest --preset asan
    log "configuring and building preset 'fuzz'"
    cmake --preset fuzz -DMINIRES_FUZZ_SECONDS="${MINIRES_FUZZ_SECONDS:-60}" >/dev/null
    cmake --build --preset fuzz -j "$jobs"
    log "running the fuzz targets (libFuzzer, ASan + UBSan), ${MINIRES_FUZZ_SECONDS:-60} s each"
    ctest --preset fuzz -j "$jobs"  # each target fuzzes on one core
    ;;
  train)
    install_deps
    build release fmnist
    log "training on Fashion-MNIST: build/release/examples/fmnist train $*"
    exec ./build/release/examples/fmnist train "$@"
    ;;
  *)
    echo "usage: bash cmake/quickstart.sh {train|test|deps} [args...]" >&2
    exit 2
    ;;
esac
