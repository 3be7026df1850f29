#include "server/session/baseline_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/session/attention_decode.h"

namespace attnroll::session {
namespace {

constexpr char kSuffix[] = ".baseline";
constexpr char kTempSuffix[] = ".baseline.tmp";

std::string Errno() { return std::strerror(errno); }

// Writes all of `bytes` to fd; false with errno set on failure.
bool WriteAll(int fd, const std::string& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<size_t>(w);
  }
  return true;
}

bool SyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

absl::Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("--data-dir: ", path, " is not a directory"));
    }
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(
      absl::StrCat("--data-dir: cannot create ", path, ": ", Errno()));
}

absl::Status CheckMapTensor(const v1::Tensor& t, int64_t n, const std::string& field) {
  if (absl::Status s = CheckTensorBytes(t, field); !s.ok()) return s;
  const std::vector<float> v = DecodeAllValues(t);
  if (static_cast<int64_t>(v.size()) != n) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": expected ", n, " values (map_length), got ", v.size()));
  }
  for (size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i]) || v[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, "[", i, "]: expected a finite value >= 0, got ", v[i]));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckStats(const v1::SampleStats& s, int64_t n, const std::string& field) {
  if (s.samples() < 1) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".samples: expected >= 1, got ", s.samples()));
  }
  if (!s.has_mean_map()) return absl::InvalidArgumentError(absl::StrCat(field, ".mean_map: expected a map"));
  if (absl::Status st = CheckMapTensor(s.mean_map(), n, field + ".mean_map"); !st.ok()) return st;
  for (const auto& [name, scalar] : s.scalars()) {
    if (scalar.histogram().counts_size() != 100) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".scalars[", name,
                                                     "].histogram: expected 100 bins, got ",
                                                     scalar.histogram().counts_size()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

bool ValidBaselineName(absl::string_view name) {
  if (name.empty() || name.size() > 64 || !absl::ascii_isalnum(name.front())) return false;
  for (char ch : name) {
    if (!absl::ascii_isalnum(ch) && ch != '_' && ch != '.' && ch != '-') return false;
  }
  return true;
}

absl::Status CheckBaseline(const v1::Baseline& b) {
  if (!ValidBaselineName(b.name())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "name: expected 1 to 64 characters of [A-Za-z0-9_.-] starting with a letter or digit, got \"",
        absl::CHexEscape(b.name()), "\""));
  }
  const int64_t n = b.map_length();
  if (n < 1) return absl::InvalidArgumentError("map_length: expected >= 1, got 0");
  if ((b.grid_height() == 0) != (b.grid_width() == 0) ||
      (b.grid_height() > 0 && int64_t{b.grid_height()} * b.grid_width() != n)) {
    return absl::InvalidArgumentError(absl::StrCat("grid: ", b.grid_height(), "x", b.grid_width(),
                                                   " does not lay out map_length ", n));
  }
  if (b.has_region()) {
    if (absl::Status s = CheckMapTensor(b.region(), n, "region"); !s.ok()) return s;
  }
  if (absl::Status s = CheckStats(b.overall(), n, "overall"); !s.ok()) return s;
  for (int g = 0; g < b.groups_size(); ++g) {
    if (absl::Status s = CheckStats(b.groups(g), n, absl::StrCat("groups[", g, "]")); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::string BaselineStore::PathOf(const std::string& name) const {
  return absl::StrCat(dir_, "/", name, kSuffix);
}

absl::StatusOr<std::unique_ptr<BaselineStore>> BaselineStore::Open(const std::string& data_dir) {
  if (absl::Status s = MakeDir(data_dir); !s.ok()) return s;
  const std::string dir = data_dir + "/baselines";
  if (absl::Status s = MakeDir(dir); !s.ok()) return s;
  // Writable? A probe file, created, flushed and removed.
  const std::string probe = dir + "/.write-probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("--data-dir: ", dir, " is not writable: ", Errno()));
  }
  ::close(fd);
  ::unlink(probe.c_str());

  std::unique_ptr<BaselineStore> store(new BaselineStore(dir));
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("--data-dir: cannot read ", dir, ": ", Errno()));
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string& file : names) {
    const std::string path = absl::StrCat(dir, "/", file);
    if (absl::EndsWith(file, kTempSuffix)) {
      ::unlink(path.c_str());  // a write that never completed
      continue;
    }
    if (!absl::EndsWith(file, kSuffix)) continue;
    const std::string name = file.substr(0, file.size() - std::strlen(kSuffix));
    std::string bytes;
    {
      const int in = ::open(path.c_str(), O_RDONLY);
      if (in < 0) return absl::DataLossError(absl::StrCat(path, ": cannot read: ", Errno()));
      char buf[1 << 16];
      for (;;) {
        const ssize_t r = ::read(in, buf, sizeof(buf));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
          ::close(in);
          return absl::DataLossError(absl::StrCat(path, ": cannot read: ", Errno()));
        }
        if (r == 0) break;
        bytes.append(buf, static_cast<size_t>(r));
      }
      ::close(in);
    }
    v1::BaselineFile f;
    if (!f.ParseFromString(bytes)) {
      return absl::DataLossError(absl::StrCat(
          path, ": corrupt: ", bytes.size(), " bytes that do not parse as an attnroll BaselineFile"));
    }
    if (f.format_version() != kBaselineFormatVersion) {
      return absl::DataLossError(absl::StrCat(path, ": format_version ", f.format_version(),
                                              ", expected ", kBaselineFormatVersion));
    }
    if (f.baseline().name() != name) {
      return absl::DataLossError(absl::StrCat(path, ": holds baseline \"",
                                              absl::CHexEscape(f.baseline().name()),
                                              "\", expected \"", name, "\" (its file name)"));
    }
    if (absl::Status s = CheckBaseline(f.baseline()); !s.ok()) {
      return absl::DataLossError(absl::StrCat(path, ": invalid baseline: ", s.message()));
    }
    store->baselines_.emplace(name, std::move(*f.mutable_baseline()));
  }
  return store;
}

