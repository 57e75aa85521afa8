#pragma once
// The order in which a Gram backend decides the columns of a module.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

namespace sarqc {

enum class ColumnOrder {
  natural,      // column 0 first
  act,          // descending diag(M) (GPTQ's desc_act): groups follow the order, so g_idx
                // is a permutation of the natural one and kernels take their slow path
  group_aware,  // GAR (Gafni et al., arXiv:2505.14638): whole groups by descending max diag(M),
                // columns within a group by descending diag(M); groups stay contiguous, so the
                // checkpoint needs no g_idx
};

std::string_view column_order_name(ColumnOrder order);
// "natural", "act", "gar"; throws a usage error naming `flag` and the accepted values.
ColumnOrder parse_column_order(const std::string& text, const std::string& flag);
std::vector<std::string> column_order_names();

// Processing order of the columns, first decided first: perm[p] = column decided at step p.
// diag: [n] the metric's diagonal; group_size: > 0 and dividing n, or <= 0 for one group per row
// (group_aware then equals act). Sorts are stable: ties keep the natural order.
at::Tensor processing_order(const at::Tensor& diag, int64_t group_size, ColumnOrder order);

}  // namespace sarqc
