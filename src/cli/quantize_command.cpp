#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "sarqc/pipeline/quantize.h"
#include "sarqc/util/error.h"
#include "sarqc/util/json_file.h"

namespace sarqc::cli {
namespace {

// A recipe file: a JSON object whose keys are quantize flag names without the dashes ("bits",
// "group_size" or "group-size", "method", "lambda", ...). Flags given on the command line win.
void apply_recipe(CLI::App& sub, const std::string& file) {
  const nlohmann::json recipe = read_json_file(file);
  if (!recipe.is_object())
    throw_bad_input(fmt::format("{}: a recipe must be a JSON object of flag names", file));
  for (const auto& [key, value] : recipe.items()) {
    std::string name = "--" + key;
    std::replace(name.begin(), name.end(), '_', '-');
    CLI::Option* option = nullptr;
    try {
      option = sub.get_option(name);
    } catch (const CLI::OptionNotFound&) {
    }
    if (option == nullptr || name == "--config" || name == "--model" || name == "--out")
      throw_usage(fmt::format("{}: '{}' is not a quantize setting a recipe can hold", file, key));
    if (option->count() > 0) continue;  // the command line overrides the recipe
    std::string text;
    if (value.is_string())
      text = value.get<std::string>();
    else if (value.is_boolean() || value.is_number())
      text = value.dump();
    else
      throw_usage(fmt::format("{}: '{}' must be a string, number or boolean", file, key));
    try {
      option->add_result(text);
      option->run_callback();
    } catch (const CLI::Error& e) {
      throw_usage(fmt::format("{}: '{}': {}", file, key, e.what()));
    }
  }
}

// --lambda auto | lw | NUMBER (plan_quantize makes auto the sarqc objectives' default).
void set_lambda(ObjectiveSettings& s, const std::string& text) {
  s.lambda_given = !text.empty();
  if (text.empty()) return;
  if (text == "auto" || text == "lw") {
    s.lambda_mode = text;
    return;
  }
  size_t used = 0;
  double value = -1;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || !(value >= 0))
    throw_usage(fmt::format("--lambda '{}': expected auto, lw or a number >= 0", text));
  s.lambda_mode = "fixed";
  s.lambda_rel = value;
}

}  // namespace

