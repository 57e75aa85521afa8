#include "sarqc/pipeline/plan.h"

#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <climits>

#include "sarqc/pipeline/gptq_output.h"
#include "sarqc/pipeline/quantize.h"
#include "sarqc/util/error.h"

namespace sarqc {

const std::vector<MethodInfo>& method_presets() {
  static const std::vector<MethodInfo> presets = {
      {"rtn", {"plain", "rtn"}, "round to nearest"},
      {"gptq", {"plain", "gptq"}, "plain + gptq"},
      {"sarqc", {"sarqc", "gptq"}, "sarqc + gptq"},
      {"gptaq", {"interp", "gptq", "fixed"}, "interp α=0.25 + gptq"},
      {"coreq", {"interp", "successive", "sample"}, "interp α sampled + successive"},
      {"beam", {"interp", "beam", "sample"}, "interp α sampled + beam"},
      {"sarqc-beam", {"sarqc+interp", "beam", "sample"}, "sarqc+interp + beam"},
      {"awq", {"plain", "rtn", "fixed", true}, "scale/clip search + rtn"}};
  return presets;
}

std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const auto& m : method_presets()) names.push_back(m.name);
  return names;
}

MethodPreset method_preset(const std::string& method) {
  for (const auto& m : method_presets())
    if (m.name == method) return m.preset;
  throw_usage(fmt::format("--method '{}': expected one of {}", method,
                          fmt::join(method_names(), ", ")));
}

const std::vector<std::string>& moe_policy_names() {
  static const std::vector<std::string> names = {"rtn", "all-tokens"};
  return names;
}

QuantizePlan plan_quantize(const QuantizeOptions& o) {
  QuantizePlan plan;
  plan.grid = o.grid;
  plan.grid.validate();
  if (o.damp < 0) throw_usage(fmt::format("--damp must be >= 0, got {}", o.damp));
  const MethodPreset preset = method_preset(o.method);
  plan.backend = o.rounding.empty() ? preset.rounding : o.rounding;
  // AWQ's scale search is a per-layer pre-pass; "scale-search" alone means it plus RTN.
  plan.scale_search = o.scale_search || preset.scale_search || plan.backend == "scale-search";
  if (plan.backend == "scale-search") plan.backend = "rtn";
  plan.rounder = make_rounder(plan.backend);
  plan.scale_search_options = o.scale_search_options;
  plan.scale_search_options.clip = o.scale_search_clip.value_or(!plan.rounder->needs_metric());
  // The scale search's clip picks each group's range on the layer's output; the backend's MSE
  // clip would then shrink that range a second time. Measured on SmolLM2 W3 g64 (awq, 4 × 512
  // tokens): KL 2.16 with both clips, worse than rtn's 1.79; 1.13 with the search's alone.
  if (plan.scale_search && plan.scale_search_options.clip && plan.grid.mse_clip) {
    plan.grid.mse_clip = false;
    spdlog::info("the scale search clips each group's range: the backend rounds on min-max "
                 "ranges (no second MSE clip)");
  }
  plan.objective_settings = o.objective_settings;
  plan.objective_settings.name = o.objective.empty() ? preset.objective : o.objective;
  // The sarqc objectives choose λ per module unless told (issue 17).
  const std::string& name = plan.objective_settings.name;
  if (!plan.objective_settings.lambda_given && (name == "sarqc" || name == "sarqc+interp"))
    plan.objective_settings.lambda_mode = "auto";
  if (plan.objective_settings.alpha_mode.empty())
    plan.objective_settings.alpha_mode = preset.alpha_mode;
  if (o.rounding_options.beam_width < 1)
    throw_usage(fmt::format("--beam must be >= 1, got {}", o.rounding_options.beam_width));
  if (o.rounding_options.beam_rows < 0)
    throw_usage(fmt::format("--beam-rows must be >= 0, got {}", o.rounding_options.beam_rows));
  plan.objective = make_objective(plan.objective_settings);
  const std::string& objective = plan.objective_settings.name;
  // Without a calibrated backend an objective can only shape the scale search.
  if (!plan.rounder->needs_metric() && !plan.scale_search && objective != "plain")
    throw_usage(fmt::format("--objective {} needs a calibrated backend or --scale-search, not "
                            "--rounding {}",
                            objective, plan.backend));
  plan.calibrate = plan.rounder->needs_metric();
  plan.needs_data = plan.calibrate || plan.scale_search;
  const int sources = !o.calib_text.empty() + !o.calib_tokens.empty() + o.calib_self;
  if (plan.needs_data && sources == 0)
    throw_usage(fmt::format("--method {} needs calibration data: --calib FILE, --calib self or "
                            "--calib-tokens FILE",
                            o.method));
  if (sources > 1) throw_usage("give one of --calib FILE, --calib self, --calib-tokens FILE");
  if (!plan.needs_data && sources > 0)
    spdlog::warn("--method {} uses no calibration data; the calibration option is ignored",
                 plan.backend);
  const auto& policies = moe_policy_names();
  if (std::find(policies.begin(), policies.end(), o.moe_policy) == policies.end())
    throw_usage(fmt::format("--moe-policy '{}': expected {}", o.moe_policy,
                            fmt::join(policies, " or ")));
  if (o.moe_min_tokens < 0)
    throw_usage(fmt::format("--moe-min-tokens must be >= 0, got {}", o.moe_min_tokens));
  plan.keep_fp_stream =
      plan.needs_data && (o.keep_fp_stream || plan.objective->needs_fp_stream());
  plan.paired_capture = plan.calibrate && plan.objective->needs_fp_stream();
  plan.holdout_folds = plan.calibrate && plan.objective->uses_lambda() &&
                       plan.objective_settings.lambda_mode == "auto";
  return plan;
}

