#!/usr/bin/env bash
# Prepares .deps/prefix: the Debian -dev packages (and their runtime libraries) that the GPU
# machine's image lacks. That machine has PyTorch 2.x, CMake and a compiler but no apt and no
# network, so run this here and pass ".deps/prefix" in the device tool's `carry`; then run
# SARQC_TORCH_PYTHON=python3 scripts/build-torch.sh there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
debs="$root/.deps/debs"
prefix="$root/.deps/prefix"
packages=(
  libcli11-dev nlohmann-json3-dev
  libspdlog-dev libspdlog1.10 libfmt-dev libfmt9
  libgtest-dev googletest
  libsentencepiece-dev libsentencepiece0
  libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2
  libgloo-dev
)
command -v apt-get >/dev/null || { echo "gpu-deps: run this on the Debian machine, not the GPU one" >&2; exit 1; }
[ -d /var/lib/apt/lists ] && [ -n "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v lock)" ] || apt-get update -qq
rm -rf "$debs" "$prefix"
mkdir -p "$debs" "$prefix"
(cd "$debs" && apt-get download -qq "${packages[@]}")
for deb in "$debs"/*.deb; do dpkg -x "$deb" "$prefix"; done
echo "gpu-deps: $(ls "$debs" | wc -l) packages unpacked into .deps/prefix ($(du -sh "$prefix" | cut -f1))"
