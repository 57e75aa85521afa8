#!/usr/bin/env bash
# Makes a multiple-choice "story cloze" task from any text, for `sarqc eval --task` when no
# benchmark is at hand: each item is a paragraph's opening sentences (the context) and its true
# next sentence among sentences drawn from other paragraphs (the distractors), one JSON object per
# line: {"context": ..., "choices": [...], "gold": i}. Deterministic for a seed.
# Usage: scripts/make_cloze.sh TEXT OUT.jsonl [--items N (500)] [--choices K (4)] [--seed S (0)]
#        [--context-sentences C (2)]
# Paragraphs are separated by blank lines; sentences end at . ! or ? followed by a space. OUT must
# not exist (it is never overwritten); exit 2 on a usage error, 3 when the text is too short.
set -euo pipefail
usage() { echo "usage: $0 TEXT OUT.jsonl [--items N] [--choices K] [--seed S] [--context-sentences C]" >&2; exit 2; }
(($# >= 2)) || usage
text=$1 out=$2
shift 2
items=500 choices=4 seed=0 context=2
while (($#)); do
  case $1 in
    --items) items=${2:?}; shift 2 ;;
    --choices) choices=${2:?}; shift 2 ;;
    --seed) seed=${2:?}; shift 2 ;;
    --context-sentences) context=${2:?}; shift 2 ;;
    *) echo "make_cloze.sh: unknown option '$1'" >&2; usage ;;
  esac
done
for v in "$items" "$choices" "$seed" "$context"; do
  [[ $v =~ ^[0-9]+$ ]] || { echo "make_cloze.sh: '$v' is not a non-negative integer" >&2; exit 2; }
done
((choices >= 2 && items >= 1 && context >= 1)) || { echo "make_cloze.sh: need --choices >= 2, --items >= 1, --context-sentences >= 1" >&2; exit 2; }
[[ -r $text ]] || { echo "make_cloze.sh: $text: cannot read the text" >&2; exit 2; }
[[ ! -e $out ]] || { echo "make_cloze.sh: $out exists; not overwriting it" >&2; exit 2; }
python3 - "$text" "$out" "$items" "$choices" "$seed" "$context" <<'PY'
import json, os, random, re, sys
text, out, items, choices, seed, context = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
paragraphs = [p for p in re.split(r"\n\s*\n", open(text, encoding="utf-8", errors="replace").read())]
split = lambda p: [s.strip() for s in re.split(r"(?<=[.!?])\s+", " ".join(p.split())) if s.strip()]
sentences = [split(p) for p in paragraphs]
usable = [i for i, s in enumerate(sentences) if len(s) > context]
pool = [(i, s) for i, ss in enumerate(sentences) for s in ss[1:]]
if len(usable) < 2 or len(pool) < choices:
    sys.exit(f"make_cloze.sh: {text}: too few paragraphs with more than {context} sentences")
rng = random.Random(seed)
rng.shuffle(usable)
tmp = out + ".partial"
written = 0
with open(tmp, "w", encoding="utf-8") as f:
    for i in usable[:items]:
        ctx, true = " ".join(sentences[i][:context]), sentences[i][context]
        distractors = set()
        while len(distractors) < choices - 1:
            j, s = rng.choice(pool)
            if j != i and s != true: distractors.add(s)
        options = sorted(distractors) + [true]
        rng.shuffle(options)
        f.write(json.dumps({"context": ctx, "choices": options, "gold": options.index(true)}) + "\n")
        written += 1
os.replace(tmp, out)
print(f"{out}: {written} items of {choices} choices")
PY
