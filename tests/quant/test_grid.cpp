// The uniform quantizer of docs/methods.md §2.
#include <limits>
#include <utility>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "sarqc/quant/grid.h"
#include "test_support.h"

namespace sarqc {
namespace {

double fp16(double v) { return at::tensor({v}, at::kDouble).to(at::kHalf).item<double>(); }

TEST(Grid, SymmetricScaleIsTwiceMaxOverMaxqRoundedDownToFp16) {
  at::manual_seed(4);
  const at::Tensor x = at::randn({64, 9}, at::kDouble);
  for (int bits : {2, 3, 4, 8}) {
    const QuantGrid g{bits, -1, true, false};
    const GroupParams p = find_params(x, g);
    const at::Tensor a = std::get<0>(x.abs().max(1));
    const at::Tensor exact = 2 * a / g.maxq();
    // Representable in fp16, not above 2a/maxq, and the largest such value.
    EXPECT_TRUE(at::equal(p.scale.to(at::kHalf).to(at::kDouble), p.scale));
    EXPECT_TRUE((p.scale <= exact).all().item<bool>());
    // The next fp16 above a normal value v is v + 2^(floor(log2 v) − 10).
    const at::Tensor next_up = p.scale + at::pow(2.0, at::floor(at::log2(p.scale)) - 10);
    EXPECT_TRUE(at::equal(next_up.to(at::kHalf).to(at::kDouble), next_up));
    EXPECT_TRUE((next_up > exact).all().item<bool>());
    EXPECT_TRUE((p.zero == double(int64_t{1} << (bits - 1))).all().item<bool>());
    // So the row's most negative extreme −a lands on code 0 (its magnitude is the largest).
    const at::Tensor codes = quantize_codes(-a.unsqueeze(1), p, g.maxq());
    EXPECT_TRUE((codes == 0).all().item<bool>()) << bits;
  }
}

// The fp16 value one step above v (v a positive fp16 value held in a double).
at::Tensor fp16_next_up(const at::Tensor& v) {
  return (v.to(at::kHalf).view(at::kShort) + 1).view(at::kHalf).to(at::kDouble);
}

TEST(Grid, SubnormalScalesAreExactFp16AndHugeOnesSaturate) {
  // Row maxima whose scales fall below 2^-14 (fp16 subnormals), below 2^-24, and beyond 65504.
  const at::Tensor maxima = at::tensor({3e-6, 2.5e-5, 7.7e-3, 1e-4, 1e-9, 3e5, 1e9}, at::kDouble);
  const at::Tensor x = at::cat({maxima.unsqueeze(1), -0.5 * maxima.unsqueeze(1),
                                0.25 * maxima.unsqueeze(1)},
                               1);
  for (int bits : {4, 8}) {
    SCOPED_TRACE(bits);
    const QuantGrid g{bits, -1, true, false};
    const GroupParams p = find_params(x, g);
    const at::Tensor exact = 2 * maxima / g.maxq();
    EXPECT_TRUE(at::equal(p.scale.to(at::kHalf).to(at::kDouble), p.scale)) << p.scale;
    const at::Tensor representable = (exact >= 5.960464477539063e-08).logical_and(exact <= 65504);
    // In fp16's range: the largest fp16 value not above 2a/maxq.
    EXPECT_TRUE(at::where(representable, p.scale <= exact, at::ones_like(representable))
                    .all()
                    .item<bool>())
        << p.scale << exact;
    EXPECT_TRUE(at::where(representable, fp16_next_up(p.scale) > exact,
                          at::ones_like(representable))
                    .all()
                    .item<bool>())
        << p.scale << exact;
    // Below it: the smallest subnormal; above it: the largest value, and the codes saturate.
    EXPECT_EQ(p.scale[4].item<double>(), 5.960464477539063e-08);
    EXPECT_EQ(p.scale[6].item<double>(), 65504.0);
    const at::Tensor codes = quantize_codes(x, p, g.maxq());
    const at::Tensor deq = dequantize_codes(codes, p);
    EXPECT_TRUE(at::isfinite(deq).all().item<bool>());
    EXPECT_TRUE(((codes >= 0).logical_and(codes <= g.maxq())).all().item<bool>());
    // Within range the grid holds interior values (−a/2, a/4) to half a step (+a is clipped to
    // a − s by design: the symmetric grid's top code is 2^(b−1) − 1 steps above zero).
    const at::Tensor err = (deq - x).abs().narrow(0, 0, 6).narrow(1, 1, 2);
    EXPECT_TRUE((err <= p.scale.narrow(0, 0, 6).unsqueeze(1) * 0.5 + 1e-18).all().item<bool>())
        << err;
  }
}

TEST(Grid, SymmetricGridClipsTheMostPositiveValue) {
  const at::Tensor x = at::tensor({-0.7, 0.3, 0.1, 0.7}, at::kDouble).view({1, 4});
  const QuantGrid g{4, -1, true, false};
  const GroupParams p = find_params(x, g);
  const at::Tensor codes = quantize_codes(x, p, g.maxq());
  EXPECT_EQ(codes[0][0].item<double>(), 0);
  EXPECT_EQ(codes[0][3].item<double>(), 15);  // +a clips to s·(maxq − z) = 7s
  EXPECT_EQ(p.scale.item<double>(), fp16(p.scale.item<double>()));
}

TEST(Grid, AsymmetricRangeIncludesZeroAndAllZeroRowsGetUnitRange) {
  const QuantGrid g{3, -1, false, false};
  const at::Tensor x = at::tensor({0.2, 0.5, 0.9, 0.0, 0.0, 0.0}, at::kDouble).view({2, 3});
  const GroupParams p = find_params(x, g);
  const double s0 = fp16(0.9 / 7);  // asymmetric scales round to nearest
  EXPECT_EQ(p.scale[0].item<double>(), s0);  // lo = min(0, 0.2) = 0
  EXPECT_EQ(p.zero[0].item<double>(), 0);
  const double s1 = fp16(2.0 / 7);
  EXPECT_EQ(p.scale[1].item<double>(), s1);  // [-1, 1]
  EXPECT_EQ(p.zero[1].item<double>(), std::nearbyint(1 / s1));
}

TEST(Grid, RoundsHalfToEven) {
  const GroupParams p{at::ones({1}, at::kDouble), at::zeros({1}, at::kDouble)};
  const at::Tensor x = at::tensor({0.5, 1.5, 2.5, 3.5}, at::kDouble).view({1, 4});
  const at::Tensor c = quantize_codes(x, p, 15);
  EXPECT_TRUE(at::equal(c, at::tensor({0.0, 2.0, 2.0, 4.0}, at::kDouble).view({1, 4})));
}

TEST(Grid, MseClipNeverIncreasesTheClipError) {
  at::manual_seed(3);
  const at::Tensor x = at::randn({16, 64}, at::kDouble) * at::rand({16, 1}, at::kDouble);
  for (bool sym : {true, false}) {
    QuantGrid g{3, -1, sym, false};
    const GroupParams plain = find_params(x, g);
    g.mse_clip = true;
    const GroupParams clip = find_params(x, g);
    auto err = [&](const GroupParams& p) {
      return (dequantize_codes(quantize_codes(x, p, 7), p) - x).abs().pow(2.4).sum(1);
    };
    EXPECT_TRUE((err(clip) <= err(plain) + 1e-12).all().item<bool>());
    EXPECT_TRUE((err(clip) < err(plain) - 1e-9).any().item<bool>());  // and it does help
  }
}

TEST(Grid, MseClipPicksTheFirstBestOfTheEightyShrinkSteps) {
  // The search written one step at a time (the reference gptq.py's loop): candidate params of
  // the range [p·min, p·max] for p = 1 − i/100, i < 80, kept when strictly better. Shapes on
  // both sides of the vectorised search's chunking (64 × 512 fp64 needs two chunks).
  at::manual_seed(4);
  for (const auto& [rows, k] : {std::pair<int64_t, int64_t>{16, 64}, {64, 512}})
    for (bool sym : {true, false}) {
      const at::Tensor x = at::randn({rows, k}, at::kDouble) * at::rand({rows, 1}, at::kDouble);
      const QuantGrid plain{3, -1, sym, false};
      const at::Tensor lo = std::get<0>(x.min(1)), hi = std::get<0>(x.max(1));
      at::Tensor best_err = at::full({rows}, std::numeric_limits<double>::infinity(), at::kDouble);
      GroupParams expected = find_params(x, plain);
      for (int i = 0; i < 80; ++i) {
        const double p = 1.0 - i / 100.0;
        const GroupParams cand = find_params(at::stack({lo * p, hi * p}, 1), plain);
        const at::Tensor q = dequantize_codes(quantize_codes(x, cand, 7), cand);
        const at::Tensor err = (q - x).abs().pow(2.4).sum(1);
        const at::Tensor better = err < best_err;
        best_err = at::where(better, err, best_err);
        expected.scale = at::where(better, cand.scale, expected.scale);
        expected.zero = at::where(better, cand.zero, expected.zero);
      }
      QuantGrid clip = plain;
      clip.mse_clip = true;
      const GroupParams got = find_params(x, clip);
      EXPECT_TRUE(at::equal(got.scale, expected.scale)) << rows << " " << k << " " << sym;
      EXPECT_TRUE(at::equal(got.zero, expected.zero)) << rows << " " << k << " " << sym;
    }
}

TEST(Grid, ValidationNamesTheFlag) {
  test::expect_error([] { QuantGrid{5, 128, true, false}.validate(); }, ErrorKind::Usage,
                     "--bits: expected 2, 3, 4 or 8, got 5");
  test::expect_error([] { QuantGrid{4, 0, true, false}.validate(); }, ErrorKind::Usage,
                     "--group-size");
}

}  // namespace
}  // namespace sarqc
