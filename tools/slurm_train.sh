#!/usr/bin/env bash
# Usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py args...]
exec "$(dirname "$0")/slurm_run.sh" train.py "$@"
