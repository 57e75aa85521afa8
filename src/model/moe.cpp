#include "sarqc/model/moe.h"

#include <ATen/ATen.h>

namespace sarqc {

MoeRouting route_tokens(const at::Tensor& logits, int64_t top_k, bool renormalize,
                        c10::ScalarType dtype) {
  TORCH_CHECK(logits.dim() == 2, "route_tokens: router logits must be [tokens, experts], got ",
              logits.sizes());
  const int64_t experts = logits.size(1);
  TORCH_CHECK(top_k >= 1 && top_k <= experts, "route_tokens: top_k ", top_k, " must lie in [1, ",
              experts, "]");
  const at::Tensor probs = at::softmax(logits.to(at::kFloat), -1);
  auto top = at::topk(probs, top_k, -1, /*largest=*/true, /*sorted=*/true);
  at::Tensor weights = std::get<0>(top);
  if (renormalize) weights = weights / weights.sum(-1, /*keepdim=*/true);

  MoeRouting routing;
  routing.top_experts = std::get<1>(top);
  routing.top_weights = weights.to(dtype);
  routing.experts.resize(static_cast<size_t>(experts));
  // One pass over the (token, slot) pairs sorted by expert instead of E boolean masks.
  const at::Tensor flat = routing.top_experts.reshape(-1);
  const at::Tensor order = at::argsort(flat * (flat.numel() + 1) + at::arange(flat.numel(), flat.options()));
  const at::Tensor sorted_experts = flat.index_select(0, order);
  const at::Tensor counts = at::bincount(sorted_experts, {}, experts).to(at::kCPU);
  const at::Tensor flat_weights = routing.top_weights.reshape(-1).index_select(0, order);
  const at::Tensor token_of = at::div(order, top_k, "floor");
  const auto* count = counts.data_ptr<int64_t>();
  int64_t offset = 0;
  for (int64_t e = 0; e < experts; ++e) {
    routing.experts[e] = {token_of.narrow(0, offset, count[e]),
                          flat_weights.narrow(0, offset, count[e])};
    offset += count[e];
  }
  return routing;
}

}  // namespace sarqc
