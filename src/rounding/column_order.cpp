#include "sarqc/rounding/column_order.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sarqc/util/error.h"

namespace sarqc {
namespace {

constexpr std::pair<ColumnOrder, std::string_view> kNames[] = {
    {ColumnOrder::natural, "natural"}, {ColumnOrder::act, "act"}, {ColumnOrder::group_aware, "gar"}};

at::Tensor descending(const at::Tensor& values, int64_t dim) {
  return std::get<1>(at::sort(values, /*stable=*/true, dim, /*descending=*/true));
}

}  // namespace

std::string_view column_order_name(ColumnOrder order) {
  for (const auto& [o, name] : kNames)
    if (o == order) return name;
  return "?";
}

std::vector<std::string> column_order_names() {
  std::vector<std::string> names;
  for (const auto& entry : kNames) names.emplace_back(entry.second);
  return names;
}

ColumnOrder parse_column_order(const std::string& text, const std::string& flag) {
  for (const auto& [o, name] : kNames)
    if (text == name) return o;
  throw_usage(fmt::format("{} '{}': expected one of {}", flag, text,
                          fmt::join(column_order_names(), ", ")));
}

at::Tensor processing_order(const at::Tensor& diag, int64_t group_size, ColumnOrder order) {
  TORCH_CHECK(diag.dim() == 1, "processing_order: diag must be [n], got ", diag.sizes());
  const int64_t n = diag.size(0);
  if (order == ColumnOrder::natural)
    return at::arange(n, diag.options().dtype(at::kLong));
  if (order == ColumnOrder::act || group_size <= 0) return descending(diag, 0);
  const int64_t g = group_size;
  TORCH_CHECK(n % g == 0, "processing_order: group size ", g, " does not divide ", n);
  const at::Tensor groups = diag.reshape({n / g, g});
  const at::Tensor within = descending(groups, 1);  // [G, g] column offsets inside each group
  const at::Tensor group_max = std::get<0>(groups.max(1));
  const at::Tensor group_rank = descending(group_max, 0);  // [G] groups, most important first
  const at::Tensor base = at::arange(n / g, within.options()).mul_(g).unsqueeze(1);
  return (within + base).index_select(0, group_rank).reshape({n});
}

}  // namespace sarqc
