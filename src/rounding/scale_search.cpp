#include "sarqc/rounding/scale_search.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <map>

#include "sarqc/calib/saliency.h"
#include "sarqc/rounding/rtn.h"

namespace sarqc {
namespace {

// One searched set of scales: the modules that share an input (and are pseudo-quantized with the
// scales), the module whose recorded input is that input, and for MoE down_proj the expert.
struct ScaleUnit {
  ScaleGroup kind;
  int expert = kNotExpert;
  std::string name;                    // for the record: "qkv", "o", "gate_up", "down", "down.3"
  std::vector<std::string> quantized;  // pseudo-quantized while searching, clipped afterwards
  std::string input;                   // whose recorded input is the unit's input
};

std::vector<const LinearModule*> modules_with(const DecoderLayer& layer,
                                              std::initializer_list<LinearRole> roles,
                                              std::optional<int> expert = std::nullopt) {
  std::vector<const LinearModule*> out;
  for (const auto& m : layer.layout().linears)
    if (std::find(roles.begin(), roles.end(), m.role) != roles.end() &&
        (!expert || m.expert == *expert))
      out.push_back(&m);
  return out;
}

// q/k/v, o, every gate/up of the MLP (all experts and the shared expert of a MoE block: one
// norm feeds them all), and one down unit per MLP (docs/methods.md §6.3 table, §8 "AWQ").
std::vector<ScaleUnit> units_of(const DecoderLayer& layer) {
  std::vector<ScaleUnit> units = {
      {ScaleGroup::Qkv,
       kNotExpert,
       "qkv",
       {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"},
       "self_attn.q_proj"},
      {ScaleGroup::O, kNotExpert, "o", {"self_attn.o_proj"}, "self_attn.o_proj"}};
  ScaleUnit gate_up{ScaleGroup::GateUp, kNotExpert, "gate_up", {}, ""};
  for (const LinearModule* m : modules_with(layer, {LinearRole::Gate, LinearRole::Up}))
    gate_up.quantized.push_back(m->local_name);
  const auto router = modules_with(layer, {LinearRole::Router});
  gate_up.input = router.empty() ? gate_up.quantized.front() : router.front()->local_name;
  units.push_back(gate_up);
  for (const LinearModule* m : modules_with(layer, {LinearRole::Down})) {
    std::string name = "down";
    if (m->expert >= 0) name += "." + std::to_string(m->expert);
    if (m->expert == kSharedExpert) name += ".shared";
    units.push_back({ScaleGroup::Down, m->expert, name, {m->local_name}, m->local_name});
  }
  return units;
}

// The grid a module is pseudo-quantized with: the configured one, per row when its group size
// does not divide the module's inputs (such a module stays unquantized in the checkpoint).
QuantGrid grid_for(const QuantGrid& grid, int64_t in_features) {
  QuantGrid g = grid;
  if (g.group_size > 0 && in_features % g.group_size != 0) g.group_size = -1;
  return g;
}

// The weights as the configured grid would round them (RTN), in fp32, with min-max groups as
// AWQ's search quantizes (the clip search below is its own range search).
at::Tensor pseudo_quantize(const at::Tensor& w, const QuantGrid& grid) {
  QuantGrid min_max = grid_for(grid, w.size(1));
  min_max.mse_clip = false;
  return RtnRounder()
      .round(w.to(at::kFloat), {}, min_max, {})
      .dequantize()
      .to(w.scalar_type());
}

// Records the input of every linear of the layer (one forward) and the MoE routing.
struct InputRecorder : LinearInputObserver {
  std::map<std::string, std::vector<at::Tensor>> inputs;
  MoeRouting routing;
  void observe_input(const LinearModule& m, const at::Tensor& x) override {
    inputs[m.local_name].push_back(x);
  }
  void observe_routing(const DecoderLayerLayout&, const MoeRouting& r) override { routing = r; }
  std::map<std::string, at::Tensor> all() const {
    std::map<std::string, at::Tensor> out;
    for (const auto& [name, xs] : inputs) out[name] = at::cat(xs);
    return out;
  }
};

double relative_mse(const at::Tensor& y, const at::Tensor& target) {
  return ((y - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-30)).item<double>();
}

// Saliency s_ij of a module's weight entries from its inputs `x` [tokens, n] (the definition
// the SARQC objective uses, calib/saliency.h), normalised to mean 1.
at::Tensor drift_saliency(const std::string& kind, double power, const at::Tensor& x,
                          const at::Tensor& w) {
  const at::Tensor xf = x.to(at::kFloat).reshape({-1, x.size(-1)});
  const SaliencyNeeds needs = saliency_needs(kind);  // each statistic is a [tokens, n] pass
  ColumnStatistics stats;
  if (needs.second_moment) stats.second_moment = xf.pow(2).mean(0);
  if (needs.abs_mean) stats.abs_mean = xf.abs().mean(0);
  stats.options = xf.options();
  at::Tensor s = unnormalised_saliency(kind, power, w.to(at::kFloat), stats);
  if (s.dim() == 1) s = s.unsqueeze(0);
  s = s.expand({w.size(0), w.size(1)});
  return s / s.mean().clamp_min(1e-30);
}

at::Tensor ratio_scales(const at::Tensor& s_x, double r) {
  at::Tensor u = s_x.pow(r).clamp_min(1e-4);
  return u / std::sqrt((u.max() * u.min()).item<double>());
}

}  // namespace

bool apply_group_scales(DecoderLayer& layer, ScaleGroup group, const at::Tensor& u, int expert) {
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
      for (const char* m : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"})
        scale_columns(m);
      layer.divide_norm("input_layernorm", uu);
      return true;
    case ScaleGroup::O:
      // o's input channels are v's output channels only without grouped-query attention.
      if (layer.weight("self_attn.v_proj").size(0) != layer.weight("self_attn.o_proj").size(1))
        return false;
      scale_columns("self_attn.o_proj");
      divide_rows("self_attn.v_proj");
      return true;
    case ScaleGroup::GateUp:
      // Every reader of the norm: the MLP's gate/up, and in MoE blocks every expert's, the
      // router and the shared-expert gate (those two stay unquantized).
      for (const LinearModule* m :
           modules_with(layer, {LinearRole::Gate, LinearRole::Up, LinearRole::Router,
                                LinearRole::SharedExpertGate}))
        scale_columns(m->local_name);
      layer.divide_norm(layer.mlp_input_norm(), uu);
      return true;
    case ScaleGroup::Down: {
      const auto down = modules_with(layer, {LinearRole::Down}, expert);
      const auto up = modules_with(layer, {LinearRole::Up}, expert);
      TORCH_CHECK(down.size() == 1 && up.size() == 1, "scale search: no down/up pair for expert ",
                  expert);
      scale_columns(down.front()->local_name);
      divide_rows(up.front()->local_name);
      return true;
    }
  }
  return false;
}

std::vector<ScaleSearchRecord> search_scales(DecoderLayer& layer,
                                             const std::vector<at::Tensor>& all_inputs,
                                             const RotaryTables& rope, const QuantGrid& grid,
                                             const ScaleSearchOptions& o,
                                             const ScaleSearchObjective& obj) {
  // Whole sequences (attention needs them) up to the token budget.
  std::vector<at::Tensor> xs;
  int64_t tokens = 0;
  for (const auto& batch : all_inputs) {
    for (int64_t s = 0; s < batch.size(0) && tokens < o.max_tokens; ++s) {
      xs.push_back(batch.narrow(0, s, 1));
      tokens += batch.size(1);
    }
  }
  // The layer's device and dtype: the pipeline searches on its fp32 master copy of the layer
  // whatever the stream's dtype.
  const auto device = layer.weight("self_attn.q_proj").device();
  const auto dtype = layer.weight("self_attn.q_proj").scalar_type();
  const at::Tensor x = at::cat(xs).to(device, dtype);
  InputRecorder rec;
  layer.forward(x, rope, &rec);
  // Every module's input, divided by u whenever a fold rescales it.
  std::map<std::string, at::Tensor> module_input = rec.all();
  const at::Tensor h = layer.attention_block(x, rope);  // the MLP block's input

  // The α-interpolated target needs the same sequences of the FP stream, through this (still
  // unmodified) layer, and α per token.
  const bool interpolated = !obj.fp_inputs.empty();
  std::map<std::string, at::Tensor> fp_input;
  at::Tensor x_fp, h_fp, token_alpha;
  if (interpolated) {
    TORCH_CHECK(obj.fp_inputs.size() == all_inputs.size(),
                "scale search: fp_inputs must have one batch per input batch, got ",
                obj.fp_inputs.size(), " for ", all_inputs.size());
    std::vector<at::Tensor> fps;
    std::vector<double> alphas;
    size_t sequence = 0;
    for (size_t b = 0; b < all_inputs.size(); ++b)
      for (int64_t s = 0; s < all_inputs[b].size(0); ++s, ++sequence)
        if (fps.size() < xs.size()) {
          fps.push_back(obj.fp_inputs[b].narrow(0, s, 1));
          TORCH_CHECK(sequence < obj.alpha.size(),
                      "scale search: alpha must have one value per calibration sequence, got ",
                      obj.alpha.size());
          alphas.push_back(obj.alpha[sequence]);
        }
    x_fp = at::cat(fps).to(device, dtype);
    TORCH_CHECK(x_fp.sizes() == x.sizes(), "scale search: fp_inputs must match inputs ", x.sizes(),
                ", got ", x_fp.sizes());
    InputRecorder rec_fp;
    layer.forward(x_fp, rope, &rec_fp);
    fp_input = rec_fp.all();
    h_fp = layer.attention_block(x_fp, rope);
    token_alpha = at::tensor(alphas, at::TensorOptions().dtype(at::kDouble))
                      .repeat_interleave(x.size(1))
                      .to(device, x.scalar_type())
                      .unsqueeze(1);
  }
  const auto router = modules_with(layer, {LinearRole::Router});
  const std::string router_name = router.empty() ? "" : router.front()->local_name;

  // A unit's output as [tokens, out] for its input `in` (block input `block_in`, MLP-block
  // input `mlp_in` for the units that need them).
  auto unit_output = [&](const ScaleUnit& unit, const at::Tensor& in, const at::Tensor& block_in,
                         const at::Tensor& mlp_in) -> at::Tensor {
    at::Tensor y;
    switch (unit.kind) {
      case ScaleGroup::Qkv:
        y = layer.attention_block(block_in, rope) - block_in;
        break;
      case ScaleGroup::GateUp:
        y = layer.mlp_block(mlp_in) - mlp_in;
        break;
      case ScaleGroup::O:
      case ScaleGroup::Down:
        y = at::linear(in, layer.weight(unit.quantized.front()));
        break;
    }
    return y.reshape({-1, y.size(-1)});
  };
  // A routed expert's tokens (indices into the flattened batch); undefined for the others.
  auto routed_tokens = [&](const ScaleUnit& unit) -> at::Tensor {
    if (unit.expert < 0) return {};
    return rec.routing.experts.at(static_cast<size_t>(unit.expert)).tokens;
  };
  // The FP stream's input of a unit in the layer's current basis. A routed expert's down_proj sees
  // act(gate_e(x_f))·up_e(x_f) at the tokens the quantized router sent it (docs/methods.md §8).
  auto fp_unit_input = [&](const ScaleUnit& unit) -> at::Tensor {
    if (unit.expert < 0) return fp_input.at(unit.input);
    const at::Tensor xf = fp_input.at(router_name).index_select(0, routed_tokens(unit));
    const auto gate = modules_with(layer, {LinearRole::Gate}, unit.expert).front()->local_name;
    const auto up = modules_with(layer, {LinearRole::Up}, unit.expert).front()->local_name;
    return layer.activate(at::linear(xf, layer.weight(gate), layer.bias(gate))) *
           at::linear(xf, layer.weight(up), layer.bias(up));
  };

  std::vector<ScaleSearchRecord> records;
  for (const ScaleUnit& unit : units_of(layer)) {
    if (!module_input.count(unit.input)) continue;  // an expert no token was routed to
    ScaleSearchRecord r;
    r.which = unit.kind;
    r.expert = unit.expert;
    r.group = unit.name;
    const at::Tensor in = module_input.at(unit.input);
    const at::Tensor s_x = in.abs().to(at::kFloat).mean(0);
    at::Tensor target = unit_output(unit, in, x, h);
    if (interpolated) {
      // Earlier folds preserve the function; fp_input is kept in the current basis.
      const at::Tensor y_fp = unit_output(unit, fp_unit_input(unit), x_fp, h_fp);
      const at::Tensor tokens = routed_tokens(unit);
      const at::Tensor a = tokens.defined() ? token_alpha.index_select(0, tokens) : token_alpha;
      target = target + a * (y_fp - target);
    }
    std::map<std::string, at::Tensor> original, saliency;
    for (const auto& m : unit.quantized) {
      original[m] = layer.weight(m);
      if (obj.lambda > 0) {
        const auto it = module_input.find(m);
        saliency[m] = drift_saliency(obj.saliency, obj.saliency_power,
                                     it == module_input.end() ? in : it->second, original[m]);
      }
    }
    double best = std::numeric_limits<double>::infinity(), best_drift = 0, drift_unscaled = 0;
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
      const double loss = relative_mse(unit_output(unit, in, x, h), target) + obj.lambda * drift;
      if (i == 0) r.loss_unscaled = loss, drift_unscaled = drift;
      if (loss < best) best = loss, best_i = i, best_drift = drift;
    }
    for (const auto& [m, w] : original) layer.set_weight(m, w);
    r.ratio = static_cast<double>(best_i) / o.ratios;
    r.loss = best;
    r.drift = best_drift;
    const at::Tensor u = ratio_scales(s_x, r.ratio).to(in.options());
    if (best_i == 0 || !apply_group_scales(layer, unit.kind, u, unit.expert)) {
      r.skipped = best_i != 0;
      r.ratio = 0;
      if (best_i != 0) r.loss = r.loss_unscaled, r.drift = drift_unscaled;
    } else {
      r.scales = u;
      // The inputs this fold rescaled: the unit's modules', and for gate/up every reader of
      // the norm (the router's too).
      std::vector<std::string> rescaled = unit.quantized;
      if (unit.kind == ScaleGroup::GateUp && !router_name.empty()) rescaled.push_back(router_name);
      for (const auto& m : rescaled) {
        if (module_input.count(m)) module_input[m] = module_input[m] / u.unsqueeze(0);
        if (fp_input.count(m)) fp_input[m] = fp_input[m] / u.unsqueeze(0);
      }
    }
    records.push_back(r);
  }

  if (o.clip) {
    // Per (row, group): the clip range a0·(1 − i/20), i < 10, with the smallest output error
    // on a token sample of the module's own input (docs/methods.md §6.3); q and k are left alone.
    for (const ScaleUnit& unit : units_of(layer)) {
      for (const auto& name : unit.quantized) {
        if (name == "self_attn.q_proj" || name == "self_attn.k_proj" || !module_input.count(name))
          continue;
        const at::Tensor all = module_input.at(name);
        const int64_t step = std::max<int64_t>(1, all.size(0) / o.clip_tokens);
        const at::Tensor xin = all.slice(0, 0, all.size(0), step).to(at::kFloat);  // [t, n]
        // A copy: the layer's tensor may be shared (never clip in place).
        at::Tensor w = layer.weight(name).to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
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
        layer.set_weight(name, w.to(layer.weight(name).scalar_type()));
      }
    }
  }
  return records;
}

}  // namespace sarqc
