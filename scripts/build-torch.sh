#!/usr/bin/env bash
# The second toolchain: sarqc built against PyTorch 2.x's libtorch (the CUDA build PyPI ships)
# with CUDA enabled, then its whole test suite (CUDA tests skip without a GPU). This is also how
# a GPU user builds sarqc for CUDA.
#   scripts/build-torch.sh [ctest args]     installs torch into .venv (scripts/venv.sh) if needed
# Environment:
#   SARQC_TORCH_PYTHON  a python whose torch to build against instead (a machine without network:
#                       the Debian packages then come from .deps/prefix, see scripts/gpu-deps.sh)
#   SARQC_BUILD_DIR     build folder (default build-torch); SARQC_NO_TESTS=1 builds only
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build_dir=${SARQC_BUILD_DIR:-$root/build-torch}

prefix_args=()
prefix="$root/.deps/prefix/usr"
if [ -d "$prefix" ]; then  # Debian packages unpacked by gpu-deps.sh (no apt on that machine)
  arch_lib="$prefix/lib/$(uname -m)-linux-gnu"
  export LD_LIBRARY_PATH="$arch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  prefix_args=(-DCMAKE_INCLUDE_PATH="$prefix/include" -DCMAKE_LIBRARY_PATH="$arch_lib")
else
  bash "$root/scripts/setup.sh"
fi

python=${SARQC_TORCH_PYTHON:-}
if [ -z "$python" ]; then
  echo "build-torch: installing PyTorch into .venv if needed (about 5 GB with its CUDA libraries)" >&2
  python=$(bash "$root/scripts/venv.sh" "$root/scripts/requirements-test.txt" \
                                        "$root/scripts/requirements-torch.txt")
fi
read -r version abi cuda cmake_prefix < <("$python" -W ignore -c '
import torch
print(torch.__version__, int(torch._C._GLIBCXX_USE_CXX11_ABI), torch.version.cuda or "none",
      torch.utils.cmake_prefix_path)')
echo "build-torch: PyTorch $version, CUDA $cuda, C++11 ABI $abi" >&2
if [ "$abi" != 1 ]; then
  echo "build-torch: PyTorch $version uses the pre-C++11 string ABI; the Debian libraries sarqc" \
       "links need the C++11 ABI (PyTorch >= 2.7)" >&2
  exit 3
fi
cuda_args=(-DSARQC_REQUIRE_CUDA=OFF)
if [ "$cuda" != none ]; then
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  [ -x "$nvcc" ] || { echo "build-torch: PyTorch has CUDA $cuda but nvcc is not installed" >&2; exit 3; }
  cuda_args=(-DSARQC_REQUIRE_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc")
  # Without a GPU to probe, torch's CMake would list every architecture: one is enough here.
  nvidia-smi >/dev/null 2>&1 || export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
fi
torch_root=$(dirname "$(dirname "$cmake_prefix")")  # .../torch: its lib/ must win over /usr/lib
# libtorch_cuda finds its NVIDIA libraries (NCCL, cuBLAS...) beside it in site-packages at run
# time; the linker must find the same ones, not the toolkit's (an older NCCL lacks symbols).
rpath_link=$(ls -d "$torch_root"/../nvidia/*/lib 2>/dev/null | paste -sd: || true)
link_args=()
[ -n "$rpath_link" ] && link_args=(-DCMAKE_EXE_LINKER_FLAGS="-Wl,-rpath-link,$rpath_link")

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
export CCACHE_SLOPPINESS=${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}
cmake -S "$root" -B "$build_dir" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_root;$cmake_prefix${prefix_args:+;$prefix}" "${prefix_args[@]}" \
  "${cuda_args[@]}" "${link_args[@]}"
cmake --build "$build_dir" --parallel "$(nproc)"
[ -n "${SARQC_NO_TESTS:-}" ] && exit 0
bash "$root/scripts/run_ctest.sh" "$build_dir" "$@"
