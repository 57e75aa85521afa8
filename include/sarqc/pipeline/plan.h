#pragma once
// What `sarqc quantize` will do, resolved from its options before any work: the method preset's
// objective and backend, the grid (group size clamped to the model), which modules stay
// unquantized, and which activation streams the run needs. The CLI takes its lists from here.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "sarqc/model/layout.h"
#include "sarqc/objective/objective.h"
#include "sarqc/quant/grid.h"
#include "sarqc/rounding/scale_search.h"
#include "sarqc/rounding/rounder.h"

namespace sarqc {

struct QuantizeOptions;

struct MethodPreset {
  std::string objective, rounding;
  std::string alpha_mode = "fixed";  // for the interp objectives
  bool scale_search = false;         // AWQ pre-pass
};

struct MethodInfo {
  std::string name;
  MethodPreset preset;
  std::string summary;  // for --help
};

// rtn = plain + rtn; gptq = plain + gptq; sarqc = sarqc + gptq; gptaq = interp + gptq;
// coreq = interp + successive; beam = interp + beam; sarqc-beam = sarqc+interp + beam;
// awq = scale/clip search + rtn.
const std::vector<MethodInfo>& method_presets();
std::vector<std::string> method_names();
// Throws a usage error naming the known presets.
MethodPreset method_preset(const std::string& method);
// Starved MoE experts: rtn, or all-tokens.
const std::vector<std::string>& moe_policy_names();

struct QuantizePlan {
  QuantGrid grid;        // validated; group size clamped by fit_to_model
  std::string backend;   // rounding backend
  ObjectiveSettings objective_settings;
  std::shared_ptr<const Rounder> rounder;
  std::shared_ptr<Objective> objective;  // holds state between modules (closed-form α)
  bool scale_search = false;    // AWQ scale/clip pre-pass per layer
  ScaleSearchOptions scale_search_options;  // its settings, the clip resolved
  bool calibrate = false;       // Gram-based rounding
  bool needs_data = false;      // calibration windows and their activation stream
  bool keep_fp_stream = false;  // X_f next to X_q
  bool paired_capture = false;  // Grams from both streams (asymmetric objectives)
  bool holdout_folds = false;   // each Gram also per held-out fold (--lambda auto)
  std::map<std::string, std::string> skipped;  // module -> why it stays unquantized

  // Clamps the group size to the narrowest quantizable input and lists the modules the grid
  // cannot represent (logged).
  void fit_to_model(const ModelLayout& layout);
};

// Checks everything that needs no model (usage errors, exit 2) and resolves the preset.
QuantizePlan plan_quantize(const QuantizeOptions& options);

}  // namespace sarqc
