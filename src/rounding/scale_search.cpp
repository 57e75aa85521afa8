#include "sarqc/rounding/scale_search.h"

#include <ATen/ATen.h>

#include <cmath>
#include <map>

#include "sarqc/rounding/rtn.h"

namespace sarqc {
namespace {

const char* group_name(ScaleGroup g) {
  switch (g) {
    case ScaleGroup::Qkv:
      return "qkv";
    case ScaleGroup::O:
      return "o";
    case ScaleGroup::GateUp:
      return "gate_up";
    case ScaleGroup::Down:
      return "down";
  }
  return "?";
}

std::vector<std::string> group_modules(ScaleGroup g) {
  switch (g) {
    case ScaleGroup::Qkv:
      return {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"};
    case ScaleGroup::O:
      return {"self_attn.o_proj"};
    case ScaleGroup::GateUp:
      return {"mlp.gate_proj", "mlp.up_proj"};
    case ScaleGroup::Down:
      return {"mlp.down_proj"};
  }
  return {};
}

// The grid a module is pseudo-quantized with: the configured one, per row when its group size
// does not divide the module's inputs (such a module stays unquantized in the checkpoint).
QuantGrid grid_for(const QuantGrid& grid, int64_t in_features) {
  QuantGrid g = grid;
  if (g.group_size > 0 && in_features % g.group_size != 0) g.group_size = -1;
  return g;
}

// The weights as the configured grid would round them (RTN), in fp32.
at::Tensor pseudo_quantize(const at::Tensor& w, const QuantGrid& grid) {
  return RtnRounder()
      .round(w.to(at::kFloat), {}, grid_for(grid, w.size(1)), {})
      .dequantize()
      .to(w.scalar_type());
}

// Records the input of every linear of the layer (one forward).
struct InputRecorder : LinearInputObserver {
  std::map<std::string, std::vector<at::Tensor>> inputs;
  void observe_input(const LinearModule& m, const at::Tensor& x) override {
    inputs[m.local_name].push_back(x);
  }
  at::Tensor get(const std::string& name) const { return at::cat(inputs.at(name)); }
};

double relative_mse(const at::Tensor& y, const at::Tensor& target) {
  return ((y - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-30)).item<double>();
}

// Saliency s_ij of a module's weight entries from its inputs `x` [tokens, n] (methods.md §5.2),
// normalised to mean 1.
at::Tensor drift_saliency(const std::string& kind, double power, const at::Tensor& x,
                          const at::Tensor& w) {
  const at::Tensor xf = x.to(at::kFloat).reshape({-1, x.size(-1)});
  at::Tensor s;
  if (kind == "ones")
    s = at::ones({1, w.size(1)});
  else if (kind == "hdiag")
    s = xf.pow(2).mean(0).unsqueeze(0);
  else if (kind == "absmean")
    s = xf.abs().mean(0).unsqueeze(0);
  else if (kind == "absmean-pow")
    s = xf.abs().mean(0).pow(power).unsqueeze(0);
  else if (kind == "elem")
    s = w.to(at::kFloat).abs() * xf.pow(2).mean(0).sqrt().unsqueeze(0);
  else
    TORCH_CHECK(false, "scale search: unknown saliency '", kind, "'");
  s = s.expand({w.size(0), w.size(1)});
  return s / s.mean().clamp_min(1e-30);
}

at::Tensor ratio_scales(const at::Tensor& s_x, double r) {
  at::Tensor u = s_x.pow(r).clamp_min(1e-4);
  return u / std::sqrt((u.max() * u.min()).item<double>());
}

}  // namespace

bool apply_group_scales(DecoderLayer& layer, ScaleGroup group, const at::Tensor& u) {
  const at::Tensor uu = u.to(layer.weight("self_attn.q_proj").options());
  auto scale_columns = [&](const std::string& name) {
    layer.set_weight(name, layer.weight(name) * uu.unsqueeze(0));
  };
  auto divide_rows = [&](const std::string& name) {
    layer.set_weight(name, layer.weight(name) / uu.unsqueeze(1));
    if (layer.bias(name).defined()) layer.set_bias(name, layer.bias(name) / uu);
  };
  switch (group) {
    case ScaleGroup::Qkv:
      for (const auto& m : group_modules(group)) scale_columns(m);
      layer.set_norm("input_layernorm", layer.norm("input_layernorm") / uu);
      return true;
    case ScaleGroup::O:
      // o's input channels are v's output channels only without grouped-query attention.
      if (layer.weight("self_attn.v_proj").size(0) != layer.weight("self_attn.o_proj").size(1))
        return false;
      scale_columns("self_attn.o_proj");
      divide_rows("self_attn.v_proj");
      return true;
    case ScaleGroup::GateUp:
      for (const auto& m : group_modules(group)) scale_columns(m);
      layer.set_norm("post_attention_layernorm", layer.norm("post_attention_layernorm") / uu);
      return true;
    case ScaleGroup::Down:
      scale_columns("mlp.down_proj");
      divide_rows("mlp.up_proj");
      return true;
  }
  return false;
}

std::vector<ScaleSearchRecord> search_scales(DecoderLayer& layer,
                                             const std::vector<at::Tensor>& all_inputs,
                                             const RotaryTables& rope, const QuantGrid& grid,
                                             const ScaleSearchOptions& o,
                                             const ScaleSearchObjective& obj) {
  TORCH_CHECK(!layer.layout().moe, "scale search: MoE layers are not supported");
  // Whole sequences (attention needs them) up to the token budget.
  std::vector<at::Tensor> xs;
  int64_t tokens = 0;
  for (const auto& batch : all_inputs) {
    for (int64_t s = 0; s < batch.size(0) && tokens < o.max_tokens; ++s) {
      xs.push_back(batch.narrow(0, s, 1));
      tokens += batch.size(1);
    }
  }
  const auto device = layer.weight("self_attn.q_proj").device();
  const at::Tensor x = at::cat(xs).to(device);
  InputRecorder rec;
  layer.forward(x, rope, &rec);
  // The α-interpolated target needs the same sequences of the FP stream, through this (still
  // unmodified) layer, and α per token.
  const bool interpolated = !obj.fp_inputs.empty();
  InputRecorder rec_fp;
  at::Tensor x_fp, token_alpha;
  if (interpolated) {
    TORCH_CHECK(obj.fp_inputs.size() == all_inputs.size(),
                "scale search: fp_inputs must have one batch per input batch, got ",
                obj.fp_inputs.size(), " for ", all_inputs.size());
    std::vector<at::Tensor> fps;
    std::vector<double> alphas;
    size_t sequence = 0;
    for (size_t b = 0; b < all_inputs.size(); ++b)
      for (int64_t s = 0; s < all_inputs[b].size(0); ++s, ++sequence)
        if (static_cast<int64_t>(fps.size()) < static_cast<int64_t>(xs.size())) {
          fps.push_back(obj.fp_inputs[b].narrow(0, s, 1));
          TORCH_CHECK(sequence < obj.alpha.size(),
                      "scale search: alpha must have one value per "
                      "calibration sequence, got ",
                      obj.alpha.size());
          alphas.push_back(obj.alpha[sequence]);
        }
    x_fp = at::cat(fps).to(device);
    TORCH_CHECK(x_fp.sizes() == x.sizes(), "scale search: fp_inputs must match inputs ", x.sizes(),
                ", got ", x_fp.sizes());
    layer.forward(x_fp, rope, &rec_fp);
    token_alpha = at::tensor(alphas, at::TensorOptions().dtype(at::kDouble))
                      .repeat_interleave(x.size(1))
                      .to(device, x.scalar_type())
                      .unsqueeze(1);
  }
  // Inputs of each group; after folding a group its inputs are divided by u (tracked below).
  std::map<ScaleGroup, at::Tensor> group_input = {{ScaleGroup::Qkv, rec.get("self_attn.q_proj")},
                                                  {ScaleGroup::O, rec.get("self_attn.o_proj")},
                                                  {ScaleGroup::GateUp, rec.get("mlp.gate_proj")},
                                                  {ScaleGroup::Down, rec.get("mlp.down_proj")}};

  // The group's output [tokens, out]; the q/k/v group's is the self-attention output on the
  // block input `block_in`.
  // The group's output as [tokens, out]; the q/k/v group's is the self-attention output on the
  // block input `block_in`.
  auto group_output = [&](ScaleGroup g, const at::Tensor& in,
                          const at::Tensor& block_in) -> at::Tensor {
    at::Tensor y;
    switch (g) {
      case ScaleGroup::Qkv:
        y = layer.attention_block(block_in, rope) - block_in;
        break;
      case ScaleGroup::O:
        y = at::linear(in, layer.weight("self_attn.o_proj"));
        break;
      case ScaleGroup::GateUp:
        y = at::linear(at::silu(at::linear(in, layer.weight("mlp.gate_proj"))) *
                           at::linear(in, layer.weight("mlp.up_proj")),
                       layer.weight("mlp.down_proj"));
        break;
      case ScaleGroup::Down:
        y = at::linear(in, layer.weight("mlp.down_proj"));
        break;
    }
    return y.reshape({-1, y.size(-1)});
  };

  std::vector<ScaleSearchRecord> records;
  for (ScaleGroup g : {ScaleGroup::Qkv, ScaleGroup::O, ScaleGroup::GateUp, ScaleGroup::Down}) {
    ScaleSearchRecord r;
    r.which = g;
    r.group = group_name(g);
    const at::Tensor in = group_input.at(g);
    const at::Tensor s_x = in.abs().to(at::kFloat).mean(0);
    at::Tensor target = group_output(g, in, x);
    if (interpolated) {
      // Earlier groups' folding is function-preserving, so the FP inputs need no rescaling.
      const at::Tensor fp_in = rec_fp.get(group_modules(g).front());
      target = target + token_alpha * (group_output(g, fp_in, x_fp) - target);
    }
    std::map<std::string, at::Tensor> original, saliency;
    for (const auto& m : group_modules(g)) {
      original[m] = layer.weight(m);
      if (obj.lambda > 0)
        saliency[m] = drift_saliency(obj.saliency, obj.saliency_power, in, original[m]);
    }
    double best_drift = 0, drift_unscaled = 0;
    double best = std::numeric_limits<double>::infinity();
    int64_t best_i = 0;
    for (int64_t i = 0; i < o.ratios; ++i) {
      const at::Tensor u = ratio_scales(s_x, static_cast<double>(i) / o.ratios).to(in.options());
      double drift = 0;
      for (const auto& [m, w] : original) {
        const at::Tensor effective = pseudo_quantize(w * u.unsqueeze(0), grid) / u.unsqueeze(0);
        layer.set_weight(m, effective);
        if (obj.lambda > 0) {
          const at::Tensor w32 = w.to(at::kFloat);
          drift += ((saliency.at(m) * (effective.to(at::kFloat) - w32).pow(2)).mean() /
                    w32.pow(2).mean().clamp_min(1e-30))
                       .item<double>();
        }
      }
      const double loss = relative_mse(group_output(g, in, x), target) + obj.lambda * drift;
      if (i == 0) r.loss_unscaled = loss, drift_unscaled = drift;
      if (loss < best) best = loss, best_i = i, best_drift = drift;
    }
    for (const auto& [m, w] : original) layer.set_weight(m, w);
    r.ratio = static_cast<double>(best_i) / o.ratios;
    r.loss = best;
    r.drift = best_drift;
    const at::Tensor u = ratio_scales(s_x, r.ratio).to(in.options());
    if (best_i == 0 || !apply_group_scales(layer, g, u)) {
      r.skipped = best_i != 0;
      r.ratio = 0;
      if (best_i != 0) r.loss = r.loss_unscaled, r.drift = drift_unscaled;
    } else {
      group_input[g] = in / u.unsqueeze(0);
      r.scales = u;
    }
    records.push_back(r);
  }

  if (o.clip) {
    // Per (row, group): the clip range a0·(1 − i/20), i < 10, with the smallest output error
    // on a token sample (methods.md §6.3); q and k are left alone.
    const std::map<std::string, ScaleGroup> clipped = {{"self_attn.v_proj", ScaleGroup::Qkv},
                                                       {"self_attn.o_proj", ScaleGroup::O},
                                                       {"mlp.gate_proj", ScaleGroup::GateUp},
                                                       {"mlp.up_proj", ScaleGroup::GateUp},
                                                       {"mlp.down_proj", ScaleGroup::Down}};
    for (const auto& [name, g] : clipped) {
      const at::Tensor all = group_input.at(g);
      const int64_t step = std::max<int64_t>(1, all.size(0) / o.clip_tokens);
      const at::Tensor xin = all.slice(0, 0, all.size(0), step).to(at::kFloat);  // [t, n]
      at::Tensor w = layer.weight(name).to(at::kFloat);
      const QuantGrid module_grid = grid_for(grid, w.size(1));
      const int64_t n = w.size(1), gs = module_grid.group_size > 0 ? module_grid.group_size : n;
      QuantGrid row_grid = module_grid;
      row_grid.group_size = -1;  // params per (row, group): one group of gs columns at a time
      for (int64_t c = 0; c < n; c += gs) {
        const at::Tensor wg = w.narrow(1, c, gs), xg = xin.narrow(1, c, gs);
        const at::Tensor a0 = std::get<0>(wg.abs().max(1)).unsqueeze(1);
        at::Tensor best_err, best_a;
        for (int64_t i = 0; i < 10; ++i) {
          const at::Tensor a = a0 * (1.0 - i / 20.0);
          const at::Tensor wc = at::minimum(at::maximum(wg, -a), a);
          const at::Tensor err =
              at::matmul(xg, (wg - pseudo_quantize(wc, row_grid)).t()).pow(2).mean(0);
          if (i == 0) {
            best_err = err, best_a = a.squeeze(1);
          } else {
            const at::Tensor better = err < best_err;
            best_err = at::where(better, err, best_err);
            best_a = at::where(better, a.squeeze(1), best_a);
          }
        }
        const at::Tensor a = best_a.unsqueeze(1);
        w.narrow(1, c, gs).copy_(at::minimum(at::maximum(wg, -a), a));
      }
      layer.set_weight(name, w);
    }
  }
  return records;
}

}  // namespace sarqc
