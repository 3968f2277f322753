#!/usr/bin/env bash
# Build (once) and cache a wheel of mmcv 2.1.0 with its compiled ops for the current PyTorch.
#
# Why: mmdet 3.3 / mmsegmentation 1.2 need mmcv >= 2.0, < 2.2. PyPI only ships mmcv 2.1.0 as a
# source archive, and its setup.py forces `-std=c++17`, while torch >= 2.10 headers need C++20.
# We fetch that sdist, raise the standard, compile the CPU ops (about 30 minutes on 2 cores) and
# keep the wheel in a cache folder outside the repository so no later install pays for it again.
#
# Usage: tools/build_mmcv.sh [PYTHON]    (default: python3)
# Env:   MMMV_WHEEL_CACHE   cache folder (default ~/.cache/mmmv/wheels)
#        MAX_JOBS           parallel compile jobs (default: number of cores)
# Prints the path of the cached wheel on its last line.
set -euo pipefail

PY=${1:-python3}
MMCV_VERSION=2.1.0
CACHE=${MMMV_WHEEL_CACHE:-$HOME/.cache/mmmv/wheels}
TORCH_TAG=$("$PY" -c 'import torch; print("torch" + torch.__version__.split("+")[0].replace(".", ""))')
PY_TAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
SLOT="$CACHE/mmcv-$MMCV_VERSION-$TORCH_TAG-$PY_TAG"

existing=$(ls "$SLOT"/mmcv-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$existing" ]; then
  echo "$existing"
  exit 0
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
MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
  "$PY" -m pip wheel --no-deps --no-build-isolation -w "$work/dist" "$src" >&2
mkdir -p "$work/slot"
cp "$work"/dist/mmcv-*.whl "$work/slot/"
mkdir -p "$(dirname "$SLOT")"
mv -T "$work/slot" "$SLOT"
ls "$SLOT"/mmcv-*.whl
