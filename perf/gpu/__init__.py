"""The parts of the prepared GPU check, ``python -m perf.gpu_check`` (what it runs and writes is
described there):

- :mod:`perf.gpu.runner`: one run of the check: the time budget and each stage's cap, child
  processes killed at their cap, the output folder rewritten after every stage inside the output
  limits;
- :mod:`perf.gpu.stages`: the stages in order, what each runs and how it reads the result;
- :mod:`perf.gpu.workers`: the child processes of the facts and benchmark stages
  (``python -m perf.gpu.workers facts|bench``);
- :mod:`perf.gpu.plugin`: the pytest plugin of the test stages (``pytest -p perf.gpu.plugin``);
- :mod:`perf.gpu.install`: what a bare copy of the source tree needs first (the wheels in
  ``.whl/``, the ``sepkit/kernels`` link).
"""
from pathlib import Path

#: The repository root: the check runs from the source tree.
ROOT = Path(__file__).resolve().parents[2]
