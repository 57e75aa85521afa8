// Gram accumulation against X Xᵀ computed at once; calibration windows.
#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "sarqc/calib/calibration_set.h"
#include "sarqc/calib/exact_sum.h"
#include "sarqc/calib/gram.h"
#include "sarqc/io/tokenizer.h"
#include "sarqc/model/streaming_model.h"
#include "sarqc/model/weights.h"
#include "sarqc/util/memory_monitor.h"
#include "test_support.h"

namespace sarqc {
namespace {

TEST(Gram, RunningAverageEqualsTheGramOfAllSequencesAtOnce) {
  at::manual_seed(0);
  const int64_t n = 12, L = 7;
  std::vector<at::Tensor> sequences;
  for (int s = 0; s < 9; ++s) sequences.push_back(at::randn({L, n}, at::kDouble));
  const at::Tensor X = at::cat(sequences);                    // [9·L, n]
  const at::Tensor expected = 2.0 / 9 * at::matmul(X.t(), X);  // (2/N) Σ x xᵀ, N sequences
  // Batches of 1, 3 and 5 sequences.
  GramAccumulator acc(n, c10::kCPU);
  acc.add(sequences[0], 1);
  acc.add(at::cat({sequences[1], sequences[2], sequences[3]}), 3);
  acc.add(at::cat({sequences[4], sequences[5], sequences[6], sequences[7], sequences[8]}), 5);
  EXPECT_EQ(acc.sequences(), 9);
  EXPECT_EQ(acc.tokens(), 9 * L);
  EXPECT_EQ(acc.matrix().scalar_type(), at::kFloat);
  // fp32 accumulation of T = 63 products per entry after rounding the inputs to fp32, plus a
  // rescale per batch (and per merge): |error_ij| ≤ (T + 8)·2^-24·(2/N)Σ_t |x_ti||x_tj|.
  const at::Tensor bound =
      (9 * L + 8) * std::ldexp(1.0, -24) * 2.0 / 9 * at::matmul(X.abs().t(), X.abs());
  EXPECT_TRUE(((acc.matrix().to(at::kDouble) - expected).abs() <= bound).all().item<bool>());
  // A reduction: two halves merged, in the other order, equal the whole bit for bit (the batch
  // terms are summed exactly).
  GramAccumulator a(n, c10::kCPU), b(n, c10::kCPU), in_order(n, c10::kCPU);
  for (int s = 0; s < 9; ++s) in_order.add(sequences[s], 1);
  for (int s = 4; s < 9; ++s) a.add(sequences[s], 1);
  for (int s = 3; s >= 0; --s) b.add(sequences[s], 1);
  a.merge(b);
  EXPECT_TRUE(at::equal(a.matrix(), in_order.matrix()));
  EXPECT_TRUE(at::equal(a.abs_mean(), in_order.abs_mean()));
  EXPECT_TRUE(((a.matrix().to(at::kDouble) - expected).abs() <= bound).all().item<bool>());
  EXPECT_EQ(a.tokens(), 9 * L);
}

// Terms whose bits all lie at or above 2^-48 are summed exactly: against a 128-bit integer sum of
// the same terms in units of 2^-48, for any order and any split into accumulators, with magnitudes
// from 2^-25 to 2^50 and both signs, so that a floating-point sum would depend on the order.
TEST(ExactSum, SumsDoNotDependOnTheOrderOrTheSplit) {
  at::manual_seed(3);
  const int kTerms = 150;  // more than one carry interval (64)
  std::vector<at::Tensor> terms;
  for (int i = 0; i < kTerms; ++i) {
    const at::Tensor exponent = at::randint(-25, 50, {5, 7}, at::kDouble);
    const at::Tensor sign = at::randint(0, 2, {5, 7}, at::kDouble) * 2 - 1;
    terms.push_back((sign * at::exp2(exponent) * (1 + at::rand({5, 7}, at::kDouble))).to(at::kFloat));
  }
  std::vector<__int128> exact(35, 0);
  for (const auto& t : terms) {
    const at::Tensor d = t.to(at::kDouble).reshape(-1).contiguous();
    for (int64_t e = 0; e < 35; ++e) {
      const double v = d[e].item<double>();
      const double units = std::ldexp(v, 48);  // an integer: fp32 with exponent >= -25
      ASSERT_EQ(units, std::trunc(units));
      exact[static_cast<size_t>(e)] += static_cast<__int128>(units);
    }
  }
  // `strided` gets non-contiguous views of the same terms: the element-wise ATen path (that of
  // CUDA tensors), against the one-pass host loop the others take.
  ExactSum forward({5, 7}, c10::kCPU), backward({5, 7}, c10::kCPU), first({5, 7}, c10::kCPU),
      second({5, 7}, c10::kCPU), strided({5, 7}, c10::kCPU);
  for (int i = 0; i < kTerms; ++i) {
    const at::Tensor view = terms[static_cast<size_t>(i)].t().contiguous().t();
    ASSERT_FALSE(view.is_contiguous());
    strided.add(view);
    forward.add(terms[static_cast<size_t>(i)]);
    backward.add(terms[static_cast<size_t>(kTerms - 1 - i)]);
    (i % 3 == 0 ? first : second).add(terms[static_cast<size_t>(i)]);
  }
  first.add(second);
  const at::Tensor got = forward.value().reshape(-1);
  EXPECT_TRUE(at::equal(got, backward.value().reshape(-1)));
  EXPECT_TRUE(at::equal(got, first.value().reshape(-1)));
  EXPECT_TRUE(at::equal(got, strided.value().reshape(-1)));
  // value() rounds the integers to fp64 (twice): within 2^-51 relative of the exact sum, plus
  // the rounding of the low part (below 2^56 units of 2^-48: 2^-45).
  for (int64_t e = 0; e < 35; ++e) {
    const long double want = std::ldexp(static_cast<long double>(exact[static_cast<size_t>(e)]), -48);
    const long double diff = std::fabs(static_cast<long double>(got[e].item<double>()) - want);
    EXPECT_LE(diff, std::ldexp(std::fabs(want), -51) + std::ldexp(1.0L, -45)) << e;
  }
  // Against plain summation in fp32, which the spread of magnitudes makes order-dependent.
  at::Tensor plain = at::zeros({5, 7});
  for (const auto& t : terms) plain += t;
  EXPECT_FALSE(at::equal(got.to(at::kFloat), plain.reshape(-1)))
      << "the terms do not exercise what a plain sum gets wrong";
}

// reduce() over many ranks sends the low part in two halves so that it cannot overflow: 200
// ranks holding the same terms (an all-reduce that multiplies by 200) sum to the same bits as
// one accumulator given every term 200 times.
TEST(ExactSum, ReduceOverManyRanksEqualsAddingEveryRanksTerms) {
  at::manual_seed(4);
  const at::Tensor a = at::randn({4, 4}) * 1e6, b = at::rand({4, 4}) * 1e-6;
  ExactSum rank({4, 4}, c10::kCPU), all({4, 4}, c10::kCPU);
  rank.add(a);
  rank.add(b);
  for (int r = 0; r < 200; ++r) {
    all.add(a);
    all.add(b);
  }
  rank.reduce([](at::Tensor& t) { t.mul_(200); }, 200);
  EXPECT_TRUE(at::equal(rank.value(), all.value()));
}

TEST(ExactSum, NonFiniteOrHugeTermsMakeTheSumNaN) {
  for (const double bad : {std::nan(""), static_cast<double>(INFINITY), std::ldexp(1.0, 53)}) {
    ExactSum s({3}, c10::kCPU);
    s.add(at::ones({3}, at::kDouble));
    at::Tensor t = at::zeros({3}, at::kDouble);
    t[1] = bad;
    s.add(t);
    EXPECT_TRUE(at::isnan(s.value()).all().item<bool>()) << bad;
    ExactSum strided({3}, c10::kCPU);  // the element-wise path
    strided.add(at::stack({t, t}, 1).select(1, 0));
    EXPECT_TRUE(at::isnan(strided.value()).all().item<bool>()) << bad;
  }
  ExactSum fine({3}, c10::kCPU);
  fine.add(at::full({3}, std::ldexp(1.0, 51), at::kDouble));
  EXPECT_EQ(fine.value()[0].item<double>(), std::ldexp(1.0, 51));
}

// value() converts in row blocks: the same numbers as converting the whole tensor at once (a
// block boundary inside a row, and a scale), and a resident peak of the result plus bounded
// scratch, measured (the whole-tensor conversion took ~56 extra bytes per element).
TEST(ExactSum, ValueIsBlockwiseExactAndItsMemoryIsBounded) {
  const int64_t n = 2900;  // 8.4 Mi elements: several blocks, and a row cut by a block boundary
  const at::Tensor term = at::randn({n, n}, at::TensorOptions().dtype(at::kFloat)
                                               .device(c10::kCPU)) * 1e3;
  ExactSum s({n, n}, c10::kCPU);
  s.add(term);
  s.add(term * 0.5);
  // The reference conversion, by hand on whole tensors: high·2^8 + low·2^-48 (carried), scaled.
  const at::Tensor expected =
      ((term.to(at::kDouble) + (term * 0.5).to(at::kDouble)) * (2.0 / 3.0)).to(at::kFloat);
  MemoryUsage before = current_memory_usage();
  at::Tensor v;
  int64_t grown = 0;
  {
    PeakMemoryMonitor monitor(1);
    v = s.value(at::kFloat, 2.0 / 3.0);
    grown = monitor.peak().anonymous_bytes - before.anonymous_bytes;
  }
  // Each term is exact in the integers (fp32 values of magnitude < 2^52 with no bits below
  // 2^-48 to drop), so the sum is exact and rounds once, as fp64 arithmetic of two fp32 terms.
  EXPECT_TRUE(at::equal(v, expected));
  const int64_t result = n * n * 4;
  if (before.anonymous_bytes == 0) GTEST_SKIP() << "no /proc/self/status to measure memory";
  EXPECT_LT(grown, result + ExactSum::kValueScratchBytes + (int64_t{32} << 20))
      << "grew " << grown / (1 << 20) << " MiB for a " << result / (1 << 20) << " MiB result";
}

TEST(CalibrationSet, SeededWindowsAreRawSlicesOfTheTokens) {
  std::vector<int32_t> tokens(1000);
  std::iota(tokens.begin(), tokens.end(), 0);
  const CalibrationSet a = sample_windows(tokens, 6, 50, 7, "t");
  const CalibrationSet b = sample_windows(tokens, 6, 50, 7, "t");
  const CalibrationSet c = sample_windows(tokens, 6, 50, 8, "t");
  ASSERT_EQ(a.ids.sizes(), (std::vector<int64_t>{6, 50}));
  EXPECT_TRUE(at::equal(a.ids, b.ids));
  EXPECT_EQ(a.fingerprint, b.fingerprint);
  EXPECT_NE(a.fingerprint, c.fingerprint);
  for (int64_t s = 0; s < 6; ++s) {  // consecutive ids: each window is one contiguous slice
    const int64_t first = a.ids[s][0].item<int64_t>();
    EXPECT_TRUE(at::equal(a.ids[s], at::arange(first, first + 50, at::kLong)));
    EXPECT_LE(first + 50, 1000);
  }
  EXPECT_EQ(sample_windows(tokens, 3, 1000, 0, "t").ids[0][0].item<int64_t>(), 0);
  test::expect_bad_input([&] { sample_windows(tokens, 3, 1001, 0, "calib.txt"); },
                         "calib.txt: 1000 tokens found, but one calibration window of --seqlen "
                         "1001 needs 1001");
}

TEST(CalibrationSet, TokenFilesAsJsonOrRawInt32) {
  test::TempDir dir;
  test::write_bytes(dir / "ids.json", "[5, 6, 7, 8]\n");
  EXPECT_EQ(read_token_file(dir / "ids.json"), (std::vector<int32_t>{5, 6, 7, 8}));
  const std::vector<int32_t> raw = {9, 10, 11};
  test::write_bytes(dir / "ids.bin", std::string(reinterpret_cast<const char*>(raw.data()), 12));
  EXPECT_EQ(read_token_file(dir / "ids.bin"), raw);
  test::write_bytes(dir / "odd.bin", "abcde");
  test::expect_bad_input([&] { read_token_file(dir / "odd.bin"); }, "5 bytes is not a whole number");
  test::write_bytes(dir / "neg.json", "[1, -2]");
  test::expect_bad_input([&] { read_token_file(dir / "neg.json"); }, "non-negative integer");
}

TEST(CalibrationSet, GivenWindowsAreTakenAsTheyAre) {
  test::TempDir dir;
  test::write_bytes(dir / "w.json", "[[1, 2, 3], [7, 8, 9]]");
  const CalibrationSet set = calibration_from_token_file(dir / "w.json", 128, 2048, 0, 10);
  EXPECT_TRUE(at::equal(set.ids, at::tensor({1, 2, 3, 7, 8, 9}, at::kLong).view({2, 3})));
  test::write_bytes(dir / "ragged.json", "[[1, 2, 3], [7, 8]]");
  test::expect_bad_input([&] { calibration_from_token_file(dir / "ragged.json", 1, 1, 0, 10); },
                         "window 1 has 2 token ids and window 0 has 3");
  test::write_bytes(dir / "big.json", "[[1, 2], [7, 10]]");
  test::expect_bad_input([&] { calibration_from_token_file(dir / "big.json", 1, 1, 0, 10); },
                         "window 1 position 1: expected a token id below the model's vocab_size 10");
}

TEST(CalibrationSet, FromFixtureTextUsesTheModelTokenizer) {
  SARQC_REQUIRE_FIXTURES();
  const auto tokenizer = load_tokenizer(test::fixture_model("stories260K"));
  const CalibrationSet set = calibration_from_text(
      *tokenizer, test::fixture_text("tinystories_train.txt"), 4, 128, 0);
  EXPECT_EQ(set.ids.sizes(), (std::vector<int64_t>{4, 128}));
  EXPECT_GT(set.source_tokens, 100000);
  EXPECT_LT(set.ids.max().item<int64_t>(), 512);
}

TEST(CalibrationSet, SampledFromTheModelIsSeededAndStartsAtBos) {
  SARQC_REQUIRE_FIXTURES();
  const ModelWeights w = ModelWeights::open(test::fixture_model("stories260K"));
  StreamingModel model(w, {});
  model.keep_layers_resident();
  const CalibrationSet a = calibration_from_model(model, 1, 3, 40, 5);
  const CalibrationSet b = calibration_from_model(model, 1, 3, 40, 5);
  const CalibrationSet c = calibration_from_model(model, 1, 3, 40, 6);
  ASSERT_EQ(a.ids.sizes(), (std::vector<int64_t>{3, 40}));
  EXPECT_TRUE(at::equal(a.ids, b.ids));
  EXPECT_EQ(a.fingerprint, b.fingerprint);
  EXPECT_NE(a.fingerprint, c.fingerprint);
  EXPECT_TRUE((a.ids.select(1, 0) == 1).all().item<bool>());
  EXPECT_TRUE((a.ids >= 0).all().item<bool>() && (a.ids < 512).all().item<bool>());
  // A trained model's samples are text-like: a near-zero temperature gives its greedy text.
  const auto tokenizer = load_tokenizer(test::fixture_model("stories260K"));
  const CalibrationSet greedy = calibration_from_model(model, 1, 1, 20, 0, 1e-4);
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < 20; ++t) ids.push_back(static_cast<int32_t>(greedy.ids[0][t].item<int64_t>()));
  EXPECT_EQ(tokenizer->decode(ids).rfind("Once upon a time", 0), 0u) << tokenizer->decode(ids);
}

}  // namespace
}  // namespace sarqc
