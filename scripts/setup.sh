#!/usr/bin/env bash
# Installs whatever sarqc needs to build and test, from Debian 12 packages only.
# Idempotent and non-interactive: installs nothing when everything is present.
set -euo pipefail

packages=(
  g++ cmake ninja-build ccache
  libtorch-dev            # libtorch 1.13 (CPU)
  libopenblas0-pthread    # the reference BLAS Debian falls back to is ~30x slower
  libcli11-dev libspdlog-dev nlohmann-json3-dev libgtest-dev libsentencepiece-dev
  libpcre2-dev libutf8proc-dev  # tokenizer.json: Unicode regexes and normalization
  libgloo-dev             # headers of c10d's ProcessGroupGloo (several ranks)
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} > 0)); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install packages" >&2; exit 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# OpenBLAS registers itself as the preferred BLAS/LAPACK; warn if someone pinned another one.
for lib in libblas.so.3 liblapack.so.3; do
  target=$(readlink -f "/usr/lib/$(uname -m)-linux-gnu/$lib" 2>/dev/null || true)
  case "$target" in
    *openblas*) ;;
    *) echo "setup: warning: $lib resolves to '$target', not OpenBLAS; linear algebra will be slow" \
            "(fix: update-alternatives --config $lib-$(uname -m)-linux-gnu)" >&2 ;;
  esac
done
