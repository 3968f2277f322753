#!/usr/bin/env bash
# Launch a tool on a slurm partition, one task per GPU (mmengine reads the SLURM_* variables).
# Usage: tools/slurm_run.sh TOOL.py PARTITION JOB_NAME CONFIG [tool args...]
# Env: GPUS (8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS (''), PYTHON (python).
set -euo pipefail
TOOL=$1
PARTITION=$2
JOB_NAME=$3
CONFIG=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
HERE=$(cd "$(dirname "$0")" && pwd)
PYTHONPATH="$HERE/..${PYTHONPATH:+:$PYTHONPATH}" exec srun -p "$PARTITION" \
  --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 \
  ${SRUN_ARGS:-} "${PYTHON:-python}" -u "$HERE/$TOOL" "$CONFIG" --launcher slurm "${@:5}"
