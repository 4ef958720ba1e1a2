"""The GPU check's pytest plugin (``pytest -p perf.gpu.plugin``), configured by environment
variables that the test stages (:func:`perf.gpu.stages.tests_stage`) set:

- ``SEPKIT_GPU_CHECK_MAX_EXAMPLES``: hypothesis examples per test (a profile loaded over the one
  ``tests/conftest.py`` loads);
- ``SEPKIT_GPU_CHECK_ITEMS_PER_FILE``: keep the first N tests of each file, deselect the rest;
- ``SEPKIT_GPU_CHECK_DEADLINE``: a wall-clock time (``time.time()``) past which every test is
  skipped "for time"; before it each file gets an equal share of what is left;
- ``SEPKIT_GPU_CHECK_EVENTS``: a file that gets one JSON line per outcome as it comes (nodeid,
  phase, outcome, seconds, the failure's text or the skip's reason).

Without them it does nothing.
"""
from __future__ import annotations

import json
import os
import time


def pytest_configure(config):
    n = os.environ.get("SEPKIT_GPU_CHECK_MAX_EXAMPLES")
    if n:
        from hypothesis import settings

        settings.register_profile("gpu-check", parent=settings(), max_examples=int(n))
        settings.load_profile("gpu-check")


def pytest_collection_modifyitems(config, items):
    keep = os.environ.get("SEPKIT_GPU_CHECK_ITEMS_PER_FILE")
    if not keep:
        return
    seen, kept, dropped = {}, [], []
    for item in items:
        f = str(item.fspath)
        seen[f] = seen.get(f, 0) + 1
        (kept if seen[f] <= int(keep) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


_FILE_DEADLINES: dict = {}


def pytest_runtest_setup(item):
    """Past the stage's deadline, skip; before it, each test file gets an equal share of the time
    left when its first test starts, so a slow file cannot starve the ones after it."""
    deadline = os.environ.get("SEPKIT_GPU_CHECK_DEADLINE")
    if not deadline:
        return
    now, f = time.time(), str(item.fspath)
    if f not in _FILE_DEADLINES:
        files = list(dict.fromkeys(str(i.fspath) for i in item.session.items))
        later = files[files.index(f):] if f in files else [f]
        _FILE_DEADLINES[f] = now + (float(deadline) - now) / len(later)
    if now > min(float(deadline), _FILE_DEADLINES[f]):
        import pytest

        pytest.skip("gpu_check: skipped for time (the file's share of the stage's cap was used)")


def pytest_runtest_logreport(report):
    path = os.environ.get("SEPKIT_GPU_CHECK_EVENTS")
    if not path or not (report.when == "call" or report.outcome != "passed"):
        return
    if report.skipped and report.when == "teardown":
        return
    msg = ""
    if report.failed:
        msg = report.longreprtext[-3000:]
    elif report.skipped and isinstance(report.longrepr, tuple):
        msg = str(report.longrepr[2])
    with open(path, "a") as f:
        f.write(json.dumps(dict(nodeid=report.nodeid, when=report.when, outcome=report.outcome,
                                seconds=round(report.duration, 3), message=msg)) + "\n")
