"""The GPU check's stages, in order (:data:`STAGES`), each a function ``(check, stage, cap)`` that
runs its work in child processes under the cap and fills in the stage's record:

1. ``facts``: the wheels and the kernels link (:mod:`perf.gpu.install`), ``nvidia-smi``, the
   facts worker (versions, the device, which dependencies import);
2. ``check``: ``python -m sepkit check``;
3. ``kernel-tests``, 4. ``model-tests``: pytest with :mod:`perf.gpu.plugin`;
5. ``kernel-bench``, 6. ``model-bench``, 7. ``sweep``: the benchmark worker.

:func:`run_check` runs them.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from . import ROOT
from .install import ensure_kernels_link, install_wheels
from .runner import DEFAULT_BUDGET_S, Check, Limits, Stage, merge_rows
from .workers import DEPENDENCIES, importable

STAGES = ("facts", "check", "kernel-tests", "model-tests", "kernel-bench", "model-bench", "sweep")
KERNEL_OPS = ("snake", "stft_mask", "attention", "mmd", "nce")
#: Test files that exercise CPU-only plumbing (CI covers them): left out of the model-tests stage.
CPU_ONLY_TESTS = ("test_cli", "test_data", "test_data_items", "test_faults", "test_train", "test_tasks",
                  "test_perf", "test_gpu_check", "test_metrics", "test_attention_cpu")
#: Kernel test files besides ``test_<op>.py``: run in the kernel-tests stage.
EXTRA_KERNEL_TESTS = ("test_kernel_edges", "test_check")
#: Nominal caps (seconds) of the stages, for the default budget (:data:`DEFAULT_BUDGET_S`); each
#: is scaled to the run's budget and cut to what is left (:meth:`Check.cap`).
CAPS = {"facts": 30, "check": 60, "kernel-tests": 120, "model-tests": 75, "kernel-bench": 130,
        "model-bench": 75, "sweep": 120}


def facts_stage(chk: Check, st: Stage, cap: float) -> None:
    """Wheels, the kernels link, ``nvidia-smi`` and the facts worker; FAIL when a runtime
    dependency is missing or (not a dry run) there is no CUDA device."""
    log = chk.logs / "facts.log"
    start = time.time()
    notes = [install_wheels(chk), ensure_kernels_link()]
    if shutil.which("nvidia-smi"):
        chk.call(["nvidia-smi"], min(15, cap / 3), log)
        chk.call(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
                  "clocks.mem,power.limit,temperature.gpu", "--format=csv"], min(15, cap / 3), log)
    else:
        notes.append("no nvidia-smi here")
    path = chk.work / "facts.json"
    rc, _ = chk.call([sys.executable, "-m", "perf.gpu.workers", "facts", "--json", str(path)],
                     max(cap - (time.time() - start), 5), log)
    if rc != 0 or not path.is_file():
        st.status, st.detail = "FAIL", f"the facts worker exited with {rc} (logs/facts.log)"
        return
    chk.facts.update(json.loads(path.read_text()))
    missing = [f"{d} ({extra})" for d, m, extra in DEPENDENCIES if not chk.facts["imports"].get(d)]
    runtime_missing = [d for d, m, extra in DEPENDENCIES if extra == "runtime" and not chk.facts["imports"].get(d)]
    gpu = chk.facts.get("gpu") or "no CUDA device"
    st.detail = "; ".join([f"{gpu}" + (f", sm_{chk.facts['capability'].replace('.', '')}, "
                                      f"{chk.facts['sm_count']} SMs, {chk.facts['memory_gib']} GiB"
                                      if chk.facts.get("gpu") else ""),
                           f"torch {chk.facts.get('torch')}, triton {chk.facts.get('triton')}",
                           *notes, "missing: " + (", ".join(missing) or "none")])
    if runtime_missing:
        st.status = "FAIL"
        st.detail += f"; runtime dependencies missing: {', '.join(runtime_missing)}"
    elif not chk.facts.get("gpu") and not chk.dry:
        st.status = "FAIL"
        st.detail += "; no CUDA device (use --dry-run on a CPU)"
    else:
        st.status = "pass"


def check_stage(chk: Check, st: Stage, cap: float) -> None:
    """``python -m sepkit check`` (a dry run: ``--op snake``); its summary line is the detail."""
    log = chk.logs / "check.log"
    argv = [sys.executable, "-m", "sepkit", "check"] + (["--op", "snake"] if chk.dry else [])
    rc, _ = chk.call(argv, cap, log)
    text = log.read_text(errors="replace")
    summary = [ln for ln in text.splitlines() if "checks passed" in ln]
    fails = [ln for ln in text.splitlines() if ln.startswith("FAIL")]
    st.detail = (summary[-1] if summary else "no summary line") + ("; dry run: --op snake only" if chk.dry else "")
    if fails:
        st.detail += "; " + " | ".join(fails[:5])
    st.status = "pass" if rc == 0 else ("skipped for time" if rc is None else "FAIL")
    if rc is None:
        st.skipped_for_time.append("sepkit check (killed at its cap)")
    chk.test_reports.append(f"## sepkit check (exit {rc})\n\n" + text[-6000:])


def test_files(kernel: bool) -> list[str]:
    """The test files of the kernel-tests stage (``kernel``, in :data:`KERNEL_OPS` order) or of
    the model-tests stage (every other one but :data:`CPU_ONLY_TESTS`)."""
    names = sorted(p.stem for p in (ROOT / "tests").glob("test_*.py"))
    order = [f"test_{op}" for op in KERNEL_OPS] + list(EXTRA_KERNEL_TESTS)
    chosen = [n for n in names if (n in order) == kernel and n not in CPU_ONLY_TESTS]
    if kernel:  # the ops' own order
        chosen.sort(key=lambda n: order.index(n) if n in order else len(order))
    return [f"tests/{n}.py" for n in chosen]


def tests_stage(chk: Check, st: Stage, cap: float, kernel: bool) -> None:
    """pytest on :func:`test_files` with :mod:`perf.gpu.plugin` (the hypothesis "gpu" profile,
    ``max_examples``, seed 0; a dry run: the first test of the first file, one example); counts
    the outcomes, bf16 among them, and keeps the failures' text for ``pytest.txt``."""
    files = test_files(kernel)
    if chk.dry:
        files = files[:1]
    if not files:
        st.status, st.detail = "skipped", "no test files"
        return
    events = chk.work / f"{st.name}.jsonl"
    env = dict(chk.env, SEPKIT_GPU_CHECK_EVENTS=str(events),
               SEPKIT_GPU_CHECK_DEADLINE=str(time.time() + cap - 15),
               SEPKIT_GPU_CHECK_MAX_EXAMPLES=str(1 if chk.dry else chk.max_examples))
    if not chk.dry:
        env["SEPKIT_HYPOTHESIS_PROFILE"] = "gpu"
    else:
        env["SEPKIT_GPU_CHECK_ITEMS_PER_FILE"] = "1"
    argv = [sys.executable, "-m", "pytest", "-p", "perf.gpu.plugin", "-q", "-rfE", "--hypothesis-seed=0",
            "-o", "addopts=-p no:cacheprovider", *files]
    if chk.workers > 1 and importable("xdist"):
        argv[3:3] = ["-n", str(chk.workers)]
    log = chk.logs / f"{st.name}.log"
    rc, _ = chk.call(argv, cap, log, env)
    outcomes = {"passed": 0, "failed": 0, "skipped": 0}
    timed, failures, bf16 = [], [], {"passed": 0, "failed": 0}
    if events.is_file():
        for line in events.read_text().splitlines():
            e = json.loads(line)
            if e["outcome"] == "skipped" and "skipped for time" in e["message"]:
                timed.append(e["nodeid"])
                continue
            outcomes[e["outcome"]] = outcomes.get(e["outcome"], 0) + 1
            if e["outcome"] == "failed":
                failures.append(e)
            if "bfloat16" in e["nodeid"] and e["outcome"] in bf16:
                bf16[e["outcome"]] += 1
    st.skipped_for_time = timed
    st.detail = (f"{outcomes['passed']} passed, {outcomes['failed']} failed, {outcomes['skipped']} skipped"
                 f" in {len(files)} files; bf16-parametrized: {bf16['passed']} passed, {bf16['failed']} failed"
                 + (f"; {len(timed)} skipped for time" if timed else "")
                 + (f"; dry run: first test of {', '.join(files)}, 1 example" if chk.dry else
                    f"; hypothesis 'gpu' profile, {chk.max_examples} examples, seed 0"))
    if rc is None:
        st.detail += "; pytest killed at its cap"
    if failures or rc not in (0, 5, None):
        st.status = "FAIL"
    elif rc is None or timed:
        st.status = "partial"
    else:
        st.status = "pass"
    text = log.read_text(errors="replace")
    tail = text[text.rfind("short test summary"):] if "short test summary" in text else text[-3000:]
    body = "\n".join(f"### FAILED {e['nodeid']} ({e['when']})\n\n{e['message']}\n" for e in failures[:40])
    chk.test_reports.append(f"## {st.name} (exit {rc}): {st.detail}\n\n{tail[-8000:]}\n\n{body}"
                            + ("\nskipped for time:\n" + "\n".join(timed) if timed else ""))


