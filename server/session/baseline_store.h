// Pinned baselines on disk: one file per baseline,
// DATA_DIR/baselines/NAME.baseline, a serialised v1::BaselineFile (format
// version 1). Writes are atomic: the bytes go to a temporary file in the same
// directory (NAME.baseline.tmp), which is flushed (fsync), renamed over the
// final name, and the directory flushed, so a crash leaves either the old
// state or the new one. Temporary files left by a crash are removed on Open.
//
// Not thread-safe: one owner (session::Monitor, under its lock).
#ifndef ATTNROLL_SERVER_SESSION_BASELINE_STORE_H_
#define ATTNROLL_SERVER_SESSION_BASELINE_STORE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnroll/v1/monitor.pb.h"

namespace attnroll::session {

inline constexpr uint32_t kBaselineFormatVersion = 1;

// 1 to 64 characters of [A-Za-z0-9_.-], the first a letter or a digit (a
// file name that cannot leave the directory).
bool ValidBaselineName(absl::string_view name);

// Checks a baseline's content: its name, map length and grid, its maps'
// lengths and values (finite, >= 0), region length. INVALID_ARGUMENT naming
// the field.
absl::Status CheckBaseline(const v1::Baseline& baseline);

class BaselineStore {
 public:
  // Creates DATA_DIR/baselines if missing, checks that it can be written (a
  // probe file), removes leftover temporary files and reads every baseline.
  // FAILED_PRECONDITION when the directory cannot be created or written,
  // DATA_LOSS naming the file when one does not parse, has another format
  // version, names another baseline than its file name, or is invalid.
  static absl::StatusOr<std::unique_ptr<BaselineStore>> Open(const std::string& data_dir);

  // Writes `baseline` (its name must be new: ALREADY_EXISTS otherwise).
  // INTERNAL naming the file when a write, flush or rename fails (nothing is
  // stored then). Returns the file's path.
  absl::StatusOr<std::string> Put(const v1::Baseline& baseline);

  // Deletes a baseline's file. NOT_FOUND for an unknown name; INTERNAL when
  // the file cannot be removed.
  absl::Status Remove(const std::string& name);

  // Every baseline, by name.
  const std::map<std::string, v1::Baseline>& baselines() const { return baselines_; }
  std::string PathOf(const std::string& name) const;
  const std::string& dir() const { return dir_; }

 private:
  explicit BaselineStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
  std::map<std::string, v1::Baseline> baselines_;
};

}  // namespace attnroll::session

#endif  // ATTNROLL_SERVER_SESSION_BASELINE_STORE_H_
