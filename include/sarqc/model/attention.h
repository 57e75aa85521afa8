#pragma once
#include <cstdint>

#include <ATen/core/Tensor.h>

namespace sarqc {

// Causal grouped-query attention with scale 1/sqrt(hd) (or `scale` when > 0: Gemma's
// query_pre_attn_scalar^-1/2).
//   q: [B, H, Tq, hd]; k, v: [B, KV, Tk, hd] with Tk >= Tq: the queries are the last Tq
//   positions (Tk > Tq when earlier keys come from a cache); H a multiple of KV; query head h
//   reads kv head h / (H / KV) (HF's repeat_kv order).
//   window > 0: query i sees key j only when i − j < window (mistral's sliding window).
// Softmax runs in fp32. Queries are processed in chunks so that one chunk's score buffer stays
// under `chunk_bytes` (0: a size that suits the device). Returns [B, H, Tq, hd] in q's dtype.
at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t window = 0, int64_t chunk_bytes = 0, double scale = 0);

}  // namespace sarqc
