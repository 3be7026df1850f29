#include "server/rpc/memory_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace attnroll::rpc {
namespace {

// A new memory file holding `contents`, or -1 with errno set.
int Filled(const std::string& name, absl::string_view contents) {
  const int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return -1;
  size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int saved = errno;
      close(fd);
      errno = saved;
      return -1;
    }
    done += static_cast<size_t>(n);
  }
  return fd;
}

absl::Status Failed(const std::string& name) {
  return absl::InternalError(absl::StrCat("memory file ", name, ": ", std::strerror(errno)));
}

}  // namespace

MemoryFile::MemoryFile(std::string name, int fd)
    : name_(std::move(name)), fd_(fd), path_(absl::StrCat("/proc/self/fd/", fd)) {}

absl::StatusOr<std::unique_ptr<MemoryFile>> MemoryFile::Create(const std::string& name,
                                                               absl::string_view contents) {
  const int fd = Filled(name, contents);
  if (fd < 0) return Failed(name);
  return std::unique_ptr<MemoryFile>(new MemoryFile(name, fd));
}

MemoryFile::~MemoryFile() { close(fd_); }

absl::Status MemoryFile::Replace(absl::string_view contents) {
  const int fd = Filled(name_, contents);
  if (fd < 0) return Failed(name_);
  // Atomic: from here on the path opens the new file.
  const int replaced = dup3(fd, fd_, O_CLOEXEC);
  const int saved = errno;
  close(fd);
  errno = saved;
  return replaced < 0 ? Failed(name_) : absl::OkStatus();
}

}  // namespace attnroll::rpc
