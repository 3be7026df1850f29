// How many CPUs this process can use: its affinity mask (a cpuset) and its
// cgroup's CPU quota (a container's CPU limit, e.g. a Kubernetes
// resources.limits.cpu), whichever is smaller. std::thread's
// hardware_concurrency() sees neither: on a 64-core node a 2-CPU container
// would start 64 workers and be throttled.
#ifndef ATTNROLL_SERVER_RUNTIME_CPU_BUDGET_H_
#define ATTNROLL_SERVER_RUNTIME_CPU_BUDGET_H_

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace attnroll::runtime {

// CPUs a quota allows, rounded up (1.5 CPUs -> 2), at least 1; nullopt for
// no quota or text that is not one.
// cgroup v2 cpu.max: "QUOTA PERIOD" or "max PERIOD" (microseconds).
std::optional<int> CpusFromCgroupV2CpuMax(absl::string_view cpu_max);
// cgroup v1 cpu.cfs_quota_us (-1: none) and cpu.cfs_period_us.
std::optional<int> CpusFromCgroupV1Quota(absl::string_view quota_us, absl::string_view period_us);

// min(affinity CPUs, the quota of this process's cgroup), at least 1. Reads
// /sys/fs/cgroup/cpu.max (v2), else /sys/fs/cgroup/cpu/cpu.cfs_{quota,period}_us
// (v1); without either, the affinity count.
int UsableCpus();
// The same with the cgroup files under `cgroup_root` (tests).
int UsableCpusUnder(const std::string& cgroup_root);

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_CPU_BUDGET_H_
