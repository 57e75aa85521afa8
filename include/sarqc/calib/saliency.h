#pragma once
// The saliency of a module's weight entries, one definition for the two places that weigh
// weight drift by it: the SARQC objective (from the Gram statistics) and the scale search (from
// the layer inputs it holds). Our reconstruction (the SARQC paper publishes no saliency): how
// much an input column matters, from its second moment E[x_j^2] (diag H up to a constant) or
// its mean magnitude E|x_j|, or, per entry, |W_ij| sqrt(E[x_j^2]).
#include <string>
#include <vector>

#include <ATen/ATen.h>

namespace sarqc {

// ones | hdiag | absmean | absmean-pow | elem, as --saliency accepts them.
const std::vector<std::string>& saliency_names();

// What the saliency is computed from: per input column, statistics at any common positive scale
// (the callers normalise the result to mean 1).
// Only what the kind reads need be given (saliency_needs): a scale search computes each from
// a [tokens, n] input.
struct ColumnStatistics {
  at::Tensor second_moment;  // [n] E[x_j^2] or diag H (hdiag, elem)
  at::Tensor abs_mean;       // [n] E|x_j| (absmean, absmean-pow)
  at::TensorOptions options;  // device and dtype of `ones`
};

struct SaliencyNeeds {
  bool second_moment = false, abs_mean = false;
};
SaliencyNeeds saliency_needs(const std::string& kind);

// Unnormalised saliency: [n] per column for ones, hdiag, absmean and absmean-pow (|x|^power,
// power in (0, 1]); [m, n] per entry for elem (`weight` [m, n] gives |W_ij|). On the statistics'
// device and dtype (elem: the weight's dtype times theirs).
at::Tensor unnormalised_saliency(const std::string& kind, double power, const at::Tensor& weight,
                                 const ColumnStatistics& stats);

}  // namespace sarqc
