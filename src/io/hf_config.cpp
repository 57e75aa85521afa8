#include "sarqc/io/hf_config.h"

#include <algorithm>
#include <cmath>
#include <optional>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "sarqc/util/error.h"
#include "sarqc/util/json_file.h"

namespace sarqc {
using nlohmann::json;

namespace {

struct FamilyRow {
  ModelFamily family;
  const char* model_type;
  const char* architecture;
};
constexpr FamilyRow kFamilies[] = {
    {ModelFamily::Llama, "llama", "LlamaForCausalLM"},
    {ModelFamily::Mistral, "mistral", "MistralForCausalLM"},
    {ModelFamily::Qwen2, "qwen2", "Qwen2ForCausalLM"},
    {ModelFamily::Qwen3, "qwen3", "Qwen3ForCausalLM"},
    {ModelFamily::Mixtral, "mixtral", "MixtralForCausalLM"},
    {ModelFamily::Qwen2Moe, "qwen2_moe", "Qwen2MoeForCausalLM"},
    {ModelFamily::Qwen3Moe, "qwen3_moe", "Qwen3MoeForCausalLM"},
    {ModelFamily::Gemma3Text, "gemma3_text", "Gemma3ForCausalLM"},
};

const FamilyRow& family_row(ModelFamily family) {
  for (const auto& row : kFamilies)
    if (row.family == family) return row;
  return kFamilies[0];
}

// Typed access to config.json fields with one-line errors naming the file and field.
class Fields {
 public:
  Fields(const json& j, std::string source, std::string model_type)
      : j_(j), source_(std::move(source)), model_type_(std::move(model_type)) {}

  bool has(const char* name) const { return j_.contains(name) && !j_[name].is_null(); }
  const json& raw(const char* name) const { return j_[name]; }

  [[noreturn]] void fail(const char* name, const std::string& expected) const {
    if (!has(name))
      throw_bad_input(fmt::format("{}: field '{}' is required for model_type '{}' ({})", source_,
                                  name, model_type_, expected));
    throw_bad_input(fmt::format("{}: field '{}' must be {}, got {}", source_, name, expected,
                                j_[name].dump()));
  }

  int64_t positive_int(const char* name) const {
    if (!has(name) || !j_[name].is_number_integer() || j_[name].get<int64_t>() <= 0)
      fail(name, "a positive integer");
    return j_[name].get<int64_t>();
  }
  int64_t positive_int_or(const char* name, int64_t fallback) const {
    return has(name) ? positive_int(name) : fallback;
  }
  int64_t non_negative_int_or(const char* name, int64_t fallback) const {
    if (!has(name)) return fallback;
    if (!j_[name].is_number_integer() || j_[name].get<int64_t>() < 0)
      fail(name, "a non-negative integer");
    return j_[name].get<int64_t>();
  }
  double positive_number(const char* name) const {
    if (!has(name) || !j_[name].is_number() || !(j_[name].get<double>() > 0))
      fail(name, "a positive number");
    return j_[name].get<double>();
  }
  double positive_number_or(const char* name, double fallback) const {
    return has(name) ? positive_number(name) : fallback;
  }
  bool boolean_or(const char* name, bool fallback) const {
    if (!has(name)) return fallback;
    if (!j_[name].is_boolean()) fail(name, "true or false");
    return j_[name].get<bool>();
  }
  std::string string_or(const char* name, const std::string& fallback) const {
    if (!has(name)) return fallback;
    if (!j_[name].is_string()) fail(name, "a string");
    return j_[name].get<std::string>();
  }

  const std::string& source() const { return source_; }

