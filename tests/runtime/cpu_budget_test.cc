// The CPUs a process may use: a cgroup quota rounds up to whole CPUs, no
// quota or malformed text is no limit, and the result never exceeds the
// affinity mask.
#include "server/runtime/cpu_budget.h"

#include <sched.h>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace attnroll::runtime {
namespace {

TEST(CpuBudgetTest, CgroupV2CpuMaxRoundsTheQuotaUp) {
  EXPECT_EQ(CpusFromCgroupV2CpuMax("200000 100000\n"), 2);
  EXPECT_EQ(CpusFromCgroupV2CpuMax("150000 100000"), 2);    // 1.5 CPUs
  EXPECT_EQ(CpusFromCgroupV2CpuMax("100001 100000"), 2);
  EXPECT_EQ(CpusFromCgroupV2CpuMax("100000 100000"), 1);
  EXPECT_EQ(CpusFromCgroupV2CpuMax("10000 100000"), 1);     // 0.1 CPU: still one worker
  EXPECT_EQ(CpusFromCgroupV2CpuMax("6400000 100000"), 64);
  EXPECT_EQ(CpusFromCgroupV2CpuMax("  50000   50000  "), 1);
}

TEST(CpuBudgetTest, CgroupV2WithoutAQuotaOrUnreadableIsNoLimit) {
  EXPECT_EQ(CpusFromCgroupV2CpuMax("max 100000\n"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupV2CpuMax(""), std::nullopt);
  EXPECT_EQ(CpusFromCgroupV2CpuMax("200000"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupV2CpuMax("200000 100000 7"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupV2CpuMax("two 100000"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupV2CpuMax("200000 0"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupV2CpuMax("-5 100000"), std::nullopt);
}

TEST(CpuBudgetTest, CgroupV1Quota) {
  EXPECT_EQ(CpusFromCgroupV1Quota("300000\n", "100000\n"), 3);
  EXPECT_EQ(CpusFromCgroupV1Quota("250000", "100000"), 3);
  EXPECT_EQ(CpusFromCgroupV1Quota("-1\n", "100000\n"), std::nullopt);  // no quota
  EXPECT_EQ(CpusFromCgroupV1Quota("", "100000"), std::nullopt);
  EXPECT_EQ(CpusFromCgroupV1Quota("300000", "0"), std::nullopt);
}

// A cgroup tree of one file or two, in a fresh directory.
class CgroupDir {
 public:
  CgroupDir() {
    char name[] = "/tmp/attnroll_cgroup_XXXXXX";
    root_ = mkdtemp(name);
  }
  ~CgroupDir() { std::filesystem::remove_all(root_); }
  void Write(const std::string& relative, const std::string& text) {
    std::filesystem::create_directories(std::filesystem::path(root_ + "/" + relative).parent_path());
    std::ofstream(root_ + "/" + relative) << text;
  }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

int AffinityCpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return CPU_COUNT(&set);
}

TEST(CpuBudgetTest, AQuotaOfOneCpuGivesOneWorkerUnderEitherCgroupVersion) {
  CgroupDir v2;
  v2.Write("cpu.max", "100000 100000\n");
  EXPECT_EQ(UsableCpusUnder(v2.root()), 1);
  CgroupDir v1;
  v1.Write("cpu/cpu.cfs_quota_us", "50000\n");
  v1.Write("cpu/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(UsableCpusUnder(v1.root()), 1);
}

TEST(CpuBudgetTest, NoQuotaOrAQuotaAboveTheMaskGivesTheMask) {
  CgroupDir none;
  EXPECT_EQ(UsableCpusUnder(none.root()), AffinityCpus());
  CgroupDir unlimited;
  unlimited.Write("cpu.max", "max 100000\n");
  EXPECT_EQ(UsableCpusUnder(unlimited.root()), AffinityCpus());
  CgroupDir wide;
  wide.Write("cpu.max", "100000000 100000\n");  // 1000 CPUs
  EXPECT_EQ(UsableCpusUnder(wide.root()), AffinityCpus());
  // v2's file wins over v1's.
  CgroupDir both;
  both.Write("cpu.max", "max 100000\n");
  both.Write("cpu/cpu.cfs_quota_us", "100000\n");
  both.Write("cpu/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(UsableCpusUnder(both.root()), AffinityCpus());
}

TEST(CpuBudgetTest, UsableCpusIsWithinTheAffinityMask) {
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  const int usable = UsableCpus();
  EXPECT_GE(usable, 1);
  EXPECT_LE(usable, CPU_COUNT(&set));
  EXPECT_LE(usable, static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace
}  // namespace attnroll::runtime
