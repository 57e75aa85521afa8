#pragma once
// What the GPTQ checkpoint says about modules it cannot hold (docs/formats.md §11).
#include <map>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "sarqc/model/layout.h"
#include "sarqc/quant/grid.h"

namespace sarqc {

// Module name -> why the GPTQ format cannot hold it at this grid: group size not dividing
// in_features, or a shape the packing cannot hold. Fused siblings (q/k/v, gate/up of one MLP)
// and a layer's expert set are kept or dropped together.
std::map<std::string, std::string> unrepresentable_modules(const ModelLayout& layout,
                                                           const QuantGrid& grid);

// vLLM/GPTQModel "dynamic" negative entries ("-:<regex>") for those modules, matching both the
// split and the fused module names.
nlohmann::json dynamic_exclusions(const ModelLayout& layout,
                                  const std::map<std::string, std::string>& unquantized);

// transformers/optimum "modules_in_block_to_quantize" (they ignore `dynamic`): the quantized
// modules of a decoder layer by true-sequential group, when every layer quantizes the same
// local names; null otherwise (the loader then cannot skip the unquantized ones).
nlohmann::json modules_in_block_to_quantize(const ModelLayout& layout,
                                            const std::map<std::string, std::string>& unquantized);

}  // namespace sarqc