 private:
  const json& j_;
  std::string source_;
  std::string model_type_;
};

RopeScaling parse_rope_scaling(const json& scaling, const std::string& where) {
  RopeScaling rope;
  if (scaling.is_null()) return rope;
  if (!scaling.is_object())
    throw_bad_input(fmt::format("{} must be null or an object, got {}", where, scaling.dump()));
  Fields f(scaling, where, "");
  std::string type = f.string_or("rope_type", f.string_or("type", "default"));
  auto factor = [&] {
    if (!f.has("factor") || !scaling["factor"].is_number() || scaling["factor"].get<double>() <= 0)
      throw_bad_input(fmt::format("{}: rope type '{}' needs a positive 'factor'", where, type));
    return scaling["factor"].get<double>();
  };
  if (type == "default") {
    rope.type = RopeType::Default;
  } else if (type == "linear") {
    rope.type = RopeType::Linear;
    rope.factor = factor();
  } else if (type == "dynamic") {
    rope.type = RopeType::Dynamic;
    rope.factor = factor();
  } else if (type == "llama3") {
    rope.type = RopeType::Llama3;
    rope.factor = factor();
    for (const char* field : {"low_freq_factor", "high_freq_factor",
                              "original_max_position_embeddings"})
      if (!f.has(field))
        throw_bad_input(fmt::format("{}: rope type 'llama3' needs field '{}'", where, field));
    rope.low_freq_factor = f.positive_number("low_freq_factor");
    rope.high_freq_factor = f.positive_number("high_freq_factor");
    rope.original_max_position_embeddings = f.positive_int("original_max_position_embeddings");
    if (rope.high_freq_factor <= rope.low_freq_factor)
      throw_bad_input(fmt::format("{}: llama3 rope needs high_freq_factor > low_freq_factor",
                                  where));
  } else if (type == "yarn") {
    rope.type = RopeType::Yarn;
    // transformers: a null factor is max_position_embeddings / original (DeepSeek-V3's
    // convention), and so is a missing one here; a missing original length is
    // max_position_embeddings (finish_yarn fills both).
    if (f.has("factor")) rope.factor = factor();
    else rope.factor = 0;
    if (f.has("original_max_position_embeddings"))
      rope.original_max_position_embeddings = f.positive_int("original_max_position_embeddings");
    rope.attention_factor = f.has("attention_factor") ? f.positive_number("attention_factor") : 0;
    // transformers reads mscale and mscale_all_dim with `if mscale and mscale_all_dim`: 0 is unset.
    if (f.has("mscale") && scaling["mscale"] != 0) rope.mscale = f.positive_number("mscale");
    if (f.has("mscale_all_dim") && scaling["mscale_all_dim"] != 0)
      rope.mscale_all_dim = f.positive_number("mscale_all_dim");
    // transformers reads these with `or`: 0 means the default as well.
    if (f.has("beta_fast") && scaling["beta_fast"] != 0) rope.beta_fast = f.positive_number("beta_fast");
    if (f.has("beta_slow") && scaling["beta_slow"] != 0) rope.beta_slow = f.positive_number("beta_slow");
    rope.truncate = f.boolean_or("truncate", true);
  } else {
    throw_bad_input(fmt::format("{}: rope type '{}' is not supported (supported: default, "
                                "linear, dynamic, llama3, yarn)",
                                where, type));
  }
  return rope;
}

// YaRN's defaults from the model's lengths, and its attention factor (as transformers computes
// them in _compute_yarn_parameters).
void finish_yarn(RopeScaling& rope, int64_t max_position_embeddings,
                 std::optional<int64_t> top_level_original, const std::string& where) {
  if (rope.type != RopeType::Yarn) return;
  if (top_level_original) rope.original_max_position_embeddings = *top_level_original;
  if (rope.original_max_position_embeddings <= 0)
    rope.original_max_position_embeddings = max_position_embeddings;
  if (rope.original_max_position_embeddings <= 0)
    throw_bad_input(fmt::format("{}: rope type 'yarn' needs original_max_position_embeddings or "
                                "max_position_embeddings",
                                where));
  if (rope.factor <= 0)
    rope.factor = static_cast<double>(max_position_embeddings) /
                  static_cast<double>(rope.original_max_position_embeddings);
  if (rope.factor <= 0)
    throw_bad_input(fmt::format("{}: rope type 'yarn' needs a positive 'factor' (or "
                                "max_position_embeddings to derive it from)",
                                where));
  if (rope.attention_factor <= 0) {
    auto mscale = [&](double m) { return rope.factor <= 1 ? 1.0 : 0.1 * m * std::log(rope.factor) + 1.0; };
    rope.attention_factor = rope.mscale > 0 && rope.mscale_all_dim > 0
                                ? mscale(rope.mscale) / mscale(rope.mscale_all_dim)
                                : mscale(1.0);
  }
}

// Rope settings live at the top level (rope_theta, rope_scaling) or, from transformers 5 on, in
// rope_parameters {rope_type, rope_theta, ...}.
void parse_rope(const json& j, const Fields& f, ModelConfig& cfg) {
  const double default_theta =
      cfg.family == ModelFamily::Mixtral || cfg.family == ModelFamily::Gemma3Text ? 1e6 : 10000.0;
  if (f.has("rope_parameters")) {
    const json& params = j["rope_parameters"];
    const std::string where = f.source() + ": rope_parameters";
    if (!params.is_object())
      throw_bad_input(fmt::format("{} must be an object, got {}", where, params.dump()));
    const bool per_layer_type =
        params.contains("full_attention") || params.contains("sliding_attention");
    const bool nested = per_layer_type || (!params.contains("rope_type") &&
                                           !params.contains("rope_theta") && !params.empty() &&
                                           params.begin()->is_object());
    if (nested && cfg.family == ModelFamily::Gemma3Text) {
      // {full_attention: {...}, sliding_attention: {...}}: global and local rope. GPTQModel
      // 7.7 saves Gemma 3 with "rope_type" and "rope_theta" ({"global", "local"}) beside them,
      // which transformers ignores for the per-layer-type entries: so does sarqc.
      for (const auto& [key, value] : params.items())
        if (key != "full_attention" && key != "sliding_attention" && key != "rope_type" &&
            key != "rope_theta")
          throw_bad_input(fmt::format("{}: unknown layer type '{}' (expected full_attention, "
                                      "sliding_attention)",
                                      where, key));
      const json none = json::object();
      const json& global = params.contains("full_attention") ? params["full_attention"] : none;
      const json& local = params.contains("sliding_attention") ? params["sliding_attention"] : none;
      Fields gf(global, where + ".full_attention", cfg.model_type);
      Fields lf(local, where + ".sliding_attention", cfg.model_type);
      cfg.rope_theta = gf.positive_number_or("rope_theta", f.positive_number_or("rope_theta", 1e6));
      cfg.rope_scaling = parse_rope_scaling(global, where + ".full_attention");
      cfg.rope_local_theta =
          lf.positive_number_or("rope_theta", f.positive_number_or("rope_local_base_freq", 1e4));
      const RopeScaling local_scaling = parse_rope_scaling(local, where + ".sliding_attention");
      if (local_scaling.type != RopeType::Default)
        throw_bad_input(fmt::format("{}.sliding_attention: rope type '{}' is not supported for "
                                    "sliding layers (default only)",
                                    where, rope_type_name(local_scaling.type)));
      finish_yarn(cfg.rope_scaling, cfg.max_position_embeddings, std::nullopt,
                  where + ".full_attention");
      return;
    }
    if (nested)
      throw_bad_input(fmt::format("{}: per-layer-type rope parameters are not supported", where));
    Fields pf(params, where, cfg.model_type);
    cfg.rope_theta = pf.positive_number_or("rope_theta", f.positive_number_or("rope_theta",
                                                                              default_theta));
    cfg.rope_scaling = parse_rope_scaling(params, where);
  } else {
    cfg.rope_theta = f.positive_number_or("rope_theta", default_theta);
    if (f.has("rope_scaling"))
      cfg.rope_scaling = parse_rope_scaling(j["rope_scaling"], f.source() + ": rope_scaling");
  }
  if (cfg.family == ModelFamily::Gemma3Text && cfg.rope_local_theta == 0)  // transformers 4
    cfg.rope_local_theta = f.positive_number_or("rope_local_base_freq", 1e4);
  // A top-level original_max_position_embeddings (Phi-3's convention) wins, as in transformers.
  const std::optional<int64_t> top_level_original =
      f.has("original_max_position_embeddings")
          ? std::optional<int64_t>(f.positive_int("original_max_position_embeddings"))
          : std::nullopt;
  finish_yarn(cfg.rope_scaling, cfg.max_position_embeddings, top_level_original,
              f.source() + ": rope");
}

}  // namespace

std::string_view model_type_name(ModelFamily family) { return family_row(family).model_type; }

const std::vector<std::string>& supported_model_types() {
  static const std::vector<std::string> types = [] {
    std::vector<std::string> out;
    for (const auto& row : kFamilies) out.emplace_back(row.model_type);
    return out;
  }();
  return types;
}

std::string_view rope_type_name(RopeType type) {
  switch (type) {
    case RopeType::Default: return "default";
    case RopeType::Linear: return "linear";
    case RopeType::Dynamic: return "dynamic";
    case RopeType::Llama3: return "llama3";
    case RopeType::Yarn: return "yarn";
  }
  return "default";
}

bool ModelConfig::layer_is_moe(int64_t layer) const {
  if (num_experts <= 0) return false;
  if (family == ModelFamily::Mixtral) return true;
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end())
    return false;
  return (layer + 1) % decoder_sparse_step == 0;
}

