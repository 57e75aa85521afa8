// The uniform quantizer of methods.md §2.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "sarqc/quant/grid.h"
#include "test_support.h"

namespace sarqc {
namespace {

TEST(Grid, SymmetricScaleIsTwiceMaxOverMaxqRoundedToFp16) {
  const at::Tensor x = at::tensor({-0.7, 0.3, 0.1, 0.05}, at::kDouble).view({1, 4});
  const QuantGrid g{4, -1, true, false};
  const GroupParams p = find_params(x, g);
  const double s = at::tensor({2 * 0.7 / 15}, at::kDouble).to(at::kHalf).item<double>();
  EXPECT_EQ(p.scale.item<double>(), s);
  EXPECT_EQ(p.zero.item<double>(), 8);
  const at::Tensor codes = quantize_codes(x, p, g.maxq());
  EXPECT_EQ(codes[0][0].item<double>(), std::max(0.0, std::nearbyint(-0.7 / s) + 8));
  // The most positive grid value is s·(maxq − z) = s·7: 0.7 would clip there.
  const at::Tensor big = at::tensor({0.7}, at::kDouble).view({1, 1});
  EXPECT_EQ(quantize_codes(big, p, g.maxq()).item<double>(), 15);
}

TEST(Grid, AsymmetricRangeIncludesZeroAndAllZeroRowsGetUnitRange) {
  const QuantGrid g{3, -1, false, false};
  const at::Tensor x = at::tensor({0.2, 0.5, 0.9, 0.0, 0.0, 0.0}, at::kDouble).view({2, 3});
  const GroupParams p = find_params(x, g);
  const double s0 = at::tensor({0.9 / 7}, at::kDouble).to(at::kHalf).item<double>();
  EXPECT_EQ(p.scale[0].item<double>(), s0);  // lo = min(0, 0.2) = 0
  EXPECT_EQ(p.zero[0].item<double>(), 0);
  const double s1 = at::tensor({2.0 / 7}, at::kDouble).to(at::kHalf).item<double>();
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

TEST(Grid, ValidationNamesTheFlag) {
  test::expect_error([] { QuantGrid{5, 128, true, false}.validate(); }, ErrorKind::Usage,
                     "--bits: expected 2, 3, 4 or 8, got 5");
  test::expect_error([] { QuantGrid{4, 0, true, false}.validate(); }, ErrorKind::Usage,
                     "--group-size");
}

}  // namespace
}  // namespace sarqc
