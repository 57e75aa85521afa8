#!/usr/bin/env bash
# Creates or reuses the project's Python environment: .venv in the checkout (git-ignored;
# $SARQC_VENV overrides) with the pinned packages of the given requirement files (default:
# scripts/requirements-test.txt, the test references; scripts/requirements-torch.txt adds
# PyTorch 2.x for the second toolchain). Each file is installed once (a stamp per file content).
# Idempotent and safe to call from parallel test processes (one installs, the others wait).
# Prints the environment's python on stdout; exits non-zero with the reason on stderr.
# Usage: scripts/venv.sh [REQUIREMENTS.txt ...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${SARQC_VENV:-$root/.venv}
(($# > 0)) || set -- "$root/scripts/requirements-test.txt"

mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
python=$(command -v python3 || true)
[ -n "$python" ] || { echo "venv.sh: python3 is not installed" >&2; exit 3; }
if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 needs python3-venv for this.
    if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 || true
    fi
    rm -rf "$venv"
    "$python" -m venv "$venv" || { echo "venv.sh: cannot create $venv (python3-venv missing?)" >&2; exit 3; }
  fi
fi
for requirements in "$@"; do
  name=$(basename "$requirements" .txt)
  stamp="$venv/.installed-$name-$(sha256sum "$requirements" | cut -c1-16)"
  [ -f "$stamp" ] && continue
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        --retries 2 --timeout 60 -r "$requirements" >"$venv.log" 2>&1; then
    echo "venv.sh: pip install -r $requirements failed (PyPI unreachable?); see $venv.log" >&2
    exit 4
  fi
  rm -f "$venv/.installed-$name-"*
  touch "$stamp"
done
echo "$venv/bin/python"
