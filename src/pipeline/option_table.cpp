#include "sarqc/pipeline/option_table.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>

#include "sarqc/model/compute.h"
#include "sarqc/objective/objective.h"
#include "sarqc/calib/saliency.h"
#include "sarqc/rounding/column_order.h"
#include "sarqc/util/error.h"

namespace sarqc {
namespace {

using nlohmann::json;

[[noreturn]] void refuse(const std::string& name, const std::string& text,
                         const std::string& expected) {
  throw_usage(fmt::format("--{} '{}': expected {}", name, text, expected));
}

// Whole-string integer parses: std::stoll alone accepts "12abc" and, for unsigned, "-1".
int64_t parse_integer(const std::string& name, const std::string& text, int64_t min,
                      const std::string& expected) {
  size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    refuse(name, text, expected);
  }
  if (used != text.size() || value < min) refuse(name, text, expected);
  return value;
}

double parse_number(const std::string& name, const std::string& text, double min, double max,
                    bool min_open, const std::string& expected) {
  // strtod rather than std::stod, which throws on underflow: 1e-320 is a number >= 0 (it
  // rounds to a subnormal or zero), and only an overflow is out of range.
  errno = 0;
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  const bool whole = !text.empty() && !std::isspace(static_cast<unsigned char>(text[0])) &&
                     end == text.c_str() + text.size();
  const bool above = min_open ? value > min : value >= min;
  if (!whole || !std::isfinite(value) || !above || value > max) refuse(name, text, expected);
  return value;
}

bool parse_flag(const std::string& name, const std::string& text) {
  if (text == "true" || text == "1") return true;
  if (text == "false" || text == "0") return false;
  refuse(name, text, "true or false");
}

const std::string& parse_choice(const std::string& name, const std::string& text,
                                const std::vector<std::string>& choices) {
  for (const auto& c : choices)
    if (c == text) return c;
  refuse(name, text, fmt::format("one of {}", fmt::join(choices, ", ")));
}

uint64_t parse_seed(const std::string& name, const std::string& text) {
  // Digits only: std::stoull reads "-1" as 2^64 - 1.
  if (!text.empty() && text.size() <= 20 &&
      text.find_first_not_of("0123456789") == std::string::npos) {
    try {
      return std::stoull(text);
    } catch (const std::exception&) {
    }
  }
  refuse(name, text, "an integer in [0, 2^64)");
}

// The largest --lambda and --damp: both add (value x mean diag H) to a diagonal, and beyond
// 2^24 times it H itself falls below fp32 resolution (the result is the limit); 1e308 overflows
// to inf, every Cholesky fails and every module silently falls back to rounding to nearest.
constexpr double kMaxRelativeWeight = 1e6;

// --lambda auto | lw | a number >= 0 (empty: the preset's, auto for the sarqc objectives).
void set_lambda(ObjectiveSettings& s, const std::string& text) {
  if (text.empty()) {  // as not given: scripts pass --lambda "$L" with L unset
    s.lambda_given = false, s.lambda_mode = "fixed", s.lambda_rel = 0;
    return;
  }
  s.lambda_given = true;
  if (text == "auto" || text == "lw") {
    s.lambda_mode = text;
    s.lambda_rel = 0;
    return;
  }
  s.lambda_mode = "fixed";
  s.lambda_rel = parse_number("lambda", text, 0, kMaxRelativeWeight, false,
                              "auto, lw or a number from 0 to 1e6");
}

json lambda_value(const ObjectiveSettings& s) {
  if (!s.lambda_given) return "";
  if (s.lambda_mode != "fixed") return s.lambda_mode;
  return s.lambda_rel;
}

// A row for an integer field with a lower bound. `field` is a generic lambda returning a
// reference to the field, so that one accessor serves both get and set.
template <typename Field>
OptionRow integer_row(const std::string& name, const std::string& help, unsigned reach,
                      const std::string& example, int64_t min, const std::string& expected,
                      Field field) {
  return {name, OptionKind::Integer, help, reach, {}, "", false, "", example, {},
          [field](const QuantizeOptions& o) { return json(field(o)); },
          [=](QuantizeOptions& o, const std::string& v) {
            field(o) = parse_integer(name, v, min, expected);
          }};
}

std::vector<std::string> with_scale_search(std::vector<std::string> names) {
  names.push_back("scale-search");
  return names;
}

const std::vector<std::string> kAlphaModes = {"fixed", "sample", "closed-form"};
const std::vector<std::string> kDtypes = {"fp32", "bf16", "fp16"};
const std::vector<std::string> kGroupParams = {"block-start", "current"};
const std::vector<std::string> kAutoOnOff = {"auto", "on", "off"};

constexpr unsigned kEverywhere = kOnCommandLine | kInRecipe | kInFingerprint;  // most rows
constexpr unsigned kCommandLineOnly = kOnCommandLine;
constexpr unsigned kLibraryOnly = kInFingerprint;  // no flag yet: tests and benchmarks set them

std::vector<OptionRow> make_table() {
  std::string presets;
  for (const auto& m : method_presets())
    presets += fmt::format("{}{} ({})", presets.empty() ? "" : ", ", m.name, m.summary);
  std::vector<OptionRow> t;
  // --- what to quantize and where the result goes
  t.push_back({"model", OptionKind::Text, "HuggingFace model folder", kCommandLineOnly, {}, "",
               true, "", "/tmp/model", {},
               [](const QuantizeOptions& o) { return json(o.model_dir.string()); },
               [](QuantizeOptions& o, const std::string& v) { o.model_dir = v; }});
  t.push_back({"out", OptionKind::Text, "Output folder (written atomically)", kCommandLineOnly, {},
               "", true, "", "/tmp/out", {},
               [](const QuantizeOptions& o) { return json(o.out_dir.string()); },
               [](QuantizeOptions& o, const std::string& v) { o.out_dir = v; }});
  // --- the grid
  t.push_back({"bits", OptionKind::Choice, "Bits per weight", kEverywhere | kRecorded,
               {"2", "3", "4", "8"}, "", false, "/bits", "3", {},
               [](const QuantizeOptions& o) { return json(o.grid.bits); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.grid.bits = std::stoi(parse_choice("bits", v, {"2", "3", "4", "8"}));
               }});
  t.push_back({"group-size", OptionKind::Integer,
               "Group size along the inputs, -1 for one group per output channel (clamped to "
               "the narrowest input)",
               kEverywhere | kRecorded, {}, "", false, "/group_size", "32", {},
               [](const QuantizeOptions& o) { return json(o.grid.group_size); },
               [](QuantizeOptions& o, const std::string& v) {
                 const int64_t g = parse_integer("group-size", v, -1, "-1 or a positive integer");
                 if (g == 0) refuse("group-size", v, "-1 or a positive integer");
                 o.grid.group_size = g;
               }});
  t.push_back({"sym", OptionKind::Flag,
               "Symmetric grid (default; written as checkpoint_format gptq); false: asymmetric",
               kEverywhere | kRecorded, {}, "", false, "/sym", "false", {},
               [](const QuantizeOptions& o) { return json(o.grid.sym); },
               [](QuantizeOptions& o, const std::string& v) { o.grid.sym = parse_flag("sym", v); }});
  t.push_back({"asym", OptionKind::Flag, "Asymmetric grid (written as checkpoint_format gptq_v2)",
               kOnCommandLine | kInRecipe, {}, "", false, "", "true", {},
               [](const QuantizeOptions& o) { return json(!o.grid.sym); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.grid.sym = !parse_flag("asym", v);
               }});
  t.push_back({"mse-clip", OptionKind::Flag,
               "Search a shrunken range per group (MSE clip; default on, --no-mse-clip: the full "
               "min-max range)",
               kEverywhere | kRecorded, {}, "no-mse-clip", false, "/meta/sarqc/mse_clip", "false",
               {}, [](const QuantizeOptions& o) { return json(o.grid.mse_clip); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.grid.mse_clip = parse_flag("mse-clip", v);
               }});
  // --- method: preset, or objective + backend
  t.push_back({"method", OptionKind::Choice, "Preset = objective + backend: " + presets,
               kEverywhere | kRecorded, method_names(), "", false, "/meta/sarqc/method", "beam",
               {}, [](const QuantizeOptions& o) { return json(o.method); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.method = parse_choice("method", v, method_names());
               }});
  t.push_back({"objective", OptionKind::Choice, "Override the preset's objective", kEverywhere,
               objective_names(), "", false, "", "interp", {},
               [](const QuantizeOptions& o) { return json(o.objective); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.objective = parse_choice("objective", v, objective_names());
               }});
  t.push_back({"rounding", OptionKind::Choice,
               "Override the preset's backend (scale-search: the AWQ pre-pass + rtn)", kEverywhere,
               with_scale_search(rounder_names()), "", false, "", "beam", {},
               [](const QuantizeOptions& o) { return json(o.rounding); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.rounding = parse_choice("rounding", v, with_scale_search(rounder_names()));
               }});
  t.push_back({"scale-search", OptionKind::Flag,
               "Run the AWQ-style scale/clip search before any backend (e.g. with gptq)",
               kEverywhere, {}, "", false, "", "true", {},
               [](const QuantizeOptions& o) { return json(o.scale_search); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.scale_search = parse_flag("scale-search", v);
               }});
  t.push_back(integer_row(
      "beam",
      "Beam width of --rounding beam",
      kEverywhere, "2", 1, "an integer >= 1",
      [](auto& o) -> auto& { return o.rounding_options.beam_width; }));
  t.push_back(integer_row(
      "beam-rows",
      "Rows decoded together by successive/beam (memory bound); 0 = as many as fit in 256 MiB "
      "of decoder state",
      kEverywhere, "8", 0, "an integer >= 0",
      [](auto& o) -> auto& { return o.rounding_options.beam_rows; }));
  // --- objective settings
  t.push_back({"lambda", OptionKind::Text,
               "sarqc: drift penalty relative to mean(diag H): auto (default of the sarqc "
               "objectives: chosen per module on held-out calibration tokens), lw (the "
               "Ledoit-Wolf shrinkage intensity per module) or a number from 0 to 1e6",
               kEverywhere, {}, "", false, "", "0.1", {{"method", "sarqc"}},
               [](const QuantizeOptions& o) { return lambda_value(o.objective_settings); },
               [](QuantizeOptions& o, const std::string& v) {
                 set_lambda(o.objective_settings, v);
               }});
  t.push_back({"saliency", OptionKind::Choice,
               "sarqc saliency (per entry for elem; our reconstruction)",
               kEverywhere | kRecorded, saliency_names(), "", false, "/meta/sarqc/saliency", "absmean",
               {{"method", "sarqc"}},
               [](const QuantizeOptions& o) { return json(o.objective_settings.saliency); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.objective_settings.saliency = parse_choice("saliency", v, saliency_names());
               }});
  t.push_back({"saliency-power", OptionKind::Number, "absmean-pow exponent in (0, 1]",
               kEverywhere, {}, "", false, "", "0.25", {{"method", "sarqc"}},
               [](const QuantizeOptions& o) { return json(o.objective_settings.saliency_power); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.objective_settings.saliency_power =
                     parse_number("saliency-power", v, 0, 1, true, "a number in (0, 1]");
               }});
  t.push_back({"alpha", OptionKind::Number,
               "interp: fixed interpolation toward the full-precision stream, in [0, 1]",
               kEverywhere | kRecorded, {}, "", false, "/meta/sarqc/alpha", "0.5",
               {{"method", "gptaq"}},
               [](const QuantizeOptions& o) { return json(o.objective_settings.alpha); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.objective_settings.alpha = parse_number("alpha", v, 0, 1, false, "a number in [0, 1]");
                 o.objective_settings.alpha_given = true;
               }});
  t.push_back({"alpha-mode", OptionKind::Choice,
               "interp: fixed, sample or closed-form (the public CoreQ code's lagged α*; "
               "default: the preset's)",
               kEverywhere, kAlphaModes, "", false, "", "closed-form", {{"method", "gptaq"}},
               [](const QuantizeOptions& o) { return json(o.objective_settings.alpha_mode); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.objective_settings.alpha_mode = parse_choice("alpha-mode", v, kAlphaModes);
                 o.objective_settings.alpha_given = true;
               }});
  t.push_back({"mixup", OptionKind::Number,
               "interp sample mode: α_j = min(a, 1-a), a ~ Beta(c, c), c > 0",
               kEverywhere | kRecorded, {}, "", false, "/meta/sarqc/mixup", "3", {{"method", "beam"}},
               [](const QuantizeOptions& o) { return json(o.objective_settings.mixup); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.objective_settings.mixup = parse_number(
                     "mixup", v, 0, std::numeric_limits<double>::max(), true, "a number > 0");
                 o.objective_settings.alpha_given = true;
               }});
  // --- calibration
  t.push_back({"calib", OptionKind::Text,
               "Calibration text file (tokenized with the model), or 'self': sample it from the "
               "model (seeded by --seed; needs all layers in memory)",
               kOnCommandLine | kInRecipe, {}, "", false, "", "self", {},
               [](const QuantizeOptions& o) {
                 return json(o.calib_self ? std::string("self") : o.calib_text.string());
               },
               [](QuantizeOptions& o, const std::string& v) {
                 o.calib_self = v == "self";
                 o.calib_text = o.calib_self ? std::string() : v;
               }});
  t.push_back({"calib-tokens", OptionKind::Text,
               "Calibration token ids: a JSON array or raw little-endian int32",
               kOnCommandLine | kInRecipe, {}, "", false, "", "ids.json", {},
               [](const QuantizeOptions& o) { return json(o.calib_tokens.string()); },
               [](QuantizeOptions& o, const std::string& v) { o.calib_tokens = v; }});
  t.push_back(integer_row(
      "nsamples",
      "Calibration windows",
      kEverywhere, "16", 1, "a positive integer",
      [](auto& o) -> auto& { return o.nsamples; }));
  t.push_back(integer_row(
      "seqlen",
      "Tokens per calibration window (clamped to max_position_embeddings)",
      kEverywhere, "64", 1, "a positive integer",
      [](auto& o) -> auto& { return o.seqlen; }));
  t.push_back({"seed", OptionKind::Integer, "Seed for drawing the calibration windows",
               kEverywhere | kRecorded, {}, "", false, "/meta/sarqc/seed", "7", {},
               [](const QuantizeOptions& o) { return json(o.seed); },
               [](QuantizeOptions& o, const std::string& v) { o.seed = parse_seed("seed", v); }});
  t.push_back({"damp", OptionKind::Number,
               "Damping as a fraction of mean(diag H), 0 to 1e6; raised by 0.01 when Cholesky "
               "fails",
               kEverywhere | kRecorded, {}, "", false, "/damp_percent", "0.05", {},
               [](const QuantizeOptions& o) { return json(o.damp); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.damp = parse_number("damp", v, 0, kMaxRelativeWeight, false,
                                       "a number from 0 to 1e6");
               }});
  // --- column order and group parameters
  t.push_back({"order", OptionKind::Choice,
               "Column order of the gptq/successive/beam backends: gar (whole groups by their "
               "largest Hessian diagonal, columns inside by theirs; no g_idx), act (descending "
               "Hessian diagonal, desc_act: a permuted g_idx) or natural",
               kEverywhere | kRecorded, column_order_names(), "", false, "/meta/sarqc/order",
               "natural", {},
               [](const QuantizeOptions& o) {
                 return json(std::string(column_order_name(o.rounding_options.order)));
               },
               [](QuantizeOptions& o, const std::string& v) {
                 o.rounding_options.order = parse_column_order(v, "--order");
               }});
  t.push_back({"act-order", OptionKind::Flag, "Same as --order act (desc_act)",
               kOnCommandLine | kInRecipe, {}, "", false, "", "true", {},
               [](const QuantizeOptions& o) {
                 return json(o.rounding_options.order == ColumnOrder::act);
               },
               [](QuantizeOptions& o, const std::string& v) {
                 if (parse_flag("act-order", v)) o.rounding_options.order = ColumnOrder::act;
               }});
  t.push_back({"static-groups", OptionKind::Flag,
               "Fix group parameters before GPTQ updates (trivial g_idx with --order act)",
               kEverywhere | kRecorded, {}, "", false, "/static_groups", "true", {},
               [](const QuantizeOptions& o) { return json(o.rounding_options.static_groups); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.rounding_options.static_groups = parse_flag("static-groups", v);
               }});
  t.push_back({"group-params", OptionKind::Choice,
               "gptq: a group that starts inside a 128-column block takes its scale from its "
               "columns' values at the block's start (block-start, as the reference gptq.py and "
               "GPTQModel) or from their current values (current)",
               kEverywhere | kRecorded, kGroupParams, "", false, "/meta/sarqc/group_params",
               "current", {},
               [](const QuantizeOptions& o) {
                 return json(o.rounding_options.block_start_group_params ? "block-start"
                                                                         : "current");
               },
               [](QuantizeOptions& o, const std::string& v) {
                 o.rounding_options.block_start_group_params =
                     parse_choice("group-params", v, kGroupParams) == "block-start";
               }});
  // --- MoE
  t.push_back(integer_row(
      "moe-min-tokens",
      "MoE experts routed fewer tokens are 'starved' (0: max(16, 0.5% of nsamples x seqlen))",
      kEverywhere, "8", 0, "an integer >= 0",
      [](auto& o) -> auto& { return o.moe_min_tokens; }));
  t.push_back({"moe-policy", OptionKind::Choice,
               "Starved experts: rtn, or all-tokens (calibrate on every token of the layer)",
               kEverywhere, moe_policy_names(), "", false, "", "all-tokens", {},
               [](const QuantizeOptions& o) { return json(o.moe_policy); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.moe_policy = parse_choice("moe-policy", v, moe_policy_names());
               }});
  // --- compute
  t.push_back({"fp-stream", OptionKind::Flag,
               "Also carry the full-precision activation stream (asymmetric objectives turn "
               "this on themselves)",
               kEverywhere, {}, "", false, "", "true", {},
               [](const QuantizeOptions& o) { return json(o.keep_fp_stream); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.keep_fp_stream = parse_flag("fp-stream", v);
               }});
  t.push_back({"dtype", OptionKind::Choice, "Activation dtype for calibration", kEverywhere,
               kDtypes, "", false, "", "bf16", {},
               [](const QuantizeOptions& o) { return json(activation_dtype_name(o.compute.dtype)); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.compute.dtype = parse_activation_dtype(parse_choice("dtype", v, kDtypes));
               }});
  // --- the output folder and an interrupted run's state (never from a recipe: a shared recipe
  // must not replace or discard anyone's output)
  t.push_back({"force", OptionKind::Flag, "Replace an existing output folder", kCommandLineOnly,
               {}, "", false, "", "true", {},
               [](const QuantizeOptions& o) { return json(o.force); },
               [](QuantizeOptions& o, const std::string& v) { o.force = parse_flag("force", v); }});
  t.push_back({"restart", OptionKind::Flag,
               "Discard the state an interrupted run of this output saved, and start over "
               "(without it, the same command resumes from the last completed layer)",
               kCommandLineOnly, {}, "", false, "", "true", {},
               [](const QuantizeOptions& o) { return json(o.restart); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.restart = parse_flag("restart", v);
               }});
  t.push_back({"no-resume", OptionKind::Flag,
               "Refuse to run (exit code 5) when an interrupted run of this output saved a state",
               kCommandLineOnly, {}, "", false, "", "true", {},
               [](const QuantizeOptions& o) { return json(!o.resume); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.resume = !parse_flag("no-resume", v);
               }});
  // --- library settings without a flag (tests and benchmarks set them); they change results,
  // so a resumed run must match them
  t.push_back(integer_row(
      "block-size",
      "GPTQ lazy-update block; successive/beam decoding block",
      kLibraryOnly, "64", 1, "an integer >= 1",
      [](auto& o) -> auto& { return o.rounding_options.block_size; }));
  t.push_back(integer_row(
      "beam-budget-bytes",
      "successive/beam: decoder state per chunk of rows when --beam-rows is 0",
      kLibraryOnly, "1048576", 1, "an integer >= 1",
      [](auto& o) -> auto& { return o.rounding_options.beam_budget_bytes; }));
  t.push_back({"max-damp-retries", OptionKind::Integer,
               "Times the damping is raised when a Cholesky factorisation fails", kLibraryOnly, {},
               "", false, "", "3", {},
               [](const QuantizeOptions& o) { return json(o.max_damp_retries); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.max_damp_retries =
                     static_cast<int>(parse_integer("max-damp-retries", v, 0, "an integer >= 0"));
               }});
  t.push_back({"calib-temperature", OptionKind::Number,
               "--calib self: sampling temperature", kLibraryOnly, {}, "", false, "", "0.7", {},
               [](const QuantizeOptions& o) { return json(o.calib_temperature); },
               [](QuantizeOptions& o, const std::string& v) {
                 o.calib_temperature = parse_number("calib-temperature", v, 0,
                                                    std::numeric_limits<double>::max(), true,
                                                    "a number > 0");
               }});
  t.push_back(integer_row(
      "scale-ratios",
      "Scale search: ratios tried per group",
      kLibraryOnly, "10", 1, "an integer >= 1",
      [](auto& o) -> auto& { return o.scale_search_options.ratios; }));
  t.push_back(integer_row(
      "scale-search-tokens",
      "Scale search: calibration tokens it reads per layer (whole windows; its cost grows with "
      "them)",
      kEverywhere, "1024", 1, "an integer >= 1",
      [](auto& o) -> auto& { return o.scale_search_options.max_tokens; }));
  t.push_back({"scale-search-clip", OptionKind::Choice,
               "Scale search: also choose each group's clip range on the layer output (then the "
               "backend rounds on min-max ranges); auto: with the rtn backend only (AWQ), since "
               "the calibrated backends choose their ranges themselves",
               kEverywhere, kAutoOnOff, "", false, "", "on", {},
               [](const QuantizeOptions& o) {
                 return json(!o.scale_search_clip ? "auto" : *o.scale_search_clip ? "on" : "off");
               },
               [](QuantizeOptions& o, const std::string& v) {
                 const std::string& c = parse_choice("scale-search-clip", v, kAutoOnOff);
                 o.scale_search_clip =
                     c == "auto" ? std::nullopt : std::optional<bool>(c == "on");
               }});
  t.push_back(integer_row(
      "scale-clip-tokens",
      "Scale search: tokens sampled for the clip search",
      kLibraryOnly, "64", 1, "an integer >= 1",
      [](auto& o) -> auto& { return o.scale_search_options.clip_tokens; }));
  return t;
}

// Rows that set the same field: a recipe key yields to any row of its group given on the
// command line ("" for a row of its own).
std::string group_of(const std::string& row) {
  if (row == "sym" || row == "asym") return "sym";
  if (row == "order" || row == "act-order") return "order";
  if (row == "calib" || row == "calib-tokens") return "calib";
  return "";
}

// What --sym/--asym given as `text` say about the grid: symmetric or not.
bool says_symmetric(const std::string& row, const std::string& text) {
  return (row == "sym") == (text == "true");
}

}  // namespace

