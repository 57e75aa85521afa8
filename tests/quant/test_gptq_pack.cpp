// Packing against docs/formats.md §5 and §8: fixed test words, and an unpacker written here from
// the per-width descriptions (not the bit-stream formulation the packer uses).
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "sarqc/quant/gptq_format.h"
#include "sarqc/quant/gptq_pack.h"
#include "sarqc/io/safetensors_reader.h"
#include "sarqc/io/safetensors_writer.h"
#include "sarqc/rounding/gptq.h"
#include "test_support.h"

namespace sarqc {
namespace {

// docs/formats.md §5: b = 2, 4, 8: value k in word k / (32/b) at bit (k mod (32/b))·b.
// b = 3 by the table: w0 holds v0..v9 at 3k and bits 0-1 of v10 at 30-31; w1 bit 0 is bit 2 of
// v10, v11..v20 at 3k+1, bit 31 is bit 0 of v21; w2 bits 0-1 are bits 1-2 of v21, v22..v31 at
// 3k+2.
std::vector<uint32_t> reference_unpack_column(const std::vector<uint32_t>& words, int bits) {
  std::vector<uint32_t> v;
  if (bits != 3) {
    const int pf = 32 / bits;
    const uint32_t mask = (1u << bits) - 1;
    for (size_t k = 0; k < words.size() * pf; ++k) v.push_back((words[k / pf] >> ((k % pf) * bits)) & mask);
    return v;
  }
  for (size_t w = 0; w + 2 < words.size(); w += 3) {
    const uint32_t w0 = words[w], w1 = words[w + 1], w2 = words[w + 2];
    for (int k = 0; k < 10; ++k) v.push_back((w0 >> (3 * k)) & 7);
    v.push_back(((w0 >> 30) & 3) | ((w1 & 1) << 2));
    for (int k = 0; k < 10; ++k) v.push_back((w1 >> (3 * k + 1)) & 7);
    v.push_back((w1 >> 31) | ((w2 & 3) << 1));
    for (int k = 0; k < 10; ++k) v.push_back((w2 >> (3 * k + 2)) & 7);
  }
  return v;
}

uint32_t word(const at::Tensor& packed, int64_t r, int64_t c) {
  return static_cast<uint32_t>(packed[r][c].item<int32_t>());
}

TEST(GptqPack, FixedTestWordsOfFormatsMd) {
  // 4-bit codes 0..7 in one word.
  at::Tensor codes = at::arange(8, at::kInt).unsqueeze(1);
  EXPECT_EQ(word(pack_rows(codes, 4), 0, 0), 0x76543210u);
  // Sym zeros v1 / v2, packed along the output dimension.
  const std::vector<std::tuple<int, uint32_t, uint32_t>> zeros = {
      {2, 0x55555555u, 0xAAAAAAAAu}, {4, 0x77777777u, 0x88888888u}, {8, 0x7F7F7F7Fu, 0x80808080u}};
  for (const auto& [bits, v1, v2] : zeros) {
    const int64_t m = 32 / bits;
    const int64_t z = int64_t{1} << (bits - 1);
    EXPECT_EQ(word(pack_qzeros(at::full({1, m}, z - 1, at::kInt), bits), 0, 0), v1) << bits;
    EXPECT_EQ(word(pack_qzeros(at::full({1, m}, z, at::kInt), bits), 0, 0), v2) << bits;
  }
  // 3-bit, all 32 fields = 3 (sym v1) and = 4 (sym v2).
  const at::Tensor threes = pack_rows(at::full({32, 1}, 3, at::kInt), 3);
  EXPECT_EQ(word(threes, 0, 0), 0xDB6DB6DBu);
  EXPECT_EQ(word(threes, 1, 0), 0xB6DB6DB6u);
  EXPECT_EQ(word(threes, 2, 0), 0x6DB6DB6Du);
  const at::Tensor fours = pack_rows(at::full({32, 1}, 4, at::kInt), 3);
  EXPECT_EQ(word(fours, 0, 0), 0x24924924u);
  EXPECT_EQ(word(fours, 1, 0), 0x49249249u);
  EXPECT_EQ(word(fours, 2, 0), 0x92492492u);
}

TEST(GptqPack, RandomCodesRoundTripAndMatchTheIndependentUnpacker) {
  at::manual_seed(0);
  for (int bits : {2, 3, 4, 8}) {
    const int64_t rows = 96, cols = 5;  // 96 = 3 blocks of 32 values
    const at::Tensor codes = at::randint(0, 1 << bits, {rows, cols}, at::kInt);
    const at::Tensor packed = pack_rows(codes, bits);
    ASSERT_EQ(packed.sizes(), (std::vector<int64_t>{rows * bits / 32, cols}));
    EXPECT_TRUE(at::equal(unpack_rows(packed, bits, rows), codes)) << bits;
    for (int64_t c = 0; c < cols; ++c) {
      std::vector<uint32_t> words;
      for (int64_t r = 0; r < packed.size(0); ++r) words.push_back(word(packed, r, c));
      const auto values = reference_unpack_column(words, bits);
      ASSERT_EQ(values.size(), size_t(rows));
      for (int64_t r = 0; r < rows; ++r)
        ASSERT_EQ(values[r], uint32_t(codes[r][c].item<int32_t>())) << bits << " " << r << " " << c;
    }
  }
}

TEST(GptqPack, QweightIsTransposedAndQzerosPackedAlongOutputs) {
  at::manual_seed(1);
  const at::Tensor codes = at::randint(0, 16, {16, 64}, at::kInt);  // m = 16, n = 64
  const at::Tensor qweight = pack_qweight(codes, 4);
  ASSERT_EQ(qweight.sizes(), (std::vector<int64_t>{8, 16}));
  // Word (r, o) holds input rows 8r..8r+7 of output column o.
  EXPECT_EQ(static_cast<uint32_t>(qweight[2][5].item<int32_t>()) & 0xF,
            uint32_t(codes[5][16].item<int32_t>()));
  EXPECT_TRUE(at::equal(unpack_qweight(qweight, 4, 64), codes));
  const at::Tensor zeros = at::randint(0, 8, {3, 32}, at::kInt);
  const at::Tensor qzeros = pack_qzeros(zeros, 3);
  ASSERT_EQ(qzeros.sizes(), (std::vector<int64_t>{3, 3}));
  EXPECT_TRUE(at::equal(unpack_qzeros(qzeros, 3, 32), zeros));
}

TEST(GptqFormat, WrittenTensorsDequantizeBitForBitToTheBackendsWeights) {
  at::manual_seed(2);
  const int64_t m = 32, n = 64;
  const at::Tensor W = at::randn({m, n});
  const at::Tensor X = at::randn({n, 300});
  const at::Tensor H = at::matmul(X, X.t()) / 150 + 0.01 * at::eye(n);
  test::TempDir dir;
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false})
      for (bool act_order : {false, true}) {
        const QuantGrid grid{bits, 16, sym, false};
        RoundingOptions o;
        o.order = act_order ? ColumnOrder::act : ColumnOrder::natural;
        const QuantizedLinear q = GptqRounder().round(W, H, grid, o);
        const bool v2 = !sym;
        const GptqTensors t = to_gptq_tensors(q, v2);
        save_safetensors(dir / "m.safetensors", {{"l.qweight", t.qweight},
                                                  {"l.qzeros", t.qzeros},
                                                  {"l.scales", t.scales},
                                                  {"l.g_idx", t.g_idx}});
        const SafetensorsFile f = SafetensorsFile::open(dir / "m.safetensors");
        const GptqTensors back{f.load("l.qweight"), f.load("l.qzeros"), f.load("l.scales"),
                               f.load("l.g_idx")};
        const at::Tensor deq = dequantize_gptq(back, bits, v2, n, m, "l");
        EXPECT_TRUE(at::equal(deq, q.dequantize())) << bits << sym << act_order;
        if (sym) {  // v1 stores z - 1 = 2^(b-1) - 1 everywhere
          EXPECT_TRUE((unpack_qzeros(t.qzeros, bits, m) == (1 << (bits - 1)) - 1).all().item<bool>());
        } else {
          EXPECT_TRUE(at::equal(unpack_qzeros(t.qzeros, bits, m), q.zeros));
        }
      }
  QuantizedLinear asym = GptqRounder().round(W, H, QuantGrid{4, 16, false, false}, {});
  EXPECT_THROW(to_gptq_tensors(asym, /*v2=*/false), c10::Error);
}

TEST(GptqFormat, DequantizeRejectsInconsistentTensors) {
  const QuantizedLinear q = GptqRounder().round(at::randn({32, 64}), at::eye(64),
                                                QuantGrid{4, 32, true, false}, {});
  GptqTensors t = to_gptq_tensors(q, false);
  test::expect_bad_input([&] { dequantize_gptq(t, 4, false, 64, 64, "x"); },
                         "x.scales: shape [2, 32], expected [2, 64]");
  t.g_idx[3] = 7;
  test::expect_bad_input([&] { dequantize_gptq(t, 4, false, 64, 32, "x"); },
                         "x.g_idx: values must lie in [0, 2)");
}

TEST(GptqPack, RejectsOutOfRangeValuesAndPartialWords) {
  EXPECT_THROW(pack_rows(at::full({8, 1}, 16, at::kInt), 4), c10::Error);
  EXPECT_THROW(pack_rows(at::zeros({10, 1}, at::kInt), 3), c10::Error);
}

}  // namespace
}  // namespace sarqc
