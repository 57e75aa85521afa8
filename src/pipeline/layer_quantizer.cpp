#include "sarqc/pipeline/layer_quantizer.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "sarqc/calib/group_statistics.h"
#include "sarqc/calib/layer_stages.h"
#include "sarqc/calib/module_groups.h"
#include "sarqc/dist/owners.h"
#include "sarqc/util/error.h"
#include "sarqc/util/fault_point.h"
#include "sarqc/util/interrupt.h"
#include "sarqc/util/memory_monitor.h"
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

}  // namespace

bool mlp_cache_fits(const QuantizeOptions& o, const ModelConfig& cfg, int64_t tokens) {
  return tokens * cfg.intermediate_size * static_cast<int64_t>(c10::elementSize(o.compute.dtype)) <=
         o.stage_cache_bytes;
}

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

}  // namespace sarqc
