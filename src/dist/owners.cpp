#include "sarqc/dist/owners.h"

#include <algorithm>
#include <numeric>

#include <c10/util/Exception.h>

namespace sarqc {

std::vector<int> balance_owners(const std::vector<double>& costs, int ranks) {
  TORCH_CHECK(ranks >= 1, "balance_owners: ranks must be >= 1, got ", ranks);
  std::vector<size_t> order(costs.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return costs[a] > costs[b]; });
  std::vector<double> load(static_cast<size_t>(ranks), 0.0);
  std::vector<int> owners(costs.size(), 0);
  for (const size_t i : order) {
    const auto least = std::min_element(load.begin(), load.end());  // the first of equals
    owners[i] = static_cast<int>(least - load.begin());
    *least += costs[i];
  }
  return owners;
}

}  // namespace sarqc
