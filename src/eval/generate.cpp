#include "sarqc/eval/generate.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "sarqc/model/streaming_model.h"
#include "sarqc/util/error.h"

namespace sarqc {

std::vector<int32_t> generate_greedy(const StreamingModel& model, const std::vector<int32_t>& prompt,
                                     int64_t new_tokens, std::optional<int32_t> stop_id) {
  if (prompt.empty()) throw_usage("generation needs a non-empty prompt");
  const int64_t max_pos = model.weights().config().max_position_embeddings;
  const int64_t total = static_cast<int64_t>(prompt.size()) + new_tokens;
  if (max_pos > 0 && total > max_pos)
    throw_usage(fmt::format("prompt ({} tokens) plus {} new tokens exceeds the model's "
                            "max_position_embeddings {}",
                            prompt.size(), new_tokens, max_pos));
  std::vector<int32_t> generated;
  std::vector<KvCache> caches;
  at::Tensor input = at::tensor(at::ArrayRef<int32_t>(prompt)).to(at::kLong).unsqueeze(0);
  for (int64_t step = 0; step < new_tokens; ++step) {
    const at::Tensor logits = model.forward_cached(input, caches);  // [1, t, vocab]
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    generated.push_back(static_cast<int32_t>(next));
    if (stop_id && next == *stop_id) break;
    input = at::full({1, 1}, next, at::kLong);
  }
  return generated;
}

}  // namespace sarqc
