#include "sarqc/pipeline/memory_estimate.h"

#include "sarqc/calib/exact_sum.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "sarqc/calib/layer_stages.h"
#include "sarqc/calib/module_groups.h"

namespace sarqc {
namespace {

constexpr int64_t kFp32 = 4;
constexpr double kMiB = 1048576.0;

}  // namespace

std::string QuantizeMemoryEstimate::describe() const {
  return fmt::format(
      "{:.1f} MiB: layer {:.1f} + Gram matrices {:.1f} + rounding {:.1f} + activation "
      "stream(s) {:.1f} + forward batch {:.1f} (embedding phase: {:.1f})",
      peak_bytes / kMiB, layer_bytes / kMiB, gram_bytes / kMiB, rounding_bytes / kMiB,
      stream_bytes / kMiB, forward_bytes / kMiB, (embedding_bytes + stream_bytes) / kMiB);
}

QuantizeMemoryEstimate estimate_quantize_memory(const ModelConfig& cfg, const ModelLayout& layout,
                                                const QuantizeMemoryInputs& in) {
  QuantizeMemoryEstimate e;
  const int64_t elt = static_cast<int64_t>(c10::elementSize(in.compute_dtype));
  const int64_t d = cfg.hidden_size;
  for (const auto& layer : layout.layers) {
    int64_t numel = 0, rounding = 0;
    std::map<int, std::map<std::string, int64_t>> grams;  // group -> key -> n
    for (const auto& m : layer.linears) {
      numel += m.numel();
      if (!m.quantizable) continue;
      const int group = sequential_group(m);
      if (group >= 0) grams[group][input_key(m)] = m.in_features;
      // target, its processing-order copy, codes, residuals, the dequantized result; the damped
      // metric, its reordered copy, the factor and the feedback matrix
      const int64_t n = m.in_features;
      rounding = std::max(rounding, (5 * m.numel() + 5 * n * n) * kFp32 + in.beam_budget_bytes);
    }
    for (const auto& norm : layer.norms) numel += norm.shape[0];
    int64_t layer_bytes = numel * elt;                                // compute copy
    if (in.compute_dtype != c10::ScalarType::Float) layer_bytes += numel * kFp32;  // fp32 master
    if (in.keep_fp_stream) layer_bytes += numel * elt;                // FP copy
    int64_t gram = 0;
    if (in.calibrate)
      for (const auto& [group, keys] : grams) {
        // Per Gram (and D when paired): its exact sum, two int64 per element (calib/exact_sum),
        // and the fp32 average made from it; plus one batch's fp32 Gram while it is added.
        int64_t bytes = 0, widest = 0;
        for (const auto& [key, n] : keys) {
          // --lambda auto: each Gram twice more, one per held-out fold
          bytes += n * n * (4 * kFp32 + kFp32) * (in.paired_capture ? 2 : 1) *
                   (in.holdout_folds ? 3 : 1);
          widest = std::max(widest, n * n * kFp32);
        }
        // + the bounded temporaries of turning an exact sum into fp32 (one at a time)
        gram = std::max(gram, bytes + widest + ExactSum::value_scratch_bytes(widest / kFp32));
      }
    e.layer_bytes = std::max(e.layer_bytes, layer_bytes);
    e.gram_bytes = std::max(e.gram_bytes, gram);
    e.rounding_bytes = std::max(e.rounding_bytes, in.calibrate ? rounding : numel * kFp32);
  }
  const int64_t streams = in.keep_fp_stream ? 2 : 1;
  if (in.tokens > 0) {
    const int64_t per_token =
        d * elt + LayerStages::extra_bytes_per_token(cfg, cfg.is_moe(), in.cache_mlp_hidden, elt);
    e.stream_bytes = streams * in.tokens * per_token;
    // q, k, v, the heads, the residual and the MLP's gate, up and product, for one batch
    const int64_t batch = std::min(in.tokens, in.batch_tokens);
    const int64_t heads = cfg.num_attention_heads * cfg.head_dim;
    const int64_t kv = cfg.num_key_value_heads * cfg.head_dim;
    const int64_t inter = cfg.is_moe() ? std::max(cfg.intermediate_size, cfg.moe_intermediate_size)
                                       : cfg.intermediate_size;
    e.forward_bytes = batch * (3 * d + 2 * heads + 2 * kv + 3 * inter) * elt;
  }
  e.embedding_bytes = in.tokens > 0 ? cfg.vocab_size * d * elt : 0;
  const int64_t layer_phase =
      e.layer_bytes + e.gram_bytes + e.rounding_bytes + e.stream_bytes + e.forward_bytes;
  e.peak_bytes = std::max(layer_phase, e.embedding_bytes + e.stream_bytes);
  return e;
}

}  // namespace sarqc
