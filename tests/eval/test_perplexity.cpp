// Perplexity and KL divergence against ../shared/fixtures/reference.json (computed independently
// in float64) and against direct computations; greedy decoding against the reference text.
#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sarqc/eval/generate.h"
#include "sarqc/eval/perplexity.h"
#include "sarqc/io/tokenizer.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/synthetic.h"
#include "sarqc/model/weights.h"
#include "sarqc/util/json_file.h"
#include "test_support.h"
#include "tokenizer/tiny_tokenizers.h"

namespace sarqc {
namespace {

nlohmann::json reference_json() { return read_json_file(test::fixtures_dir() / "reference.json"); }

struct PplCase {
  std::string model, text;
};
void PrintTo(const PplCase& c, std::ostream* os) { *os << c.model << "/" << c.text; }

class ReferencePerplexity : public ::testing::TestWithParam<PplCase> {};

TEST_P(ReferencePerplexity, ReproducedWithinFiveHundredthsOfAPercent) {
  SARQC_REQUIRE_FIXTURES();
  const PplCase& c = GetParam();
  const nlohmann::json ref = reference_json()[c.model][c.text];
  EvalOptions o;
  o.model_dir = test::fixture_model(c.model);
  o.data_file = test::fixture_text(c.text);
  o.seqlen = ref["window"];
  o.max_windows = ref["windows"];
  o.progress = false;
  const EvalResult r = evaluate(o);
  EXPECT_EQ(r.total_tokens, ref["total_tokens_in_file"].get<int64_t>());
  EXPECT_EQ(r.scored_tokens, ref["scored_tokens"].get<int64_t>());
  EXPECT_NEAR(r.ppl / ref["ppl"].get<double>(), 1.0, 5e-4) << r.ppl;
  EXPECT_NEAR(r.mean_nll, ref["mean_nll"].get<double>(), 5e-4 * ref["mean_nll"].get<double>());
  EXPECT_FALSE(r.kld_mean.has_value());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ReferencePerplexity,
                         ::testing::Values(PplCase{"stories260K", "tinystories_val.txt"},
                                           PplCase{"stories260K", "wiki.test.raw"},
                                           PplCase{"babyllama-tok105", "tinystories_val.txt"},
                                           PplCase{"babyllama-tok105", "wiki.test.raw"}));

TEST(EvalWindows, NonOverlappingWindowsShiftedByOne) {
  std::vector<int32_t> ids(11);
  std::iota(ids.begin(), ids.end(), 100);
  EvalWindows w = make_eval_windows(ids, 3, 0, "t");
  ASSERT_EQ(w.inputs.sizes(), (std::vector<int64_t>{3, 3}));  // (11 - 1) / 3
  EXPECT_EQ(w.inputs[1][0].item<int64_t>(), 103);
  EXPECT_EQ(w.targets[1][0].item<int64_t>(), 104);
  EXPECT_EQ(w.targets[2][2].item<int64_t>(), 109);
  EXPECT_EQ(make_eval_windows(ids, 3, 2, "t").inputs.size(0), 2);
  EXPECT_EQ(make_eval_windows(ids, 10, 0, "t").inputs.size(0), 1);  // exactly seqlen + 1 ids
  test::expect_bad_input([&] { make_eval_windows(ids, 11, 0, "t.txt"); },
                         "t.txt: 11 tokens, but one window of --seqlen 11 needs 12");
}

TEST(Eval, KlDivergenceFromItselfIsZeroAndFromAnotherModelMatchesADirectComputation) {
  SARQC_REQUIRE_FIXTURES();
  test::TempDir dir;
  MoeFromDenseOptions moe;
  moe.noise = 0.2;
  moe_from_dense(test::fixture_model("stories260K"), dir / "moe", moe);
  EvalOptions o;
  o.model_dir = dir / "moe";
  o.data_file = test::fixture_text("tinystories_val.txt");
  o.seqlen = 64;
  o.max_windows = 3;
  o.progress = false;

  o.reference_dir = o.model_dir;
  EvalResult self = evaluate(o);
  EXPECT_NEAR(*self.kld_mean, 0.0, 1e-9);
  EXPECT_NEAR(*self.kld_max, 0.0, 1e-9);
  EXPECT_EQ(*self.top1_agreement, 1.0);
  EXPECT_DOUBLE_EQ(*self.reference_ppl, self.ppl);

  o.reference_dir = test::fixture_model("stories260K");
  const EvalResult r = evaluate(o);
  EXPECT_DOUBLE_EQ(r.ppl, self.ppl);
  // Direct: both models' full-window logits, KL(P_ref || P_model) averaged over positions.
  const auto tokenizer = load_tokenizer(o.model_dir);
  const std::string text = test::read_bytes(o.data_file);
  std::vector<int32_t> ids = {*tokenizer->special().bos_id};
  const auto body = tokenizer->encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  const EvalWindows w = make_eval_windows(ids, 64, 3, "t");
  const ModelWeights mw = ModelWeights::open(o.model_dir), rw = ModelWeights::open(o.reference_dir);
  const at::Tensor lp = at::log_softmax(StreamingModel(mw, {}).forward(w.inputs), -1).to(at::kDouble);
  const at::Tensor lq = at::log_softmax(StreamingModel(rw, {}).forward(w.inputs), -1).to(at::kDouble);
  const double kl = (lq.exp() * (lq - lp)).sum(-1).mean().item<double>();
  EXPECT_GT(kl, 1e-4);
  EXPECT_NEAR(*r.kld_mean, kl, 1e-6 * std::max(1.0, kl));
  const double ref_nll = -lq.gather(2, w.targets.unsqueeze(2)).mean().item<double>();
  EXPECT_NEAR(*r.reference_ppl, std::exp(ref_nll), 1e-6 * std::exp(ref_nll));
  EXPECT_LT(*r.top1_agreement, 1.0);
  EXPECT_GE(*r.kld_max, *r.kld_p99);
  EXPECT_GE(*r.kld_p99, 0.0);
}

// A model folder with only tokenizer.json: eval tokenizes with it, BOS from its template.
TEST(Eval, UsesTheTokenizerJsonOfTheModelFolder) {
  test::TempDir dir;
  const nlohmann::json config = {
      {"model_type", "llama"},       {"architectures", {"LlamaForCausalLM"}},
      {"hidden_size", 16},           {"intermediate_size", 32},
      {"num_hidden_layers", 1},      {"num_attention_heads", 2},
      {"num_key_value_heads", 2},    {"vocab_size", 304},
      {"max_position_embeddings", 8}, {"rms_norm_eps", 1e-5}};
  write_random_model(config, dir / "m", 3);
  test::write_tokenizer(dir / "m", test::tiny_byte_level_json());
  test::write_bytes(dir / "text.txt", "the the aaaa <|x|>y the");
  EvalOptions o;
  o.model_dir = dir / "m";
  o.data_file = dir / "text.txt";
  o.seqlen = 4;
  o.progress = false;
  const EvalResult r = evaluate(o);
  // [300] + t he | Ġthe | Ġ aa aa | Ġ | <|x|>y | Ġthe = 10 tokens.
  EXPECT_EQ(r.total_tokens, 10);
  EXPECT_EQ(r.windows, 2);
  // The perplexity of those windows, from the model's logits directly.
  const auto tokenizer = load_tokenizer(o.model_dir);
  std::vector<int32_t> ids = tokenizer->special().prefix;
  const auto body = tokenizer->encode(test::read_bytes(o.data_file));
  ids.insert(ids.end(), body.begin(), body.end());
  const EvalWindows w = make_eval_windows(ids, 4, 0, "t");
  const ModelWeights mw = ModelWeights::open(o.model_dir);
  const at::Tensor lp =
      at::log_softmax(StreamingModel(mw, {}).forward(w.inputs), -1).to(at::kDouble);
  const double nll = -lp.gather(2, w.targets.unsqueeze(2)).mean().item<double>();
  EXPECT_NEAR(r.ppl, std::exp(nll), 1e-6 * std::exp(nll));
}

TEST(Eval, Bf16PerplexityCloseToFp32) {
  SARQC_REQUIRE_FIXTURES();
  EvalOptions o;
  o.model_dir = test::fixture_model("stories260K");
  o.data_file = test::fixture_text("tinystories_val.txt");
  o.max_windows = 4;
  o.progress = false;
  const double fp32 = evaluate(o).ppl;
  o.compute.dtype = at::kBFloat16;
  const EvalResult bf16 = evaluate(o);
  EXPECT_EQ(bf16.dtype, "bf16");
  EXPECT_NEAR(bf16.ppl / fp32, 1.0, 0.01);
  EXPECT_NE(bf16.ppl, fp32);
}

TEST(Generate, GreedyContinuationMatchesTheReferenceText) {
  SARQC_REQUIRE_FIXTURES();
  const auto ref = reference_json()["stories260K"];
  const std::string key = "greedy_60_tokens_from_BOS_plus_'Once upon a time'";
  const ModelWeights w = ModelWeights::open(test::fixture_model("stories260K"));
  const auto tokenizer = load_tokenizer(test::fixture_model("stories260K"));
  StreamingModel model(w, {});
  model.keep_layers_resident();
  std::vector<int32_t> ids = tokenizer->encode_with_specials("Once upon a time");
  ASSERT_EQ(ids.front(), 1);
  const auto generated = generate_greedy(model, ids, 60, std::nullopt);
  ASSERT_EQ(generated.size(), 60u);
  ids.insert(ids.end(), generated.begin(), generated.end());
  EXPECT_EQ(tokenizer->decode(ids), ref[key].get<std::string>());
}

}  // namespace
}  // namespace sarqc
