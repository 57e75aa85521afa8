#include "sarqc/model/rotary.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "sarqc/util/error.h"

namespace sarqc {

std::vector<double> rope_inv_freq(const ModelConfig& cfg) {
  const int64_t hd = cfg.head_dim;
  const RopeScaling& rs = cfg.rope_scaling;
  std::vector<double> inv(static_cast<size_t>(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i)
    inv[i] = 1.0 / std::pow(cfg.rope_theta, static_cast<double>(2 * i) / static_cast<double>(hd));
  switch (rs.type) {
    case RopeType::Default:
    case RopeType::Dynamic:  // identical to default within max_position_embeddings
      break;
    case RopeType::Linear:
      for (double& f : inv) f /= rs.factor;
      break;
    case RopeType::Llama3: {
      const double l0 = static_cast<double>(rs.original_max_position_embeddings);
      const double low_wavelen = l0 / rs.low_freq_factor;
      const double high_wavelen = l0 / rs.high_freq_factor;
      for (double& f : inv) {
        const double wavelen = 2.0 * M_PI / f;
        if (wavelen < high_wavelen) continue;
        if (wavelen > low_wavelen) {
          f /= rs.factor;
        } else {
          const double t =
              (l0 / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
          f = (1.0 - t) * f / rs.factor + t * f;
        }
      }
      break;
    }
    case RopeType::Yarn: {
      // Interpolate (divide by the factor) the dimensions that turn fewer than beta_slow times
      // over the original length, keep those that turn more than beta_fast times, and ramp
      // linearly between (Peng et al., arXiv:2309.00071; transformers' correction range).
      const double dim = static_cast<double>(hd);
      auto correction_dim = [&](double rotations) {
        return dim *
               std::log(static_cast<double>(rs.original_max_position_embeddings) /
                        (rotations * 2.0 * M_PI)) /
               (2.0 * std::log(cfg.rope_theta));
      };
      double low = correction_dim(rs.beta_fast), high = correction_dim(rs.beta_slow);
      if (rs.truncate) low = std::floor(low), high = std::ceil(high);
      low = std::max(low, 0.0);
      high = std::min(high, dim - 1);
      if (low == high) high += 0.001;
      for (int64_t i = 0; i < hd / 2; ++i) {
        const double ramp = std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0);
        const double keep = 1.0 - ramp;  // weight of the unscaled (extrapolated) frequency
        inv[i] = inv[i] / rs.factor * (1.0 - keep) + inv[i] * keep;
      }
      break;
    }
  }
  return inv;
}

void check_rope_seqlen(const ModelConfig& cfg, int64_t seqlen, const std::string& what) {
  if (cfg.rope_scaling.type == RopeType::Dynamic && cfg.max_position_embeddings > 0 &&
      seqlen > cfg.max_position_embeddings)
    throw_usage(fmt::format("{} {} exceeds max_position_embeddings {}, beyond which dynamic rope "
                            "scaling changes the frequencies; this version does not support that",
                            what, seqlen, cfg.max_position_embeddings));
}

RotaryTables make_rotary_tables(const ModelConfig& cfg, int64_t seqlen, c10::Device device,
                                c10::ScalarType dtype) {
  const std::vector<double> inv = rope_inv_freq(cfg);
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  at::Tensor freq = at::tensor(inv, opts);
  freq = at::cat({freq, freq});                                   // [hd]
  at::Tensor pos = at::arange(seqlen, opts).unsqueeze(1);         // [T, 1]
  at::Tensor angle = pos * freq.unsqueeze(0);                     // [T, hd]
  // YaRN scales cos and sin by its attention factor (1 for every other rope type).
  const double scale = cfg.rope_scaling.attention_factor;
  RotaryTables t{(angle.cos() * scale).to(device, dtype), (angle.sin() * scale).to(device, dtype),
                 {}, {}};
  if (cfg.rope_local_theta > 0) {  // Gemma 3's sliding layers: plain rope, their own base
    ModelConfig local = cfg;
    local.rope_theta = cfg.rope_local_theta;
    local.rope_scaling = RopeScaling{};
    local.rope_local_theta = 0;
    const RotaryTables l = make_rotary_tables(local, seqlen, device, dtype);
    t.local_cos = l.cos;
    t.local_sin = l.sin;
  }
  return t;
}

at::Tensor apply_rotary(const at::Tensor& x, const RotaryTables& t, int64_t offset) {
  TORCH_CHECK(x.dim() == 4 && x.size(3) == t.cos.size(1),
              "apply_rotary: x must be [B, heads, T, ", t.cos.size(1), "], got ", x.sizes());
  const int64_t T = x.size(2);
  TORCH_CHECK(offset >= 0 && offset + T <= t.cos.size(0), "apply_rotary: positions up to ",
              offset + T, " exceed the ", t.cos.size(0), " positions of the rotary tables");
  const int64_t half = x.size(3) / 2;
  const at::Tensor cos = t.cos.narrow(0, offset, T);
  const at::Tensor sin = t.sin.narrow(0, offset, T);
  const at::Tensor rotated = at::cat({-x.narrow(3, half, half), x.narrow(3, 0, half)}, 3);
  return x * cos + rotated * sin;
}

}  // namespace sarqc
