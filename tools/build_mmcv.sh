#!/usr/bin/env bash
# Build (once) and cache a wheel of mmcv 2.1.0 with its compiled ops for the current PyTorch.
#
# Why: mmdet 3.3 / mmsegmentation 1.2 need mmcv >= 2.0, < 2.2. PyPI only ships mmcv 2.1.0 as a
# source archive, and its setup.py forces `-std=c++17`, while torch >= 2.10 headers need C++20.
# We fetch that sdist, raise the standard, compile the ops (CPU only: about 30 minutes on 2
# cores) and keep the wheel in a cache folder outside the repository so no later install pays for
# it again.
#
# CUDA: when torch is a CUDA build, nvcc is found (PATH, CUDA_HOME or CUDA_PATH) and a GPU is
# visible, the CUDA ops are built too; otherwise CPU ops only (GPUs hidden from the build). The
# cache slot names the flavour (tools/mmcv_wheel_slot.py): mmcv-2.1.0-torch2141-cp311-cpu or
# ...-cu121, so a CPU-only wheel built on a login node is never reused on a GPU node through a
# shared home directory. A slot named before flavours existed (always a CPU build) is renamed to
# its -cpu name.
#
# Usage: tools/build_mmcv.sh [PYTHON]    (default: python3)
# Env:   MMMV_WHEEL_CACHE   cache folder (default ~/.cache/mmmv/wheels)
#        MAX_JOBS           parallel compile jobs (default: number of cores)
#        MMMV_MMCV_CUDA     auto (default): CUDA ops when a GPU is visible; 1: also without one
#                           (set TORCH_CUDA_ARCH_LIST, e.g. "8.0;9.0"); 0: CPU ops only
#        TORCH_CUDA_ARCH_LIST  GPU architectures of a CUDA build (default: the visible GPUs')
# Prints the path of the cached wheel on its last line.
set -euo pipefail

PY=${1:-python3}
MMCV_VERSION=2.1.0
CACHE=${MMMV_WHEEL_CACHE:-$HOME/.cache/mmmv/wheels}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
slot_line=$("$PY" "$HERE/mmcv_wheel_slot.py" "$CACHE" "$MMCV_VERSION")
SLOT=${slot_line% *}
FLAVOUR=${slot_line##* }

existing=$(ls "$SLOT"/mmcv-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$existing" ]; then
  echo "build_mmcv: cached mmcv $MMCV_VERSION wheel, ops: $FLAVOUR" >&2
  echo "$existing"
  exit 0
fi

if [ "$FLAVOUR" = cpu ]; then
  echo "build_mmcv: building mmcv $MMCV_VERSION with CPU ops only (no CUDA build of torch, no" \
    "nvcc or no GPU visible; MMMV_MMCV_CUDA=1 builds CUDA ops without a GPU)" >&2
  build_env=(FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=)
else
  echo "build_mmcv: building mmcv $MMCV_VERSION with CUDA ops ($FLAVOUR, $(command -v nvcc ||
    echo "${CUDA_HOME:-${CUDA_PATH:-}}/bin/nvcc"))" >&2
  build_env=(FORCE_CUDA=1)
fi

mkdir -p "$CACHE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$work" \
  "mmcv==$MMCV_VERSION" >&2
tar -xzf "$work"/mmcv-"$MMCV_VERSION".tar.gz -C "$work"
src="$work/mmcv-$MMCV_VERSION"
sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
grep -q -- '-std=c++20' "$src/setup.py" || { echo "build_mmcv: C++ flag not found in setup.py" >&2; exit 1; }

# Build into a private folder and move the finished wheel in atomically: an interrupted build
# leaves nothing behind that a later run would mistake for a good wheel.
env "${build_env[@]}" MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
  "$PY" -m pip wheel --no-deps --no-build-isolation -w "$work/dist" "$src" >&2
mkdir -p "$work/slot"
cp "$work"/dist/mmcv-*.whl "$work/slot/"
mkdir -p "$(dirname "$SLOT")"
mv -T "$work/slot" "$SLOT"
echo "build_mmcv: built mmcv $MMCV_VERSION, ops: $FLAVOUR" >&2
ls "$SLOT"/mmcv-*.whl
