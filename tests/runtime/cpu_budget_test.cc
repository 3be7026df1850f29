// The CPUs a process may use: a cgroup quota rounds up to whole CPUs, no
// quota or malformed text is no limit, and the result never exceeds the
// affinity mask.
#include "server/runtime/cpu_budget.h"

#include <sched.h>

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

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
    std::string name = testing::TempDir() + "/attnroll_cgroup_XXXXXX";
    if (mkdtemp(name.data()) != nullptr) root_ = name;
  }
  ~CgroupDir() {
    std::error_code ignored;
    if (!root_.empty()) std::filesystem::remove_all(root_, ignored);
  }
  bool Write(const std::string& relative, const std::string& text) {
    const std::filesystem::path path = root_ + "/" + relative;
    std::error_code error;
    std::filesystem::create_directories(path.parent_path(), error);
    std::ofstream out(path);
    out << text;
    return !error && static_cast<bool>(out.flush());
  }
  // cgroup v1's pair of files.
  bool WriteV1(const std::string& quota_us, const std::string& period_us) {
    return Write("cpu/cpu.cfs_quota_us", quota_us) && Write("cpu/cpu.cfs_period_us", period_us);
  }
  const std::string& root() const { return root_; }

 private:
  std::string root_;
};

// The mask is given (8 CPUs), so every case means the same on any machine.
TEST(CpuBudgetTest, TheQuotaUnderEitherCgroupVersionCapsTheMask) {
  CgroupDir v2;
  ASSERT_FALSE(v2.root().empty());
  ASSERT_TRUE(v2.Write("cpu.max", "250000 100000\n"));  // 2.5 CPUs
  EXPECT_EQ(UsableCpusUnder(v2.root(), 8), 3);
  EXPECT_EQ(UsableCpusUnder(v2.root(), 2), 2);  // the mask is smaller
  CgroupDir v1;
  ASSERT_FALSE(v1.root().empty());
  ASSERT_TRUE(v1.WriteV1("50000\n", "100000\n"));
  EXPECT_EQ(UsableCpusUnder(v1.root(), 8), 1);
  // v2's file wins over v1's.
  CgroupDir both;
  ASSERT_FALSE(both.root().empty());
  ASSERT_TRUE(both.Write("cpu.max", "200000 100000\n"));
  ASSERT_TRUE(both.WriteV1("500000\n", "100000\n"));
  EXPECT_EQ(UsableCpusUnder(both.root(), 8), 2);
}

TEST(CpuBudgetTest, NoQuotaGivesTheMask) {
  CgroupDir none;
  ASSERT_FALSE(none.root().empty());
  EXPECT_EQ(UsableCpusUnder(none.root(), 8), 8);
  CgroupDir unlimited;
  ASSERT_FALSE(unlimited.root().empty());
  ASSERT_TRUE(unlimited.Write("cpu.max", "max 100000\n"));
  ASSERT_TRUE(unlimited.WriteV1("100000\n", "100000\n"));  // not read: v2 is there
  EXPECT_EQ(UsableCpusUnder(unlimited.root(), 8), 8);
  CgroupDir v1_none;
  ASSERT_FALSE(v1_none.root().empty());
  ASSERT_TRUE(v1_none.WriteV1("-1\n", "100000\n"));
  EXPECT_EQ(UsableCpusUnder(v1_none.root(), 8), 8);
  EXPECT_EQ(UsableCpusUnder(v1_none.root(), 0), 1);  // at least one
}

TEST(CpuBudgetTest, AHugeQuotaDoesNotOverflow) {
  EXPECT_EQ(CpusFromCgroupV2CpuMax("9223372036854775807 100000"), 1 << 20);
}

TEST(CpuBudgetTest, UsableCpusIsWithinTheAffinityMask) {
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  const int usable = UsableCpus();
  EXPECT_GE(usable, 1);
  EXPECT_LE(usable, CPU_COUNT(&set));
}

}  // namespace
}  // namespace attnroll::runtime
