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
failed="$cache/.failed"
if [ ! -f "$stamp" ]; then
  # Each test process calls this script: after a failure, the others (for ten minutes) do not
  # wait for the registry again.
  if [ -n "$(find "$failed" -mmin -10 2>/dev/null)" ]; then
    echo "fetch.sh: npm install failed a moment ago (registry unreachable?); see $cache/npm-install.log" >&2
    exit 4
  fi
  cp "$here/package.json" "$cache/package.json"
  # --ignore-scripts: nothing from the registry runs at install time. The retry and timeout
  # settings bound the wait when the registry cannot be reached (npm's defaults wait minutes).
  if ! (cd "$cache" && timeout 600 npm install --ignore-scripts --no-audit --no-fund \
          --loglevel=error --fetch-retries=1 --fetch-retry-mintimeout=2000 \
          --fetch-retry-maxtimeout=5000 --fetch-timeout=30000 >"$cache/npm-install.log" 2>&1); then
    touch "$failed"
    echo "fetch.sh: npm install failed (registry unreachable?); see $cache/npm-install.log" >&2
    exit 4
  fi
  rm -f "$cache"/.installed-* "$failed"
  touch "$stamp"
fi
echo "$cache"
