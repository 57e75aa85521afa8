#pragma once
// Greedy decoding: a qualitative check of a model (and of the forward pass against a reference
// continuation), with a KV cache. The model's layers must be resident.
#include <cstdint>
#include <optional>
#include <vector>

namespace sarqc {

class StreamingModel;

// Appends up to `new_tokens` argmax tokens to `prompt` (which must not be empty); stops early
// after `stop_id` when given. Returns only the generated ids.
std::vector<int32_t> generate_greedy(const StreamingModel& model, const std::vector<int32_t>& prompt,
                                     int64_t new_tokens, std::optional<int32_t> stop_id);

}  // namespace sarqc
