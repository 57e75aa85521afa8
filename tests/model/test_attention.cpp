// Grouped-query causal attention against a naive loop over heads, queries and keys.
#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "sarqc/model/attention.h"

namespace sarqc {
namespace {

// Every query head h on its own, reading kv head h / (H / KV); explicit softmax in double.
at::Tensor naive_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           int64_t window) {
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), hd = q.size(3), KV = k.size(1);
  const at::Tensor qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  at::Tensor out = at::zeros({B, H, T, hd}, at::kDouble);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / (H / KV);
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> score;
        std::vector<int64_t> keys;
        for (int64_t j = 0; j <= i; ++j) {
          if (window > 0 && i - j >= window) continue;
          score.push_back(qd[b][h][i].dot(kd[b][g][j]).item<double>() / std::sqrt(double(hd)));
          keys.push_back(j);
        }
        const double top = *std::max_element(score.begin(), score.end());
        double total = 0;
        for (double& s : score) total += (s = std::exp(s - top));
        for (size_t n = 0; n < keys.size(); ++n)
          out[b][h][i] += vd[b][g][keys[n]] * (score[n] / total);
      }
    }
  return out;
}

struct Case {
  int64_t heads, kv_heads, window, chunk_bytes;
};

class AttentionVsNaive : public ::testing::TestWithParam<Case> {};

TEST_P(AttentionVsNaive, Matches) {
  const Case c = GetParam();
  at::manual_seed(c.heads * 100 + c.kv_heads + c.window);
  const int64_t B = 2, T = 13, hd = 8;
  const at::Tensor q = at::randn({B, c.heads, T, hd});
  const at::Tensor k = at::randn({B, c.kv_heads, T, hd});
  const at::Tensor v = at::randn({B, c.kv_heads, T, hd});
  const at::Tensor got = causal_attention(q, k, v, c.window, c.chunk_bytes);
  ASSERT_EQ(got.sizes(), q.sizes());
  EXPECT_TRUE(at::allclose(got.to(at::kDouble), naive_attention(q, k, v, c.window), 1e-5, 1e-5));
}

// chunk_bytes 1 forces one query per chunk; the default keeps all rows in one chunk here.
INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionVsNaive,
    ::testing::Values(Case{4, 4, 0, 0}, Case{4, 2, 0, 0}, Case{6, 2, 0, 0}, Case{4, 1, 0, 0},
                      Case{4, 2, 0, 1}, Case{4, 2, 3, 0}, Case{4, 2, 3, 1}, Case{4, 2, 5, 700},
                      Case{4, 2, 20, 1}));

TEST(Attention, QueriesAfterACachedPrefixMatchTheFullComputation) {
  at::manual_seed(8);
  const at::Tensor q = at::randn({2, 4, 11, 8}), k = at::randn({2, 2, 11, 8}),
                   v = at::randn({2, 2, 11, 8});
  for (int64_t window : {0, 4}) {
    const at::Tensor full = causal_attention(q, k, v, window);
    // The last 3 queries against all 11 keys.
    const at::Tensor tail = causal_attention(q.narrow(2, 8, 3), k, v, window, 1);
    EXPECT_TRUE(at::allclose(tail, full.narrow(2, 8, 3), 1e-6, 1e-6)) << window;
  }
  EXPECT_THROW(causal_attention(q, k.narrow(2, 0, 5), v.narrow(2, 0, 5)), c10::Error);
}

TEST(Attention, GroupSharingIsByContiguousBlocksOfHeads) {
  // With KV = 2 and H = 4, heads 0,1 read kv 0 and heads 2,3 read kv 1: giving kv head 1 values
  // of zero must zero exactly heads 2 and 3.
  at::manual_seed(3);
  const at::Tensor q = at::randn({1, 4, 6, 8}), k = at::randn({1, 2, 6, 8});
  at::Tensor v = at::randn({1, 2, 6, 8});
  v[0][1].zero_();
  const at::Tensor out = causal_attention(q, k, v);
  EXPECT_GT(out[0][0].abs().sum().item<float>(), 0);
  EXPECT_GT(out[0][1].abs().sum().item<float>(), 0);
  EXPECT_EQ(out[0][2].abs().sum().item<float>(), 0);
  EXPECT_EQ(out[0][3].abs().sum().item<float>(), 0);
}

TEST(Attention, RejectsHeadCountsThatDoNotGroup) {
  EXPECT_THROW(causal_attention(at::zeros({1, 3, 4, 8}), at::zeros({1, 2, 4, 8}),
                                at::zeros({1, 2, 4, 8})),
               c10::Error);
}

}  // namespace
}  // namespace sarqc
