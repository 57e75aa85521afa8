// Rotary embeddings against their published definitions (docs/formats.md §9, HF rope_type
// variants).
#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "sarqc/model/rotary.h"
#include "test_support.h"

namespace sarqc {
namespace {

ModelConfig rope_config(int64_t head_dim, double theta) {
  ModelConfig c;
  c.head_dim = head_dim;
  c.rope_theta = theta;
  c.max_position_embeddings = 4096;
  return c;
}

TEST(Rotary, DefaultFrequenciesAreThetaPowers) {
  const ModelConfig c = rope_config(16, 10000.0);
  const auto inv = rope_inv_freq(c);
  ASSERT_EQ(inv.size(), 8u);
  for (size_t i = 0; i < inv.size(); ++i)
    EXPECT_DOUBLE_EQ(inv[i], std::pow(10000.0, -2.0 * i / 16.0));
}

TEST(Rotary, LinearScalingDividesEveryFrequency) {
  ModelConfig c = rope_config(32, 500000.0);
  const auto base = rope_inv_freq(c);
  c.rope_scaling.type = RopeType::Linear;
  c.rope_scaling.factor = 4.0;
  const auto scaled = rope_inv_freq(c);
  for (size_t i = 0; i < base.size(); ++i) EXPECT_DOUBLE_EQ(scaled[i], base[i] / 4.0);
}

TEST(Rotary, DynamicEqualsDefaultWithinMaxPositionsAndIsRefusedBeyond) {
  ModelConfig c = rope_config(32, 10000.0);
  const auto base = rope_inv_freq(c);
  c.rope_scaling.type = RopeType::Dynamic;
  c.rope_scaling.factor = 2.0;
  EXPECT_EQ(rope_inv_freq(c), base);
  check_rope_seqlen(c, 4096, "--seqlen");
  test::expect_error([&] { check_rope_seqlen(c, 4097, "--seqlen"); }, ErrorKind::Usage,
                     "--seqlen 4097 exceeds max_position_embeddings 4096");
}

// Llama 3.1's published setting: factor 8, low 1, high 4, original context 8192, theta 500000.
TEST(Rotary, Llama3ScalingFollowsTheThreeWavelengthBands) {
  ModelConfig c = rope_config(128, 500000.0);
  const auto base = rope_inv_freq(c);
  c.rope_scaling = {RopeType::Llama3, 8.0, 1.0, 4.0, 8192};
  const auto scaled = rope_inv_freq(c);
  int high = 0, low = 0, mid = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    const double wavelength = 2 * M_PI / base[i];
    if (wavelength < 8192.0 / 4.0) {  // short wavelengths keep their frequency
      EXPECT_DOUBLE_EQ(scaled[i], base[i]);
      ++high;
    } else if (wavelength > 8192.0 / 1.0) {  // long wavelengths are interpolated by the factor
      EXPECT_DOUBLE_EQ(scaled[i], base[i] / 8.0);
      ++low;
    } else {  // in between: the smooth blend, written here as interpolation in 1/wavelength
      const double smooth = (8192.0 / wavelength - 1.0) / (4.0 - 1.0);
      EXPECT_NEAR(scaled[i], base[i] / 8.0 + smooth * (base[i] - base[i] / 8.0), 1e-15);
      EXPECT_GT(scaled[i], base[i] / 8.0);
      EXPECT_LT(scaled[i], base[i]);
      ++mid;
    }
  }
  // All three bands occur for this head size, so the test covers each branch.
  EXPECT_GT(high, 0);
  EXPECT_GT(low, 0);
  EXPECT_GT(mid, 0);
}

// YaRN as Qwen's long-context configs set it (factor 4, original context 32768, theta 1e6):
// a dimension that turns more than beta_fast = 32 times over the original context keeps its
// frequency, one that turns less than beta_slow = 1 time is interpolated by the factor, and
// those between lie strictly between (arXiv:2309.00071 §3.2). cos and sin are scaled by
// 0.1·ln(factor) + 1.
TEST(Rotary, YarnKeepsFastDimensionsInterpolatesSlowOnesAndScalesCosAndSin) {
  ModelConfig c = rope_config(128, 1e6);
  const auto base = rope_inv_freq(c);
  c.rope_scaling.type = RopeType::Yarn;
  c.rope_scaling.factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 32768;
  c.rope_scaling.attention_factor = 0.1 * std::log(4.0) + 1.0;
  const auto scaled = rope_inv_freq(c);
  int fast = 0, slow = 0, mid = 0;
  for (size_t i = 0; i < base.size(); ++i) {
    const double rotations = 32768.0 * base[i] / (2 * M_PI);
    if (rotations > 32.0) {
      EXPECT_DOUBLE_EQ(scaled[i], base[i]);
      ++fast;
    } else if (rotations < 1.0) {
      EXPECT_DOUBLE_EQ(scaled[i], base[i] / 4.0);
      ++slow;
    } else {
      EXPECT_GE(scaled[i], base[i] / 4.0);
      EXPECT_LE(scaled[i], base[i]);
      ++mid;
    }
  }
  EXPECT_GT(fast, 0);
  EXPECT_GT(slow, 0);
  EXPECT_GT(mid, 0);
  const RotaryTables t = make_rotary_tables(c, 8, c10::kCPU, at::kDouble);
  const at::Tensor norm = (t.cos.pow(2) + t.sin.pow(2)).sqrt();
  EXPECT_TRUE(at::allclose(norm, at::full_like(norm, 1.0 + 0.1 * std::log(4.0)), 0, 1e-12));
}

// Naive rotation of pair (i, i + hd/2) by angle p·inv_freq_i, in double.
at::Tensor naive_rotary(const at::Tensor& x, const std::vector<double>& inv) {
  at::Tensor out = at::empty_like(x, x.options().dtype(at::kDouble));
  const auto acc = x.to(at::kDouble).contiguous();
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), hd = x.size(3), half = hd / 2;
  auto in = acc.accessor<double, 4>();
  auto o = out.accessor<double, 4>();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t p = 0; p < T; ++p)
        for (int64_t i = 0; i < half; ++i) {
          const double a = p * inv[i], c = std::cos(a), s = std::sin(a);
          const double x1 = in[b][h][p][i], x2 = in[b][h][p][i + half];
          o[b][h][p][i] = x1 * c - x2 * s;
          o[b][h][p][i + half] = x2 * c + x1 * s;
        }
  return out;
}

