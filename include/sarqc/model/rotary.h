#pragma once
// Rotary position embeddings in the rotate-half layout of HF checkpoints (docs/formats.md §9):
// x' = x·cos(p·f) + rotate_half(x)·sin(p·f), rotate_half(x) = [-x[hd/2:], x[:hd/2]].
#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "sarqc/io/hf_config.h"

namespace sarqc {

// inv_freq_i for i < head_dim/2 after the config's rope scaling, in double precision.
std::vector<double> rope_inv_freq(const ModelConfig& config);

// Refuses sequence lengths the rope type does not define (dynamic beyond max positions);
// `what` names the flag or setting that chose the length.
void check_rope_seqlen(const ModelConfig& config, int64_t seqlen, const std::string& what);

struct RotaryTables {
  at::Tensor cos;  // [T, hd], f repeated for both halves
  at::Tensor sin;
  // Gemma 3's sliding layers: the same for rope_local_theta (undefined for other models).
  at::Tensor local_cos, local_sin;
  RotaryTables local() const { return {local_cos, local_sin, {}, {}}; }
};

// Angles are computed in double and rounded once to `dtype`.
RotaryTables make_rotary_tables(const ModelConfig& config, int64_t seqlen, c10::Device device,
                                c10::ScalarType dtype);

// x: [B, heads, T, hd] at positions offset .. offset+T-1 (within the tables' length).
at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& tables, int64_t offset = 0);

}  // namespace sarqc
