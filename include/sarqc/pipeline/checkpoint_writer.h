#pragma once
// The GPTQ checkpoint quantize produces (docs/formats.md): every tensor planned up front (names,
// dtypes, shapes), then streamed into shards layer by layer; at the end config.json with
// quantization_config, quantize_config.json, the model folder's auxiliary files and report.json.
// Everything goes into the output's temporary folder; publishing it is the caller's last step.
#include <filesystem>
#include <memory>
#include <string>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "sarqc/io/safetensors_writer.h"
#include "sarqc/model/decoder_layer.h"
#include "sarqc/model/weights.h"
#include "sarqc/pipeline/plan.h"
#include "sarqc/pipeline/report.h"
#include "sarqc/quant/quantized_linear.h"

namespace sarqc {

struct QuantizeOptions;

class QuantizedCheckpointWriter {
 public:
  // `weights` and `plan` (fitted to the model) must outlive the writer. With `resume`, the
  // shards are resumable (see ResumableWrite) and finish() may run again after a crash.
  QuantizedCheckpointWriter(const ModelWeights& weights, const QuantizePlan& plan,
                            const std::filesystem::path& folder,
                            const ResumableWrite* resume = nullptr);

  // Embeddings, the final norm and lm_head, as stored (refused when not finite).
  void write_globals();
  // A layer's norms and the linears that are never quantized (routers, the shared-expert gate):
  // as stored, or from `rewritten` (the fp32 master after a scale search rewrote them).
  void write_layer_unquantized(const DecoderLayerLayout& layer, const DecoderLayer* rewritten);
  // A quantizable module the grid cannot hold (plan.skipped), the same way.
  void write_skipped_module(const DecoderLayerLayout& layer, const LinearModule& module,
                            const DecoderLayer* rewritten);
  // qweight, qzeros, scales, g_idx, and the bias (fp16) when the module has one.
  void write_quantized(const LinearModule& module, const QuantizedLinear& q,
                       const at::Tensor& bias);
  WrittenTensors written() const { return writer_->written(); }
  void sync() { writer_->sync(); }  // fsync of every shard
  // config.json and quantize_config.json with `quantization_config`, the model folder's other
  // files, the shards (checked complete) and report.json.
  void finish(const nlohmann::json& quantization_config, const QuantizeReport& report);

 private:
  at::Tensor stored_weight(const DecoderLayerLayout& layer, const LinearModule& m,
                           const DecoderLayer* rewritten) const;
  at::Tensor stored_bias(const LinearModule& m, const DecoderLayer* rewritten) const;
  const ModelWeights* weights_;
  const QuantizePlan* plan_;
  std::filesystem::path folder_;
  std::unique_ptr<ShardedWriter> writer_;
};

// The quantization_config block (GPTQ fields for the loaders, sarqc's settings under "meta").
nlohmann::json quantization_config(const ModelLayout& layout, const QuantizePlan& plan,
                                   const QuantizeOptions& options, const QuantizeReport& report,
                                   bool any_reordered,
                                   const std::string& calibration_file);

}  // namespace sarqc
