#include "sarqc/pipeline/quantize.h"

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <cmath>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>

#include "sarqc/calib/calibration_set.h"
#include "sarqc/dist/world.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"
#include "sarqc/pipeline/calibration_input.h"
#include "sarqc/pipeline/checkpoint_writer.h"
#include "sarqc/pipeline/layer_quantizer.h"
#include "sarqc/pipeline/memory_estimate.h"
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
  // Gram matrices, factorizations and rounding are fp32 (docs/methods.md): no TF32 GEMMs on GPUs
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