int64_t ModelConfig::expert_intermediate_size() const {
  return family == ModelFamily::Mixtral ? intermediate_size : moe_intermediate_size;
}

ModelConfig parse_model_config(const json& j, const std::string& source) {
  if (!j.is_object()) throw_bad_input(fmt::format("{}: must be a JSON object", source));
  ModelConfig cfg;
  if (!j.contains("model_type") || !j["model_type"].is_string())
    throw_bad_input(fmt::format("{}: missing string field 'model_type' (supported: {})", source,
                                fmt::join(supported_model_types(), ", ")));
  cfg.model_type = j["model_type"].get<std::string>();
  const FamilyRow* row = nullptr;
  for (const auto& r : kFamilies)
    if (cfg.model_type == r.model_type) row = &r;
  if (row == nullptr)
    throw_bad_input(fmt::format("{}: model_type '{}' is not supported (supported: {})", source,
                                cfg.model_type, fmt::join(supported_model_types(), ", ")));
  cfg.family = row->family;
  const Fields f(j, source, cfg.model_type);

  if (f.has("architectures")) {
    const json& arch = j["architectures"];
    if (!arch.is_array() || arch.empty() || !arch[0].is_string())
      f.fail("architectures", "a non-empty array of strings");
    cfg.architecture = arch[0].get<std::string>();
    if (cfg.architecture != row->architecture)
      spdlog::warn("{}: architectures[0] is '{}', expected '{}' for model_type '{}'", source,
                   cfg.architecture, row->architecture, cfg.model_type);
  }
  cfg.torch_dtype = f.string_or("torch_dtype", f.string_or("dtype", ""));
  const bool gemma = cfg.family == ModelFamily::Gemma3Text;
  // Gemma names its activation hidden_activation (hidden_act is a legacy field there).
  const char* act_field = gemma ? "hidden_activation" : "hidden_act";
  const std::string act = f.string_or(act_field, gemma ? "gelu_pytorch_tanh" : "silu");
  if (act == "silu" && !gemma)
    cfg.activation = Activation::Silu;
  else if ((act == "gelu_pytorch_tanh" || act == "gelu_new") && gemma)
    cfg.activation = Activation::GeluTanh;
  else
    throw_bad_input(fmt::format("{}: {} '{}' is not supported (expected '{}')", source, act_field,
                                act, gemma ? "gelu_pytorch_tanh" : "silu"));

  cfg.hidden_size = f.positive_int("hidden_size");
  cfg.intermediate_size = f.positive_int("intermediate_size");
  cfg.num_hidden_layers = f.positive_int("num_hidden_layers");
  cfg.vocab_size = f.positive_int("vocab_size");
  cfg.num_attention_heads = f.positive_int("num_attention_heads");
  cfg.num_key_value_heads = f.positive_int_or("num_key_value_heads", cfg.num_attention_heads);
  if (cfg.num_attention_heads % cfg.num_key_value_heads != 0)
    throw_bad_input(fmt::format("{}: num_attention_heads {} is not a multiple of "
                                "num_key_value_heads {}",
                                source, cfg.num_attention_heads, cfg.num_key_value_heads));
  if (f.has("head_dim") || gemma) {  // Gemma3TextConfig's default head_dim is 256
    cfg.head_dim = f.positive_int_or("head_dim", 256);
  } else {
    if (cfg.hidden_size % cfg.num_attention_heads != 0)
      throw_bad_input(fmt::format("{}: hidden_size {} is not a multiple of num_attention_heads {} "
                                  "and no head_dim is given",
                                  source, cfg.hidden_size, cfg.num_attention_heads));
    cfg.head_dim = cfg.hidden_size / cfg.num_attention_heads;
  }
  if (cfg.head_dim % 2 != 0)
    throw_bad_input(fmt::format("{}: head_dim {} must be even for rotary embeddings", source,
                                cfg.head_dim));
  // Gemma3TextConfig's defaults where a hand-written config leaves them out.
  cfg.max_position_embeddings = f.non_negative_int_or("max_position_embeddings", gemma ? 131072 : 0);
  cfg.rms_norm_eps = f.positive_number("rms_norm_eps");
  cfg.tie_word_embeddings = f.boolean_or("tie_word_embeddings", gemma);
  parse_rope(j, f, cfg);

  switch (cfg.family) {
    case ModelFamily::Llama:
      cfg.qkv_bias = cfg.o_bias = f.boolean_or("attention_bias", false);
      cfg.mlp_bias = f.boolean_or("mlp_bias", false);
      break;
    case ModelFamily::Qwen2:
    case ModelFamily::Qwen2Moe:
      cfg.qkv_bias = true;  // fixed by the architecture, not configurable
      break;
    case ModelFamily::Qwen3:
    case ModelFamily::Qwen3Moe:
      cfg.qkv_bias = cfg.o_bias = f.boolean_or("attention_bias", false);
      cfg.qk_norm = true;
      break;
    case ModelFamily::Mistral:
    case ModelFamily::Mixtral:
      break;
    case ModelFamily::Gemma3Text:
      cfg.qkv_bias = cfg.o_bias = f.boolean_or("attention_bias", false);
      cfg.qk_norm = true;
      cfg.norm_offset = 1.0;
      cfg.sandwich_norms = true;
      cfg.embed_scale = std::sqrt(static_cast<double>(cfg.hidden_size));
      cfg.attention_scale = 1.0 / std::sqrt(f.positive_number_or("query_pre_attn_scalar", 256.0));
      for (const char* field : {"attn_logit_softcapping", "final_logit_softcapping"})
        if (f.has(field))
          throw_bad_input(fmt::format("{}: {} is not supported (Gemma 2's; Gemma 3 leaves it null)",
                                      source, field));
      if (f.boolean_or("use_bidirectional_attention", false))
        throw_bad_input(fmt::format("{}: use_bidirectional_attention is not supported (sarqc "
                                    "quantizes causal language models)",
                                    source));
      break;
  }

  // Sliding window: mistral/mixtral use it whenever set; qwen models only with the switch on.
  const bool qwen = cfg.family == ModelFamily::Qwen2 || cfg.family == ModelFamily::Qwen3 ||
                    cfg.family == ModelFamily::Qwen2Moe || cfg.family == ModelFamily::Qwen3Moe;
  cfg.use_sliding_window = qwen ? f.boolean_or("use_sliding_window", false) : true;
  if (f.has("sliding_window") && cfg.use_sliding_window)
    cfg.sliding_window = f.positive_int("sliding_window");
  if (!qwen) cfg.use_sliding_window = cfg.sliding_window.has_value();
  if (f.has("layer_types")) {
    const json& types = j["layer_types"];
    if (!types.is_array() || static_cast<int64_t>(types.size()) != cfg.num_hidden_layers ||
        !std::all_of(types.begin(), types.end(), [](const json& t) { return t.is_string(); }))
      f.fail("layer_types", fmt::format("an array of {} strings", cfg.num_hidden_layers));
    for (const auto& t : types) cfg.layer_types.push_back(t.get<std::string>());
  }
  if (gemma) {
    if (cfg.layer_types.empty()) {  // older configs: every pattern-th layer is global
      const int64_t pattern = f.positive_int_or("sliding_window_pattern", 6);
      for (int64_t l = 0; l < cfg.num_hidden_layers; ++l)
        cfg.layer_types.push_back((l + 1) % pattern ? "sliding_attention" : "full_attention");
    }
    for (const std::string& t : cfg.layer_types)
      if (t != "sliding_attention" && t != "full_attention")
        f.fail("layer_types", "'sliding_attention' or 'full_attention' per layer");
    if (!cfg.sliding_window) cfg.sliding_window = 4096;  // Gemma3TextConfig's default
  }

  if (cfg.family == ModelFamily::Mixtral) {
    cfg.num_experts = f.positive_int("num_local_experts");
    cfg.num_experts_per_tok = f.positive_int_or("num_experts_per_tok", 2);
    cfg.norm_topk_prob = true;  // mixtral always renormalizes the top-k weights
  } else if (cfg.family == ModelFamily::Qwen2Moe || cfg.family == ModelFamily::Qwen3Moe) {
    // transformers >= 5 saves qwen3_moe's expert count as num_local_experts (its attribute
    // map's name for num_experts); both spellings name the same field.
    if (f.has("num_experts") && f.has("num_local_experts") &&
        j["num_experts"] != j["num_local_experts"])
      throw_bad_input(fmt::format("{}: num_experts {} and num_local_experts {} disagree", source,
                                  j["num_experts"].dump(), j["num_local_experts"].dump()));
    cfg.num_experts = f.has("num_experts") || !f.has("num_local_experts")
                          ? f.positive_int("num_experts")
                          : f.positive_int("num_local_experts");
    cfg.num_experts_per_tok = f.positive_int("num_experts_per_tok");
    cfg.moe_intermediate_size = f.positive_int("moe_intermediate_size");
    if (cfg.family == ModelFamily::Qwen2Moe)
      cfg.shared_expert_intermediate_size = f.positive_int("shared_expert_intermediate_size");
    cfg.norm_topk_prob = f.boolean_or("norm_topk_prob", false);
    cfg.decoder_sparse_step = f.positive_int_or("decoder_sparse_step", 1);
    if (f.has("mlp_only_layers")) {
      const json& layers = j["mlp_only_layers"];
      if (!layers.is_array()) f.fail("mlp_only_layers", "an array of layer indices");
      for (const auto& l : layers) {
        if (!l.is_number_integer() || l.get<int64_t>() < 0 ||
            l.get<int64_t>() >= cfg.num_hidden_layers)
          f.fail("mlp_only_layers",
                 fmt::format("an array of layer indices in [0, {})", cfg.num_hidden_layers));
        cfg.mlp_only_layers.push_back(l.get<int64_t>());
      }
    }
  }
  if (cfg.num_experts_per_tok > cfg.num_experts)
    throw_bad_input(fmt::format("{}: num_experts_per_tok {} exceeds the number of experts {}",
                                source, cfg.num_experts_per_tok, cfg.num_experts));

  if (f.has("quantization_config")) {
    const json& q = j["quantization_config"];
    if (!q.is_object()) f.fail("quantization_config", "an object");
    const Fields qf(q, source + " quantization_config", cfg.model_type);
    const std::string method = qf.string_or("quant_method", "gptq");
    if (method != "gptq")
      throw Error(ErrorKind::NotImplemented,
                  fmt::format("{}: quantization_config.quant_method '{}' is not supported (only "
                              "gptq checkpoints can be read)",
                              source, method));
    GptqQuantization g;
    g.bits = static_cast<int>(qf.positive_int("bits"));
    if (g.bits != 2 && g.bits != 3 && g.bits != 4 && g.bits != 8) qf.fail("bits", "2, 3, 4 or 8");
    if (!qf.has("group_size") || !q["group_size"].is_number_integer() ||
        (q["group_size"].get<int64_t>() <= 0 && q["group_size"].get<int64_t>() != -1))
      qf.fail("group_size", "-1 or a positive integer");
    g.group_size = q["group_size"].get<int64_t>();
    g.desc_act = qf.boolean_or("desc_act", false);
    g.sym = qf.boolean_or("sym", true);
    const std::string format = qf.string_or("checkpoint_format", qf.string_or("format", "gptq"));
    if (format != "gptq" && format != "gptq_v2") qf.fail("checkpoint_format", "gptq or gptq_v2");
    g.v2 = format == "gptq_v2";
    cfg.quantization = g;
  }

  if (f.has("bos_token_id")) {
    if (!j["bos_token_id"].is_number_integer()) f.fail("bos_token_id", "an integer");
    cfg.bos_token_id = j["bos_token_id"].get<int64_t>();
  }
  if (f.has("eos_token_id")) {
    const json& eos = j["eos_token_id"];
    if (eos.is_number_integer()) {
      cfg.eos_token_ids.push_back(eos.get<int64_t>());
    } else if (eos.is_array() && std::all_of(eos.begin(), eos.end(), [](const json& e) {
                 return e.is_number_integer();
               })) {
      for (const auto& e : eos) cfg.eos_token_ids.push_back(e.get<int64_t>());
    } else {
      f.fail("eos_token_id", "an integer or an array of integers");
    }
  }
  return cfg;
}

ModelConfig load_model_config(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "config.json";
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw_bad_input(fmt::format("{}: not found (expected a HuggingFace model folder)",
                                path.string()));
  return parse_model_config(read_json_file(path), path.string());
}

}  // namespace sarqc
