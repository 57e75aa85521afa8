#pragma once
// Token routing of mixture-of-experts blocks (docs/formats.md §9, "Routing").
#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace sarqc {

struct ExpertTokens {
  at::Tensor tokens;  // [n_e] int64 indices into the flattened batch, ascending
  at::Tensor weight;  // [n_e] routing weight of this expert for each of those tokens
};

struct MoeRouting {
  at::Tensor top_experts;  // [N, k] int64, highest probability first
  at::Tensor top_weights;  // [N, k] mixing weights in the activation dtype
  std::vector<ExpertTokens> experts;  // one entry per expert; empty tensors when starved
};

// logits: router outputs [N, E]. Softmax in fp32, top-k, weights renormalised to sum to one when
// `renormalize` (always for mixtral, norm_topk_prob for qwen MoE), then cast to `dtype`.
MoeRouting route_tokens(const at::Tensor& logits, int64_t top_k, bool renormalize,
                        c10::ScalarType dtype);

}  // namespace sarqc
