// Forward throughput of the streaming model on a random llama-shaped checkpoint (not a test:
// scripts/bench_forward.sh runs it and BENCHMARKS.md records the numbers).
// Usage: sarqc_bench_forward HIDDEN INTERMEDIATE LAYERS HEADS KV_HEADS SEQLEN SEQUENCES
//        [fp32|bf16|fp16] [cpu|cuda]
#include <chrono>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include "sarqc/model/streaming_model.h"
#include "sarqc/model/synthetic.h"
#include "sarqc/model/weights.h"
#include "sarqc/util/device.h"
#include "sarqc/util/file.h"
#include "sarqc/util/cpu_environment.h"

int main(int argc, char** argv) {
  sarqc::restart_with_cpu_environment(argv);  // the OpenBLAS core and thread settings
  using namespace sarqc;
  if (argc < 8) {
    std::fprintf(stderr, "usage: %s HIDDEN INTER LAYERS HEADS KV SEQLEN SEQS [dtype] [device]\n",
                 argv[0]);
    return 2;
  }
  auto arg = [&](int i) { return std::stoll(argv[i]); };
  const int64_t d = arg(1), inter = arg(2), layers = arg(3), heads = arg(4), kv = arg(5),
                T = arg(6), S = arg(7);
  ComputeOptions o;
  if (argc > 8) o.dtype = parse_activation_dtype(argv[8]);
  if (argc > 9) o.device = parse_device(argv[9]);
  const int threads = configure_threads(0);
  const nlohmann::json cfg = {
      {"model_type", "llama"},       {"architectures", {"LlamaForCausalLM"}},
      {"hidden_size", d},            {"intermediate_size", inter},
      {"num_hidden_layers", layers}, {"num_attention_heads", heads},
      {"num_key_value_heads", kv},   {"vocab_size", 32000},
      {"rms_norm_eps", 1e-5},        {"max_position_embeddings", T},
      {"hidden_act", "silu"},        {"tie_word_embeddings", true}};
  const auto dir = std::filesystem::temp_directory_path() /
                   ("sarqc-bench-" + std::to_string(::getpid()));
  write_random_model(cfg, dir, 0);
  {
    const ModelWeights w = ModelWeights::open(dir);
    const StreamingModel model(w, o);
    const at::Tensor ids = at::randint(0, 32000, {S, T}, at::kLong);
    HiddenBatches warm = model.embed(ids.narrow(0, 0, 1).narrow(1, 0, 16));
    model.run_layers(warm);
    const auto start = std::chrono::steady_clock::now();
    HiddenBatches hidden = model.embed(ids);
    model.run_layers(hidden);
    if (o.device.is_cuda()) hidden.batches.back().cpu();  // wait for the device
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("d=%lld I=%lld L=%lld H=%lld KV=%lld T=%lld S=%lld %s %s threads=%d: %.2f s, "
                "%.0f tokens/s, %.3f s/layer\n",
                (long long)d, (long long)inter, (long long)layers, (long long)heads, (long long)kv,
                (long long)T, (long long)S, activation_dtype_name(o.dtype).c_str(),
                o.device.str().c_str(), threads, s, S * T / s, s / layers);
  }
  remove_tree(dir);
  return 0;
}
