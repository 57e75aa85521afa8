#!/usr/bin/env bash
# Installs the reference tokenizer and the tokenizer.json files the conformance tests use into a
# cache outside the repository (never committed): $SARQC_TOKENIZER_REFERENCE_DIR, by default
# ~/.cache/sarqc/tokenizer-reference. Idempotent: a complete install is reused.
# Prints the cache folder on success; exits non-zero (with the reason on stderr) when node/npm
# are missing or the registry cannot be reached, so that the tests can skip.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${SARQC_TOKENIZER_REFERENCE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sarqc/tokenizer-reference}

for tool in node npm; do
  command -v "$tool" >/dev/null || { echo "fetch.sh: $tool is not installed" >&2; exit 3; }
done

stamp="$cache/.installed-$(sha256sum "$here/package.json" | cut -c1-16)"
mkdir -p "$cache"
# Tests run in parallel processes: one installs, the others wait for it.
exec 9>"$cache/.lock"
flock 9
if [ ! -f "$stamp" ]; then
  cp "$here/package.json" "$cache/package.json"
  # --ignore-scripts: nothing from the registry runs at install time.
  if ! (cd "$cache" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error \
          >"$cache/npm-install.log" 2>&1); then
    echo "fetch.sh: npm install failed (registry unreachable?); see $cache/npm-install.log" >&2
    tail -3 "$cache/npm-install.log" >&2 || true
    exit 4
  fi
  rm -f "$cache"/.installed-*
  touch "$stamp"
fi
echo "$cache"