void QuantizePlan::fit_to_model(const ModelLayout& layout) {
  // The quantizable modules' input widths, sorted, and how many modules there are.
  std::set<int64_t> inputs;
  size_t quantizable = 0;
  for (const auto& layer : layout.layers)
    for (const auto& m : layer.linears)
      if (m.quantizable) ++quantizable, inputs.insert(m.in_features);
  // One group size for the whole checkpoint: clamp to the narrowest quantizable input.
  const int64_t narrowest = inputs.empty() ? INT64_MAX : *inputs.begin();
  if (grid.group_size > narrowest) {
    spdlog::info("--group-size {} exceeds the narrowest quantized input ({}); using {}",
                 grid.group_size, narrowest, narrowest);
    grid.group_size = narrowest;
  }
  skipped = unrepresentable_modules(layout, grid);
  // A grid that fits no module would write the model unquantized under a quantized config and
  // exit 0 (--group-size 7 did): refuse it, naming the flag and the widths it must fit.
  if (quantizable > 0 && skipped.size() == quantizable) {
    if (grid.group_size > 0 && std::none_of(inputs.begin(), inputs.end(), [&](int64_t in) {
          return in % grid.group_size == 0;
        }))
      throw_usage(fmt::format("--group-size {}: no module could be quantized, the input widths "
                              "{} are not multiples of it; expected -1 or a divisor of them",
                              grid.group_size, fmt::join(inputs, ", ")));
    throw_usage(fmt::format("--bits {}: no module could be quantized: {}", grid.bits,
                            skipped.begin()->second));
  }
  for (const auto& [name, why] : skipped) spdlog::warn("{} stays unquantized: {}", name, why);
  // Said once here: quantization_config() is built twice (fingerprint, then the output).
  if (!skipped.empty() && modules_in_block_to_quantize(layout, skipped).is_null())
    spdlog::warn("the unquantized modules differ between layers: transformers' GPTQ loader "
                 "(which reads modules_in_block_to_quantize, not dynamic) cannot load this "
                 "checkpoint");
}

}  // namespace sarqc
