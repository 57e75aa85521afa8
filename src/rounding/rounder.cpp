#include "sarqc/rounding/rounder.h"

#include <map>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "sarqc/rounding/gptq.h"
#include "sarqc/rounding/rtn.h"
#include "sarqc/rounding/successive.h"
#include "sarqc/util/error.h"

namespace sarqc {
namespace {

using Factory = std::function<std::unique_ptr<Rounder>()>;

const std::map<std::string, Factory>& registry() {
  static const std::map<std::string, Factory> r = {
      {"rtn", [] { return std::make_unique<RtnRounder>(); }},
      {"gptq", [] { return std::make_unique<GptqRounder>(); }},
      {"successive", [] { return std::make_unique<SuccessiveRounder>(false); }},
      {"beam", [] { return std::make_unique<SuccessiveRounder>(true); }},
  };
  return r;
}

}  // namespace

std::unique_ptr<Rounder> make_rounder(const std::string& name) {
  const auto it = registry().find(name);
  if (it == registry().end())
    throw_usage(fmt::format("--rounding '{}': expected one of {}", name,
                            fmt::join(rounder_names(), ", ")));
  return it->second();
}

std::vector<std::string> rounder_names() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : registry()) names.push_back(name);
  return names;
}

QuantizedLinear Rounder::round_penalized(const at::Tensor& target, const at::Tensor& metric,
                                         const QuantGrid& grid, const RoundingOptions& options,
                                         const EntryPenalty& penalty) const {
  TORCH_CHECK(!penalty.weight.defined(), name(), " has no element-wise penalty");
  return round(target, metric, grid, options);
}

QuantizedLinear assemble_quantized(const QuantGrid& grid, const at::Tensor& codes_processing,
                                   const std::vector<at::Tensor>& scales,
                                   const std::vector<at::Tensor>& zeros, const at::Tensor& perm,
                                   bool groups_in_processing_order) {
  const int64_t n = codes_processing.size(1);
  QuantizedLinear q;
  q.grid = grid;
  const at::Tensor inverse = at::argsort(perm);  // column -> processing position
  const bool natural = at::equal(perm, at::arange(n, perm.options()));
  q.codes = (natural ? codes_processing : codes_processing.index_select(1, inverse))
                .to(at::kInt)
                .contiguous();
  at::Tensor S = at::stack(scales), Z = at::stack(zeros);
  const auto long_opts = at::TensorOptions().dtype(at::kLong).device(perm.device());
  q.g_idx = grid.group_size <= 0 ? at::zeros({n}, long_opts)
                                 : at::div(at::arange(n, long_opts), grid.group_size, "floor");
  if (grid.group_size > 0 && groups_in_processing_order) {
    const int64_t g = grid.group_size;
    const at::Tensor processed_in = at::div(inverse, g, "floor").reshape({n / g, g});
    const at::Tensor first = processed_in.select(1, 0);  // processing group of each natural one
    if (at::equal(processed_in, first.unsqueeze(1).expand_as(processed_in))) {
      S = S.index_select(0, first), Z = Z.index_select(0, first);
    } else {
      q.g_idx = processed_in.reshape({n});
    }
  }
  q.scales = S.to(at::kFloat).contiguous();
  q.zeros = Z.to(at::kInt).contiguous();
  q.g_idx = q.g_idx.to(at::kInt);
  return q;
}

}  // namespace sarqc
