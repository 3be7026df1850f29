#include "server/runtime/memory_budget.h"

#include <utility>

#include <gtest/gtest.h>

namespace attnroll::runtime {
namespace {

TEST(MemoryBudgetTest, ReservesUpToCapacityAndReleasesOnDestruction) {
  MemoryBudget budget(100);
  MemoryBudget::Reservation a, b, c;
  EXPECT_TRUE(budget.TryReserve(60, &a));
  EXPECT_FALSE(budget.TryReserve(41, &b));
  EXPECT_TRUE(budget.TryReserve(40, &b));
  EXPECT_EQ(budget.reserved(), 100);
  a.Release();
  EXPECT_EQ(budget.reserved(), 40);
  { MemoryBudget::Reservation moved = std::move(b); }
  EXPECT_EQ(budget.reserved(), 0);
  EXPECT_TRUE(budget.TryReserve(100, &c));
  EXPECT_TRUE(budget.TryReserve(0, &c));  // replacing releases the old one
  EXPECT_EQ(budget.reserved(), 0);
}

}  // namespace
}  // namespace attnroll::runtime
