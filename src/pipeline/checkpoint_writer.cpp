#include "sarqc/pipeline/checkpoint_writer.h"

#include "sarqc/pipeline/option_table.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <set>

#include "sarqc/io/dtype.h"
#include "sarqc/model/compute.h"
#include "sarqc/pipeline/gptq_output.h"
#include "sarqc/pipeline/quantize.h"
#include "sarqc/quant/gptq_format.h"
#include "sarqc/util/error.h"
#include "sarqc/util/file.h"
#include "sarqc/util/json_file.h"
#include "sarqc/version.h"

namespace sarqc {
namespace fs = std::filesystem;
namespace {

const c10::Device kCpu(c10::kCPU);

}  // namespace

QuantizedCheckpointWriter::QuantizedCheckpointWriter(const ModelWeights& weights,
                                                     const QuantizePlan& plan,
                                                     const fs::path& folder,
                                                     const ResumableWrite* resume)
    : weights_(&weights), plan_(&plan), folder_(folder) {
  const Checkpoint& ckpt = weights.checkpoint();
  const ModelLayout& layout = weights.layout();
  const QuantGrid& grid = plan.grid;
  std::vector<TensorSpec> specs;
  auto plan_source = [&](const std::string& out_name, const std::string& source,
                         std::vector<int64_t> shape) {
    specs.push_back({out_name, ckpt.info(source).dtype, std::move(shape)});
  };
  for (const auto& g : layout.globals) plan_source(g.name, g.name, g.shape);
  for (const auto& layer : layout.layers) {
    for (const auto& n : layer.norms) plan_source(n.name, n.name, n.shape);
    for (const auto& m : layer.linears) {
      const bool quantized = m.quantizable && !plan.skipped.count(m.name);
      if (quantized) {
        for (auto& s :
             gptq_tensor_specs(m.name, m.in_features, m.out_features, grid.bits, grid.group_size))
          specs.push_back(std::move(s));
      } else {
        plan_source(m.weight_name(), layer.weight_source(m), {m.out_features, m.in_features});
      }
      if (m.has_bias)
        specs.push_back({m.bias_name(), quantized ? Dtype::F16 : ckpt.info(m.bias_name()).dtype,
                         {m.out_features}});
    }
  }
  writer_ = std::make_unique<ShardedWriter>(folder, specs, Metadata{{"format", "pt"}},
                                            ShardedWriter::kDefaultMaxShardBytes, resume);
}

void QuantizedCheckpointWriter::write_globals() {
  for (const auto& g : weights_->layout().globals) {
    const at::Tensor t = weights_->checkpoint().load(g.name, kCpu);  // as stored: checked here
    if (const auto bad = first_non_finite(t))
      throw_bad_input(fmt::format("{}: tensor '{}' holds {}; quantize needs finite weights",
                                  weights_->dir().string(), g.name, *bad));
    writer_->write(g.name, t);
  }
}

at::Tensor QuantizedCheckpointWriter::stored_weight(const DecoderLayerLayout& layer,
                                                    const LinearModule& m,
                                                    const DecoderLayer* rewritten) const {
  const c10::ScalarType stored =
      *to_scalar_type(weights_->checkpoint().info(layer.weight_source(m)).dtype);
  return rewritten ? rewritten->weight(m.local_name).to(kCpu, stored)
                   : weights_->linear_weight(layer, m, kCpu, stored);
}

at::Tensor QuantizedCheckpointWriter::stored_bias(const LinearModule& m,
                                                  const DecoderLayer* rewritten) const {
  const Checkpoint& ckpt = weights_->checkpoint();
  return rewritten
             ? rewritten->bias(m.local_name).to(kCpu, *to_scalar_type(ckpt.info(m.bias_name()).dtype))
             : ckpt.load(m.bias_name(), kCpu);
}

void QuantizedCheckpointWriter::write_layer_unquantized(const DecoderLayerLayout& layer,
                                                        const DecoderLayer* rewritten) {
  const Checkpoint& ckpt = weights_->checkpoint();
  for (const auto& m : layer.linears) {
    if (m.quantizable) continue;
    writer_->write(m.weight_name(), stored_weight(layer, m, rewritten));
    if (m.has_bias) writer_->write(m.bias_name(), stored_bias(m, rewritten));
  }
  for (const auto& n : layer.norms)
    writer_->write(n.name, rewritten ? rewritten->norm(norm_local_name(n, layer.index))
                                           .to(kCpu, *to_scalar_type(ckpt.info(n.name).dtype))
                                     : ckpt.load(n.name, kCpu));
}

void QuantizedCheckpointWriter::write_skipped_module(const DecoderLayerLayout& layer,
                                                     const LinearModule& m,
                                                     const DecoderLayer* rewritten) {
  writer_->write(m.weight_name(), stored_weight(layer, m, rewritten));
  if (m.has_bias) writer_->write(m.bias_name(), stored_bias(m, rewritten));
}

void QuantizedCheckpointWriter::write_quantized(const LinearModule& m, const QuantizedLinear& q,
                                                const at::Tensor& bias) {
  const GptqTensors t = to_gptq_tensors(q, /*v2=*/!plan_->grid.sym);
  writer_->write(m.name + ".qweight", t.qweight);
  writer_->write(m.name + ".qzeros", t.qzeros);
  writer_->write(m.name + ".scales", t.scales);
  writer_->write(m.name + ".g_idx", t.g_idx);
  if (m.has_bias) writer_->write(m.bias_name(), bias.to(kCpu, at::kHalf));
}

void QuantizedCheckpointWriter::finish(const nlohmann::json& qc, const QuantizeReport& report) {
  const fs::path& model_dir = weights_->dir();
  nlohmann::json config = read_json_file(model_dir / "config.json");
  config["quantization_config"] = qc;
  write_file_atomically(folder_ / "config.json", config.dump(2) + "\n");
  write_file_atomically(folder_ / "quantize_config.json", qc.dump(2) + "\n");
  static const std::set<std::string> kNotCopied = {"config.json", "quantize_config.json",
                                                   "report.json", "model.safetensors.index.json"};
  for (const auto& entry : fs::directory_iterator(model_dir)) {
    const std::string name = entry.path().filename().string();
    const std::string ext = entry.path().extension().string();
    if (!entry.is_regular_file() || name.front() == '.' || kNotCopied.count(name) ||
        ext == ".safetensors" || ext == ".bin" || ext == ".pt" || ext == ".pth")
      continue;
    fs::copy_file(entry.path(), folder_ / name, fs::copy_options::overwrite_existing);
  }
  writer_->commit();
  write_file_atomically(folder_ / "report.json", to_json(report).dump(2) + "\n");
}

nlohmann::json quantization_config(const ModelLayout& layout, const QuantizePlan& plan,
                                   const QuantizeOptions& o, const QuantizeReport& report,
                                   bool any_reordered,
                                   const std::string& calibration_file) {
  const QuantGrid& grid = plan.grid;
  const ObjectiveSettings& objective = plan.objective_settings;
  // What the loaders read, and sarqc's results (the resolved preset, the calibration used).
  nlohmann::json qc = {{"quant_method", "gptq"},
                       {"desc_act", any_reordered},
                       {"lm_head", false},
                       {"true_sequential", true},
                       {"checkpoint_format", grid.sym ? "gptq" : "gptq_v2"},
                       {"format", grid.sym ? "gptq" : "gptq_v2"},
                       {"pack_dtype", "int32"},
                       {"meta",
                        {{"quantizer", {std::string("sarqc:") + kVersion}},
                         {"sarqc",
                          {{"backend", plan.backend},
                           {"objective", objective.name},
                           {"lambda_rel", objective.lambda_rel},
                           {"lambda_mode", objective.lambda_mode},
                           {"alpha_mode", objective.alpha_mode},
                           {"beam_width",
                            plan.backend == "beam" ? o.rounding_options.beam_width : 1},
                           {"nsamples", plan.needs_data ? report.nsamples : 0},
                           {"seqlen", plan.needs_data ? report.seqlen : 0},
                           {"calibration_file", plan.needs_data ? calibration_file : ""},
                           {"scale_search", plan.scale_search},
                           {"calibration_sha256", report.calibration_sha256},
                           {"unquantized_modules", report.unquantized_modules}}}}}};
  // The options recorded as given: the option table's rows that say where.
  for (const OptionRow& row : quantize_option_table())
    if (row.reach & kRecorded) qc[nlohmann::json::json_pointer(row.recorded_as)] = row.get(o);
  // As the run resolved them: the group size clamped to the narrowest quantized input, the MSE
  // clip off where the scale search clips.
  qc["group_size"] = grid.group_size;
  qc["meta"]["sarqc"]["mse_clip"] = grid.mse_clip;
  if (!plan.skipped.empty()) {
    qc["dynamic"] = dynamic_exclusions(layout, plan.skipped);  // vLLM, GPTQModel
    const nlohmann::json in_block = modules_in_block_to_quantize(layout, plan.skipped);
    if (!in_block.is_null()) qc["modules_in_block_to_quantize"] = in_block;  // transformers
  }
  return qc;
}

}  // namespace sarqc
