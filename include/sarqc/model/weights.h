#pragma once
// A model folder opened for computation: config, layout checked against the checkpoint, and the
// one place that turns stored tensors into compute tensors. Linear weights go through
// linear_weight(), which is where storage layouts differ (fused experts today; packed GPTQ
// modules, dequantized on load, with the quantized checkpoint reader).
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include <ATen/core/Tensor.h>

#include "sarqc/io/checkpoint.h"
#include "sarqc/io/hf_config.h"
#include "sarqc/model/compute.h"
#include "sarqc/model/layout.h"

namespace sarqc {

// What loading does with a NaN or Inf in a tensor: quantize refuses the model (nothing it
// writes may hold one), eval and generate warn once per tensor and go on.
enum class NonFinitePolicy { Refuse, Warn };

class ModelWeights {
 public:
  // Throws a bad-input Error naming the folder and the problem.
  static ModelWeights open(const std::filesystem::path& dir,
                           NonFinitePolicy non_finite = NonFinitePolicy::Warn);

  const std::filesystem::path& dir() const { return checkpoint_.dir(); }
  const ModelConfig& config() const { return config_; }
  const ModelLayout& layout() const { return layout_; }
  const Checkpoint& checkpoint() const { return checkpoint_; }

  // Tensors returned below are owned: never views of the checkpoint's mapping, so changing
  // one in place leaves the checkpoint and later loads as they were. Each is checked for NaN
  // and Inf as it is loaded (one pass, one synchronisation per tensor), per the policy: Refuse
  // throws a bad-input Error naming the tensor and the first bad element.
  // A non-linear tensor (norm, embedding) as `dtype` on `device`.
  at::Tensor tensor(const std::string& name, c10::Device device, c10::ScalarType dtype) const;
  // Dense [out, in] weight of `module` in layer `layer`.
  at::Tensor linear_weight(const DecoderLayerLayout& layer, const LinearModule& module,
                           c10::Device device, c10::ScalarType dtype) const;
  std::optional<at::Tensor> linear_bias(const LinearModule& module, c10::Device device,
                                        c10::ScalarType dtype) const;

  at::Tensor embed_tokens(c10::Device device, c10::ScalarType dtype) const;
  at::Tensor lm_head(c10::Device device, c10::ScalarType dtype) const;  // tied: the embeddings
  at::Tensor final_norm(c10::Device device, c10::ScalarType dtype) const;

 private:
  ModelWeights(ModelConfig config, Checkpoint checkpoint)
      : config_(std::move(config)), checkpoint_(std::move(checkpoint)) {}
  at::Tensor checked(const std::string& name, at::Tensor t) const;
  NonFinitePolicy non_finite_ = NonFinitePolicy::Warn;
  std::shared_ptr<std::set<std::string>> warned_ = std::make_shared<std::set<std::string>>();
  ModelConfig config_;
  ModelLayout layout_;
  Checkpoint checkpoint_;
};

// "nan at [3, 17]" for the first NaN or Inf of a floating tensor in row-major order, else
// nullopt. One synchronisation when the tensor is finite.
std::optional<std::string> first_non_finite(const at::Tensor& t);

}  // namespace sarqc
