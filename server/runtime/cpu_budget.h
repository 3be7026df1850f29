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

// min(affinity CPUs, the quota of the cgroup root this process sees), at
// least 1. Reads /sys/fs/cgroup/cpu.max (v2), else
// /sys/fs/cgroup/cpu/cpu.cfs_{quota,period}_us (v1): a container's own limit
// under its cgroup namespace (Docker, Kubernetes). A quota set on a nested
// cgroup of the host (a systemd CPUQuota=, --cgroupns=host) is not followed.
int UsableCpus();
// min(mask_cpus, the quota read under `cgroup_root`), at least 1 (tests).
int UsableCpusUnder(const std::string& cgroup_root, int mask_cpus);

}  // namespace attnroll::runtime

#endif  // ATTNROLL_SERVER_RUNTIME_CPU_BUDGET_H_
