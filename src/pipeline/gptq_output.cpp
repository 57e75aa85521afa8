#include "sarqc/pipeline/gptq_output.h"

#include <algorithm>
#include <optional>
#include <regex>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sarqc/calib/module_groups.h"

namespace sarqc {

std::map<std::string, std::string> unrepresentable_modules(const ModelLayout& layout,
                                                           const QuantGrid& grid) {
  std::map<std::string, std::string> reason;  // module name -> why
  for (const auto& layer : layout.layers) {
    std::map<std::string, std::string> sibling_reason;
    bool experts_fail = false;
    std::string expert_reason;
    for (const auto& m : layer.linears) {
      if (!m.quantizable) continue;
      std::string why;
      if (grid.group_size > 0 && m.in_features % grid.group_size != 0)
        why = fmt::format("in_features {} is not a multiple of group size {}", m.in_features,
                          grid.group_size);
      else if (!m.packable(grid.bits))
        why = fmt::format("shape [{}, {}] cannot be packed at {} bits (needs multiples of {})",
                          m.out_features, m.in_features, grid.bits, grid.bits == 3 ? 32 : 32 / grid.bits);
      if (why.empty()) continue;
      reason[m.name] = why;
      if (m.expert >= 0) experts_fail = true, expert_reason = why;
      if (m.role != LinearRole::O && m.role != LinearRole::Down)
        sibling_reason[input_key(m)] = why;
    }
    for (const auto& m : layer.linears) {
      if (!m.quantizable || reason.count(m.name)) continue;
      if (m.expert >= 0 && experts_fail)
        reason[m.name] = "another expert of this layer cannot be packed: " + expert_reason;
      else if (m.role != LinearRole::O && m.role != LinearRole::Down &&
               sibling_reason.count(input_key(m)))
        reason[m.name] = "a fused sibling cannot be packed: " + sibling_reason[input_key(m)];
    }
  }
  return reason;
}

namespace {

std::string regex_escape(const std::string& s) {
  return std::regex_replace(s, std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)");
}

}  // namespace

nlohmann::json dynamic_exclusions(const ModelLayout& layout,
                                  const std::map<std::string, std::string>& skipped) {
  nlohmann::json dynamic = nlohmann::json::object();
  for (const auto& layer : layout.layers)
    for (const auto& m : layer.linears) {
      if (!skipped.count(m.name)) continue;
      const std::string prefix = fmt::format("model.layers.{}.", layer.index);
      std::string pattern;
      if (m.expert >= 0) {
        pattern = regex_escape(prefix) + R"((mlp|block_sparse_moe)\.experts)";
      } else {
        const std::string parent = regex_escape(prefix + parent_of(m.local_name)) + R"(\.)";
        if (m.role == LinearRole::Q || m.role == LinearRole::K || m.role == LinearRole::V)
          pattern = parent + "(q|k|v|qkv)_proj$";
        else if (m.role == LinearRole::Gate || m.role == LinearRole::Up)
          pattern = parent + "(gate|up|gate_up)_proj$";
        else
          pattern = regex_escape(m.name) + "$";
      }
      dynamic["-:" + pattern] = nlohmann::json::object();
    }
  return dynamic;
}

nlohmann::json modules_in_block_to_quantize(const ModelLayout& layout,
                                            const std::map<std::string, std::string>& skipped) {
  std::optional<std::vector<std::vector<std::string>>> common;
  for (const auto& layer : layout.layers) {
    std::vector<std::vector<std::string>> groups(kSequentialGroups);
    for (const auto& m : layer.linears)
      if (m.quantizable && !skipped.count(m.name) && sequential_group(m) >= 0)
        groups[static_cast<size_t>(sequential_group(m))].push_back(m.local_name);
    groups.erase(std::remove_if(groups.begin(), groups.end(),
                                [](const auto& g) { return g.empty(); }),
                 groups.end());
    if (common && *common != groups) return nullptr;
    common = groups;
  }
  return common ? nlohmann::json(*common) : nlohmann::json(nullptr);
}

}  // namespace sarqc
