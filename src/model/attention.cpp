#include "sarqc/model/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <torch/csrc/api/include/torch/version.h>

namespace sarqc {
namespace {
// Score buffers that stay in the CPU's cache make the elementwise passes several times faster.
constexpr int64_t kCpuChunkBytes = int64_t{8} << 20;
constexpr int64_t kDeviceChunkBytes = int64_t{256} << 20;
}  // namespace

at::Tensor causal_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                            int64_t window, int64_t chunk_bytes, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
              "causal_attention: q, k, v must be [B, heads, T, hd], got ", q.sizes(), ", ",
              k.sizes(), ", ", v.sizes());
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), hd = q.size(3);
  const int64_t KV = k.size(1), Tk = k.size(2), offset = Tk - T;
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == B && Tk >= T && k.size(3) == hd,
              "causal_attention: k and v must be [", B, ", KV, >=", T, ", ", hd, "], got ",
              k.sizes(), " and ", v.sizes());
  TORCH_CHECK(KV > 0 && H % KV == 0, "causal_attention: ", H,
              " query heads are not a multiple of ", KV, " kv heads");
  const int64_t rep = H / KV;
#if TORCH_VERSION_MAJOR >= 2
  // On CUDA, PyTorch 2's fused attention (flash / memory-efficient kernels) for the common case:
  // plain causal attention over the whole sequence. It takes as many key heads as query heads.
  if (q.is_cuda() && window <= 0 && Tk == T && scale <= 0) {
    const at::Tensor kr = rep > 1 ? k.repeat_interleave(rep, 1) : k;
    const at::Tensor vr = rep > 1 ? v.repeat_interleave(rep, 1) : v;
    return at::scaled_dot_product_attention(q, kr, vr, {}, 0.0, /*is_causal=*/true);
  }
#endif
  // [B, KV, rep, T, hd] against [B, KV, 1, T, hd]: broadcasting shares each kv head with its
  // query group without materialising repeated keys.
  const at::Tensor qg = q.reshape({B, KV, rep, T, hd});
  const at::Tensor kt = k.unsqueeze(2).transpose(-1, -2);
  const at::Tensor vg = v.unsqueeze(2);
  if (scale <= 0) scale = 1.0 / std::sqrt(static_cast<double>(hd));

  if (chunk_bytes <= 0) chunk_bytes = q.is_cpu() ? kCpuChunkBytes : kDeviceChunkBytes;
  const int64_t row_bytes = B * H * Tk * 4;
  const int64_t chunk = std::clamp<int64_t>(chunk_bytes / std::max<int64_t>(row_bytes, 1), 1, T);
  const at::Tensor positions = at::arange(Tk, q.options().dtype(at::kLong));
  std::vector<at::Tensor> outputs;
  for (int64_t start = 0; start < T; start += chunk) {
    const int64_t rows = std::min(chunk, T - start);
    // Keys after the chunk's last query are all masked, and so are keys before the window.
    const int64_t key_end = offset + start + rows;
    const int64_t key_begin = window > 0 ? std::max<int64_t>(0, offset + start - window + 1) : 0;
    const int64_t keys = key_end - key_begin;
    at::Tensor scores = at::matmul(qg.narrow(3, start, rows), kt.narrow(4, key_begin, keys))
                            .to(at::kFloat)
                            .mul_(scale);  // [B, KV, rep, rows, keys]
    const at::Tensor distance = positions.narrow(0, offset + start, rows).unsqueeze(1) -
                                positions.narrow(0, key_begin, keys).unsqueeze(0);  // i - j
    at::Tensor hidden = distance < 0;
    if (window > 0) hidden.logical_or_(distance >= window);
    scores.masked_fill_(hidden, -std::numeric_limits<float>::infinity());
    const at::Tensor probs = at::softmax(scores, -1).to(q.scalar_type());
    outputs.push_back(at::matmul(probs, vg.narrow(3, key_begin, keys)));  // [B,KV,rep,rows,hd]
  }
  const at::Tensor out = outputs.size() == 1 ? outputs[0] : at::cat(outputs, 3);
  return out.reshape({B, H, T, hd});
}

}  // namespace sarqc
