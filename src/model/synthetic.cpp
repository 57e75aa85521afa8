#include "sarqc/model/synthetic.h"

#include <map>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "sarqc/io/safetensors_writer.h"
#include "sarqc/model/layout.h"
#include "sarqc/model/weights.h"
#include "sarqc/util/error.h"
#include "sarqc/util/atomic_directory.h"
#include "sarqc/util/file.h"
#include "sarqc/util/json_file.h"

namespace sarqc {
namespace fs = std::filesystem;
namespace {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

bool is_norm(const std::string& name) {
  return name.find("norm.weight") != std::string::npos ||
         name.find("layernorm.weight") != std::string::npos;
}

at::Tensor random_tensor(const NamedShape& t, at::Generator& gen) {
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  at::Tensor x = at::randn(t.shape, gen, opts);
  if (is_norm(t.name)) return 1.0 + 0.1 * x;
  if (t.shape.size() == 1) return 0.1 * x;  // bias
  if (t.name.find("embed_tokens") != std::string::npos) return x;
  return x / std::sqrt(static_cast<double>(t.shape.back()));
}

}  // namespace

void write_random_model(const nlohmann::json& config, const fs::path& dir, uint64_t seed,
                        const RandomModelOptions& o) {
  const ModelConfig cfg = parse_model_config(config, (dir / "config.json").string());
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const std::vector<NamedShape> expected = expected_tensors(build_layout(cfg));
  std::vector<TensorSpec> specs;
  for (const auto& t : expected) specs.push_back({t.name, o.dtype, t.shape});
  AtomicDirectory out(dir, AtomicDirectory::Existing::RefuseFilled);
  write_file_atomically(out.path() / "config.json", config.dump(2) + "\n");
  ShardedWriter writer(out.path(), specs, {}, o.max_shard_bytes);
  const c10::ScalarType type = *to_scalar_type(o.dtype);
  for (const auto& t : expected) writer.write(t.name, random_tensor(t, gen).to(type));
  writer.commit();
  out.publish();
}

void moe_from_dense(const fs::path& dense_dir, const fs::path& requested_out,
                    const MoeFromDenseOptions& o) {
  const fs::path out_dir = checked_output_folder("--out", requested_out, {dense_dir});
  const ModelWeights dense = ModelWeights::open(dense_dir);
  const ModelConfig& cfg = dense.config();
  const std::string where = dense_dir.string();
  if (cfg.is_moe() || cfg.qkv_bias || cfg.o_bias || cfg.mlp_bias || cfg.qk_norm)
    throw_bad_input(fmt::format("{}: moe_from_dense needs a dense llama-style model without "
                                "biases or q/k norms, got model_type '{}'",
                                where, cfg.model_type));
  const std::string& type = o.model_type;
  const bool mixtral = type == "mixtral", qwen2 = type == "qwen2_moe", qwen3 = type == "qwen3_moe";
  if (!mixtral && !qwen2 && !qwen3)
    throw_usage(fmt::format("MoE layout '{}': expected mixtral, qwen2_moe or qwen3_moe", type));
  if (o.experts < 1 || o.top_k < 1 || o.top_k > o.experts || o.noise < 0)
    throw_usage(fmt::format("MoE shape: need 1 <= top_k ({}) <= experts ({}) and noise >= 0",
                            o.top_k, o.experts));

  nlohmann::json config = read_json_file(dense_dir / "config.json");
  config["model_type"] = type;
  config["architectures"] = {mixtral ? "MixtralForCausalLM"
                                     : qwen2 ? "Qwen2MoeForCausalLM" : "Qwen3MoeForCausalLM"};
  config["rope_theta"] = cfg.rope_theta;  // mixtral's default differs from llama's
  config["head_dim"] = cfg.head_dim;
  config["num_experts_per_tok"] = o.top_k;
  if (mixtral) {
    config["num_local_experts"] = o.experts;
  } else {
    config["num_experts"] = o.experts;
    config["moe_intermediate_size"] = cfg.intermediate_size;
    config["decoder_sparse_step"] = 1;
    config["mlp_only_layers"] = nlohmann::json::array();
    config["norm_topk_prob"] = qwen3;
    if (qwen2) config["shared_expert_intermediate_size"] = cfg.intermediate_size;
  }
  const ModelConfig moe_cfg = parse_model_config(config, (out_dir / "config.json").string());
  ModelLayout layout = build_layout(moe_cfg);

  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  const c10::Device cpu(c10::kCPU);
  NamedTensors tensors;
  for (const auto& g : dense.layout().globals)
    tensors.emplace_back(g.name, dense.tensor(g.name, cpu, at::kFloat));
  for (size_t l = 0; l < layout.layers.size(); ++l) {
    auto& layer = layout.layers[l];
    layer.fused_experts = o.fused;
    const auto& dense_layer = dense.layout().layers[l];
    // The trained MLP of this layer, by role.
    std::map<LinearRole, at::Tensor> mlp;
    for (const auto& m : dense_layer.linears)
      if (m.role == LinearRole::Gate || m.role == LinearRole::Up || m.role == LinearRole::Down)
        mlp[m.role] = dense.linear_weight(dense_layer, m, cpu, at::kFloat);
    for (const auto& norm : layer.norms) {
      if (norm.name.find("q_norm") != std::string::npos ||
          norm.name.find("k_norm") != std::string::npos)
        tensors.emplace_back(norm.name, at::ones(norm.shape));
      else
        tensors.emplace_back(norm.name, dense.tensor(norm.name, cpu, at::kFloat));
    }
    std::map<LinearRole, std::vector<at::Tensor>> fused;
    for (const auto& m : layer.linears) {
      at::Tensor w;
      if (m.role == LinearRole::Router) {
        w = at::randn({m.out_features, m.in_features}, gen) /
            std::sqrt(static_cast<double>(m.in_features));
      } else if (m.role == LinearRole::SharedExpertGate) {
        w = at::zeros({m.out_features, m.in_features});
      } else if (m.expert >= 0) {
        const at::Tensor& base = mlp.at(m.role);
        w = base * (1.0 + o.noise * at::randn(base.sizes(), gen));
      } else if (m.expert == kSharedExpert) {
        w = mlp.at(m.role).clone();
      } else {
        w = dense.linear_weight(dense_layer, dense_layer.linears[&m - layer.linears.data()], cpu,
                                at::kFloat);  // attention: same order in both layouts
      }
      if (m.has_bias) tensors.emplace_back(m.bias_name(), at::zeros({m.out_features}));
      if (o.fused && m.expert >= 0) {
        fused[m.role].push_back(w);
        continue;
      }
      tensors.emplace_back(layer.weight_source(m), w);
    }
    if (o.fused) {
      std::vector<at::Tensor> gate_up;
      for (size_t e = 0; e < fused[LinearRole::Gate].size(); ++e)
        gate_up.push_back(at::cat({fused[LinearRole::Gate][e], fused[LinearRole::Up][e]}));
      tensors.emplace_back(layer.fused_gate_up_name(), at::stack(gate_up));
      tensors.emplace_back(layer.fused_down_name(), at::stack(fused[LinearRole::Down]));
    }
  }
  AtomicDirectory out(out_dir, AtomicDirectory::Existing::RefuseFilled);
  write_file_atomically(out.path() / "config.json", config.dump(2) + "\n");
  save_safetensors(out.path() / "model.safetensors", tensors);
  for (const char* file : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                           "special_tokens_map.json", "generation_config.json"})
    if (fs::exists(dense_dir / file)) fs::copy_file(dense_dir / file, out.path() / file);
  out.publish();
}

}  // namespace sarqc