def bench_modules(kernel: bool) -> list[str]:
    """The ops of the kernel benchmarks (:data:`KERNEL_OPS` found in perf/) or of every other
    ``perf/bench_*.py``."""
    found = sorted(p.stem[len("bench_"):] for p in (ROOT / "perf").glob("bench_*.py"))
    if kernel:
        return [op for op in KERNEL_OPS if op in found]
    return [op for op in found if op not in KERNEL_OPS]


def bench_stage(chk: Check, st: Stage, cap: float, kernel: bool, quick: bool) -> None:
    """The benchmark worker on :func:`bench_modules` (``quick``: headline shapes; else the sweep,
    mmd first); merges its rows into the check's results (a dry run: imports only)."""
    ops = bench_modules(kernel)
    if not kernel and not ops:
        st.status, st.detail = "skipped", "no model-level perf/bench_*.py found"
        return
    if not quick:  # the sweep: the headline target of mmd (16k) first
        order = ("mmd", "attention", "nce", "snake", "stft_mask")
        ops.sort(key=lambda o: order.index(o) if o in order else len(order))
    path = chk.work / f"{st.name}.json"
    argv = [sys.executable, "-m", "perf.gpu.workers", "bench", "--json", str(path),
            "--ops", ",".join(ops), "--deadline", str(time.time() + cap - 12)] + (["--quick"] if quick else [])
    if chk.dry:
        argv.append("--dry-run")
    rc, _ = chk.call(argv, cap, chk.logs / f"{st.name}.log")
    if not path.is_file():
        st.status, st.detail = "FAIL", f"the benchmark worker exited with {rc} and wrote nothing"
        return
    data = json.loads(path.read_text())
    if not chk.bench["facts"]:
        chk.bench["facts"] = data["facts"]
    chk.bench["notes"] += [n for n in data["notes"] if n not in chk.bench["notes"]]
    chk.bench["rows"] = merge_rows(chk.bench["rows"], data["rows"])
    status = data["status"]
    done = [o for o, s in status.items() if s == "done"]
    by_reason: dict = {}
    for o, s in status.items():
        if s.startswith("failed"):
            by_reason.setdefault(s, []).append(o)
    failed = [f"{', '.join(ops_)} ({reason})" for reason, ops_ in by_reason.items()]
    st.skipped_for_time = [f"bench_{o}: {s}" for o, s in status.items() if "time" in s]
    st.detail = f"{len(data['rows'])} rows; done: {', '.join(done) or 'none'}"
    if failed:
        st.detail += "; failed: " + ", ".join(failed)
    if chk.dry:
        st.status = "skipped"
        st.detail = (f"dry run: benchmarks time CUDA kernels at GPU-sized shapes, so nothing is timed; "
                     f"{len(data['imported'])} modules import with run(ctx): {', '.join(data['imported'])}")
        if failed:
            st.status, st.detail = "FAIL", st.detail + "; failed: " + ", ".join(failed)
    elif failed or rc not in (0, None):
        st.status = "FAIL"
    elif st.skipped_for_time or rc is None:
        st.status = "partial"
    else:
        st.status = "pass"


