// The memory estimate's terms against their closed forms, inspect and quantize printing the same
// number, the anonymous-memory monitor, and the sampled trace of the relative loss.
#include <cstring>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sarqc/io/hf_config.h"
#include "sarqc/model/layout.h"
#include "sarqc/model/synthetic.h"
#include "sarqc/pipeline/inspect.h"
#include "sarqc/pipeline/memory_estimate.h"
#include "sarqc/pipeline/module_quantizer.h"
#include "sarqc/pipeline/quantize.h"
#include "sarqc/util/memory_monitor.h"
#include "test_support.h"

namespace sarqc {
namespace {

nlohmann::json llama(int64_t d, int64_t f, int64_t vocab) {
  return {{"model_type", "llama"}, {"architectures", {"LlamaForCausalLM"}},
          {"hidden_size", d},      {"intermediate_size", f},
          {"num_hidden_layers", 2}, {"num_attention_heads", 4},
          {"num_key_value_heads", 2}, {"vocab_size", vocab},
          {"max_position_embeddings", 64}, {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0}, {"hidden_act", "silu"},
          {"tie_word_embeddings", false}, {"bos_token_id", 1}};
}

TEST(MemoryEstimate, TermsFollowTheShapesAndSettings) {
  const int64_t d = 64, f = 96, vocab = 100, N = 1000;
  const ModelConfig cfg = parse_model_config(llama(d, f, vocab), "config.json");
  const ModelLayout layout = build_layout(cfg);
  QuantizeMemoryInputs in;
  in.tokens = N;
  const QuantizeMemoryEstimate base = estimate_quantize_memory(cfg, layout, in);
  const int64_t kv = 2 * (d / 4);
  const int64_t numel = d * d * 2 + kv * d * 2 + 3 * d * f + 2 * d;  // linears and two norms
  EXPECT_EQ(base.layer_bytes, numel * 4);
  // down_proj's input is the widest group: its exact sum (16 bytes per element), the fp32 average,
  // one batch's fp32 Gram and the conversion's temporaries (56 bytes per element up to 64 MiB)
  EXPECT_EQ(base.gram_bytes, f * f * (16 + 4 + 4 + 56));
  EXPECT_EQ(base.embedding_bytes, vocab * d * 4);
  // the stream, plus the cached MLP activations (wider than the attention heads)
  EXPECT_EQ(base.stream_bytes, N * (d + f) * 4);
  EXPECT_EQ(base.peak_bytes, base.layer_bytes + base.gram_bytes + base.rounding_bytes +
                                 base.stream_bytes + base.forward_bytes);

  QuantizeMemoryInputs fp = in;
  fp.keep_fp_stream = fp.paired_capture = true;
  const QuantizeMemoryEstimate paired = estimate_quantize_memory(cfg, layout, fp);
  EXPECT_EQ(paired.stream_bytes, 2 * base.stream_bytes);
  EXPECT_EQ(paired.gram_bytes, f * f * (2 * (16 + 4) + 4 + 56));  // D next to H
  EXPECT_EQ(paired.layer_bytes, 2 * base.layer_bytes);  // the FP copy

  QuantizeMemoryInputs bf16 = in;
  bf16.compute_dtype = at::kBFloat16;
  const QuantizeMemoryEstimate half = estimate_quantize_memory(cfg, layout, bf16);
  EXPECT_EQ(half.layer_bytes, numel * 2 + numel * 4);  // the bf16 copy and the fp32 master
  EXPECT_EQ(half.stream_bytes, base.stream_bytes / 2);

  QuantizeMemoryInputs recompute = in;
  recompute.cache_mlp_hidden = false;
  EXPECT_EQ(estimate_quantize_memory(cfg, layout, recompute).stream_bytes, N * (d + d) * 4);
}

TEST(MemoryEstimate, InspectAndQuantizePrintTheSameNumber) {
  test::TempDir dir;
  write_random_model(llama(64, 96, 100), dir.path() / "m", 1);
  std::vector<int32_t> ids(4 * 16);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(7 * i % 100);
  const auto tokens = dir.path() / "ids.i32";
  test::write_bytes(tokens, std::string(reinterpret_cast<const char*>(ids.data()), ids.size() * 4));
  QuantizeOptions o;
  o.model_dir = dir.path() / "m";
  o.out_dir = dir.path() / "q";
  o.calib_tokens = tokens;
  o.nsamples = 4;
  o.seqlen = 16;
  o.progress = false;
  const QuantizeReport report = quantize(o);
  InspectOptions io;
  io.model_dir = o.model_dir;
  io.nsamples = 4;
  io.seqlen = 16;
  EXPECT_EQ(uint64_t(report.estimated_peak_bytes), inspect_model(io).memory.quantize_peak_bytes);
  EXPECT_GT(report.peak_anonymous_bytes, 0);
  EXPECT_GT(report.peak_mapped_bytes, 0);
  ASSERT_EQ(report.layers.size(), 2u);
  for (const auto& l : report.layers)
    EXPECT_LE(l.forward_seconds + l.statistics_seconds + l.rounding_seconds + l.write_seconds,
              l.seconds * 1.001 + 1e-3);
}

TEST(MemoryMonitor, SeesAnAnonymousAllocationAndItsRelease) {
  const PeakMemoryMonitor monitor(1);
  const int64_t before = current_memory_usage().anonymous_bytes;
  const size_t bytes = size_t{256} << 20;
  int64_t during = 0;
  {
    std::vector<char> block(bytes);
    std::memset(block.data(), 1, bytes);  // resident now
    EXPECT_GE(current_memory_usage().anonymous_bytes - before, int64_t(bytes) * 9 / 10);
    during = monitor.peak().anonymous_bytes;
  }
  EXPECT_GE(during - before, int64_t(bytes) * 9 / 10);
  EXPECT_LT(current_memory_usage().anonymous_bytes, during - int64_t(bytes) / 2);  // released
  EXPECT_GE(monitor.peak().anonymous_bytes, during);  // the peak stays
  EXPECT_GE(peak_resident_bytes(), int64_t(bytes));
}

TEST(SampledTrace, ExactForFewRowsAndForRowsThatAreAlike) {
  at::manual_seed(0);
  const at::Tensor X = at::randn({40, 12}, at::kDouble);
  const at::Tensor M = at::matmul(X.t(), X);
  const at::Tensor few = at::randn({100, 12}, at::kDouble);
  EXPECT_NEAR(sampled_trace(few, M), (at::matmul(few, M) * few).sum().item<double>(), 1e-9);
  // 1000 equal rows: any sample gives the exact trace.
  const at::Tensor alike = at::randn({1, 12}, at::kDouble).expand({1000, 12}).contiguous();
  const double exact = (at::matmul(alike, M) * alike).sum().item<double>();
  EXPECT_NEAR(sampled_trace(alike, M), exact, 1e-9 * exact);
}

}  // namespace
}  // namespace sarqc
