#include "sarqc/pipeline/inspect.h"

#include <algorithm>

#include "sarqc/pipeline/memory_estimate.h"
#include "sarqc/pipeline/quantize.h"

#include <algorithm>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "sarqc/io/checkpoint.h"
#include "sarqc/util/error.h"
#include "sarqc/version.h"

namespace sarqc {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr int kBitWidths[] = {2, 3, 4, 8};

std::vector<int> packable_bits(const LinearModule& m) {
  std::vector<int> bits;
  for (int b : kBitWidths)
    if (m.packable(b)) bits.push_back(b);
  return bits;
}

// The estimate `quantize` prints for its default settings (gptq, fp32, the calibration shape).
MemoryEstimate estimate_memory(const ModelSummary& s, const Checkpoint& ckpt,
                               const InspectOptions& options) {
  MemoryEstimate mem;
  mem.weights_bytes = ckpt.total_bytes();
  mem.nsamples = options.nsamples;
  mem.seqlen = s.config.max_position_embeddings > 0
                   ? std::min(options.seqlen, s.config.max_position_embeddings)
                   : options.seqlen;
  QuantizeMemoryInputs inputs;
  inputs.tokens = mem.nsamples * mem.seqlen;
  inputs.cache_mlp_hidden =
      inputs.tokens * s.config.intermediate_size * int64_t{4} <= kDefaultStageCacheBytes;
  const QuantizeMemoryEstimate e = estimate_quantize_memory(s.config, s.layout, inputs);
  mem.largest_layer_bytes = uint64_t(e.layer_bytes);
  mem.largest_gram_bytes = uint64_t(e.gram_bytes);
  mem.rounding_bytes = uint64_t(e.rounding_bytes);
  mem.calibration_stream_bytes = uint64_t(e.stream_bytes);
  mem.forward_bytes = uint64_t(e.forward_bytes);
  mem.quantize_peak_bytes = uint64_t(e.peak_bytes);
  mem.description = e.describe();
  return mem;
}

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = double(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", value, units[unit]);
}

std::string thousands(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

json module_json(const LinearModule& m) {
  return {{"name", m.local_name},
          {"full_name", m.name},
          {"role", std::string(linear_role_name(m.role))},
          {"in_features", m.in_features},
          {"out_features", m.out_features},
          {"bias", m.has_bias},
          {"quantizable", m.quantizable},
          {"expert", m.expert == kNotExpert      ? json(nullptr)
                     : m.expert == kSharedExpert ? json("shared")
                                                 : json(m.expert)},
          {"packable_bits", packable_bits(m)}};
}

// One row per module in text output; routed experts are shown once as "experts.*".
std::vector<std::string> module_rows(const DecoderLayerLayout& layer) {
  std::vector<std::string> rows;
  int64_t experts = 0;
  for (const auto& m : layer.linears) experts = std::max<int64_t>(experts, m.expert + 1);
  for (const auto& m : layer.linears) {
    if (m.expert > 0) continue;
    std::string name = m.local_name;
    if (m.expert == 0) name.replace(name.find(".0."), 3, ".*.");
    const auto bits = packable_bits(m);
    rows.push_back(fmt::format(
        "    {:<34} {:>7} {:>7}  {:<4} {:<11} {}{}", name, m.in_features, m.out_features,
        m.has_bias ? "yes" : "no", m.quantizable ? "yes" : "no",
        !m.quantizable ? "-" : bits.empty() ? "none (kept in full precision)"
                                            : fmt::format("{}", fmt::join(bits, ",")),
        m.expert == 0 ? fmt::format("   (x{} experts)", experts) : ""));
  }
  return rows;
}

}  // namespace

ModelSummary inspect_model(const InspectOptions& options) {
  ModelSummary s;
  s.model_dir = options.model_dir;
  s.config = load_model_config(options.model_dir);
  const Checkpoint ckpt = Checkpoint::open(options.model_dir);
  check_config_fits_checkpoint(s.config, ckpt);
  s.layout = build_layout(s.config);
  const LayoutCheck check = check_checkpoint(s.layout, ckpt);
  s.warnings = check.warnings;
  s.unused_tensors = check.unused_tensors;

  s.sharded = ckpt.sharded();
  for (const auto& file : ckpt.files()) {
    s.files.push_back(file.path().filename().string());
    for (const auto& t : file.tensors()) ++s.dtype_tensor_counts[std::string(dtype_name(t.dtype))];
  }
  s.tensor_count = ckpt.tensor_count();
  s.parameters = ckpt.total_numel();
  for (const auto& layer : s.layout.layers)
    for (const auto& m : layer.linears)
      if (m.quantizable) s.quantizable_parameters += m.in_features * m.out_features;
  s.memory = estimate_memory(s, ckpt, options);

  try {
    const auto tokenizer = load_tokenizer(options.model_dir);
    s.tokenizer = TokenizerSummary{tokenizer->kind(), tokenizer->source(),
                                   tokenizer->vocab_size(), tokenizer->special()};
    if (tokenizer->vocab_size() > s.config.vocab_size)
      s.warnings.push_back(fmt::format("tokenizer has {} pieces but the model's vocab_size is {}",
                                       tokenizer->vocab_size(), s.config.vocab_size));
  } catch (const Error& e) {
    // A missing tokenizer does not stop inspection; a corrupt or unsupported one does.
    if (find_tokenizer_file(options.model_dir)) throw;
    s.tokenizer_error = e.what();
  }
  return s;
}

json to_json(const ModelSummary& s) {
  const ModelConfig& c = s.config;
  json rope = {{"type", std::string(rope_type_name(c.rope_scaling.type))},
               {"factor", c.rope_scaling.factor}};
  if (c.rope_scaling.type == RopeType::Llama3) {
    rope["low_freq_factor"] = c.rope_scaling.low_freq_factor;
    rope["high_freq_factor"] = c.rope_scaling.high_freq_factor;
    rope["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
  }
  if (c.rope_scaling.type == RopeType::Yarn) {
    rope["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    rope["beta_fast"] = c.rope_scaling.beta_fast;
    rope["beta_slow"] = c.rope_scaling.beta_slow;
    rope["attention_factor"] = c.rope_scaling.attention_factor;
  }
  json moe = nullptr;
  if (c.is_moe()) {
    std::vector<int64_t> moe_layers;
    for (const auto& layer : s.layout.layers)
      if (layer.moe) moe_layers.push_back(layer.index);
    moe = {{"num_experts", c.num_experts},
           {"num_experts_per_tok", c.num_experts_per_tok},
           {"expert_intermediate_size", c.expert_intermediate_size()},
           {"shared_expert_intermediate_size", c.shared_expert_intermediate_size},
           {"norm_topk_prob", c.norm_topk_prob},
           {"moe_layers", moe_layers}};
  }
  json config = {{"hidden_size", c.hidden_size},
                 {"intermediate_size", c.intermediate_size},
                 {"num_hidden_layers", c.num_hidden_layers},
                 {"num_attention_heads", c.num_attention_heads},
                 {"num_key_value_heads", c.num_key_value_heads},
                 {"head_dim", c.head_dim},
                 {"vocab_size", c.vocab_size},
                 {"max_position_embeddings", c.max_position_embeddings},
                 {"rms_norm_eps", c.rms_norm_eps},
                 {"rope_theta", c.rope_theta},
                 {"rope_scaling", rope},
                 {"tie_word_embeddings", s.layout.tied_embeddings},
                 {"qkv_bias", c.qkv_bias},
                 {"o_bias", c.o_bias},
                 {"mlp_bias", c.mlp_bias},
                 {"qk_norm", c.qk_norm},
                 {"sliding_window", c.sliding_window ? json(*c.sliding_window) : json(nullptr)},
                 {"moe", moe}};

  json layers = json::array();
  for (const auto& layer : s.layout.layers) {
    json modules = json::array();
    int64_t params = 0;
    for (const auto& m : layer.linears) {
      modules.push_back(module_json(m));
      params += m.numel();
    }
    for (const auto& n : layer.norms) params += n.shape[0];
    layers.push_back(
        {{"index", layer.index}, {"moe", layer.moe}, {"parameters", params}, {"modules", modules}});
  }

  json tokenizer = nullptr;
  if (s.tokenizer) {
    const auto& sp = s.tokenizer->special;
    auto id = [](const std::optional<int32_t>& v) { return v ? json(*v) : json(nullptr); };
    tokenizer = {{"kind", s.tokenizer->kind},
                 {"file", s.tokenizer->file.filename().string()},
                 {"vocab_size", s.tokenizer->vocab_size},
                 {"bos_id", id(sp.bos_id)},
                 {"eos_id", id(sp.eos_id)},
                 {"unk_id", id(sp.unk_id)},
                 {"add_bos", !sp.prefix.empty()},
                 {"add_eos", !sp.suffix.empty()},
                 {"prefix_ids", sp.prefix},
                 {"suffix_ids", sp.suffix}};
  }
  const MemoryEstimate& m = s.memory;
  return {
      {"schema_version", kInspectSchemaVersion},
      {"sarqc_version", kVersion},
      {"model_dir", s.model_dir.string()},
      {"model_type", c.model_type},
      {"architecture", c.architecture},
      {"torch_dtype", c.torch_dtype},
      {"config", config},
      {"checkpoint",
       {{"files", s.files},
        {"sharded", s.sharded},
        {"tensors", s.tensor_count},
        {"bytes", m.weights_bytes},
        {"dtypes", s.dtype_tensor_counts}}},
      {"parameters", {{"total", s.parameters}, {"quantizable", s.quantizable_parameters}}},
      {"layers", layers},
      {"memory",
       {{"weights_bytes", m.weights_bytes},
        {"largest_layer_bytes", m.largest_layer_bytes},
        {"largest_gram_bytes", m.largest_gram_bytes},
        {"rounding_bytes", m.rounding_bytes},
        {"forward_bytes", m.forward_bytes},
        {"calibration_stream_bytes", m.calibration_stream_bytes},
        {"quantize_peak_bytes", m.quantize_peak_bytes},
        {"assumed_nsamples", m.nsamples},
        {"assumed_seqlen", m.seqlen}}},
      {"tokenizer", tokenizer},
      {"tokenizer_error", s.tokenizer_error.empty() ? json(nullptr) : json(s.tokenizer_error)},
      {"warnings", s.warnings},
      {"unused_tensors", s.unused_tensors},
  };
}

std::string to_text(const ModelSummary& s) {
  const ModelConfig& c = s.config;
  std::ostringstream out;
  auto line = [&](const char* key, const std::string& value) {
    out << fmt::format("{:<13}{}\n", key, value);
  };
  line("model", s.model_dir.string());
  line("architecture", fmt::format("{} ({})", c.architecture.empty() ? "-" : c.architecture,
                                   c.model_type));
  int64_t moe_layers = 0;
  for (const auto& layer : s.layout.layers) moe_layers += layer.moe;
  line("layers", fmt::format("{}{}", c.num_hidden_layers,
                             c.is_moe() ? fmt::format(" ({} MoE)", moe_layers) : " (dense)"));
  line("hidden", fmt::format("{}  intermediate {}  heads {} (kv {}, head_dim {})", c.hidden_size,
                             c.intermediate_size, c.num_attention_heads, c.num_key_value_heads,
                             c.head_dim));
  if (c.is_moe())
    line("experts", fmt::format("{} x width {}, top-{}{}{}", c.num_experts,
                                c.expert_intermediate_size(), c.num_experts_per_tok,
                                c.norm_topk_prob ? ", renormalized" : "",
                                c.shared_expert_intermediate_size > 0
                                    ? fmt::format(", shared expert width {}",
                                                  c.shared_expert_intermediate_size)
                                    : ""));
  line("vocab", fmt::format("{}  max positions {}", c.vocab_size, c.max_position_embeddings));
  line("rope", fmt::format("theta {}  scaling {}{}", c.rope_theta,
                           rope_type_name(c.rope_scaling.type),
                           c.rope_local_theta > 0
                               ? fmt::format("  (sliding layers: theta {})", c.rope_local_theta)
                               : std::string()));
  if (c.sliding_window && !c.layer_types.empty())
    line("attention", fmt::format("sliding window {} on {} of {} layers", *c.sliding_window,
                                  std::count(c.layer_types.begin(), c.layer_types.end(),
                                             "sliding_attention"),
                                  c.layer_types.size()));
  line("embeddings", s.layout.tied_embeddings ? "tied (lm_head = embed_tokens)" : "untied");
  line("parameters", fmt::format("{}  (quantizable linear weights {}, {:.1f}%)",
                                 thousands(s.parameters), thousands(s.quantizable_parameters),
                                 s.parameters ? 100.0 * s.quantizable_parameters / s.parameters
                                              : 0.0));
  std::vector<std::string> dtypes;
  for (const auto& [dtype, count] : s.dtype_tensor_counts)
    dtypes.push_back(fmt::format("{} x{}", dtype, count));
  line("checkpoint", fmt::format("{} file(s), {} tensors, {}  [{}]  dtypes {}", s.files.size(),
                                 s.tensor_count, human_bytes(s.memory.weights_bytes),
                                 fmt::join(s.files, ", "), fmt::join(dtypes, ", ")));
  line("memory", fmt::format("quantize (gptq, fp32, {} x {} tokens) peak ~{}",
                             s.memory.nsamples, s.memory.seqlen, s.memory.description));
  if (s.tokenizer) {
    const auto& sp = s.tokenizer->special;
    auto id = [](const std::optional<int32_t>& v) { return v ? std::to_string(*v) : "-"; };
    line("tokenizer", fmt::format("{} {} ({} pieces; BOS {}{}, EOS {}{})", s.tokenizer->kind,
                                  s.tokenizer->file.filename().string(), s.tokenizer->vocab_size,
                                  id(sp.bos_id), sp.prefix.empty() ? "" : " added",
                                  id(sp.eos_id), sp.suffix.empty() ? "" : " added"));
  } else {
    line("tokenizer", "none usable: " + s.tokenizer_error);
  }

  // Consecutive layers with the same modules share one table.
  size_t begin = 0;
  while (begin < s.layout.layers.size()) {
    const auto rows = module_rows(s.layout.layers[begin]);
    size_t end = begin + 1;
    while (end < s.layout.layers.size() && module_rows(s.layout.layers[end]) == rows &&
           s.layout.layers[end].moe == s.layout.layers[begin].moe)
      ++end;
    out << "\n"
        << (end - begin == 1 ? fmt::format("layer {}", begin)
                             : fmt::format("layers {}-{}", begin, end - 1))
        << (s.layout.layers[begin].moe ? " (MoE)" : " (dense)") << "\n";
    out << fmt::format("    {:<34} {:>7} {:>7}  {:<4} {:<11} {}\n", "module", "in", "out", "bias",
                       "quantizable", "packable bits");
    for (const auto& row : rows) out << row << "\n";
    begin = end;
  }
  for (const auto& w : s.warnings) out << "\nwarning: " << w;
  if (!s.warnings.empty()) out << "\n";
  return out.str();
}

}  // namespace sarqc