TEST(Rotary, ApplyMatchesPairwiseRotationForEveryScaling) {
  at::manual_seed(0);
  const at::Tensor x = at::randn({2, 3, 40, 16}, at::kDouble);
  for (RopeType type : {RopeType::Default, RopeType::Linear, RopeType::Llama3}) {
    ModelConfig c = rope_config(16, 10000.0);
    c.rope_scaling = {type, 2.0, 1.0, 4.0, 64};
    const RotaryTables t = make_rotary_tables(c, 64, c10::kCPU, at::kDouble);
    const at::Tensor got = apply_rotary(x, t);
    EXPECT_TRUE(at::allclose(got, naive_rotary(x, rope_inv_freq(c)), 1e-12, 1e-12))
        << rope_type_name(type);
  }
}

TEST(Rotary, ScoresDependOnlyOnRelativePosition) {
  at::manual_seed(1);
  ModelConfig c = rope_config(8, 10000.0);
  const RotaryTables t = make_rotary_tables(c, 32, c10::kCPU, at::kDouble);
  const at::Tensor q = at::randn({1, 1, 1, 8}, at::kDouble).expand({1, 1, 32, 8});
  const at::Tensor k = at::randn({1, 1, 1, 8}, at::kDouble).expand({1, 1, 32, 8});
  const at::Tensor rq = apply_rotary(q, t)[0][0], rk = apply_rotary(k, t)[0][0];
  // <R_p q, R_s k> == <R_{p+5} q, R_{s+5} k>
  for (int64_t p : {0, 3, 10})
    for (int64_t s : {0, 7, 20})
      EXPECT_NEAR(rq[p].dot(rk[s]).item<double>(), rq[p + 5].dot(rk[s + 5]).item<double>(), 1e-12);
  // and rotation preserves length
  EXPECT_TRUE(at::allclose(rq.norm(2, {-1}), q[0][0].norm(2, {-1}), 1e-12, 1e-12));
}

TEST(Rotary, RejectsMismatchedShapes) {
  const ModelConfig c = rope_config(8, 10000.0);
  const RotaryTables t = make_rotary_tables(c, 4, c10::kCPU, at::kFloat);
  EXPECT_THROW(apply_rotary(at::zeros({1, 1, 5, 8}), t), c10::Error);   // too many positions
  EXPECT_THROW(apply_rotary(at::zeros({1, 1, 4, 16}), t), c10::Error);  // wrong head_dim
}

}  // namespace
}  // namespace sarqc
