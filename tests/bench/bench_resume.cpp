// The two ways a resumed quantize could get the activation stream back (not a test:
// scripts/bench_resume.sh runs it and BENCHMARKS.md records the numbers).
//   replay QUANTIZED_DIR TOKENS NSAMPLES SEQLEN LAYERS
//       embeds the calibration windows and runs them through the first LAYERS layers of the
//       quantized checkpoint (GPTQ modules dequantized as they load): what regenerating X_q
//       from the completed layers costs (X_f needs the same on the original model).
//   persist HIDDEN TOKENS SEQLEN DIR
//       saves an fp32 stream of TOKENS x HIDDEN with RunStateStore (synced) and restores it,
//       three times: what sarqc does at every layer boundary and on resume.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include <ATen/ATen.h>

#include "sarqc/calib/calibration_set.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"
#include "sarqc/pipeline/run_state.h"
#include "sarqc/util/cpu_environment.h"
#include "sarqc/util/device.h"
#include "sarqc/util/file.h"

namespace {
double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

int main(int argc, char** argv) {
  sarqc::restart_with_cpu_environment(argv);
  using namespace sarqc;
  configure_threads(0);
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "replay" && argc >= 7) {
    const ModelWeights weights = ModelWeights::open(argv[2]);
    const CalibrationSet calib =
        calibration_from_token_file(argv[3], std::stoll(argv[4]), std::stoll(argv[5]), 0,
                                    weights.config().vocab_size);
    const int64_t layers = std::stoll(argv[6]);
    const auto start = std::chrono::steady_clock::now();
    const StreamingModel model(weights, ComputeOptions{});
    HiddenBatches hidden = model.embed(calib.ids);
    for (int64_t l = 0; l < layers; ++l)
      model.advance(DecoderLayer::load(weights, l, model.options()), hidden);
    std::printf("{\"mode\": \"replay\", \"layers\": %lld, \"tokens\": %lld, \"seconds\": %.3f}\n",
                static_cast<long long>(layers), static_cast<long long>(calib.ids.numel()),
                since(start));
    return 0;
  }
  if (mode == "persist" && argc >= 6) {
    const int64_t d = std::stoll(argv[2]), tokens = std::stoll(argv[3]), T = std::stoll(argv[4]);
    const std::filesystem::path dir = argv[5];
    std::filesystem::create_directories(dir);
    HiddenBatches stream;
    stream.seqlen = T;
    const int64_t per_batch = std::max<int64_t>(1, 8192 / T);  // embed()'s default batches
    for (int64_t s = 0; s < tokens / T; s += per_batch)
      stream.batches.push_back(at::randn({std::min(per_batch, tokens / T - s), T, d}));
    const RunStateStore store(dir);
    SavedRun run;
    for (int rep = 0; rep < 3; ++rep) {
      run.next_layer = rep + 1;
      auto start = std::chrono::steady_clock::now();
      store.save(run, stream, nullptr);
      const double save = since(start);
      start = std::chrono::steady_clock::now();
      const std::optional<SavedRun> loaded = store.load();
      store.restore_streams(*loaded, stream, nullptr);
      const double restore = since(start);
      std::printf("{\"mode\": \"persist\", \"bytes\": %lld, \"save_seconds\": %.3f, "
                  "\"restore_seconds\": %.3f}\n",
                  static_cast<long long>(tokens * d * 4), save, restore);
    }
    remove_tree(dir);
    return 0;
  }
  std::fprintf(stderr,
               "usage: %s replay QUANTIZED_DIR TOKENS NSAMPLES SEQLEN LAYERS\n"
               "       %s persist HIDDEN TOKENS SEQLEN DIR\n",
               argv[0], argv[0]);
  return 2;
}
