#include "sarqc/pipeline/quantize.h"

#include <unistd.h>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>

#include "sarqc/calib/calibration_set.h"
#include "sarqc/calib/group_statistics.h"
#include "sarqc/calib/layer_stages.h"
#include "sarqc/calib/module_groups.h"
#include "sarqc/dist/owners.h"
#include "sarqc/dist/world.h"
#include "sarqc/io/tokenizer.h"
#include "sarqc/model/decoder_layer.h"
#include "sarqc/model/rotary.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"
#include "sarqc/objective/interp.h"
#include "sarqc/pipeline/checkpoint_writer.h"
#include "sarqc/pipeline/memory_estimate.h"
#include "sarqc/pipeline/module_quantizer.h"
#include "sarqc/pipeline/run_state.h"
#include "sarqc/util/atomic_directory.h"
#include "sarqc/util/work_folder.h"
#include "sarqc/util/error.h"
#include "sarqc/util/fault_point.h"
#include "sarqc/util/file.h"
#include "sarqc/util/interrupt.h"
#include "sarqc/util/memory_monitor.h"
#include "sarqc/util/progress.h"
#include "sarqc/util/sha256.h"
#include "sarqc/util/stopwatch.h"

namespace sarqc {
namespace fs = std::filesystem;
namespace {

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

// --nsamples x --seqlen sampled windows: one activation stream of them (hidden_size fp32 values
// per token) must fit in this machine's memory, or the run would die "out of memory" naming
// nothing after minutes of work (--nsamples 2^40 did). Windows given in a token file are as
// many as the file holds.
void check_calibration_fits(const QuantizeOptions& o, const ModelConfig& cfg, int64_t seqlen) {
  if (!o.calib_tokens.empty()) return;
  const double tokens = static_cast<double>(o.nsamples) * static_cast<double>(seqlen);
  const double stream = tokens * static_cast<double>(cfg.hidden_size) * 4;
  const double memory = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) *
                        static_cast<double>(::sysconf(_SC_PAGE_SIZE));
  if (memory > 0 && stream > memory)
    throw_usage(fmt::format("--nsamples {} x --seqlen {}: one activation stream of {:.0f} "
                            "tokens x {} fp32 values needs {:.1f} GiB, more than this machine's "
                            "{:.1f} GiB of memory",
                            o.nsamples, seqlen, tokens, cfg.hidden_size, stream / (1 << 30),
                            memory / (1 << 30)));
}

// The calibration windows (clamped to the model's positions, ids checked against its vocab).
CalibrationSet load_calibration(const QuantizeOptions& o, const ModelWeights& weights) {
  const ModelConfig& cfg = weights.config();
  CalibrationSet calib;
  int64_t seqlen = o.seqlen;
    if (cfg.max_position_embeddings > 0 && seqlen > cfg.max_position_embeddings) {
      spdlog::info("--seqlen {} exceeds max_position_embeddings; using {}", seqlen,
                   cfg.max_position_embeddings);
      seqlen = cfg.max_position_embeddings;
    }
    check_calibration_fits(o, cfg, seqlen);
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
    if (cfg.max_position_embeddings > 0 && calib.ids.size(1) > cfg.max_position_embeddings)
      throw_bad_input(fmt::format("{}: windows of {} tokens, but the model has "
                                  "max_position_embeddings {}; give windows of at most that many",
                                  calib.source, calib.ids.size(1), cfg.max_position_embeddings));
    if (calib.ids.size(0) != o.nsamples || calib.ids.size(1) != seqlen)
      spdlog::info("calibration: {} gives its own {} windows of {} tokens", calib.source,
                   calib.ids.size(0), calib.ids.size(1));
    spdlog::info("calibration: {} windows of {} tokens from {} ({} tokens), seed {}",
                 calib.ids.size(0), calib.ids.size(1), calib.source, calib.source_tokens, o.seed);
  return calib;
}

// Whether LayerStages may keep down_proj's inputs of every calibration token.
bool mlp_cache_fits(const QuantizeOptions& o, const ModelConfig& cfg, int64_t tokens) {
  return tokens * cfg.intermediate_size * static_cast<int64_t>(c10::elementSize(o.compute.dtype)) <=
         o.stage_cache_bytes;
}

// How the calibration windows are split between the ranks: whole batches of the calibration's
// own batching (calibration_batches), contiguous, the first ranks one batch more.
struct WindowShares {
  int64_t windows = 0;
  CalibrationBatches split;
  int ranks = 1;
  int64_t first(int rank) const {
    const int64_t share = split.batches / ranks, extra = split.batches % ranks;
    return std::min(windows, (rank * share + std::min<int64_t>(rank, extra)) * split.per_batch);
  }
  int64_t end(int rank) const { return rank + 1 >= ranks ? windows : first(rank + 1); }
  int64_t count(int rank) const { return end(rank) - first(rank); }
};

// Everything carried from one layer to the next: a run that stopped after layer l - 1 continues
// from exactly this (resume), and processes that split the calibration windows exchange only
// this (multi-process runs).
struct LayerLoopState {
  int64_t next_layer = 0;
  HiddenBatches stream;        // X_q: the windows through the quantized layers so far
  HiddenBatches fp_stream;     // X_f through the original layers (when the plan keeps it)
  bool any_reordered = false;  // a module was written in act-order (desc_act)
  std::string fingerprint;     // of the model, the settings and the calibration windows
};

// One layer at a time: load, (scale search), per true-sequential group the statistics, each
// module rounded and written, then the streams advanced through the quantized layer.
class LayerQuantizer {
 public:
  // writer: null on the ranks other than 0, which compute but do not write. This rank holds
  // windows [shares.first(rank), shares.end(rank)) of the calibration.
  LayerQuantizer(const QuantizeOptions& o, const QuantizePlan& plan, const ModelWeights& weights,
                 QuantizedCheckpointWriter* writer, QuantizeReport& report, ProgressBar& bar,
                 int64_t starved_below, int64_t seqlen, World& world, const WindowShares& shares)
      : o_(o),
        plan_(plan),
        weights_(weights),
        writer_(writer),
        world_(world),
        shares_(shares),
        report_(report),
        bar_(bar),
        modules_(plan, o, starved_below),
        alpha_sampler_(o.seed, plan.objective_settings.mixup) {
    if (plan.needs_data)
      rope_ = make_rotary_tables(weights.config(), seqlen, o.compute.device, o.compute.dtype);
  }

