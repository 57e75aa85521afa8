#include "sarqc/pipeline/quantize.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "sarqc/calib/calibration_set.h"
#include "sarqc/calib/gram.h"
#include "sarqc/calib/module_groups.h"
#include "sarqc/io/dtype.h"
#include "sarqc/io/safetensors_writer.h"
#include "sarqc/io/tokenizer.h"
#include "sarqc/model/decoder_layer.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"
#include "sarqc/objective/interp.h"
#include "sarqc/objective/objective.h"
#include "sarqc/pipeline/gptq_output.h"
#include "sarqc/quant/gptq_format.h"
#include "sarqc/rounding/rtn.h"
#include "sarqc/rounding/scale_search.h"
#include "sarqc/util/atomic_directory.h"
#include "sarqc/util/error.h"
#include "sarqc/util/file.h"
#include "sarqc/util/interrupt.h"
#include "sarqc/util/json_file.h"
#include "sarqc/util/progress.h"
#include "sarqc/util/stopwatch.h"
#include "sarqc/version.h"

namespace sarqc {
namespace fs = std::filesystem;
namespace {

constexpr const char* kAllTokensSuffix = "#all-tokens";

class GramObserver : public LinearInputObserver {
 public:
  GramObserver(int group, int64_t sequences, c10::Device device, bool all_expert_tokens)
      : group_(group), sequences_(sequences), device_(device), all_(all_expert_tokens) {}
  void observe_input(const LinearModule& m, const at::Tensor& x) override {
    if (sequential_group(m) == group_ && feeds_key(m)) accumulate(input_key(m), m, x);
  }
  bool wants_all_expert_tokens() const override { return all_ && group_ >= 2; }
  void observe_all_tokens_input(const LinearModule& m, const at::Tensor& x) override {
    if (sequential_group(m) == group_ && feeds_key(m) && m.expert >= 0)
      accumulate(input_key(m) + kAllTokensSuffix, m, x);
  }
  void set_sequences(int64_t s) { sequences_ = s; }
  // Paired quantized/full-precision inputs of one key (interp objectives).
  void add_pair(const std::string& key, const LinearModule& m, const at::Tensor& x,
                const at::Tensor& x_fp, const at::Tensor& token_weight) {
    gram(key, m).add(x, x_fp, token_weight, sequences_);
  }
  const GramAccumulator* find(const std::string& key) const {
    const auto it = grams_.find(key);
    return it == grams_.end() ? nullptr : &it->second;
  }

 private:
  GramAccumulator& gram(const std::string& key, const LinearModule& m) {
    auto it = grams_.find(key);
    if (it == grams_.end()) it = grams_.emplace(key, GramAccumulator(m.in_features, device_)).first;
    return it->second;
  }
  void accumulate(const std::string& key, const LinearModule& m, const at::Tensor& x) {
    // Routed experts see a subset of the batch's tokens; every sequence still counts toward N
    // (the normaliser stays 2/N, methods.md §8).
    gram(key, m).add(x, sequences_);
  }

  int group_;
  int64_t sequences_;
  c10::Device device_;
  bool all_;
  std::map<std::string, GramAccumulator> grams_;
};

// Keeps the inputs of one group's modules for one batch (paired capture of both streams), and
// in MoE layers the router's input and decisions.
class RecordingObserver : public LinearInputObserver {
 public:
  RecordingObserver(int group, bool all_expert_tokens) : group_(group), all_(all_expert_tokens) {}
  void observe_input(const LinearModule& m, const at::Tensor& x) override {
    if (m.role == LinearRole::Router) router_input = x;
    if (sequential_group(m) == group_ && feeds_key(m)) inputs[input_key(m)] = {&m, x};
  }
  void observe_routing(const DecoderLayerLayout&, const MoeRouting& r) override { routing = r; }
  bool wants_all_expert_tokens() const override { return all_ && group_ >= 2; }
  void observe_all_tokens_input(const LinearModule& m, const at::Tensor& x) override {
    if (sequential_group(m) == group_ && feeds_key(m) && m.expert >= 0)
      all_tokens_inputs[input_key(m)] = {&m, x};
  }
  std::map<std::string, std::pair<const LinearModule*, at::Tensor>> inputs;
  // Routed experts run on every token of the batch (the all-tokens policy), by key.
  std::map<std::string, std::pair<const LinearModule*, at::Tensor>> all_tokens_inputs;
  at::Tensor router_input;  // [tokens, hidden]: the post-attention norm's output
  MoeRouting routing;