absl::StatusOr<std::string> BaselineStore::Put(const v1::Baseline& baseline) {
  const std::string& name = baseline.name();
  if (baselines_.count(name) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("name: a baseline \"", name, "\" already exists"));
  }
  v1::BaselineFile f;
  f.set_format_version(kBaselineFormatVersion);
  *f.mutable_baseline() = baseline;
  const std::string bytes = f.SerializeAsString();
  const std::string path = PathOf(name);
  const std::string temp = absl::StrCat(dir_, "/", name, kTempSuffix);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return absl::InternalError(absl::StrCat(temp, ": cannot create: ", Errno()));
  const bool written = WriteAll(fd, bytes) && ::fsync(fd) == 0;
  const std::string why = written ? "" : Errno();
  ::close(fd);
  if (!written) {
    ::unlink(temp.c_str());
    return absl::InternalError(absl::StrCat(temp, ": cannot write: ", why));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string e = Errno();
    ::unlink(temp.c_str());
    return absl::InternalError(absl::StrCat(path, ": cannot rename the written file into place: ", e));
  }
  if (!SyncDir(dir_)) return absl::InternalError(absl::StrCat(dir_, ": cannot flush the directory: ", Errno()));
  baselines_.emplace(name, baseline);
  return path;
}

absl::Status BaselineStore::Remove(const std::string& name) {
  auto it = baselines_.find(name);
  if (it == baselines_.end()) {
    return absl::NotFoundError(absl::StrCat("name: no baseline \"", name, "\""));
  }
  const std::string path = PathOf(name);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::InternalError(absl::StrCat(path, ": cannot remove: ", Errno()));
  }
  SyncDir(dir_);
  baselines_.erase(it);
  return absl::OkStatus();
}

}  // namespace attnroll::session
