#include "server/runtime/cpu_budget.h"

#include <sched.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace attnroll::runtime {
namespace {

// ceil(quota / period), at least 1; nullopt unless both are positive.
std::optional<int> QuotaCpus(int64_t quota, int64_t period) {
  if (quota <= 0 || period <= 0) return std::nullopt;
  const int64_t cpus = quota / period + (quota % period != 0);  // no overflow near INT64_MAX
  return static_cast<int>(std::clamp<int64_t>(cpus, 1, 1 << 20));
}

std::optional<std::string> ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::optional<int> CpusFromCgroupV2CpuMax(absl::string_view cpu_max) {
  const std::vector<absl::string_view> parts =
      absl::StrSplit(absl::StripAsciiWhitespace(cpu_max), ' ', absl::SkipEmpty());
  int64_t quota = 0, period = 0;
  if (parts.size() != 2 || parts[0] == "max" || !absl::SimpleAtoi(parts[0], &quota) ||
      !absl::SimpleAtoi(parts[1], &period)) {
    return std::nullopt;
  }
  return QuotaCpus(quota, period);
}

std::optional<int> CpusFromCgroupV1Quota(absl::string_view quota_us, absl::string_view period_us) {
  int64_t quota = 0, period = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(quota_us), &quota) ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(period_us), &period)) {
    return std::nullopt;
  }
  return QuotaCpus(quota, period);
}

int UsableCpus() {
  // A fixed cpu_set_t holds 1024 CPUs; on a larger machine the call fails
  // and the machine's count stands in for the mask.
  int mask = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) mask = std::max(1, CPU_COUNT(&set));
  return UsableCpusUnder("/sys/fs/cgroup", mask);
}

int UsableCpusUnder(const std::string& cgroup_root, int mask_cpus) {
  const int cpus = std::max(1, mask_cpus);
  std::optional<int> quota;
  if (std::optional<std::string> v2 = ReadSmallFile(cgroup_root + "/cpu.max")) {
    quota = CpusFromCgroupV2CpuMax(*v2);
  } else if (std::optional<std::string> q = ReadSmallFile(cgroup_root + "/cpu/cpu.cfs_quota_us")) {
    if (std::optional<std::string> p = ReadSmallFile(cgroup_root + "/cpu/cpu.cfs_period_us")) {
      quota = CpusFromCgroupV1Quota(*q, *p);
    }
  }
  return quota ? std::min(cpus, *quota) : cpus;
}

}  // namespace attnroll::runtime
