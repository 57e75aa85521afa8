#pragma once
// How a decoder layer's linears are calibrated together (docs/methods.md §7, §8).
#include <string>

#include "sarqc/model/layout.h"

namespace sarqc {

inline constexpr int kSequentialGroups = 4;

// True-sequential group: 0 [q,k,v] -> 1 [o] -> 2 [gate,up] -> 3 [down]; in MoE layers every
// expert's gate/up (and the shared expert's) share group 2, every down group 3. −1 for routers
// and the shared-expert gate, which stay unquantized.
int sequential_group(const LinearModule& module);

// Modules that see the same input share one Gram matrix: q/k/v ("attention"), and gate/up of
// one MLP (its parent path, e.g. "mlp" or "block_sparse_moe.experts.3").
std::string input_key(const LinearModule& module);

// The one module per key that feeds the accumulator (the others see the identical tensor).
bool feeds_key(const LinearModule& module);

// "mlp.gate_proj" -> "mlp"
std::string parent_of(const std::string& local_name);

}  // namespace sarqc
