// A file that lives in memory (memfd_create), opened by path as
// /proc/self/fd/N, whose contents are replaced atomically (a new memory file
// dup'ed over N): whoever opens the path reads the old bytes or the new ones,
// never a mix, and nothing is written to disk. What gRPC's certificate file
// watcher reads (rpc/credentials.h).
#ifndef ATTNROLL_SERVER_RPC_MEMORY_FILE_H_
#define ATTNROLL_SERVER_RPC_MEMORY_FILE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace attnroll::rpc {

class MemoryFile {
 public:
  // `name` shows in /proc/self/fd (memfd:NAME).
  static absl::StatusOr<std::unique_ptr<MemoryFile>> Create(const std::string& name,
                                                            absl::string_view contents);
  ~MemoryFile();
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;

  const std::string& path() const { return path_; }
  absl::Status Replace(absl::string_view contents);

 private:
  MemoryFile(std::string name, int fd);
  const std::string name_;
  const int fd_;
  const std::string path_;
};

}  // namespace attnroll::rpc

#endif  // ATTNROLL_SERVER_RPC_MEMORY_FILE_H_
