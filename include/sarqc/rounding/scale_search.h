#pragma once
// AWQ-style activation-aware scale and clip search (Lin et al., arXiv 2306.00978, §3.2;
// docs/methods.md §6.3): a pre-pass over one dense
// decoder layer, run before its modules are rounded. For each input group it searches
// per-input-channel scales u = s_x^r (r on a grid of 20 ratios) that minimise the group's output
// error after pseudo-quantization, multiplies the group's weight columns by u and divides the
// preceding operation (RMSNorm weight, v_proj rows, up_proj rows) by u, so the layer computes the
// same function; then it clips each (row, group) of the weights (all but q/k) to the range that
// minimises the output error. The rounding backend quantizes the result.
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "sarqc/model/decoder_layer.h"
#include "sarqc/quant/grid.h"

namespace sarqc {

struct ScaleSearchOptions {
  int64_t ratios = 20;         // r = i / ratios
  int64_t max_tokens = 65536;  // calibration tokens the loss uses
  bool clip = true;  // the pipeline sets it from QuantizeOptions::scale_search_clip
  int64_t clip_tokens = 512;
};

// The calibration objective's terms in the grid loss (docs/methods.md §5.2 "AWQ-loss variant",
// §6.3):
//   L(r) = mean((y_q − y_t)²) / mean(y_t²) + λ · Σ_fc mean_ij(s_ij (Ŵ_ij − W_ij)²) / mean_ij(W_ij²)
// with y_t = y(X_q) + α (y(X_f) − y(X_q)) computed by the unmodified layer. The defaults are plain
// AWQ (λ = 0, y_t = y(X_q)).
struct ScaleSearchObjective {
  double lambda = 0;              // SARQC drift penalty, relative (dimensionless)
  std::string saliency = "ones";  // s: ones | hdiag | absmean | absmean-pow | elem (mean 1)
  double saliency_power = 0.5;    // absmean-pow exponent
  // The α-interpolated target: the FP stream's batches, parallel to the quantized stream's, and
  // α per calibration sequence in the same order. Empty: the symmetric target (α = 0).
  std::vector<at::Tensor> fp_inputs;
  std::vector<double> alpha;
};

// The four scale groups and where their 1/u is folded.
enum class ScaleGroup { Qkv, O, GateUp, Down };

struct ScaleSearchRecord {
  ScaleGroup which = ScaleGroup::Qkv;
  int expert = kNotExpert;   // down_proj of a MoE block: whose (kSharedExpert: the shared one)
  std::string group;         // "qkv", "o", "gate_up", "down", "down.3", "down.shared"
  at::Tensor scales;         // u as folded into the layer; undefined when none was
  double ratio = 0;          // chosen r (0: no scaling)
  double loss = 0;           // L(r) at the chosen r
  double loss_unscaled = 0;  // L(0)
  double drift = 0;          // its drift-penalty term (before λ) at the chosen r
  bool skipped = false;      // o with grouped-query attention: nothing to fold into
};

// Multiplies the group's weight columns by u and folds 1/u into the preceding operation.
// Function-preserving in exact arithmetic. Returns false (and changes nothing) when the group
// cannot be folded (o under grouped-query attention).
// In MoE blocks the gate/up group also scales the router and shared-expert gate (unquantized),
// and each expert's down_proj is its own group (`expert`, folded into that expert's up_proj).
bool apply_group_scales(DecoderLayer& layer, ScaleGroup group, const at::Tensor& u,
                        int expert = kNotExpert);

// The pre-pass on `layer` for the calibration sequences `inputs` ([b, T, d] batches of the
// layer's inputs). Dense and MoE layers.
std::vector<ScaleSearchRecord> search_scales(DecoderLayer& layer,
                                             const std::vector<at::Tensor>& inputs,
                                             const RotaryTables& rope, const QuantGrid& grid,
                                             const ScaleSearchOptions& options,
                                             const ScaleSearchObjective& objective = {});

}  // namespace sarqc