 private:
  int group_;
  bool all_;
};

// A routed expert's FP-stream input at the given tokens (methods.md §8): the FP post-attention
// norm output for gate/up, and act(gate_e(x_f))·up_e(x_f) with the FP expert for down, whether
// or not the FP router chose the expert there.
at::Tensor expert_fp_input(const DecoderLayer& fp_layer, const LinearModule& m,
                           const at::Tensor& fp_router_input) {
  if (m.role != LinearRole::Down) return fp_router_input;
  const std::string parent = parent_of(m.local_name);
  std::string gate, up;
  for (const auto& other : fp_layer.layout().linears) {
    if (parent_of(other.local_name) != parent) continue;
    if (other.role == LinearRole::Gate) gate = other.local_name;
    if (other.role == LinearRole::Up) up = other.local_name;
  }
  auto apply = [&](const std::string& name) {
    return at::linear(fp_router_input, fp_layer.weight(name), fp_layer.bias(name));
  };
  return at::silu(apply(gate)) * apply(up);
}

// Every weight, bias and norm of `from` into `to` (cast to `to`'s compute dtype).
void copy_parameters(const DecoderLayer& from, DecoderLayer& to) {
  const DecoderLayerLayout& layout = from.layout();
  for (const auto& m : layout.linears) {
    to.set_weight(m.local_name, from.weight(m.local_name));
    if (m.has_bias) to.set_bias(m.local_name, from.bias(m.local_name));
  }
  for (const auto& n : layout.norms) {
    const std::string name = norm_local_name(n, layout.index);
    to.set_norm(name, from.norm(name));
  }
}

// A group's fp16 scale covers at most 65504·maxq/2 (sym: s = 2·max|w|/maxq; asym: the range is
// at most 2·max|w|): a weight beyond that cannot be stored. Checked as each layer is loaded.
void check_representable(const DecoderLayer& layer, const std::map<std::string, std::string>& skipped,
                         const QuantGrid& grid, const fs::path& model_dir) {
  const double limit = 65504.0 * static_cast<double>(grid.maxq()) / 2;
  for (const auto& m : layer.layout().linears) {
    if (!m.quantizable || skipped.count(m.name)) continue;
    const at::Tensor w = layer.weight(m.local_name).abs().reshape(-1);
    const auto [top, flat] = w.max(0);
    const double value = top.item<double>();
    if (value <= limit) continue;
    const int64_t index = flat.item<int64_t>();
    throw_bad_input(fmt::format("{}: tensor '{}' holds |w| = {:.6g} at [{}, {}], beyond what a "
                                "{}-bit grid with fp16 scales can hold ({:.6g})",
                                model_dir.string(), m.weight_name(), value, index / m.in_features,
                                index % m.in_features, grid.bits, limit));
  }
}

c10::ScalarType stored_type(const Checkpoint& ckpt, const std::string& name) {
  return *to_scalar_type(ckpt.info(name).dtype);
}

// The objective and backend on one module. When the metric cannot be factored the damping rises
// by 0.01 and the module is retried (methods.md §4); nullopt after o.max_damp_retries failures.
std::optional<QuantizedLinear> round_with_damping(const LinearModule& m, int64_t layer,
                                                  const at::Tensor& W, const GramAccumulator& gram,
                                                  Objective& objective, const Rounder& rounder,
                                                  const QuantGrid& grid, const QuantizeOptions& o,
                                                  ModuleRecord& rec) {
  double damp = o.damp, tried = o.damp;
  for (int attempt = 0; attempt <= o.max_damp_retries; ++attempt) {
    tried = damp;
    const PreparedMetric prep =
        prepare_metric(gram.matrix(), W, damp, m.name, o.compute.dtype);
    const ObjectiveInput input{prep.weight,     prep.damped,
                               &gram,           prep.mean_diag,
                               layer,           std::string(linear_role_name(m.role)),
                               grid.group_size, rounder.supports_entry_penalty()};
    try {
      // The objective factors M too (the interp target): its failures retry like the backend's.
      const ObjectiveOutput target = objective.build(input);
      QuantizedLinear q = rounder.round_penalized(target.target, target.metric, grid,
                                                  o.rounding_options, target.penalty);
      const double scale =
          (at::matmul(target.target, target.metric) * target.target).sum().item<double>();
      rec.relative_loss = scale > 0 ? q.loss / scale : 0;
      rec.dead_columns = prep.dead_columns;
      rec.damp = damp;
      rec.method = rounder.name();
      rec.alpha = target.alpha.value_or(-1);
      objective.observe_result(input, q.dequantize().to(input.weight.scalar_type()));
      return q;
    } catch (const FactorizationFailed& e) {
      damp += 0.01;
      if (attempt < o.max_damp_retries)
        spdlog::warn("{}: {} at percdamp {:.2f}; retrying with {:.2f}", m.name, e.what(), tried,
                     damp);
    }
  }
  rec.reason = fmt::format("factorization failed up to percdamp {:.2f}", tried);
  spdlog::error("{}: {}; falling back to RTN", m.name, rec.reason);
  return std::nullopt;
}

int64_t peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

}  // namespace

MethodPreset method_preset(const std::string& method) {
  static const std::map<std::string, MethodPreset> presets = {
      {"rtn", {"plain", "rtn"}},
      {"gptq", {"plain", "gptq"}},
      {"sarqc", {"sarqc", "gptq"}},
      {"gptaq", {"interp", "gptq", "fixed"}},
      {"coreq", {"interp", "successive", "sample"}},
      {"beam", {"interp", "beam", "sample"}},
      {"sarqc-beam", {"sarqc+interp", "beam", "sample"}},
      {"awq", {"plain", "rtn", "fixed", true}}};
  const auto it = presets.find(method);
  if (it == presets.end())
    throw_usage(
        fmt::format("--method '{}': expected rtn, gptq, sarqc, gptaq, coreq, beam, "
                    "sarqc-beam or awq",
                    method));
  return it->second;
}

namespace {

QuantizeReport run_quantize(const QuantizeOptions& o, const fs::path& out_dir) {
  const Stopwatch clock;
  QuantGrid grid = o.grid;
  grid.validate();
  if (o.damp < 0) throw_usage(fmt::format("--damp must be >= 0, got {}", o.damp));
  const MethodPreset preset = method_preset(o.method);
  std::string backend = o.rounding.empty() ? preset.rounding : o.rounding;
  // AWQ's scale search is a per-layer pre-pass; "scale-search" alone means it plus RTN.
  const bool scale_search = o.scale_search || preset.scale_search || backend == "scale-search";
  if (backend == "scale-search") backend = "rtn";
  ObjectiveSettings objective_settings = o.objective_settings;
  objective_settings.name = o.objective.empty() ? preset.objective : o.objective;
  if (objective_settings.alpha_mode.empty()) objective_settings.alpha_mode = preset.alpha_mode;
  if (o.rounding_options.beam_width < 1)
    throw_usage(fmt::format("--beam must be >= 1, got {}", o.rounding_options.beam_width));
  if (o.rounding_options.beam_rows < 0)
    throw_usage(fmt::format("--beam-rows must be >= 0, got {}", o.rounding_options.beam_rows));
  const auto rounder = make_rounder(backend);
  const auto objective = make_objective(objective_settings);
  // Without a calibrated backend an objective can only shape the scale search.
  if (!rounder->needs_metric() && !scale_search && objective_settings.name != "plain")
    throw_usage(
        fmt::format("--objective {} needs a calibrated backend or --scale-search, not "
                    "--rounding {}",
                    objective_settings.name, backend));
  const bool calibrate = rounder->needs_metric();     // Gram-based rounding
  const bool needs_data = calibrate || scale_search;  // calibration windows and their stream
  const int sources = !o.calib_text.empty() + !o.calib_tokens.empty() + o.calib_self;
  if (needs_data && sources == 0)
    throw_usage(
        fmt::format("--method {} needs calibration data: --calib FILE, --calib self or "
                    "--calib-tokens FILE",
                    o.method));
  if (sources > 1) throw_usage("give one of --calib FILE, --calib self, --calib-tokens FILE");
  if (!needs_data && sources > 0)
    spdlog::warn("--method {} uses no calibration data; the calibration option is ignored",
                 backend);
  if (o.moe_policy != "rtn" && o.moe_policy != "all-tokens")
    throw_usage(fmt::format("--moe-policy '{}': expected rtn or all-tokens", o.moe_policy));
  if (o.moe_min_tokens < 0)
    throw_usage(fmt::format("--moe-min-tokens must be >= 0, got {}", o.moe_min_tokens));
  const bool keep_fp_stream = needs_data && (o.keep_fp_stream || objective->needs_fp_stream());
  const bool paired_capture = calibrate && objective->needs_fp_stream();
  AlphaSampler alpha_sampler(o.seed, objective_settings.mixup);

  const ModelWeights weights = ModelWeights::open(o.model_dir, NonFinitePolicy::Refuse);
  const ModelConfig& cfg = weights.config();
  const ModelLayout& layout = weights.layout();
  if (cfg.quantization)
    throw_bad_input(
        fmt::format("{}: the model is already GPTQ-quantized (config.json has "
                    "quantization_config)",
                    o.model_dir.string()));
  AtomicDirectory output(out_dir, o.force
                                        ? AtomicDirectory::Existing::Replace
                                        : AtomicDirectory::Existing::Refuse);  // before any work

  // One group size for the whole checkpoint: clamp to the narrowest quantizable input.
  int64_t narrowest = INT64_MAX;
  for (const auto& layer : layout.layers)
    for (const auto& m : layer.linears)
      if (m.quantizable) narrowest = std::min(narrowest, m.in_features);
  if (grid.group_size > narrowest) {
    spdlog::info("--group-size {} exceeds the narrowest quantized input ({}); using {}",
                 grid.group_size, narrowest, narrowest);
    grid.group_size = narrowest;
  }
  const auto skipped = unrepresentable_modules(layout, grid);
  for (const auto& [name, why] : skipped) spdlog::warn("{} stays unquantized: {}", name, why);

  QuantizeReport report;
  report.out_dir = out_dir;
  report.grid = grid.describe();
  report.method = o.method;
  report.objective = objective_settings.name;
  report.rounding = backend;

  // Calibration windows (not needed by RTN).
  CalibrationSet calib;
  int64_t nsamples = o.nsamples, seqlen = o.seqlen;  // as the calibration set has them
  if (needs_data) {
    if (cfg.max_position_embeddings > 0 && seqlen > cfg.max_position_embeddings) {
      spdlog::info("--seqlen {} exceeds max_position_embeddings; using {}", seqlen,
                   cfg.max_position_embeddings);
      seqlen = cfg.max_position_embeddings;
    }
    if (o.calib_self) {
      const std::optional<int64_t> bos = cfg.bos_token_id;
      if (!bos)
        throw_bad_input(
            fmt::format("{}: --calib self starts each sample at BOS, but config.json "
                        "has no bos_token_id",
                        o.model_dir.string()));
      StreamingModel sampler(weights, o.compute);
      sampler.keep_layers_resident();
      calib = calibration_from_model(sampler, static_cast<int32_t>(*bos), o.nsamples, seqlen,
                                     o.seed, o.calib_temperature);
    } else if (!o.calib_text.empty()) {
      const auto tokenizer = load_tokenizer(o.model_dir);
      calib = calibration_from_text(*tokenizer, o.calib_text, o.nsamples, seqlen, o.seed);
    } else {
      calib = calibration_from_token_file(o.calib_tokens, o.nsamples, seqlen, o.seed,
                                            cfg.vocab_size);
    }
    const int64_t top = calib.ids.max().item<int64_t>();
    if (top >= cfg.vocab_size)
      throw_bad_input(fmt::format("{}: token id {} is outside the model's vocab_size {}",
                                  calib.source, top, cfg.vocab_size));
    if (calib.ids.size(0) != o.nsamples || calib.ids.size(1) != seqlen)
      spdlog::info("calibration: {} gives its own {} windows of {} tokens", calib.source,
                   calib.ids.size(0), calib.ids.size(1));
    nsamples = calib.ids.size(0);
    seqlen = calib.ids.size(1);
    report.nsamples = nsamples;
    report.seqlen = seqlen;
    report.calibration_sha256 = calib.fingerprint;
    spdlog::info("calibration: {} windows of {} tokens from {} ({} tokens), seed {}", nsamples,
                 seqlen, calib.source, calib.source_tokens, o.seed);
  }
  const int64_t starved_below =
      o.moe_min_tokens > 0
          ? o.moe_min_tokens
          : std::max<int64_t>(16, static_cast<int64_t>(std::ceil(0.005 * nsamples * seqlen)));
  if (calibrate && cfg.is_moe())
    spdlog::info("MoE: experts with fewer than {} routed tokens use policy '{}'", starved_below,
                 o.moe_policy);

  // Plan every output tensor, then stream them into the writer as they are produced.
  const Checkpoint& ckpt = weights.checkpoint();
  std::vector<TensorSpec> specs;
  auto plan_source = [&](const std::string& out_name, const std::string& source,
                         std::vector<int64_t> shape) {
    specs.push_back({out_name, ckpt.info(source).dtype, std::move(shape)});
  };
  for (const auto& g : layout.globals) plan_source(g.name, g.name, g.shape);
  for (const auto& layer : layout.layers) {
    for (const auto& n : layer.norms) plan_source(n.name, n.name, n.shape);
    for (const auto& m : layer.linears) {
      const bool quantized = m.quantizable && !skipped.count(m.name);
      if (quantized) {
        for (auto& s :
             gptq_tensor_specs(m.name, m.in_features, m.out_features, grid.bits, grid.group_size))
          specs.push_back(std::move(s));
      } else {
        plan_source(m.weight_name(), layer.weight_source(m), {m.out_features, m.in_features});
      }
      if (m.has_bias)
        specs.push_back({m.bias_name(),
                         quantized ? Dtype::F16 : ckpt.info(m.bias_name()).dtype,
                         {m.out_features}});
    }
  }
  ShardedWriter writer(output.path(), specs, {{"format", "pt"}});
  const c10::Device cpu(c10::kCPU);
  for (const auto& g : layout.globals) {
    const at::Tensor t = ckpt.load(g.name, cpu);  // copied as stored, so checked here
    if (const auto bad = first_non_finite(t))
      throw_bad_input(fmt::format("{}: tensor '{}' holds {}; quantize needs finite weights",
                                  o.model_dir.string(), g.name, *bad));
    writer.write(g.name, t);
  }

  {  // The working set: one layer's fp32 weights, one group's Gram matrices, the stream(s).
    const int64_t stream_bytes =
        needs_data ? (keep_fp_stream ? 2 : 1) * calib.ids.numel() * cfg.hidden_size *
                         static_cast<int64_t>(c10::elementSize(o.compute.dtype))
                   : 0;
    int64_t layer_bytes = 0, gram_bytes = 0;  // of the layer with the largest sum
    for (const auto& layer : layout.layers) {
      int64_t bytes = 0;
      std::map<int, int64_t> grams;
      for (const auto& m : layer.linears) {
        bytes += m.numel() * 4;
        if (sequential_group(m) >= 0)
          grams[sequential_group(m)] += m.in_features * m.in_features * 4;
      }
      int64_t largest_gram = 0;
      for (const auto& [group, b] : grams) largest_gram = std::max(largest_gram, b);
      if (bytes + largest_gram > layer_bytes + gram_bytes)
        layer_bytes = bytes, gram_bytes = largest_gram;
    }
    report.estimated_peak_bytes = layer_bytes + gram_bytes + stream_bytes;
    spdlog::info(
        "estimated peak memory {:.1f} MiB: layer {:.1f} + Gram matrices {:.1f} + "
        "activation stream(s) {:.1f} (on {})",
        report.estimated_peak_bytes / 1048576.0, layer_bytes / 1048576.0, gram_bytes / 1048576.0,
        stream_bytes / 1048576.0, o.compute.device.str());
  }

  // Streams: the calibration windows' hidden states, quantized model so far.
  const ComputeOptions& compute = o.compute;
  StreamingModel model(weights, compute);
  HiddenBatches stream, fp_stream;  // X_q, and X_f when an objective needs it
  if (needs_data) stream = model.embed(calib.ids);
  if (keep_fp_stream) fp_stream = model.embed(calib.ids);
  int64_t total_modules = 0;
  for (const auto& layer : layout.layers)
    for (const auto& m : layer.linears) total_modules += m.quantizable ? 1 : 0;
  ProgressBar bar("quantize", total_modules);
  if (!o.progress) bar.finish();
  bool any_reordered = false;

  // Weights are rounded from the checkpoint's values in fp32 (the master copy), whatever the
  // compute dtype; with --dtype bf16/fp16 the layer is held twice: the master and its cast,
  // which runs the forward passes.
  const bool separate_master = compute.dtype != at::kFloat;
  for (const auto& layer_layout : layout.layers) {
    const int64_t l = layer_layout.index;
    DecoderLayer layer = DecoderLayer::load(weights, l, compute);
    std::optional<DecoderLayer> master_copy;
    if (separate_master) master_copy = DecoderLayer::load(weights, l, {compute.device, at::kFloat});
    DecoderLayer& master = separate_master ? *master_copy : layer;
    check_representable(master, skipped, grid, o.model_dir);
    // The full-precision copy computes X_f's path through this layer (a second layer on the
    // device while the objective needs the FP stream).
    std::optional<DecoderLayer> fp_layer;
    if (keep_fp_stream) fp_layer = DecoderLayer::load(weights, l, compute);
    if (scale_search) {
      // The objective's drift penalty and α-interpolated target enter the grid loss.
      // (--lambda is nonzero only with a sarqc objective: make_objective refuses it otherwise.)
      ScaleSearchObjective terms;
      terms.lambda = objective_settings.lambda_rel;
      terms.saliency = objective_settings.saliency;
      terms.saliency_power = objective_settings.saliency_power;
      if (objective->needs_fp_stream()) {
        terms.fp_inputs = fp_stream.batches;
        // Closed-form α* is measured after rounding, so the pre-pass uses --alpha in that mode.
        for (const auto& batch : stream.batches)
          for (int64_t j = 0; j < batch.size(0); ++j)
            terms.alpha.push_back(objective->samples_alpha() ? alpha_sampler.next()
                                                             : objective_settings.alpha);
      }
      for (const auto& r : search_scales(master, stream.batches, model.rotary(stream.seqlen), grid,
                                         o.scale_search_options, terms)) {
        // The FP copy folds the same scales (not the clipping): the same function, with every
        // module's input in the same basis as the quantized layer's, as D needs.
        if (fp_layer && r.scales.defined())
          apply_group_scales(*fp_layer, r.which, r.scales, r.expert);
        spdlog::info(
            "layer={} scale_group={} ratio={:.2f} loss={:.4g} unscaled_loss={:.4g} "
            "drift={:.4g}{}",
            l, r.group, r.ratio, r.loss, r.loss_unscaled, r.drift,
            r.skipped ? " (grouped-query attention: nothing to fold into)" : "");
      }
      if (separate_master) copy_parameters(master, layer);
    }
    // Tensors sarqc does not change are written bit-identical to the checkpoint; those the
    // scale search rewrote (norms, routers, the shared-expert gate) from the fp32 master.
    auto unquantized_weight = [&](const LinearModule& m) {
      const c10::ScalarType stored = stored_type(ckpt, layer_layout.weight_source(m));
      return scale_search ? master.weight(m.local_name).to(cpu, stored)
                          : weights.linear_weight(layer_layout, m, cpu, stored);
    };
    auto unquantized_bias = [&](const LinearModule& m) {
      return scale_search ? master.bias(m.local_name).to(cpu, stored_type(ckpt, m.bias_name()))
                          : ckpt.load(m.bias_name(), cpu);
    };
    for (const auto& m : layer_layout.linears) {
      if (m.quantizable) continue;
      writer.write(m.weight_name(), unquantized_weight(m));
      if (m.has_bias) writer.write(m.bias_name(), unquantized_bias(m));
    }
    for (const auto& n : layer_layout.norms)
      writer.write(n.name, scale_search ? master.norm(norm_local_name(n, l))
                                              .to(cpu, stored_type(ckpt, n.name))
                                        : ckpt.load(n.name, cpu));
    for (int group = 0; group < kSequentialGroups; ++group) {
      std::vector<const LinearModule*> members;
      for (const auto& m : layer_layout.linears)
        if (sequential_group(m) == group) members.push_back(&m);
      if (members.empty()) continue;
      GramObserver observer(group, 1, compute.device,
                            layer_layout.moe && o.moe_policy == "all-tokens");
      auto run_prefix = [&](const DecoderLayer& which, const at::Tensor& x,
                            LinearInputObserver* obs, const RotaryTables& rope) {
        if (group <= 1)
          which.attention_block(x, rope, obs);
        else
          which.forward(x, rope, obs);
      };
      if (calibrate && !paired_capture) {
        const RotaryTables& rope = model.rotary(stream.seqlen);
        for (const auto& batch : stream.batches) {
          throw_if_interrupted();
          observer.set_sequences(batch.size(0));
          run_prefix(layer, batch.to(compute.device), &observer, rope);
        }
      } else if (paired_capture) {
        // Both streams through their layer up to this group, then X_q, X_f and α per token.
        const RotaryTables& rope = model.rotary(stream.seqlen);
        for (size_t b = 0; b < stream.batches.size(); ++b) {
          throw_if_interrupted();
          const at::Tensor& batch = stream.batches[b];
          const int64_t sequences = batch.size(0), T = batch.size(1);
          const bool all_tokens = layer_layout.moe && o.moe_policy == "all-tokens";
          RecordingObserver q_inputs(group, all_tokens), fp_inputs(group, false);
          run_prefix(layer, batch.to(compute.device), &q_inputs, rope);
          run_prefix(*fp_layer, fp_stream.batches[b].to(compute.device), &fp_inputs, rope);
          // α_j per sequence, drawn on the host and copied once (not element by element).
          std::vector<float> alpha(static_cast<size_t>(sequences), 1.0f);
          if (objective->samples_alpha())
            for (auto& a : alpha) a = static_cast<float>(alpha_sampler.next());
          const at::Tensor weight =
              at::tensor(alpha).to(compute.device).repeat_interleave(T);
          observer.set_sequences(sequences);
          for (const auto& [key, input] : q_inputs.inputs) {
            const LinearModule& m = *input.first;
            if (m.expert < 0) {
              observer.add_pair(key, m, input.second, fp_inputs.inputs.at(key).second, weight);
            } else {
              // Routed tokens: the quantized router's choice, paired with the FP stream there.
              const at::Tensor& tokens =
                  q_inputs.routing.experts.at(static_cast<size_t>(m.expert)).tokens;
              observer.add_pair(
                  key, m, input.second,
                  expert_fp_input(*fp_layer, m, fp_inputs.router_input.index_select(0, tokens)),
                  weight.index_select(0, tokens));
            }
          }
          for (const auto& [key, input] : q_inputs.all_tokens_inputs)
            observer.add_pair(key + kAllTokensSuffix, *input.first, input.second,
                              expert_fp_input(*fp_layer, *input.first, fp_inputs.router_input),
                              weight);
        }
      }
      for (const LinearModule* m : members) {
        throw_if_interrupted();
        const Stopwatch module_clock;
        ModuleRecord rec;
        rec.layer = l;
        rec.module = m->name;
        if (skipped.count(m->name)) {
          rec.method = "unquantized";
          rec.reason = skipped.at(m->name);
          writer.write(m->weight_name(), unquantized_weight(*m));
          if (m->has_bias) writer.write(m->bias_name(), unquantized_bias(*m));
          report.unquantized_modules.push_back(m->name);
          report.modules.push_back(rec);
          bar.advance();
          continue;
        }
        const at::Tensor W = master.weight(m->local_name);  // fp32
        const GramAccumulator* gram = calibrate ? observer.find(input_key(*m)) : nullptr;
        rec.tokens = gram ? gram->tokens() : 0;
        QuantizedLinear q;
        bool done = false;
        bool starved =
            calibrate && (gram == nullptr || (m->expert >= 0 && rec.tokens < starved_below));
        if (starved && o.moe_policy == "all-tokens") {
          gram = observer.find(input_key(*m) + kAllTokensSuffix);
          rec.reason = fmt::format("{} routed tokens < {}: calibrated on all {} tokens", rec.tokens,
                                   starved_below, gram ? gram->tokens() : 0);
          starved = gram == nullptr;
        } else if (starved) {
          // Never calibrate on (nearly) no data: dead columns would zero the expert.
          rec.reason = fmt::format("{} routed tokens < {}: RTN", rec.tokens, starved_below);
        }
        if (!starved && calibrate) {
          std::optional<QuantizedLinear> rounded =
              round_with_damping(*m, l, W, *gram, *objective, *rounder, grid, o, rec);
          if (rounded) q = std::move(*rounded);
          done = rounded.has_value();
        }
        if (!done) {
          q = RtnRounder().round(W, {}, grid, {});
          rec.method = !calibrate ? "rtn" : starved ? "rtn-starved" : "rtn-fallback";
        }
        rec.loss = q.loss;
        any_reordered |= q.reordered();
        layer.set_weight(m->local_name, q.dequantize());
        const GptqTensors t = to_gptq_tensors(q, /*v2=*/!grid.sym);
        writer.write(m->name + ".qweight", t.qweight);
        writer.write(m->name + ".qzeros", t.qzeros);
        writer.write(m->name + ".scales", t.scales);
        writer.write(m->name + ".g_idx", t.g_idx);
        if (m->has_bias)
          writer.write(m->bias_name(), master.bias(m->local_name).to(cpu, at::kHalf));
        rec.seconds = module_clock.seconds();
        rec.peak_host_bytes = peak_rss_bytes();
        spdlog::info(
            "layer={} module={} method={} loss={:.6g} relative={:.4g} tokens={} "
            "damp={:.2f} seconds={:.3f} peak_mib={:.0f}{}",
            l, m->local_name, rec.method, rec.loss, rec.relative_loss, rec.tokens, rec.damp,
            rec.seconds, rec.peak_host_bytes / 1048576.0,
            rec.reason.empty() ? "" : " note=\"" + rec.reason + "\"");
        report.modules.push_back(rec);
        bar.advance();
      }
    }
    // The quantized layer produces the next layer's inputs; the original one advances X_f.
    if (l + 1 < cfg.num_hidden_layers) {
      if (keep_fp_stream) model.advance(*fp_layer, fp_stream);
      if (needs_data) model.advance(layer, stream);
    }
    spdlog::info("layer {}/{} done ({:.1f} s)", l + 1, cfg.num_hidden_layers, clock.seconds());
  }
  bar.finish();

  // config.json with quantization_config, quantize_config.json, copied files, report.
  nlohmann::json qc = {{"quant_method", "gptq"},
                       {"bits", grid.bits},
                       {"group_size", grid.group_size},
                       {"desc_act", any_reordered},
                       {"static_groups", o.rounding_options.static_groups},
                       {"sym", grid.sym},
                       {"lm_head", false},
                       {"true_sequential", true},
                       {"damp_percent", o.damp},
                       {"checkpoint_format", grid.sym ? "gptq" : "gptq_v2"},
                       {"format", grid.sym ? "gptq" : "gptq_v2"},
                       {"pack_dtype", "int32"},
                       {"meta",
                        {{"quantizer", {std::string("sarqc:") + kVersion}},
                         {"sarqc",
                          {{"method", o.method},
                           {"backend", backend},
                           {"objective", objective_settings.name},
                           {"lambda_rel", objective_settings.lambda_rel},
                           {"alpha_mode", objective_settings.alpha_mode},
                           {"alpha", objective_settings.alpha},
                           {"mixup", objective_settings.mixup},
                           {"saliency", objective_settings.saliency},
                           {"beam_width", backend == "beam" ? o.rounding_options.beam_width : 1},
                           {"act_order", o.rounding_options.act_order},
                           {"mse_clip", grid.mse_clip},
                           {"seed", o.seed},
                           {"nsamples", needs_data ? nsamples : 0},
                           {"seqlen", needs_data ? seqlen : 0},
                           {"calibration_file", needs_data ? calib.source : ""},
                           {"scale_search", scale_search},
                           {"calibration_sha256", report.calibration_sha256},
                           {"unquantized_modules", report.unquantized_modules}}}}}};
  if (!skipped.empty()) {
    qc["dynamic"] = dynamic_exclusions(layout, skipped);  // vLLM, GPTQModel
    const nlohmann::json in_block = modules_in_block_to_quantize(layout, skipped);
    if (in_block.is_null())
      spdlog::warn("the unquantized modules differ between layers: transformers' GPTQ loader "
                   "(which reads modules_in_block_to_quantize, not dynamic) cannot load this "
                   "checkpoint");
    else
      qc["modules_in_block_to_quantize"] = in_block;  // transformers/optimum
  }
  nlohmann::json config = read_json_file(o.model_dir / "config.json");
  config["quantization_config"] = qc;
  write_file_atomically(output.path() / "config.json", config.dump(2) + "\n");
  write_file_atomically(output.path() / "quantize_config.json", qc.dump(2) + "\n");
  static const std::set<std::string> kNotCopied = {"config.json", "quantize_config.json",
                                                   "report.json", "model.safetensors.index.json"};
  for (const auto& entry : fs::directory_iterator(o.model_dir)) {
    const std::string name = entry.path().filename().string();
    const std::string ext = entry.path().extension().string();
    if (!entry.is_regular_file() || name.front() == '.' || kNotCopied.count(name) ||
        ext == ".safetensors" || ext == ".bin" || ext == ".pt" || ext == ".pth")
      continue;
    fs::copy_file(entry.path(), output.path() / name);
  }
  writer.commit();
  report.seconds = clock.seconds();
  report.peak_host_bytes = peak_rss_bytes();
  write_file_atomically(output.path() / "report.json", to_json(report).dump(2) + "\n");
  throw_if_interrupted();  // the last point where the output can still be abandoned
  output.publish();
  return report;
}

}  // namespace

QuantizeReport quantize(const QuantizeOptions& o) {
  const fs::path out_dir =
      checked_output_folder("--out", o.out_dir, {o.model_dir, o.calib_text, o.calib_tokens});
  check_dtype_supported(o.compute.device, o.compute.dtype);
  const InterruptGuard guard;
  try {
    return run_quantize(o, out_dir);
  } catch (const Interrupted& e) {  // by now the temporary folder is gone
    throw Interrupted(e.signal(), fmt::format("{}: {}; nothing was written", out_dir.string(),
                                              e.what()));
  }
}

namespace {

struct ReportTotals {
  std::map<std::string, int64_t> by_method;  // modules per method used
  double loss = 0;
};

ReportTotals totals(const QuantizeReport& r) {
  ReportTotals t;
  for (const auto& m : r.modules) ++t.by_method[m.method], t.loss += m.loss;
  return t;
}

}  // namespace

nlohmann::json to_json(const QuantizeReport& r) {
  nlohmann::json modules = nlohmann::json::array();
  for (const auto& m : r.modules) {
    modules.push_back({{"layer", m.layer},
                       {"module", m.module},
                       {"method", m.method},
                       {"reason", m.reason},
                       {"loss", m.loss},
                       {"relative_loss", m.relative_loss},
                       {"tokens", m.tokens},
                       {"damp", m.damp},
                       {"alpha", m.alpha},
                       {"dead_columns", m.dead_columns},
                       {"seconds", m.seconds},
                       {"peak_host_bytes", m.peak_host_bytes}});
  }
  const ReportTotals t = totals(r);
  return {{"sarqc_version", kVersion},
          {"out_dir", r.out_dir.string()},
          {"grid", r.grid},
          {"method", r.method},
          {"objective", r.objective},
          {"rounding", r.rounding},
          {"nsamples", r.nsamples},
          {"seqlen", r.seqlen},
          {"calibration_sha256", r.calibration_sha256},
          {"totals",
           {{"modules", r.modules.size()},
            {"by_method", t.by_method},
            {"loss", t.loss},
            {"seconds", r.seconds},
            {"peak_host_bytes", r.peak_host_bytes},
            {"estimated_peak_bytes", r.estimated_peak_bytes}}},
          {"unquantized_modules", r.unquantized_modules},
          {"modules", modules}};
}

std::string to_text(const QuantizeReport& r) {
  const ReportTotals t = totals(r);
  std::string methods;
  for (const auto& [name, count] : t.by_method) methods += fmt::format(" {} {}", name, count);
  return fmt::format(
      "wrote      {}\ngrid       {} ({} / {} / {})\nmodules   {}\ntotal loss {:.6g}\n"
      "time       {:.1f} s, peak host memory {:.1f} MiB (estimated working set {:.1f} MiB)\n",
      r.out_dir.string(), r.grid, r.method, r.objective, r.rounding, methods, t.loss, r.seconds,
      r.peak_host_bytes / 1048576.0, r.estimated_peak_bytes / 1048576.0);
}

}  // namespace sarqc