def run_check(out: Path, budget_s: float = DEFAULT_BUDGET_S, dry: bool = False, max_examples: int = 20,
              workers: int = 0, only: tuple[str, ...] = (), limits: Limits = Limits()) -> Check:
    """Run every stage (see the module docstring), or the facts and those in ``only``, and write
    ``out`` inside ``limits``; returns the record."""
    chk = Check(out, budget_s, dry, max_examples, workers, limits=limits, caps=CAPS, only=only)
    try:
        chk.stage("facts", lambda st, cap: facts_stage(chk, st, cap))
        if not dry and not chk.facts.get("gpu"):
            for name in STAGES[1:]:
                chk.stages.append(Stage(name, 0, "skipped", 0, "no CUDA device here (--dry-run checks the plumbing "
                                        "on a CPU)"))
            chk.pack()
            return chk
        chk.stage("check", lambda st, cap: check_stage(chk, st, cap))
        chk.stage("kernel-tests", lambda st, cap: tests_stage(chk, st, cap, kernel=True))
        chk.stage("model-tests", lambda st, cap: tests_stage(chk, st, cap, kernel=False))
        chk.stage("kernel-bench", lambda st, cap: bench_stage(chk, st, cap, kernel=True, quick=True))
        chk.stage("model-bench", lambda st, cap: bench_stage(chk, st, cap, kernel=False, quick=True))
        if dry:
            chk.stages.append(Stage("sweep", 0, "skipped", 0, "dry run: the full-size sweep only runs on a GPU"))
        else:
            chk.stage("sweep", lambda st, cap: bench_stage(chk, st, cap, kernel=True, quick=False))
        chk.pack(final=True)
    finally:
        shutil.rmtree(chk.work, ignore_errors=True)
    return chk
