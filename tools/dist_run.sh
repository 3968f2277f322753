#!/usr/bin/env bash
# Launch a tool on N processes of this node (or several nodes) with torchrun.
# Usage: tools/dist_run.sh TOOL.py CONFIG NPROC [tool args...]
# One process per GPU; on a CPU-only machine the processes use the gloo backend.
# Env: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (29500), PYTHON (python).
set -euo pipefail
TOOL=$1
CONFIG=$2
NPROC=$3
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python}" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --nproc_per_node="$NPROC" --master_port="${PORT:-29500}" \
  "$HERE/$TOOL" "$CONFIG" --launcher pytorch "${@:4}"
