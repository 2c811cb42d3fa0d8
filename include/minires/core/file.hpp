// Files: reading only regular files, and writing every output file atomically.
//
// InputFile opens a path for reading and refuses anything but a regular file (a directory, a
// FIFO, a device such as /dev/zero), without blocking on a FIFO; it knows the file's size before
// anything is read, so readers can check declared sizes against it. write_file_atomically()
// writes a complete file or nothing: the bytes go to a temporary `PATH.tmp-PID` beside the
// target, which is flushed, synced and renamed over the target, and the directory is synced;
// every step is checked, and on failure the temporary is removed and the old file is untouched.
// remove_stale_temporaries() deletes the temporaries that a killed process left behind.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "minires/core/error.hpp"

namespace minires {

namespace detail {

inline std::string errno_text(int err) {
  return std::strerror(err);
}

// The directory part of a path ("." when it has none).
inline std::string parent_directory(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace detail

// A regular file opened for reading. `who` starts every error message, followed by the path.
class InputFile {
 public:
  InputFile(const std::string& path, const std::string& who) : path_(path), who_(who) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is rejected just below.
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd_ < 0) {
      throw IoError(prefix() + "cannot open the file: " + detail::errno_text(errno));
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int err = errno;
      ::close(fd_);
      throw IoError(prefix() + "cannot read the file's status: " + detail::errno_text(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw IoError(prefix() + "expected a regular file, found " + kind(st.st_mode));
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
    const int flags = ::fcntl(fd_, F_GETFL);
    if (flags >= 0) ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
  }
  ~InputFile() { ::close(fd_); }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  // The size the file had when it was opened.
  std::uint64_t size() const noexcept { return size_; }

  // Reads up to n bytes; fewer only at the end of the file. A failing read throws IoError.
  std::size_t read(void* dst, std::size_t n) {
    auto* p = static_cast<unsigned char*>(dst);
    std::size_t got = 0;
    while (got < n) {
      const ssize_t r = ::read(fd_, p + got, std::min<std::size_t>(n - got, std::size_t(1) << 30));
      if (r < 0) {
        if (errno == EINTR) continue;
        throw IoError(prefix() + "cannot read the file: " + detail::errno_text(errno));
      }
      if (r == 0) break;
      got += static_cast<std::size_t>(r);
    }
    return got;
  }

  const std::string& path() const noexcept { return path_; }
  // "who 'path': ", the start of every message about this file.
  std::string prefix() const { return who_ + " '" + path_ + "': "; }

 private:
  static std::string kind(mode_t m) {
    if (S_ISDIR(m)) return "a directory";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISSOCK(m)) return "a socket";
    return "something that is not a regular file";
  }

  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::string path_, who_;
};

// The name of the temporary file a write to `path` by this process goes through.
inline std::string temporary_path(const std::string& path) {
  return path + ".tmp-" + std::to_string(::getpid());
}

// Writes n bytes to `path` atomically (see the top of this file). Throws IoError naming `who`,
// the file and the reason (e.g. "No space left on device"); the target is then unchanged.
inline void write_file_atomically(const std::string& path, const void* data, std::size_t n,
                                  const std::string& who) {
  const std::string tmp = temporary_path(path);
  auto fail = [&](const std::string& what, int err) {
    ::unlink(tmp.c_str());
    throw IoError(who + " '" + path + "': " + what + ": " + detail::errno_text(err) + " ('" + path +
                  "' is unchanged)");
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    throw IoError(who + " '" + path + "': cannot create the temporary file '" + tmp +
                  "': " + detail::errno_text(errno));
  }
  const auto* p = static_cast<const unsigned char*>(data);
  std::size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(fd, p + done, std::min<std::size_t>(n - done, std::size_t(1) << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = w < 0 ? errno : EIO;
      ::close(fd);
      fail("writing '" + tmp + "' failed", err);
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    fail("syncing '" + tmp + "' failed", err);
  }
  if (::close(fd) != 0) fail("closing '" + tmp + "' failed", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("cannot rename '" + tmp + "' to it", errno);
  // The rename is durable once the directory is synced; a failure here leaves a complete file.
  const int dir =
      ::open(detail::parent_directory(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

inline void write_file_atomically(const std::string& path, const std::string& text,
                                  const std::string& who) {
  write_file_atomically(path, text.data(), text.size(), who);
}

// Removes the temporary files (`NAME.tmp-PID`) in `dir` that write_file_atomically() left when
// its process was killed mid-write: those whose process no longer runs. Returns their names.
inline std::vector<std::string> remove_stale_temporaries(const std::string& dir) {
  std::vector<std::string> removed;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return removed;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    const std::size_t at = name.rfind(".tmp-");
    if (at == std::string::npos || at == 0) continue;
    const std::string digits = name.substr(at + 5);
    if (digits.empty() || digits.size() > 9 ||
        digits.find_first_not_of("0123456789") != std::string::npos) {
      continue;
    }
    const auto pid = static_cast<pid_t>(std::strtol(digits.c_str(), nullptr, 10));
    const bool alive = pid == ::getpid() || ::kill(pid, 0) == 0 || errno == EPERM;
    if (alive) continue;
    const std::string path = dir + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::unlink(path.c_str()) == 0) {
      removed.push_back(name);
    }
  }
  ::closedir(d);
  return removed;
}

}  // namespace minires