Command add_quantize_command(CLI::App& app) {
  struct Flags {
    std::string model, out, method = "gptq", calib, calib_tokens, dtype = "fp32";
    std::string objective, rounding, saliency = "ones";
    std::string lambda;  // auto | lw | a number; empty: the preset's
    double saliency_power = 0.5, alpha = 0.25, mixup = 5.0;
    std::string alpha_mode;
    int64_t beam = 4, beam_rows = 0;
    int bits = 4;
    int64_t group_size = 128, nsamples = 128, seqlen = 2048, moe_min_tokens = 0;
    std::string moe_policy = "rtn";
    // Defaults from the library's (one place: RoundingOptions).
    std::string order{column_order_name(RoundingOptions{}.order)};
    std::string group_params =
        RoundingOptions{}.block_start_group_params ? "block-start" : "current";
    bool fp_stream = false, scale_search = false;
    uint64_t seed = 0;
    double damp = 0.01;
    bool sym = false, asym = false, act_order = false, static_groups = false;
    bool mse_clip = QuantGrid{}.mse_clip;
    bool force = false, json = false, restart = false, no_resume = false;
    int nproc = 1;
  };
  auto flags = std::make_shared<Flags>();
  CLI::App* sub = app.add_subcommand(
      "quantize", "Quantize a model layer by layer and write a GPTQ-format checkpoint");
  sub->add_option("--model", flags->model, "HuggingFace model folder")->required();
  sub->add_option("--out", flags->out, "Output folder (written atomically)")->required();
  sub->add_option("--bits", flags->bits, "Bits per weight: 2, 3, 4 or 8")
      ->check(CLI::IsMember({2, 3, 4, 8}))
      ->capture_default_str();
  sub->add_option("--group-size", flags->group_size,
                  "Group size along the inputs, -1 for one group per output channel (clamped to "
                  "the narrowest input)")
      ->capture_default_str();
  sub->add_flag("--sym", flags->sym, "Symmetric grid (default; written as checkpoint_format gptq)");
  sub->add_flag("--asym", flags->asym, "Asymmetric grid (written as checkpoint_format gptq_v2)");
  sub->add_flag("--mse-clip,!--no-mse-clip", flags->mse_clip,
                "Search a shrunken range per group (MSE clip; default on, --no-mse-clip: the "
                "full min-max range)");
  std::string presets;
  for (const auto& m : method_presets())
    presets += fmt::format("{}{} ({})", presets.empty() ? "" : ", ", m.name, m.summary);
  sub->add_option("--method", flags->method, "Preset = objective + backend: " + presets)
      ->check(CLI::IsMember(method_names()))
      ->capture_default_str();
  sub->add_option("--objective", flags->objective,
                  "Override the preset's objective: plain, sarqc, interp, sarqc+interp");
  sub->add_option("--rounding", flags->rounding,
                  "Override the preset's backend: rtn, gptq, successive, beam, scale-search (AWQ "
                  "pre-pass + rtn)");
  sub->add_flag("--scale-search", flags->scale_search,
                "Run the AWQ-style scale/clip search before any backend (e.g. with gptq)");
  sub->add_option("--beam", flags->beam, "Beam width of --rounding beam")->capture_default_str();
  sub->add_option("--beam-rows", flags->beam_rows,
                  "Rows decoded together by successive/beam (memory bound); 0 = as many as fit "
                  "in 256 MiB of decoder state")
      ->capture_default_str();
  sub->add_option("--lambda", flags->lambda,
                  "sarqc: drift penalty relative to mean(diag H): auto (default of the sarqc "
                  "objectives: chosen per module on held-out calibration tokens), lw (the "
                  "Ledoit-Wolf shrinkage intensity per module) or a number >= 0");
  sub->add_option("--saliency", flags->saliency,
                  "sarqc saliency: ones (RQC), hdiag, absmean, absmean-pow, elem (per entry; our "
                  "reconstruction)")
      ->capture_default_str();
  sub->add_option("--saliency-power", flags->saliency_power, "absmean-pow exponent in (0, 1]")
      ->capture_default_str();
  CLI::Option* alpha = sub->add_option("--alpha", flags->alpha,
                                       "interp: fixed interpolation toward the full-precision "
                                       "stream, in [0, 1]")
                           ->capture_default_str();
  CLI::Option* alpha_mode = sub->add_option("--alpha-mode", flags->alpha_mode,
                                            "interp: fixed, sample or closed-form (the public CoreQ code's lagged α*; default: the "
                                            "preset's)");
  CLI::Option* mixup = sub->add_option("--mixup", flags->mixup,
                                       "interp sample mode: α_j = min(a, 1-a), a ~ Beta(c, c)")
                           ->capture_default_str();
  sub->add_option("--calib", flags->calib,
                  "Calibration text file (tokenized with the model), or 'self': sample it from "
                  "the model (seeded by --seed; needs all layers in memory)");
  sub->add_option("--calib-tokens", flags->calib_tokens,
                  "Calibration token ids: a JSON array or raw little-endian int32");
  sub->add_option("--nsamples", flags->nsamples, "Calibration windows")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_option("--seqlen", flags->seqlen,
                  "Tokens per calibration window (clamped to max_position_embeddings)")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_option("--seed", flags->seed, "Seed for drawing the calibration windows")
      ->check(seed_value())
      ->capture_default_str();
  sub->add_option("--damp", flags->damp,
                  "Damping as a fraction of mean(diag H); raised by 0.01 when Cholesky fails")
      ->check(non_negative_number())
      ->capture_default_str();
  CLI::Option* order =
      sub->add_option("--order", flags->order,
                      "Column order of the gptq/successive/beam backends: gar (whole groups by "
                      "their largest Hessian diagonal, columns inside by theirs; no g_idx), act "
                      "(descending Hessian diagonal, desc_act: a permuted g_idx) or natural")
          ->capture_default_str();
  sub->add_flag("--act-order", flags->act_order, "Same as --order act (desc_act)");
  sub->add_flag("--static-groups", flags->static_groups,
                "Fix group parameters before GPTQ updates (trivial g_idx with --order act)");
  sub->add_option("--group-params", flags->group_params,
                  "gptq: a group that starts inside a 128-column block takes its scale from its "
                  "columns' values at the block's start (block-start, as the reference gptq.py "
                  "and GPTQModel) or from their current values (current)")
      ->check(CLI::IsMember({"current", "block-start"}))
      ->capture_default_str();
  sub->add_option("--moe-min-tokens", flags->moe_min_tokens,
                  "MoE experts routed fewer tokens are 'starved' (default: max(16, 0.5% of "
                  "nsamples x seqlen))")
      ->check(non_negative_number());
  sub->add_option("--moe-policy", flags->moe_policy,
                  "Starved experts: rtn, or all-tokens (calibrate on every token of the layer)")
      ->check(CLI::IsMember(moe_policy_names()))
      ->capture_default_str();
  sub->add_flag("--fp-stream", flags->fp_stream,
                "Also carry the full-precision activation stream (asymmetric objectives turn "
                "this on themselves)");
  sub->add_option("--dtype", flags->dtype, "Activation dtype for calibration: fp32, bf16, fp16")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();
  auto config = std::make_shared<std::string>();
  sub->add_option("--config", *config,
                  "Recipe: a JSON file of flag names and values (configs/*.json); flags given "
                  "on the command line override it");
  sub->add_flag("--force", flags->force, "Replace an existing output folder");
  sub->add_option("--nproc", flags->nproc,
                  "Start this many ranks on this machine (data-parallel calibration over c10d "
                  "with Gloo); torchrun and srun set RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT "
                  "instead")
      ->check(positive_integer())
      ->capture_default_str();
  sub->add_flag("--restart", flags->restart,
                "Discard the state an interrupted run of this output saved, and start over "
                "(without it, the same command resumes from the last completed layer)");
  sub->add_flag("--no-resume", flags->no_resume,
                "Refuse to run (exit code 5) when an interrupted run of this output saved a "
                "state");
  sub->add_flag("--json", flags->json, "Print the report (also in OUT/report.json) as JSON");
  return {sub, [flags, alpha, alpha_mode, mixup, order, config, sub](const GlobalOptions& global) {
            if (!config->empty()) apply_recipe(*sub, *config);
            QuantizeOptions o;
            o.compute.device = apply_global_options(global);
            o.compute.dtype = parse_activation_dtype(flags->dtype);
            if (flags->sym && flags->asym) throw_usage("--sym and --asym exclude each other");
            o.model_dir = flags->model;
            o.out_dir = flags->out;
            o.grid = {flags->bits, flags->group_size, !flags->asym, flags->mse_clip};
            o.method = flags->method;
            o.objective = flags->objective;
            o.rounding = flags->rounding;
            set_lambda(o.objective_settings, flags->lambda);
            o.objective_settings.saliency = flags->saliency;
            o.objective_settings.saliency_power = flags->saliency_power;
            o.rounding_options.beam_width = flags->beam;
            o.rounding_options.beam_rows = flags->beam_rows;
            o.objective_settings.alpha = flags->alpha;
            o.objective_settings.alpha_mode = flags->alpha_mode;
            o.objective_settings.mixup = flags->mixup;
            o.objective_settings.alpha_given =
                alpha->count() + alpha_mode->count() + mixup->count() > 0;
            o.calib_self = flags->calib == "self";
            if (!o.calib_self) o.calib_text = flags->calib;
            o.calib_tokens = flags->calib_tokens;
            o.nsamples = flags->nsamples;
            o.seqlen = flags->seqlen;
            o.seed = flags->seed;
            o.damp = flags->damp;
            o.rounding_options.order = parse_column_order(flags->order, "--order");
            if (flags->act_order && order->count() > 0 &&
                o.rounding_options.order != ColumnOrder::act)
              throw_usage("--act-order: contradicts --order " + flags->order);
            if (flags->act_order) o.rounding_options.order = ColumnOrder::act;
            o.rounding_options.block_start_group_params = flags->group_params == "block-start";
            o.rounding_options.static_groups = flags->static_groups;
            o.moe_min_tokens = flags->moe_min_tokens;
            o.moe_policy = flags->moe_policy;
            o.keep_fp_stream = flags->fp_stream;
            o.scale_search = flags->scale_search;
            o.force = flags->force;
            o.restart = flags->restart;
            o.resume = !flags->no_resume;
            const QuantizeReport report = quantize(o);
            if (flags->json)
              std::cout << to_json(report).dump() << std::endl;
            else
              std::cout << to_text(report) << std::flush;
            return 0;
          }};
}

}  // namespace sarqc::cli
