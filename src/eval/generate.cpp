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
  std::vector<int32_t> ids = prompt, generated;
  for (int64_t step = 0; step < new_tokens; ++step) {
    const at::Tensor input = at::tensor(at::ArrayRef<int32_t>(ids)).to(at::kLong).unsqueeze(0);
    const at::Tensor logits = model.forward(input);  // [1, T, vocab]
    const auto next = static_cast<int32_t>(logits[0][-1].argmax().item<int64_t>());
    ids.push_back(next);
    generated.push_back(next);
    if (stop_id && next == *stop_id) break;
  }
  return generated;
}

}  // namespace sarqc
