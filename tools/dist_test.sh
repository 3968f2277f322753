#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py args...]
exec "$(dirname "$0")/dist_run.sh" test.py "$1" "$3" "$2" "${@:4}"
