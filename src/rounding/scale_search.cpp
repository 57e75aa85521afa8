#include "sarqc/rounding/scale_search.h"

#include <cmath>
#include <map>

#include <ATen/ATen.h>

#include "sarqc/rounding/rtn.h"

namespace sarqc {
namespace {

const char* group_name(ScaleGroup g) {
  switch (g) {
    case ScaleGroup::Qkv: return "qkv";
    case ScaleGroup::O: return "o";
    case ScaleGroup::GateUp: return "gate_up";
    case ScaleGroup::Down: return "down";
  }
  return "?";
}

std::vector<std::string> group_modules(ScaleGroup g) {
  switch (g) {
    case ScaleGroup::Qkv: return {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"};
    case ScaleGroup::O: return {"self_attn.o_proj"};
    case ScaleGroup::GateUp: return {"mlp.gate_proj", "mlp.up_proj"};
    case ScaleGroup::Down: return {"mlp.down_proj"};
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
                                             const ScaleSearchOptions& o) {
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
  const at::Tensor x = at::cat(xs).to(layer.weight("self_attn.q_proj").device());
  InputRecorder rec;
  layer.forward(x, rope, &rec);
  // Inputs of each group; after folding a group its inputs are divided by u (tracked below).
  std::map<ScaleGroup, at::Tensor> group_input = {
      {ScaleGroup::Qkv, rec.get("self_attn.q_proj")},
      {ScaleGroup::O, rec.get("self_attn.o_proj")},
      {ScaleGroup::GateUp, rec.get("mlp.gate_proj")},
      {ScaleGroup::Down, rec.get("mlp.down_proj")}};

  auto group_output = [&](ScaleGroup g, const at::Tensor& in) -> at::Tensor {
    switch (g) {
      case ScaleGroup::Qkv: return layer.attention_block(x, rope) - x;  // self-attention output
      case ScaleGroup::O: return at::linear(in, layer.weight("self_attn.o_proj"));
      case ScaleGroup::GateUp:
        return at::linear(at::silu(at::linear(in, layer.weight("mlp.gate_proj"))) *
                              at::linear(in, layer.weight("mlp.up_proj")),
                          layer.weight("mlp.down_proj"));
      case ScaleGroup::Down: return at::linear(in, layer.weight("mlp.down_proj"));
    }
    return {};
  };

  std::vector<ScaleSearchRecord> records;
  for (ScaleGroup g : {ScaleGroup::Qkv, ScaleGroup::O, ScaleGroup::GateUp, ScaleGroup::Down}) {
    ScaleSearchRecord r;
    r.group = group_name(g);
    const at::Tensor in = group_input.at(g);
    const at::Tensor s_x = in.abs().to(at::kFloat).mean(0);
    const at::Tensor target = group_output(g, in);
    std::map<std::string, at::Tensor> original;
    for (const auto& m : group_modules(g)) original[m] = layer.weight(m);
    double best = std::numeric_limits<double>::infinity();
    int64_t best_i = 0;
    for (int64_t i = 0; i < o.ratios; ++i) {
      const at::Tensor u = ratio_scales(s_x, static_cast<double>(i) / o.ratios).to(in.options());
      for (const auto& [m, w] : original)
        layer.set_weight(m, pseudo_quantize(w * u.unsqueeze(0), grid) / u.unsqueeze(0));
      const double loss = relative_mse(group_output(g, in), target);
      if (i == 0) r.loss_unscaled = loss;
      if (loss < best) best = loss, best_i = i;
    }
    for (const auto& [m, w] : original) layer.set_weight(m, w);
    r.ratio = static_cast<double>(best_i) / o.ratios;
    r.loss = best;
    const at::Tensor u = ratio_scales(s_x, r.ratio).to(in.options());
    if (best_i == 0 || !apply_group_scales(layer, g, u)) {
      r.skipped = best_i != 0;
      r.ratio = 0;
      if (best_i != 0) r.loss = r.loss_unscaled;
    } else {
      group_input[g] = in / u.unsqueeze(0);
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
          const at::Tensor err = at::matmul(xg, (wg - pseudo_quantize(wc, row_grid)).t()).pow(2).mean(0);
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
