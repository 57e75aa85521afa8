#include "sarqc/model/weights.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "sarqc/util/error.h"

#include "sarqc/quant/gptq_format.h"

namespace sarqc {

ModelWeights ModelWeights::open(const std::filesystem::path& dir, NonFinitePolicy non_finite) {
  ModelWeights w(load_model_config(dir), Checkpoint::open(dir));
  w.non_finite_ = non_finite;
  check_config_fits_checkpoint(w.config_, w.checkpoint_);
  w.layout_ = build_layout(w.config_);
  check_checkpoint(w.layout_, w.checkpoint_);
  return w;
}

at::Tensor ModelWeights::checked(const std::string& name, at::Tensor t) const {
  const std::optional<std::string> bad = first_non_finite(t);
  if (!bad) return t;
  const std::string message =
      fmt::format("{}: tensor '{}' holds {} as {}", checkpoint_.dir().string(), name, *bad,
                  c10::toString(t.scalar_type()));
  if (non_finite_ == NonFinitePolicy::Refuse)
    throw_bad_input(message + "; quantize needs finite weights");
  if (warned_->insert(name).second) spdlog::warn("{}; the results will not be finite", message);
  return t;
}

at::Tensor ModelWeights::tensor(const std::string& name, c10::Device device,
                                c10::ScalarType dtype) const {
  // Loading straight onto the device first keeps host copies out of the CUDA path. On the CPU
  // the checkpoint hands out views of its private mapping: copy, so that a layer modified in
  // place (scale folding, clipping) never changes what a later load of the tensor reads.
  return checked(name, checkpoint_.load(name, device)
                           .to(dtype, /*non_blocking=*/false, /*copy=*/device.is_cpu()));
}

std::optional<std::string> first_non_finite(const at::Tensor& t) {
  if (!at::isFloatingType(t.scalar_type()) || t.numel() == 0) return std::nullopt;
  const at::Tensor bad = at::isfinite(t).logical_not_().reshape(-1);
  if (!bad.any().item<bool>()) return std::nullopt;
  int64_t flat = bad.nonzero().select(1, 0)[0].item<int64_t>();
  const double value = t.reshape(-1)[flat].item<double>();
  std::vector<int64_t> index(static_cast<size_t>(t.dim()));
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    index[static_cast<size_t>(d)] = flat % t.size(d);
    flat /= t.size(d);
  }
  return fmt::format("{} at [{}]", value, fmt::join(index, ", "));
}

at::Tensor ModelWeights::linear_weight(const DecoderLayerLayout& layer, const LinearModule& m,
                                       c10::Device device, c10::ScalarType dtype) const {
  if (m.stored_packed) {
    const GptqQuantization& q = *layout_.quantization;
    const c10::Device cpu(c10::kCPU);
    const GptqTensors t{checkpoint_.load(m.name + ".qweight", cpu),
                        checkpoint_.load(m.name + ".qzeros", cpu),
                        checkpoint_.load(m.name + ".scales", cpu),
                        checkpoint_.load(m.name + ".g_idx", cpu)};
    return checked(m.name + ".weight (dequantized)",
                   dequantize_gptq(t, q.bits, q.v2, m.in_features, m.out_features, m.name)
                       .to(device, dtype));
  }
  const std::string source = layer.weight_source(m);
  if (source == m.weight_name() || m.expert < 0) return tensor(source, device, dtype);
  // Fused experts: slice expert m.expert out of the [E, ...] tensor before moving it, so only
  // that expert's bytes are read.
  at::Tensor fused = checkpoint_.load(source, c10::Device(c10::kCPU)).select(0, m.expert);
  if (m.role == LinearRole::Gate) fused = fused.narrow(0, 0, m.out_features);
  if (m.role == LinearRole::Up) fused = fused.narrow(0, m.out_features, m.out_features);
  return checked(source, fused.to(device, dtype, /*non_blocking=*/false, /*copy=*/device.is_cpu())
                             .contiguous());
}

std::optional<at::Tensor> ModelWeights::linear_bias(const LinearModule& m, c10::Device device,
                                                    c10::ScalarType dtype) const {
  if (!m.has_bias) return std::nullopt;
  return tensor(m.bias_name(), device, dtype);
}

at::Tensor ModelWeights::embed_tokens(c10::Device device, c10::ScalarType dtype) const {
  return tensor("model.embed_tokens.weight", device, dtype);
}

at::Tensor ModelWeights::lm_head(c10::Device device, c10::ScalarType dtype) const {
  return tensor(layout_.tied_embeddings ? "model.embed_tokens.weight" : "lm_head.weight", device,
                dtype);
}

at::Tensor ModelWeights::final_norm(c10::Device device, c10::ScalarType dtype) const {
  return tensor("model.norm.weight", device, dtype);
}

}  // namespace sarqc
