#!/usr/bin/env python3
"""Projects the per-layer time of a quantize run on a bigger model and several ranks from the
phases measured on a smaller one (report.json's "layers" of a one-process run), by flop counts:

  forward     ~ tokens x the layer's parameters          (data-parallel: / ranks)
  statistics  ~ tokens x (3 d^2 + f^2), the Gram GEMMs    (data-parallel: / ranks)
  rounding    ~ per module 2 out in^2 + in^3 / 3 (GPTQ)   (module-parallel: per group, the
                larger of its biggest module and its total / ranks, as balance_owners gives)
  write       ~ the layer's parameters                    (rank 0)
plus the communication per layer: the exact all-reduce of the statistics (16 bytes per Gram
element) and the owners' broadcasts (4 bytes per weight, and the codes of modules rank 0 does
not own), at a given bandwidth. Not a measurement: a model from measured per-layer costs.

Usage: project_dist.py MEASURED_CONFIG PHASES TOKENS TARGET_CONFIG TARGET_TOKENS RANKS GBPS
  PHASES: "forward,statistics,rounding,write" seconds per layer measured on MEASURED_CONFIG
"""
import json
import sys


def shape(cfg):
    d, f = cfg["hidden_size"], cfg["intermediate_size"]
    h = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads", h) * cfg.get("head_dim", d // h)
    groups = [[(d, d), (kv, d), (kv, d)], [(d, d)], [(f, d), (f, d)], [(d, f)]]  # (out, in)
    return d, f, groups


def gptq(out, inp):
    return 2.0 * out * inp * inp + inp ** 3 / 3.0


def costs(cfg, ranks):
    d, f, groups = shape(cfg)
    params = sum(o * i for g in groups for o, i in g)
    total = sum(gptq(o, i) for g in groups for o, i in g)
    critical = sum(max(max(gptq(o, i) for o, i in g), sum(gptq(o, i) for o, i in g) / ranks)
                   for g in groups)
    return params, 3 * d * d + f * f, total, critical, groups


def main():
    a_cfg, phases, a_tokens, b_cfg, b_tokens, ranks, gbps = sys.argv[1:8]
    a_cfg, b_cfg = json.load(open(a_cfg)), json.load(open(b_cfg))
    fwd, stats, rnd, wrt = (float(x) for x in phases.split(","))
    a_tokens, b_tokens, ranks, gbps = int(a_tokens), int(b_tokens), int(ranks), float(gbps)
    pa, ga, ra, _, _ = costs(a_cfg, 1)
    pb, gb, rb, rb_crit, groups = costs(b_cfg, ranks)
    t = b_tokens / a_tokens
    one = {"forward": fwd * t * pb / pa, "statistics": stats * t * gb / ga,
           "rounding": rnd * rb / ra, "write": wrt * pb / pa}
    many = {"forward": one["forward"] / ranks, "statistics": one["statistics"] / ranks,
            "rounding": one["rounding"] * rb_crit / rb, "write": one["write"]}
    allreduce = gb * 16 + 0.0
    broadcast = pb * 4 + pb * 4 / 2  # weights to all; codes of about half the modules to rank 0
    ring = 2 * (ranks - 1) / ranks
    many["communication"] = (allreduce * ring + broadcast) / (gbps * 1e9)
    layers = b_cfg["num_hidden_layers"]
    for name, p in (("1 process", one), (f"{ranks} ranks", many)):
        s = sum(p.values())
        parts = ", ".join(f"{k} {v:.1f}" for k, v in p.items())
        print(f"{name}: {s:.1f} s/layer ({parts}); {layers} layers: {s * layers / 3600:.2f} h")
    print(f"per layer: all-reduce {allreduce / 2**30:.1f} GiB, broadcasts {broadcast / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
