// balance_owners (module parallelism's assignment) against the optimum found by trying every
// assignment: Graham's bound for longest-processing-time-first, makespan <= (4/3 - 1/(3R)) OPT.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "sarqc/dist/owners.h"

namespace sarqc {
namespace {

double makespan(const std::vector<double>& costs, const std::vector<int>& owners, int ranks) {
  std::vector<double> load(static_cast<size_t>(ranks), 0.0);
  for (size_t i = 0; i < costs.size(); ++i) load[static_cast<size_t>(owners[i])] += costs[i];
  return *std::max_element(load.begin(), load.end());
}

double optimum(const std::vector<double>& costs, int ranks) {
  std::vector<int> owners(costs.size(), 0);
  double best = makespan(costs, owners, ranks);
  while (true) {  // every assignment, as a number in base `ranks`
    size_t i = 0;
    while (i < owners.size() && owners[i] == ranks - 1) owners[i++] = 0;
    if (i == owners.size()) return best;
    ++owners[i];
    best = std::min(best, makespan(costs, owners, ranks));
  }
}

TEST(BalanceOwners, WithinGrahamsBoundOfTheOptimum) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> cost(1.0, 100.0);
  for (int trial = 0; trial < 60; ++trial) {
    const int ranks = 2 + trial % 3;
    std::vector<double> costs(static_cast<size_t>(3 + trial % 6));
    for (auto& c : costs) c = cost(rng);
    const std::vector<int> owners = balance_owners(costs, ranks);
    ASSERT_EQ(owners.size(), costs.size());
    for (const int o : owners) ASSERT_TRUE(o >= 0 && o < ranks);
    const double bound = (4.0 / 3.0 - 1.0 / (3.0 * ranks)) * optimum(costs, ranks);
    EXPECT_LE(makespan(costs, owners, ranks), bound * (1 + 1e-12)) << "trial " << trial;
    EXPECT_EQ(owners, balance_owners(costs, ranks));  // the same on every rank
  }
}

TEST(BalanceOwners, EqualCostsGoRoundRobinAndOneRankTakesAll) {
  EXPECT_EQ(balance_owners({5, 5, 5, 5, 5}, 2), (std::vector<int>{0, 1, 0, 1, 0}));
  EXPECT_EQ(balance_owners({3, 1, 2}, 1), (std::vector<int>{0, 0, 0}));
  // q (2 units), k and v (1 each) on two ranks: q alone, k and v together.
  EXPECT_EQ(balance_owners({2, 1, 1}, 2), (std::vector<int>{0, 1, 1}));
}

}  // namespace
}  // namespace sarqc
