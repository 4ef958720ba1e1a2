#!/usr/bin/env bash
# The prepared GPU check (perf/gpu_check.py says what it runs and writes), for any machine with a
# CUDA GPU: copy the working tree onto it (with .whl/ when the machine lacks packages and has no
# network; the download command is in perf/gpu_check.py's header), run this script from the
# copy, bring the output folder back and merge it here with `python -m perf.report --from DIR`.
# sepkit runs from the source tree. Output under $OUT if set, else ./gpu-check-out (or --out DIR);
# when what can come back from the machine is limited, say so with --max-files N and
# --max-file-mib M (defaults 8 files, 16 MiB each). Allow the script about a minute more than its
# budget (--budget-s, default 480 s). Extra arguments go to the script, e.g. --budget-s 420,
# --only kernel-tests,kernel-bench or --dry-run.
#   a copy of the tree:  bash perf/gpu_check.sh
#   your own GPU:        pip install -e ".[dev,perf]" && bash perf/gpu_check.sh --out gpu-check-out
set -uo pipefail
cd "$(dirname "$0")/.."
py=python3
command -v "$py" >/dev/null || py=python
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" -m perf.gpu_check "$@"
