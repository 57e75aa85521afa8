// Writes a random-weight checkpoint with the exact shapes of a published model (not a test;
// scripts/bench_llm.sh). bf16, sharded like hub checkpoints (5 GB shards + index).
// Usage: sarqc_bench_make_model tinyllama-1.1b|llama-2-7b|llama-3-8b DIR [LAYERS]
//        sarqc_bench_make_model tokens COUNT VOCAB FILE   (seeded random int32 token ids)
#include <cstdio>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include "sarqc/model/synthetic.h"
#include "sarqc/util/device.h"
#include "sarqc/util/cpu_environment.h"

int main(int argc, char** argv) {
  sarqc::restart_with_cpu_environment(argv);  // the OpenBLAS core and thread settings
  using namespace sarqc;
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s tinyllama-1.1b|llama-2-7b|llama-3-8b DIR [LAYERS]\n", argv[0]);
    return 2;
  }
  const std::string shape = argv[1];
  if (shape == "tokens" && argc == 5) {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(0);
    const at::Tensor ids =
        at::randint(std::stoll(argv[3]), {std::stoll(argv[2])}, gen, at::kInt).contiguous();
    std::FILE* f = std::fopen(argv[4], "wb");
    if (!f || std::fwrite(ids.data_ptr<int32_t>(), 4, ids.numel(), f) != size_t(ids.numel()))
      return 1;
    return std::fclose(f) == 0 ? 0 : 1;
  }
  struct Shape {
    int hidden, intermediate, layers, heads, kv_heads, vocab, positions;
    double rope_theta;
  };
  Shape s{};
  if (shape == "tinyllama-1.1b") s = {2048, 5632, 22, 32, 4, 32000, 2048, 10000.0};
  else if (shape == "llama-2-7b") s = {4096, 11008, 32, 32, 32, 32000, 4096, 10000.0};
  else if (shape == "llama-3-8b") s = {4096, 14336, 32, 32, 8, 128256, 8192, 500000.0};
  else {
    std::fprintf(stderr, "unknown shape '%s'\n", shape.c_str());
    return 2;
  }
  if (argc > 3) s.layers = std::stoi(argv[3]);
  const nlohmann::json config = {{"architectures", {"LlamaForCausalLM"}},
                                 {"model_type", "llama"},
                                 {"hidden_size", s.hidden},
                                 {"intermediate_size", s.intermediate},
                                 {"num_hidden_layers", s.layers},
                                 {"num_attention_heads", s.heads},
                                 {"num_key_value_heads", s.kv_heads},
                                 {"vocab_size", s.vocab},
                                 {"max_position_embeddings", s.positions},
                                 {"rope_theta", s.rope_theta},
                                 {"rms_norm_eps", 1e-5},
                                 {"hidden_act", "silu"},
                                 {"tie_word_embeddings", false},
                                 {"bos_token_id", 1},
                                 {"eos_token_id", 2},
                                 {"torch_dtype", "bfloat16"}};
  configure_threads(0);
  write_random_model(config, argv[2], 0, {Dtype::BF16, 5'000'000'000ULL});
  std::printf("wrote %s (%s, %d layers)\n", argv[2], shape.c_str(), s.layers);
  return 0;
}