  void run(LayerLoopState& state);
  std::string alpha_state() const { return alpha_sampler_.state(); }
  void restore_alpha_state(const std::string& state) { alpha_sampler_.restore(state); }

 private:
  void search_scales_of(DecoderLayer& master, DecoderLayer* fp_layer, const LayerLoopState& state,
                        int64_t l);
  std::vector<at::Tensor> gather_search_windows(const HiddenBatches& stream) const;
  void share_result(int owner, const LinearModule& m, std::optional<QuantizedModule>& done,
                    ModuleRecord& rec);

  const QuantizeOptions& o_;
  const QuantizePlan& plan_;
  const ModelWeights& weights_;
  QuantizedCheckpointWriter* writer_;
  World& world_;
  WindowShares shares_;
  QuantizeReport& report_;
  ProgressBar& bar_;
  ModuleQuantizer modules_;
  HoldoutSplit split_;  // --lambda auto's folds of the windows, made at the first layer
  AlphaSampler alpha_sampler_;
  RotaryTables rope_;
};

// The first windows of `stream`, as many as the scale search uses (its token budget), from the
// ranks that hold them onto every rank (through fp32, which every dtype of the stream round-trips
// and every Gloo build sends).
std::vector<at::Tensor> LayerQuantizer::gather_search_windows(const HiddenBatches& stream) const {
  const int64_t T = stream.seqlen;
  const int64_t wanted =
      std::min(shares_.windows, (plan_.scale_search_options.max_tokens + T - 1) / std::max<int64_t>(T, 1));
  const at::ScalarType dtype = stream.batches.front().scalar_type();
  const int64_t hidden = stream.batches.front().size(2);
  std::vector<at::Tensor> gathered;
  for (int r = 0; r < world_.size(); ++r) {
    const int64_t n = std::min(shares_.end(r), wanted) - shares_.first(r);
    if (n <= 0) continue;
    at::Tensor windows;
    if (r == world_.rank()) {
      std::vector<at::Tensor> parts;
      for (int64_t need = n, b = 0; need > 0; ++b) {
        const at::Tensor& batch = stream.batches.at(static_cast<size_t>(b));
        parts.push_back(batch.narrow(0, 0, std::min(need, batch.size(0))));
        need -= parts.back().size(0);
      }
      windows = at::cat(parts).to(at::kCPU, at::kFloat).contiguous();
    } else {
      windows = at::empty({n, T, hidden}, at::kFloat);
    }
    world_.broadcast(windows, r);
    gathered.push_back(windows.to(stream.storage, dtype));
  }
  return gathered;
}

namespace {

std::string hex(double v) { return fmt::format("{:a}", v); }
double unhex(const nlohmann::json& j) { return std::strtod(j.get<std::string>().c_str(), nullptr); }

}  // namespace

// Module `m`'s result from its owner on every rank: the record and what the objective measured
// (exact: doubles as hex), the dequantized weight every rank continues the layer with, and for
// rank 0, which writes it, the codes and their grid.
void LayerQuantizer::share_result(int owner, const LinearModule& m,
                                  std::optional<QuantizedModule>& done, ModuleRecord& rec) {
  const bool mine = owner == world_.rank();
  std::string text;
  if (mine) {
    QuantizedLinear& q = done->q;
    // The dtypes the other ranks allocate (those QuantizedLinear documents).
    done->weight = done->weight.to(at::kFloat);
    q.codes = q.codes.to(at::kInt);
    q.scales = q.scales.to(at::kFloat);
    q.zeros = q.zeros.to(at::kInt);
    q.g_idx = q.g_idx.to(at::kInt);
    nlohmann::json measured = nlohmann::json::array();
    for (const double v : done->measured) measured.push_back(hex(v));
    text = nlohmann::json{{"method", rec.method},
                          {"reason", rec.reason},
                          {"loss", hex(rec.loss)},
                          {"relative_loss", hex(rec.relative_loss)},
                          {"tokens", rec.tokens},
                          {"damp", hex(rec.damp)},
                          {"alpha", hex(rec.alpha)},
                          {"dead_columns", rec.dead_columns},
                          {"seconds", hex(rec.seconds)},
                          {"peak_host_bytes", rec.peak_host_bytes},
                          {"lambda", lambda_choice_json(rec.lambda)},
                          {"q_loss", hex(q.loss)},
                          {"bits", q.grid.bits},
                          {"group_size", q.grid.group_size},
                          {"sym", q.grid.sym},
                          {"mse_clip", q.grid.mse_clip},
                          {"groups", q.scales.size(0)},
                          {"measured", measured}}
               .dump();
  }
  world_.broadcast_text(text, owner);
  const nlohmann::json j = nlohmann::json::parse(text);
  const auto device = o_.compute.device;
  if (!mine) {
    rec.method = j.at("method").get<std::string>();
    rec.reason = j.at("reason").get<std::string>();
    rec.loss = unhex(j.at("loss"));
    rec.relative_loss = unhex(j.at("relative_loss"));
    rec.tokens = j.at("tokens").get<int64_t>();
    rec.damp = unhex(j.at("damp"));
    rec.alpha = unhex(j.at("alpha"));
    rec.dead_columns = j.at("dead_columns").get<int64_t>();
    rec.seconds = unhex(j.at("seconds"));
    rec.peak_host_bytes = j.at("peak_host_bytes").get<int64_t>();
    rec.lambda = lambda_choice_from_json(j.at("lambda"));
    done.emplace();
    done->q.loss = unhex(j.at("q_loss"));
    done->q.grid.bits = j.at("bits").get<int>();
    done->q.grid.group_size = j.at("group_size").get<int64_t>();
    done->q.grid.sym = j.at("sym").get<bool>();
    done->q.grid.mse_clip = j.at("mse_clip").get<bool>();
    for (const auto& v : j.at("measured")) done->measured.push_back(unhex(v));
    done->weight = at::empty({m.out_features, m.in_features},
                             at::TensorOptions().dtype(at::kFloat).device(device));
  }
  world_.broadcast(done->weight, owner);
  if (owner == 0) return;  // rank 0 has the codes it writes
  const int64_t groups = j.at("groups").get<int64_t>();
  QuantizedLinear& q = done->q;
  const auto ints = at::TensorOptions().dtype(at::kInt).device(device);
  if (!mine) {
    q.codes = at::empty({m.out_features, m.in_features}, ints);
    q.scales = at::empty({groups, m.out_features}, ints.dtype(at::kFloat));
    q.zeros = at::empty({groups, m.out_features}, ints);
    q.g_idx = at::empty({m.in_features}, ints);
  }
  for (at::Tensor* t : {&q.codes, &q.scales, &q.zeros, &q.g_idx}) world_.broadcast(*t, owner);
}

void LayerQuantizer::search_scales_of(DecoderLayer& master, DecoderLayer* fp_layer,
                                      const LayerLoopState& state, int64_t l) {
  // The objective's drift penalty and α-interpolated target enter the grid loss.
  // (--lambda is nonzero only with a sarqc objective: make_objective refuses it otherwise.)
  const ObjectiveSettings& settings = plan_.objective_settings;
  const Objective& objective = *plan_.objective;
  ScaleSearchObjective terms;
  // --lambda auto/lw choose λ for the rounding backend's metric; the search then keeps its loss
  // without a drift term (no auto λ is built for the scale search itself).
  terms.lambda = settings.lambda_mode == "fixed" ? settings.lambda_rel : 0.0;
  terms.saliency = settings.saliency;
  terms.saliency_power = settings.saliency_power;
  // Several ranks search the same windows, gathered onto each, and fold the same scales.
  const bool gather = world_.size() > 1;
  if (objective.needs_fp_stream()) {
    terms.fp_inputs = gather ? gather_search_windows(state.fp_stream) : state.fp_stream.batches;
    // One α per window of the calibration, in window order on every rank. Closed-form α* is
    // measured after rounding, so the pre-pass uses --alpha in that mode.
    for (int64_t j = 0; j < shares_.windows; ++j)
      terms.alpha.push_back(objective.samples_alpha() ? alpha_sampler_.next() : settings.alpha);
  }
  const std::vector<at::Tensor> inputs =
      gather ? gather_search_windows(state.stream) : state.stream.batches;
  for (const auto& r : search_scales(master, inputs, rope_, plan_.grid, plan_.scale_search_options,
                                     terms)) {
    // The FP copy folds the same scales (not the clipping): the same function, with every
    // module's input in the same basis as the quantized layer's, as D needs.
    if (fp_layer && r.scales.defined()) apply_group_scales(*fp_layer, r.which, r.scales, r.expert);
    spdlog::info(
        "layer={} scale_group={} ratio={:.2f} loss={:.4g} unscaled_loss={:.4g} drift={:.4g}{}", l,
        r.group, r.ratio, r.loss, r.loss_unscaled, r.drift,
        r.skipped ? " (grouped-query attention: nothing to fold into)" : "");
  }
}

void LayerQuantizer::run(LayerLoopState& state) {
  const int64_t l = state.next_layer;
  const DecoderLayerLayout& layout = weights_.layout().layers[static_cast<size_t>(l)];
  const ComputeOptions& compute = o_.compute;
  const Stopwatch layer_clock;
  LayerRecord times;
  times.layer = l;
  // Weights are rounded from the checkpoint's values in fp32 (the master copy), whatever the
  // compute dtype; with --dtype bf16/fp16 the layer is held twice: the master and its cast,
  // which runs the forward passes.
  DecoderLayer layer = DecoderLayer::load(weights_, l, compute);
  std::optional<DecoderLayer> master_copy;
  if (compute.dtype != at::kFloat)
    master_copy = DecoderLayer::load(weights_, l, {compute.device, at::kFloat});
  DecoderLayer& master = master_copy ? *master_copy : layer;
  check_representable(master, plan_.skipped, plan_.grid, o_.model_dir);
  // The full-precision copy computes X_f's path through this layer.
  std::optional<DecoderLayer> fp_layer;
  if (plan_.keep_fp_stream) fp_layer = DecoderLayer::load(weights_, l, compute);
  if (plan_.scale_search) {
    const Stopwatch clock;
    search_scales_of(master, fp_layer ? &*fp_layer : nullptr, state, l);
    if (master_copy) copy_parameters(master, layer);
    times.rounding_seconds += clock.seconds();
  }
  const DecoderLayer* rewritten = plan_.scale_search ? &master : nullptr;
  {
    const Stopwatch clock;
    if (writer_) writer_->write_layer_unquantized(layout, rewritten);
    times.write_seconds += clock.seconds();
  }

  std::optional<LayerStages> q_stages, fp_stages;
  if (plan_.needs_data) {
    // down_proj's input is kept between its statistics and the advance when it is small.
    int64_t tokens = 0;
    for (const auto& batch : state.stream.batches) tokens += batch.size(0) * batch.size(1);
    const bool cache = mlp_cache_fits(o_, weights_.config(), tokens);
    q_stages.emplace(layer, state.stream, rope_, compute.device, cache);
    if (fp_layer) fp_stages.emplace(*fp_layer, state.fp_stream, rope_, compute.device, cache);
  }
  CaptureSettings capture;
  capture.all_expert_tokens = layout.moe && o_.moe_policy == "all-tokens";
  // --lambda auto: every Gram also gets its two held-out folds.
  const bool folds = plan_.holdout_folds;
  if (folds && !split_.enabled())
    split_ = HoldoutSplit(shares_.windows, state.stream.seqlen, o_.seed);
  if (folds) {
    capture.split = &split_;
    capture.first_window = shares_.first(world_.rank());
  }
  // α_j of every window is drawn per group in window order, whichever rank holds the window,
  // so that the draws do not depend on the number of ranks; the capture takes this rank's.
  std::vector<float> group_alpha;
  size_t alpha_cursor = 0;
  const bool samples_alpha = plan_.paired_capture && plan_.objective->samples_alpha();
  if (samples_alpha)
    capture.alpha = [&](int64_t sequences) {
      const auto begin = group_alpha.begin() + static_cast<std::ptrdiff_t>(alpha_cursor);
      alpha_cursor += static_cast<size_t>(sequences);
      return std::vector<float>(begin, begin + sequences);
    };
  for (int group = 0; group < kSequentialGroups; ++group) {
    std::vector<const LinearModule*> members;
    for (const auto& m : layout.linears)
      if (sequential_group(m) == group) members.push_back(&m);
    if (members.empty()) continue;
    std::optional<GroupStatistics> stats;
    if (plan_.calibrate) {
      const Stopwatch clock;
      if (samples_alpha) {
        group_alpha.resize(static_cast<size_t>(shares_.windows));
        for (auto& a : group_alpha) a = static_cast<float>(alpha_sampler_.next());
        alpha_cursor = static_cast<size_t>(shares_.first(world_.rank()));
      }
      stats = capture_group_statistics(group, *q_stages, fp_stages ? &*fp_stages : nullptr,
                                       fp_layer ? &*fp_layer : nullptr, capture, compute.device);
      times.statistics_seconds += stats->seconds();
      times.forward_seconds += clock.seconds() - stats->seconds();
      if (world_.size() > 1) {  // every rank then rounds from the statistics of all windows
        const Stopwatch reduce_clock;
        stats->reduce([this](at::Tensor& t) { world_.all_reduce_sum(t); }, members,
                      capture.all_expert_tokens, folds);
        times.statistics_seconds += reduce_clock.seconds();
      }
    }
    // Module parallelism: each module has an owner rank (longest first onto the least loaded),
    // which rounds it; then, in module order, the owner's result reaches every rank, which
    // continues the layer with it (rank 0 also writes it). The cost is the flop count of the
    // rounding: the sweep 2·out·in² (times the beam's width: each kept decoding is swept) and
    // the factorization in³/3.
    const double width = plan_.backend == "beam"
                             ? static_cast<double>(o_.rounding_options.beam_width)
                             : 1.0;
    std::vector<double> costs;
    for (const LinearModule* m : members) {
      const double out = static_cast<double>(m->out_features), in = static_cast<double>(m->in_features);
      costs.push_back(plan_.skipped.count(m->name) ? 0.0
                                                   : 2 * out * in * in * width + in * in * in / 3);
    }
    const std::vector<int> owners = balance_owners(costs, world_.size());
    std::vector<std::optional<QuantizedModule>> results(members.size());
    std::vector<ModuleRecord> records(members.size());
    for (size_t i = 0; i < members.size(); ++i) {
      const LinearModule* m = members[i];
      ModuleRecord& rec = records[i];
      rec.layer = l;
      rec.module = m->name;
      if (plan_.skipped.count(m->name) || owners[i] != world_.rank()) continue;
      throw_if_interrupted();
      const Stopwatch module_clock;
      results[i] = modules_.quantize(*m, l, master.weight(m->local_name),
                                     stats ? &*stats : nullptr, rec);
      rec.loss = results[i]->q.loss;
      rec.seconds = module_clock.seconds();
      rec.peak_host_bytes = peak_resident_bytes();
      times.rounding_seconds += module_clock.seconds();
    }
    for (size_t i = 0; i < members.size(); ++i) {
      const LinearModule* m = members[i];
      ModuleRecord& rec = records[i];
      if (plan_.skipped.count(m->name)) {
        rec.method = "unquantized";
        rec.reason = plan_.skipped.at(m->name);
        if (writer_) writer_->write_skipped_module(layout, *m, rewritten);
        report_.unquantized_modules.push_back(m->name);
      } else {
        if (world_.size() > 1) {
          const Stopwatch share_clock;
          share_result(owners[i], *m, results[i], rec);
          times.rounding_seconds += share_clock.seconds();
        }
        const QuantizedModule& done = *results[i];
        plan_.objective->add_result(l, std::string(linear_role_name(m->role)), done.measured);
        state.any_reordered |= done.q.g_idx.defined() && done.q.reordered();
        layer.set_weight(m->local_name, done.weight);
        const Stopwatch write_clock;
        if (writer_)
          writer_->write_quantized(*m, done.q,
                                   m->has_bias ? master.bias(m->local_name) : at::Tensor());
        times.write_seconds += write_clock.seconds();
      }
      log_module(rec);
      report_.modules.push_back(rec);
      bar_.advance();
    }
  }
  // The quantized layer produces the next layer's inputs; the original one advances X_f.
  if (plan_.needs_data && l + 1 < weights_.config().num_hidden_layers) {
    const Stopwatch clock;
    q_stages->finish();
    if (fp_stages) fp_stages->finish();
    times.forward_seconds += clock.seconds();
  }
  times.seconds = layer_clock.seconds();
  report_.layers.push_back(times);
  spdlog::info(
      "layer {}/{} done in {:.1f} s: forward {:.1f}, statistics {:.1f}, rounding {:.1f}, write "
      "{:.1f}",
      l + 1, weights_.config().num_hidden_layers, times.seconds, times.forward_seconds,
      times.statistics_seconds, times.rounding_seconds, times.write_seconds);
  ++state.next_layer;
}

// sha256 of config.json, the settings written into quantization_config and the calibration.
std::string run_fingerprint(const ModelWeights& weights, const nlohmann::json& settings,
                            const std::string& calibration_sha256) {
  Sha256 h;
  h.update(read_text_file(weights.dir() / "config.json"));
  h.update(settings.dump());
  h.update(calibration_sha256);
  return h.hex_digest();
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

// What a failed run left for a rerun: filled as the run goes, read by quantize()'s handlers.
struct ResumePoint {
  fs::path work_folder;
  int64_t saved_layers = 0, layers = 0;
  std::string hint() const {
    return fmt::format("{} of {} layers are saved in {}: rerun the same command to resume",
                       saved_layers, layers, work_folder.string());
  }
};

// A saved state the command may not use: refused with every differing item named.
void check_saved_run(const SavedRun& saved, const nlohmann::json& fingerprint,
                     const QuantizeOptions& o, const WorkFolder& work, int64_t layers) {
  const std::string where = fmt::format("{}: {} holds the state of an interrupted run (layer "
                                        "{}/{} next)",
                                        o.out_dir.string(), work.root().string(),
                                        saved.next_layer + 1, saved.layers);
  if (!o.resume)
    throw Error(ErrorKind::StateConflict,
                where + "; --no-resume refuses it: rerun without --no-resume to continue it, or "
                        "with --restart to discard it");
  const std::vector<std::string> diffs = fingerprint_differences(saved.fingerprint, fingerprint);
  // A state is saved after a layer: its next layer lies in 1..L of this model.
  if (diffs.empty() && (saved.layers != layers || saved.next_layer < 1 ||
                        saved.next_layer > saved.layers))
    throw Error(ErrorKind::StateConflict,
                fmt::format("{}: its state.json is inconsistent (next_layer {}, layers {}, for a "
                            "{}-layer model); pass --restart to discard the state",
                            work.root().string(), saved.next_layer, saved.layers, layers));
  if (!diffs.empty())
    throw Error(ErrorKind::StateConflict,
                fmt::format("{}, made by a different command or model: {}; rerun that command to "
                            "resume, or pass --restart to discard the state",
                            where, fmt::join(diffs, "; ")));
}

QuantizeReport run_quantize(const QuantizeOptions& o, const fs::path& out_dir,
                            ResumePoint& resume) {
  const Stopwatch clock;
  const PeakMemoryMonitor memory;
  RunSession session;
  session.started = utc_now();
  QuantizePlan plan = plan_quantize(o);
  const ModelWeights weights = ModelWeights::open(o.model_dir, NonFinitePolicy::Refuse);
  const ModelConfig& cfg = weights.config();
  if (cfg.quantization)
    throw_bad_input(fmt::format("{}: the model is already GPTQ-quantized (config.json has "
                                "quantization_config)",
                                o.model_dir.string()));
  // Several ranks (torchrun, srun, --nproc): rank 0 owns the output; every rank computes.
  World world(world_from_environment());
  std::optional<WorkFolder> work_folder;
  if (world.is_root())
    work_folder.emplace(out_dir, o.force ? WorkFolder::Existing::Replace
                                         : WorkFolder::Existing::Refuse);  // before any work
  WorkFolder* const work = world.is_root() ? &*work_folder : nullptr;
  resume.layers = cfg.num_hidden_layers;
  if (work) {
    resume.work_folder = work->root();
    if (o.restart && work->found()) {
      work->reset();
      spdlog::info("--restart: discarded the saved state in {}", work->root().string());
    }
  }
  plan.fit_to_model(weights.layout());

  QuantizeReport report;
  report.out_dir = out_dir;
  report.grid = plan.grid.describe();
  report.method = o.method;
  report.objective = plan.objective_settings.name;
  report.rounding = plan.backend;
  CalibrationSet calib;
  if (plan.needs_data) {
    calib = load_calibration(o, weights);
    report.nsamples = calib.ids.size(0);
    report.seqlen = calib.ids.size(1);
    report.calibration_sha256 = calib.fingerprint;
  }
  const nlohmann::json settings = quantization_config(weights.layout(), plan, o, report, false,
                                                      calib.source);
  report.fingerprint = run_fingerprint(weights, settings, report.calibration_sha256);
  nlohmann::json fingerprint =
      run_fingerprint_items(weights, o, report.calibration_sha256);
  fingerprint["ranks"] = std::to_string(world.size());

  // A state saved by an interrupted run of this command: checked before any work (rank 0).
  std::optional<RunStateStore> store;
  if (work) store.emplace(work->state());
  std::optional<SavedRun> saved;
  if (work && work->found()) {
    saved = store->load();
    if (saved) {
      check_saved_run(*saved, fingerprint, o, *work, cfg.num_hidden_layers);
      resume.saved_layers = saved->next_layer;
    } else {
      work->reset();  // stopped before its first layer was saved: nothing to resume
    }
  }
  const bool publish_only = saved && work->publish_pending();
  // Several ranks save a state too when every rank sees the work folder (one machine, or a
  // shared file system): each rank its own streams, rank 0 the rest. The others learn from rank 0
  // whether to resume, and read the same state.
  bool shared = true;
  if (world.size() > 1) {
    at::Tensor decision =
        at::tensor(std::vector<int64_t>{publish_only ? 2 : saved ? 1 : 0}, at::kLong);
    try {
      world.broadcast(decision, 0);
    } catch (const Error& e) {
      // Rank 0 checks the output folder and any saved state first: when it refuses to start,
      // its own error line says why, and this rank's should point there.
      if (world.is_root() || e.kind() != ErrorKind::Runtime) throw;
      throw_runtime(fmt::format("rank {} of {}: rank 0 stopped before the run began; its error "
                                "line says why",
                                world.rank(), world.size()));
    }
    const fs::path state_dir = WorkFolder::root_for(out_dir) / "state";
    at::Tensor sees = at::tensor(std::vector<int64_t>{fs::is_directory(state_dir) ? 1 : 0}, at::kLong);
    world.all_reduce_sum(sees);
    shared = sees.item<int64_t>() == world.size();
    if (world.is_root() && !shared)
      spdlog::warn("{} of {} ranks cannot see {} (no shared file system): no state is saved, and "
                   "an interrupted run starts over",
                   world.size() - sees.item<int64_t>(), world.size(), state_dir.string());
    if (!world.is_root()) {
      const int64_t d = decision.item<int64_t>();
      if (d == 2) return report;  // rank 0 only finishes publishing the earlier output
      if (shared) store.emplace(state_dir, world.rank());
      if (d == 1) {
        if (!shared)
          throw_runtime(fmt::format("rank {} cannot see the saved state in {} that rank 0 resumes",
                                    world.rank(), state_dir.string()));
        saved = store->read();
        if (!saved)
          throw_runtime(fmt::format("{}: the state rank 0 resumes is missing here",
                                    (state_dir / "state.json").string()));
      }
    }
  }
  const bool saves_state = store.has_value() && shared;
  if (publish_only) {  // the output was complete: only its move remained
    restore_records(report, saved->records);
    work->publish();
    spdlog::info("{}: finished publishing the output of the interrupted run",
                 out_dir.string());
    report.seconds = clock.seconds();
    return report;
  }

  const int64_t starved_below =
      o.moe_min_tokens > 0 ? o.moe_min_tokens
                           : std::max<int64_t>(16, static_cast<int64_t>(std::ceil(
                                                       0.005 * report.nsamples * report.seqlen)));
  if (plan.calibrate && cfg.is_moe())
    spdlog::info("MoE: experts with fewer than {} routed tokens use policy '{}'", starved_below,
                 o.moe_policy);

  QuantizeMemoryInputs memory_inputs;
  memory_inputs.tokens = report.nsamples * report.seqlen;
  memory_inputs.compute_dtype = o.compute.dtype;
  memory_inputs.calibrate = plan.calibrate;
  memory_inputs.keep_fp_stream = plan.keep_fp_stream;
  memory_inputs.paired_capture = plan.paired_capture;
  memory_inputs.holdout_folds = plan.holdout_folds;
  memory_inputs.cache_mlp_hidden = mlp_cache_fits(o, cfg, memory_inputs.tokens);
  if (plan.backend == "beam" || plan.backend == "successive")
    memory_inputs.beam_budget_bytes = o.rounding_options.beam_budget_bytes;
  const QuantizeMemoryEstimate estimate =
      estimate_quantize_memory(cfg, weights.layout(), memory_inputs);
  report.estimated_peak_bytes = estimate.peak_bytes;
  spdlog::info("estimated peak memory {} (on {}), besides the mapped checkpoint",
               estimate.describe(), o.compute.device.str());

  // A bad input found on the way (a NaN weight in layer 7) must change before a rerun can
  // succeed, which the fingerprint would refuse: then the saved layers are worthless.
  try {
    ResumableWrite resumable;
    if (saved) resumable.written = saved->written;
    std::optional<QuantizedCheckpointWriter> writer;
    if (work) writer.emplace(weights, plan, work->output(), &resumable);
    LayerLoopState state;
    state.fingerprint = report.fingerprint;
    // The windows go through the layers in batches fixed by the calibration alone, and each
    // rank takes a contiguous run of whole batches (the first ranks one more): the statistics
    // are exact sums of per-batch terms, so every world size computes the same bits.
    WindowShares shares;
    shares.windows = plan.needs_data ? calib.ids.size(0) : 0;
    shares.split = calibration_batches(shares.windows, report.seqlen);
    shares.ranks = world.size();
    if (plan.needs_data && shares.split.batches < world.size())
      throw_usage(fmt::format("{}: {} calibration windows for {} ranks: each rank needs at "
                              "least one batch ({} windows per batch)",
                              calib.source, shares.windows, world.size(), shares.split.per_batch));
    const int64_t first = shares.first(world.rank()), count = shares.count(world.rank());
    if (plan.needs_data) {  // the embedding table is needed only here
      const StreamingModel embedder(weights, o.compute);
      const at::Tensor mine = calib.ids.narrow(0, first, count);
      const int64_t batch_tokens = shares.split.per_batch * report.seqlen;
      state.stream = embedder.embed(mine, batch_tokens);
      if (plan.keep_fp_stream) state.fp_stream = embedder.embed(mine, batch_tokens);
    }

    int64_t total_modules = 0;
    for (const auto& layer : weights.layout().layers)
      for (const auto& m : layer.linears) total_modules += m.quantizable ? 1 : 0;
    ProgressBar bar("quantize", total_modules);
    if (!o.progress) bar.finish();
    LayerQuantizer layers(o, plan, weights, writer ? &*writer : nullptr, report, bar,
                          starved_below, report.seqlen, world, shares);
    if (saved) {
      const Stopwatch restore;
      if (plan.needs_data && saved->next_layer < cfg.num_hidden_layers)
        store->restore_streams(*saved, state.stream,
                               plan.keep_fp_stream ? &state.fp_stream : nullptr);
      state.next_layer = saved->next_layer;
      state.any_reordered = saved->any_reordered;
      layers.restore_alpha_state(saved->alpha_sampler);
      plan.objective->restore_state(saved->objective);
      restore_records(report, saved->records);
      if (!report.sessions.empty()) report.sessions.back().interrupted = true;
      for (int64_t l = 0; l < state.next_layer; ++l)
        for (const auto& m : weights.layout().layers[static_cast<size_t>(l)].linears)
          bar.advance(m.quantizable ? 1 : 0);
      session.restore_seconds = restore.seconds();
      if (state.next_layer < cfg.num_hidden_layers)
        spdlog::info("resuming at layer {}/{}, {} layers restored in {:.1f} s",
                     state.next_layer + 1, cfg.num_hidden_layers, state.next_layer,
                     session.restore_seconds);
      else  // killed while finishing the output
        spdlog::info("resuming at the end: all {} layers restored in {:.1f} s",
                     cfg.num_hidden_layers, session.restore_seconds);
    } else if (writer) {
      writer->write_globals();
    }
    session.first_layer = state.next_layer;
    report.sessions.push_back(session);

    SavedRun progress;
    progress.fingerprint = fingerprint;
    progress.layers = cfg.num_hidden_layers;
    progress.ranks = world.size();
    if (saved) progress.streams_file = saved->streams_file;  // deleted by the next save
    while (state.next_layer < cfg.num_hidden_layers) {
      layers.run(state);
      if (!saves_state) continue;
      // The layer counts as done once its tensors, every rank's streams and then the state are
      // on disk.
      const Stopwatch save_clock;
      if (writer) writer->sync();
      RunSession& current = report.sessions.back();
      current.layers_done = state.next_layer - current.first_layer;
      current.seconds = clock.seconds();
      const std::string previous = progress.streams_file;
      progress.next_layer = state.next_layer;
      const bool more = state.next_layer < cfg.num_hidden_layers;
      store->save_streams(progress, more ? state.stream : HiddenBatches(),
                          more && plan.keep_fp_stream ? &state.fp_stream : nullptr);
      fault_point("save-state");
      world.barrier();  // every rank's streams are on disk before the state names them
      if (work) {
        progress.any_reordered = state.any_reordered;
        progress.written = writer->written();
        progress.alpha_sampler = layers.alpha_state();
        progress.objective = plan.objective->save_state();
        progress.records = records_to_json(report);
        store->save_state(progress);
        work->keep();
        resume.saved_layers = state.next_layer;
      }
      fault_point("save-state");
      world.barrier();  // the new state is in place: no state names the previous streams
      store->remove_streams(previous, progress);
      current.state_seconds += save_clock.seconds();
    }
    bar.finish();
    // Every rank is done with the work folder (its last streams file deleted) before rank 0
    // publishes it away.
    world.barrier();

    report.seconds = clock.seconds();
    report.sessions.back().seconds = report.seconds;
    report.peak_host_bytes = peak_resident_bytes();
    const MemoryUsage peak = memory.peak();
    report.peak_anonymous_bytes = peak.anonymous_bytes;
    report.peak_mapped_bytes = peak.file_bytes;
    if (!writer) return report;  // the other ranks are done: rank 0 writes
    writer->finish(quantization_config(weights.layout(), plan, o, report, state.any_reordered,
                                       calib.source),
                   report);
    throw_if_interrupted();  // the last point where the output can still be abandoned
    work->publish();
  } catch (const Error& e) {
    if ((e.kind() == ErrorKind::BadInput || e.kind() == ErrorKind::Usage) && work) {
      work->discard();
      resume.saved_layers = 0;
    }
    throw;
  }
  return report;
}

}  // namespace

QuantizeReport quantize(const QuantizeOptions& o) {
  const fs::path out_dir =
      checked_output_folder("--out", o.out_dir, {o.model_dir, o.calib_text, o.calib_tokens});
  if (o.restart && !o.resume) throw_usage("--restart and --no-resume exclude each other");
  check_dtype_supported(o.compute.device, o.compute.dtype);
  // Gram matrices, factorizations and rounding are fp32 (methods.md): no TF32 GEMMs on GPUs
  // that offer them.
  at::globalContext().setAllowTF32CuBLAS(false);
  const InterruptGuard guard;
  ResumePoint resume;
  try {
    return run_quantize(o, out_dir, resume);
  } catch (const Interrupted& e) {  // by now the work folder is gone or holds the saved layers
    throw Interrupted(e.signal(), fmt::format("{}: {}; {}", out_dir.string(), e.what(),
                                              resume.saved_layers > 0 ? resume.hint()
                                                                      : "nothing was written"));
  } catch (const Error& e) {
    if (resume.saved_layers == 0 || e.kind() != ErrorKind::Runtime) throw;
    throw Error(e.kind(), fmt::format("{}; {}", first_line(e.what()), resume.hint()));
  } catch (const c10::Error& e) {  // a device error, a failed check
    if (resume.saved_layers == 0) throw;
    throw Error(ErrorKind::Runtime,
                fmt::format("{}; {}", first_line(e.what_without_backtrace()), resume.hint()));
  } catch (const std::bad_alloc&) {
    if (resume.saved_layers == 0) throw;
    throw Error(ErrorKind::Runtime, "out of memory; " + resume.hint());
  }
}

}  // namespace sarqc
