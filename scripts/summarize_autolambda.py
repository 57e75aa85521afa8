#!/usr/bin/env python3
"""Tables for BENCHMARKS.md from scripts/bench_autolambda.sh's TSV.

Usage: scripts/summarize_autolambda.py results.tsv
Per model, bits, group size and calibration size: each method's validation perplexity and cloze
accuracy as median [min, max] over seeds, and the median λ the sarqc runs chose; then, per
calibration size (as a multiple of the hidden size), how often sarqc (auto) came out worse than
gptq beyond the seed spread, and the share of the best fixed λ's gain it recovered.
"""
import collections
import statistics
import sys

HIDDEN = {"stories260K": 64, "babyllama-tok105": 128}


def fmt(values, digits=3):
    v = sorted(values)
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{statistics.median(v):.{digits}f} [{v[0]:.{digits}f}, {v[-1]:.{digits}f}]"


def main():
    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    for line in open(sys.argv[1]):
        f = line.rstrip("\n").split("\t")
        if len(f) < 12:
            continue
        model, bits, group, windows, seqlen, tokens, method, seed, ppl, acc, lam, lam90 = f[:12]
        key = (model, int(bits), int(group), int(tokens))
        rows[key][method].append((float(ppl), float(acc), lam))
    methods = ["gptq", "sarqc", "sarqc:lw", "sarqc:0.03", "sarqc:0.1", "sarqc:0.3", "sarqc:1", "beam",
               "sarqc-beam"]
    print("| model | bits | group | tokens (× hidden) | method | ppl | cloze acc | λ (median over modules) |")
    print("|---|---|---|---|---|---|---|---|")
    verdict = collections.defaultdict(lambda: [0, 0, 0, [], []])
    for key in sorted(rows):
        model, bits, group, tokens = key
        mult = tokens / HIDDEN.get(model, 1)
        for method in methods:
            runs = rows[key].get(method)
            if not runs:
                continue
            lams = [float(r[2]) for r in runs if r[2] not in ("-", "")]
            print(f"| {model} | {bits} | {group} | {tokens} ({mult:g}×) | {method} | "
                  f"{fmt([r[0] for r in runs])} | {fmt([r[1] for r in runs])} | "
                  f"{fmt(lams, 4) if lams else '-'} |")
        for base, auto in (("gptq", "sarqc"), ("gptq", "sarqc:lw"), ("beam", "sarqc-beam")):
            b, a = rows[key].get(base), rows[key].get(auto)
            if not b or not a:
                continue
            bp = [r[0] for r in b]
            ap = [r[0] for r in a]
            spread = max(bp) - min(bp)
            v = verdict[(f"{base} → {auto}", mult if mult <= 64 else "default")]
            v[0] += 1
            v[1] += statistics.median(ap) > statistics.median(bp) + spread  # worse beyond spread
            v[2] += statistics.median(ap) < statistics.median(bp)
            v[3].append(statistics.median(ap) / statistics.median(bp) - 1)
            fixed = [statistics.median(r[0] for r in rows[key][m]) for m in rows[key]
                     if m.startswith("sarqc:") and m != "sarqc:lw"]
            # Only where a fixed λ gained more than 1 % (smaller gains are seed noise).
            if base == "gptq" and fixed and min(fixed) < 0.99 * statistics.median(bp):
                gain = statistics.median(bp) - min(fixed)
                v[4].append((statistics.median(bp) - statistics.median(ap)) / gain)
    print()
    print("| baseline → chosen λ | calibration tokens (× hidden) | configurations | better (median) | worse beyond the seed spread | median ppl change | share of the best fixed λ's gain recovered (median; where it exceeds 1 %) |")
    print("|---|---|---|---|---|---|---|")
    for (pair, mult), v in sorted(verdict.items(), key=lambda kv: (kv[0][0], str(kv[0][1]).zfill(8))):
        rec = f"{statistics.median(v[4]):.2f} (n={len(v[4])})" if v[4] else "-"
        print(f"| {pair} | {mult if mult == 'default' else f'{mult:g}×'} | {v[0]} | {v[2]} | {v[1]} | "
              f"{100 * statistics.median(v[3]):+.1f} % | {rec} |")


if __name__ == "__main__":
    main()