const std::vector<OptionRow>& quantize_option_table() {
  static const std::vector<OptionRow> table = make_table();
  return table;
}

const OptionRow* find_quantize_option(const std::string& name) {
  std::string dashed = name;
  std::replace(dashed.begin(), dashed.end(), '_', '-');
  for (const auto& row : quantize_option_table())
    if (row.name == dashed) return &row;
  return nullptr;
}

std::string option_text(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

void check_option_combinations(const std::map<std::string, std::string>& given) {
  const auto sym = given.find("sym"), asym = given.find("asym");
  if (sym != given.end() && asym != given.end() &&
      says_symmetric("sym", sym->second) != says_symmetric("asym", asym->second))
    throw_usage("--sym and --asym exclude each other");
  const auto act = given.find("act-order"), order = given.find("order");
  if (act != given.end() && act->second == "true" && order != given.end() &&
      order->second != "act")
    throw_usage(fmt::format("--act-order: contradicts --order {}", order->second));
}

void apply_recipe(QuantizeOptions& o, const json& recipe, const std::string& file,
                  std::map<std::string, std::string>& given,
                  const std::vector<std::string>& command_line_only) {
  if (!recipe.is_object())
    throw_usage(fmt::format("{}: a recipe must be a JSON object of flag names", file));
  std::map<std::string, std::string> from_recipe;
  std::set<std::string> groups_given;
  for (const auto& [name, text] : given)
    if (!group_of(name).empty()) groups_given.insert(group_of(name));
  for (const auto& [key, value] : recipe.items()) {
    const OptionRow* row = find_quantize_option(key);
    std::string dashed = key;
    std::replace(dashed.begin(), dashed.end(), '_', '-');
    bool negated = false;  // "no_mse_clip": true is "mse_clip": false
    if (row == nullptr)
      for (const OptionRow& r : quantize_option_table())
        if (!r.negation.empty() && r.negation == dashed) row = &r, negated = true;
    const bool flag_only =
        std::find(command_line_only.begin(), command_line_only.end(), dashed) !=
            command_line_only.end() ||
        (row != nullptr && (row->reach & kOnCommandLine) && !(row->reach & kInRecipe));
    if (flag_only)
      throw_usage(fmt::format("{}: '{}' can only be given on the command line (--{})", file, key,
                              dashed));
    if (row == nullptr || !(row->reach & kInRecipe))
      throw_usage(fmt::format("{}: '{}' is not a quantize setting a recipe can hold", file, key));
    if (from_recipe.count(row->name))  // "group_size" and "group-size"
      throw_usage(fmt::format("{}: '{}' is given twice", file, key));
    // The command line overrides the recipe, for the row and the rows that set the same field.
    if (given.count(row->name) || groups_given.count(group_of(row->name)))
      continue;
    std::string text;
    if (value.is_string() && row->kind != OptionKind::Flag)
      text = value.get<std::string>();
    else if (value.is_boolean() && row->kind == OptionKind::Flag)
      text = value.get<bool>() != negated ? "true" : "false";
    else if (value.is_number() && row->kind != OptionKind::Flag)
      text = value.dump();
    else
      throw_usage(fmt::format("{}: '{}' must be {}, got {}", file, key,
                              row->kind == OptionKind::Flag ? "true or false"
                              : row->kind == OptionKind::Integer || row->kind == OptionKind::Number
                                  ? "a number"
                                  : "a string",
                              value.dump()));
    try {
      row->set(o, text);
    } catch (const Error& e) {
      throw_usage(fmt::format("{}: '{}': {}", file, key, e.what()));
    }
    from_recipe[row->name] = text;
  }
  given.insert(from_recipe.begin(), from_recipe.end());
}

}  // namespace sarqc
