#pragma once
// Which rank does which piece of work: items with costs onto ranks, longest first, each onto the
// least-loaded rank so far (Graham's LPT rule: the busiest rank carries at most 4/3 − 1/(3R)
// times the optimum). Deterministic: every rank computes the same assignment.
#include <vector>

namespace sarqc {

// owners[i] in [0, ranks): the rank that does item i. Ties go to the earlier item and the
// lower rank.
std::vector<int> balance_owners(const std::vector<double>& costs, int ranks);

}  // namespace sarqc
