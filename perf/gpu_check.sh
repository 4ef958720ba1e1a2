#!/usr/bin/env bash
# The prepared GPU check (perf/gpu_check.py says what it runs and writes): from the repository
# root of a bare GPU machine, sepkit from the source tree, missing dependencies from .whl/ (the
# download command is in perf/gpu_check.py's header). Output under $OUT (else ./gpu-check-out).
# Extra arguments go to the script, e.g. --budget-s 420 or --dry-run.
#   device session: run(command="bash perf/gpu_check.sh", carry=[".whl"], timeout_s=540)
#   your own GPU:   pip install -e ".[dev,perf]" && bash perf/gpu_check.sh --out gpu-check-out
set -uo pipefail
cd "$(dirname "$0")/.."
py=python3
command -v "$py" >/dev/null || py=python
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m perf.gpu_check "$@"
