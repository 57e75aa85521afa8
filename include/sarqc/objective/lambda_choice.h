#pragma once
// What the log and report.json say of a module's SARQC λ (objective/lambda_search.h).
#include <limits>
#include <string>

namespace sarqc {

// How a module's λ came about.
struct LambdaChoice {
  static constexpr double kNotComputed = std::numeric_limits<double>::quiet_NaN();  // JSON null
  std::string mode;      // "" (no sarqc objective), fixed, auto or lw
  std::string saliency;  // the penalty's saliency (ones, hdiag, absmean, absmean-pow, elem)
  double lambda = 0;     // λ_rel of the final rounding
  double fit_lambda = 0;                  // auto: the winner on the fit's size, before rescaling
  double fit_share = 0;                   // auto: N_fit/N (tokens), the rescaling factor
  double lw_lambda = kNotComputed;        // the Ledoit–Wolf intensity as λ_rel on all tokens
  double held_out_zero = kNotComputed;    // auto: summed held-out loss of λ = 0
  double held_out_chosen = kNotComputed;  // auto: of the winner
  double held_out_lw = kNotComputed;      // auto: of the Ledoit–Wolf candidate (λ_lw / share)
  int candidates = 0;                     // auto: λ values rounded (each on both folds)
  double seconds = 0;                     // auto: time spent on the search
  std::string note;                       // why auto fell back, when it did
};

}  // namespace sarqc
