"""``python -m perf.gpu_check [--out DIR] [--dry-run] [--budget-s 480]``: validate sepkit on a GPU.

One prepared command for a bare GPU machine with no network (torch, triton, torchaudio already
there). Run it from the repository root; sepkit runs from the source tree through PYTHONPATH (no
``pip install``). Stages, in order, each with its own time cap, all inside ``--budget-s`` seconds
of wall time (the caps shrink to what is left; a stage with too little left is skipped for time):

1. ``facts``: ``nvidia-smi``, the device's properties, the versions, which of sepkit's
   dependencies import;
2. ``check``: ``python -m sepkit check`` (every kernel compiled, against float64);
3. ``kernel-tests``: the kernel tests (``tests/test_<op>.py`` per op, :data:`EXTRA_KERNEL_TESTS`)
   under the ``gpu`` hypothesis profile with a bounded example count (``--max-examples``) and a
   fixed hypothesis seed; bf16 is among the dtypes on a GPU;
4. ``model-tests``: every other test file except the CPU-only ones (:data:`CPU_ONLY_TESTS`);
5. ``kernel-bench``: every kernel benchmark at its headline shapes (``perf/bench_<op>.py``,
   ``quick``);
6. ``model-bench``: every other ``perf/bench_*.py`` found (model-level training step and
   inference, kernels vs the reference backend, peak memory);
7. ``sweep``: the kernel benchmarks at all their sizes, with whatever time is left.

Benchmarks run in a child process (``--worker``) that shares its stage's time among the modules
and stops one at its share; pytest runs with this module as a plugin (``-p perf.gpu_check``) that
bounds the examples, skips what is left at the stage's cap and logs each outcome as it comes.

Output (``--out``, default ``$OUT``, else ``gpu-check-out``), rewritten after every stage so an
interrupted run still returns something; at most 8 files, none over 16 MiB (the device tool's
limits, :func:`enforce_limits`): ``summary.md`` (the final table, also printed), ``gpu_check.json``
(stages, targets, facts), ``results.json`` and ``results.md`` (benchmark rows in perf's format:
``python -m perf.report --from DIR`` merges them), ``pytest.txt`` (summaries and failures),
``logs.tar.gz`` (every stage's full log) and ``plots.tar``.

``--only kernel-tests,kernel-bench`` reruns chosen stages (after the facts) inside a smaller
``--budget-s``, for the minutes a device session has left after the first run.

``--dry-run`` (CPU, CI): every stage runs through the same code with the interpreter and tiny
work (``sepkit check --op snake``, the first test of the first file of each test stage, one
example; the benchmark workers import every module and check its ``run``) or is skipped with its
reason.

Wheels: what the GPU image lacks among sepkit's dependencies travels in ``.whl/`` (git-ignored)
and is installed into a temporary folder put on PYTHONPATH. Download them here (with network):

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \\
        -d .whl soundfile==0.13.1 cffi==2.0.0 pycparser==2.23 mir_eval==0.8.2 decorator==5.2.1 pystoi==0.4.1

(soundfile is the one runtime dependency the image lacks, cffi and pycparser its needs; mir_eval
with decorator, and pystoi, are the dev and eval extras' peers, small, for a run that adds the
metric tests. Not carried: pesq, whose tests skip without it, and xformers, whose wheels are built
for one torch version: the attention benchmark notes it as skipped.) On a device session: carry
``.whl`` and run ``bash perf/gpu_check.sh`` with a timeout of about 540 s.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KERNEL_OPS = ("snake", "stft_mask", "attention", "mmd", "nce")
#: Test files that exercise CPU-only plumbing (CI covers them): left out of the model-tests stage.
CPU_ONLY_TESTS = ("test_cli", "test_data", "test_faults", "test_train", "test_tasks", "test_perf",
                  "test_gpu_check", "test_metrics", "test_attention_cpu")
#: Kernel test files besides ``test_<op>.py``: run in the kernel-tests stage.
EXTRA_KERNEL_TESTS = ("test_kernel_edges", "test_check")
#: Default caps (seconds) of the stages, for a 480 s budget; each is also cut to what is left.
CAPS = {"facts": 30, "check": 60, "kernel-tests": 120, "model-tests": 75, "kernel-bench": 130,
        "model-bench": 75, "sweep": 120}
#: Seconds kept back for packing the output and printing the table.
RESERVE_S = 15
#: A stage with less time than this left is skipped for time.
MIN_STAGE_S = 8
#: The device tool's limits on what comes back from $OUT.
MAX_FILES, MAX_FILE_BYTES = 8, 16 * 2**20
#: Imports to look for: (distribution, module, extra) of setup.py's requirements.
DEPENDENCIES = (
    ("torch", "torch", "runtime"), ("triton", "triton", "runtime"), ("torchaudio", "torchaudio", "runtime"),
    ("numpy", "numpy", "runtime"), ("pyyaml", "yaml", "runtime"),
    ("safetensors", "safetensors", "runtime"), ("soundfile", "soundfile", "runtime"), ("scipy", "scipy", "runtime"),
    ("tqdm", "tqdm", "runtime"), ("pytest", "pytest", "dev"), ("hypothesis", "hypothesis", "dev"),
    ("mir_eval", "mir_eval", "dev"), ("nvidia-ml-py", "pynvml", "perf"), ("matplotlib", "matplotlib", "perf"),
    ("xformers", "xformers", "perf"), ("pesq", "pesq", "eval"), ("pystoi", "pystoi", "eval"),
)


# --------------------------------------------------------------------------------------------
# pytest plugin (loaded with -p perf.gpu_check; configured through environment variables)
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------------
@dataclass
class Stage:
    name: str
    cap_s: float
    status: str = "not run"     # pass, FAIL, skipped, skipped for time, partial
    seconds: float = 0.0
    detail: str = ""
    skipped_for_time: list = field(default_factory=list)


class Check:
    """One run of the check: the budget, the work folder, the stages' records, the output."""

    def __init__(self, out: Path, budget_s: float, dry: bool, max_examples: int, workers: int):
        self.t0 = time.time()
        self.out, self.budget_s, self.dry = out, budget_s, dry
        self.max_examples, self.workers = max_examples, workers
        self.work = Path(tempfile.mkdtemp(prefix="sepkit-gpu-check-"))
        self.logs = self.work / "logs"
        self.logs.mkdir()
        self.stages: list[Stage] = []
        self.facts: dict = {"dry_run": dry}
        self.bench: dict = {"facts": {}, "notes": [], "rows": []}
        self.test_reports: list[str] = []
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        if dry:  # CPU alone, also on a GPU machine: the kernels run in Triton's interpreter
            self.env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")

    # time ---------------------------------------------------------------------------------
    def left(self) -> float:
        return self.budget_s - (time.time() - self.t0) - RESERVE_S

    def cap(self, name: str) -> float:
        scaled = max(CAPS[name] * self.budget_s / 480.0, min(CAPS[name], 20))  # a small budget still starts
        return min(scaled, self.left())

    # running ------------------------------------------------------------------------------
    def call(self, argv: list[str], cap: float, log: Path, env: dict | None = None) -> tuple[int | None, float]:
        """Run ``argv`` with its output in ``log``; killed (process group) at ``cap`` seconds.

        Returns (exit status or None when killed, seconds)."""
        t = time.time()
        with open(log, "ab") as f:
            f.write(f"$ {' '.join(argv)}\n".encode())
            f.flush()
            try:
                proc = subprocess.Popen(argv, cwd=ROOT, env=env or self.env, stdout=f, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            except OSError as exc:
                f.write(f"could not start: {exc}\n".encode())
                return 127, 0.0
            try:
                rc = proc.wait(timeout=max(cap, 1))
            except subprocess.TimeoutExpired:
                for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                    try:
                        os.killpg(proc.pid, sig)
                        proc.wait(timeout=wait)
                        break
                    except (subprocess.TimeoutExpired, ProcessLookupError):
                        continue
                f.write(f"\n[gpu_check: killed at its cap of {cap:.0f} s]\n".encode())
                rc = None
        return rc, time.time() - t

    def stage(self, name: str, fn) -> Stage:
        cap = self.cap(name)
        st = Stage(name, round(cap, 1))
        self.stages.append(st)
        if cap < MIN_STAGE_S:
            st.status, st.detail = "skipped for time", f"{max(self.left(), 0):.0f} s left of the budget"
        else:
            t = time.time()
            print(f"[gpu_check] {name} (cap {cap:.0f} s) ...", flush=True)
            try:
                fn(st, cap)
            except Exception as exc:  # a broken stage must not stop the others
                st.status, st.detail = "FAIL", f"gpu_check error: {type(exc).__name__}: {exc}"
            st.seconds = round(time.time() - t, 1)
            print(f"[gpu_check] {name}: {st.status} in {st.seconds:.0f} s; {st.detail}", flush=True)
        self.pack()
        return st

    # 0. wheels ----------------------------------------------------------------------------
    def install_wheels(self) -> str:
        wheels = sorted((ROOT / ".whl").glob("*.whl"))
        if not wheels:
            return "no .whl folder: dependencies as installed"
        if self.dry:
            return f"dry run: {len(wheels)} wheels in .whl not installed"
        site = self.work / "site"
        argv = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, wheels)]
        rc, _ = self.call(argv, 60, self.logs / "wheels.log")
        if rc != 0:
            return f"installing {len(wheels)} wheels FAILED (logs/wheels.log)"
        self.env["PYTHONPATH"] = os.pathsep.join((str(ROOT), str(site), *filter(None, [os.environ.get("PYTHONPATH")])))
        return f"installed {len(wheels)} wheels from .whl: " + ", ".join(w.name.split("-")[0] for w in wheels)

    # 1. facts -----------------------------------------------------------------------------
    def facts_stage(self, st: Stage, cap: float) -> None:
        log = self.logs / "facts.log"
        start = time.time()
        notes = [self.install_wheels(), ensure_kernels_link()]
        if shutil.which("nvidia-smi"):
            self.call(["nvidia-smi"], min(15, cap / 3), log)
            self.call(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,"
                       "clocks.mem,power.limit,temperature.gpu", "--format=csv"], min(15, cap / 3), log)
        else:
            notes.append("no nvidia-smi here")
        path = self.work / "facts.json"
        rc, _ = self.call([sys.executable, "-m", "perf.gpu_check", "--worker", "facts", "--json", str(path)],
                          max(cap - (time.time() - start), 5), log)
        if rc != 0 or not path.is_file():
            st.status, st.detail = "FAIL", f"the facts worker exited with {rc} (logs/facts.log)"
            return
        self.facts.update(json.loads(path.read_text()))
        missing = [f"{d} ({extra})" for d, m, extra in DEPENDENCIES if not self.facts["imports"].get(d)]
        runtime_missing = [d for d, m, extra in DEPENDENCIES if extra == "runtime" and not self.facts["imports"].get(d)]
        gpu = self.facts.get("gpu") or "no CUDA device"
        st.detail = "; ".join([f"{gpu}" + (f", sm_{self.facts['capability'].replace('.', '')}, "
                                          f"{self.facts['sm_count']} SMs, {self.facts['memory_gib']} GiB"
                                          if self.facts.get("gpu") else ""),
                               f"torch {self.facts.get('torch')}, triton {self.facts.get('triton')}",
                               *notes, "missing: " + (", ".join(missing) or "none")])
        if runtime_missing:
            st.status = "FAIL"
            st.detail += f"; runtime dependencies missing: {', '.join(runtime_missing)}"
        elif not self.facts.get("gpu") and not self.dry:
            st.status = "FAIL"
            st.detail += "; no CUDA device (use --dry-run on a CPU)"
        else:
            st.status = "pass"

    # 2. sepkit check ----------------------------------------------------------------------
    def check_stage(self, st: Stage, cap: float) -> None:
        log = self.logs / "check.log"
        argv = [sys.executable, "-m", "sepkit", "check"] + (["--op", "snake"] if self.dry else [])
        rc, _ = self.call(argv, cap, log)
        text = log.read_text(errors="replace")
        summary = [ln for ln in text.splitlines() if "checks passed" in ln]
        fails = [ln for ln in text.splitlines() if ln.startswith("FAIL")]
        st.detail = (summary[-1] if summary else "no summary line") + ("; dry run: --op snake only" if self.dry else "")
        if fails:
            st.detail += "; " + " | ".join(fails[:5])
        st.status = "pass" if rc == 0 else ("skipped for time" if rc is None else "FAIL")
        if rc is None:
            st.skipped_for_time.append("sepkit check (killed at its cap)")
        self.test_reports.append(f"## sepkit check (exit {rc})\n\n" + text[-6000:])

    # 3./4. tests --------------------------------------------------------------------------
    def test_files(self, kernel: bool) -> list[str]:
        names = sorted(p.stem for p in (ROOT / "tests").glob("test_*.py"))
        order = [f"test_{op}" for op in KERNEL_OPS] + list(EXTRA_KERNEL_TESTS)
        chosen = [n for n in names if (n in order) == kernel and n not in CPU_ONLY_TESTS]
        if kernel:  # the ops' own order
            chosen.sort(key=lambda n: order.index(n) if n in order else len(order))
        return [f"tests/{n}.py" for n in chosen]

    def tests_stage(self, st: Stage, cap: float, kernel: bool) -> None:
        files = self.test_files(kernel)
        if self.dry:
            files = files[:1]
        if not files:
            st.status, st.detail = "skipped", "no test files"
            return
        events = self.work / f"{st.name}.jsonl"
        env = dict(self.env, SEPKIT_GPU_CHECK_EVENTS=str(events),
                   SEPKIT_GPU_CHECK_DEADLINE=str(time.time() + cap - 15),
                   SEPKIT_GPU_CHECK_MAX_EXAMPLES=str(1 if self.dry else self.max_examples))
        if not self.dry:
            env["SEPKIT_HYPOTHESIS_PROFILE"] = "gpu"
        else:
            env["SEPKIT_GPU_CHECK_ITEMS_PER_FILE"] = "1"
        argv = [sys.executable, "-m", "pytest", "-p", "perf.gpu_check", "-q", "-rfE", "--hypothesis-seed=0",
                "-o", "addopts=-p no:cacheprovider", *files]
        if self.workers > 1 and _importable("xdist"):
            argv[3:3] = ["-n", str(self.workers)]
        log = self.logs / f"{st.name}.log"
        rc, _ = self.call(argv, cap, log, env)
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
                     + (f"; dry run: first test of {', '.join(files)}, 1 example" if self.dry else
                        f"; hypothesis 'gpu' profile, {self.max_examples} examples, seed 0"))
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
        self.test_reports.append(f"## {st.name} (exit {rc}): {st.detail}\n\n{tail[-8000:]}\n\n{body}"
                                 + ("\nskipped for time:\n" + "\n".join(timed) if timed else ""))

    # 5.-7. benchmarks ---------------------------------------------------------------------
    def bench_modules(self, kernel: bool) -> list[str]:
        found = sorted(p.stem[len("bench_"):] for p in (ROOT / "perf").glob("bench_*.py"))
        if kernel:
            return [op for op in KERNEL_OPS if op in found]
        return [op for op in found if op not in KERNEL_OPS]

    def bench_stage(self, st: Stage, cap: float, kernel: bool, quick: bool) -> None:
        ops = self.bench_modules(kernel)
        if not kernel and not ops:
            st.status, st.detail = "skipped", "no model-level perf/bench_*.py found"
            return
        if not quick:  # the sweep: the headline target of mmd (16k) first
            order = ("mmd", "attention", "nce", "snake", "stft_mask")
            ops.sort(key=lambda o: order.index(o) if o in order else len(order))
        path = self.work / f"{st.name}.json"
        argv = [sys.executable, "-m", "perf.gpu_check", "--worker", "bench", "--json", str(path),
                "--ops", ",".join(ops), "--deadline", str(time.time() + cap - 12)] + (["--quick"] if quick else [])
        if self.dry:
            argv.append("--dry-run")
        rc, _ = self.call(argv, cap, self.logs / f"{st.name}.log")
        if not path.is_file():
            st.status, st.detail = "FAIL", f"the benchmark worker exited with {rc} and wrote nothing"
            return
        data = json.loads(path.read_text())
        if not self.bench["facts"]:
            self.bench["facts"] = data["facts"]
        self.bench["notes"] += [n for n in data["notes"] if n not in self.bench["notes"]]
        self.bench["rows"] = merge_rows(self.bench["rows"], data["rows"])
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
        if self.dry:
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

    # output -------------------------------------------------------------------------------
    def targets(self) -> list[dict]:
        from perf.report import targets

        return targets(self.bench["rows"])

    def summary(self) -> str:
        from perf.report import device_name, targets_table

        lines = [f"# sepkit GPU check{' (dry run)' if self.dry else ''}", "",
                 f"Device: {device_name(self.facts) if self.facts.get('gpu') else 'no CUDA device'}; "
                 f"torch {self.facts.get('torch')}, triton {self.facts.get('triton')}, "
                 f"sepkit {self.facts.get('sepkit')}; {self.facts.get('date', '')}; "
                 f"budget {self.budget_s:.0f} s, used {time.time() - self.t0:.0f} s.", "",
                 "| stage | result | s | cap s | detail |", "|---|---|---|---|---|"]
        for st in self.stages:
            detail = st.detail.replace("|", "/")
            lines.append(f"| {st.name} | {st.status} | {st.seconds:.0f} | {st.cap_s:.0f} | {detail} |")
        lines += ["", targets_table(self.targets())]
        timed = []
        for st in self.stages:
            per_file: dict = {}
            for x in st.skipped_for_time:
                key = x.split("::")[0] if "::" in x else x
                per_file[key] = per_file.get(key, 0) + 1
            timed += [f"- {st.name}: {k}" + (f" ({n} tests)" if k.endswith(".py") else "") for k, n in per_file.items()]
        timed += [f"- {st.name}: whole stage ({st.detail})" for st in self.stages if st.status == "skipped for time"]
        lines += ["Skipped for time:", *(timed or ["- nothing"]), ""]
        passed = sum(st.status == "pass" for st in self.stages)
        failed = [st.name for st in self.stages if st.status == "FAIL"]
        lines.append(f"{passed} of {len(self.stages)} stages passed; failed: {', '.join(failed) or 'none'}.")
        return "\n".join(lines) + "\n"

    def pack(self, final: bool = False) -> None:
        """(Re)write every output file from what is known now, inside the device tool's limits
        (the plots only when ``final``: drawing them takes seconds)."""
        from perf.report import markdown_table, plot

        self.out.mkdir(parents=True, exist_ok=True)
        for old in self.out.iterdir():  # only this check's own names are written below
            if old.is_file() and old.name in OUTPUT_FILES and (final or old.name != "plots.tar"):
                old.unlink()
        (self.out / "summary.md").write_text(self.summary())
        record = dict(facts=self.facts, stages=[asdict(s) for s in self.stages], targets=self.targets(),
                      budget_s=self.budget_s, elapsed_s=round(time.time() - self.t0, 1))
        (self.out / "gpu_check.json").write_text(json.dumps(record, indent=1, default=str))
        facts = dict(self.bench["facts"] or {}, dry_run=self.dry)
        (self.out / "results.json").write_text(json.dumps(dict(self.bench, facts=facts), indent=1, default=str))
        if self.bench["rows"]:
            (self.out / "results.md").write_text(markdown_table(self.bench["rows"], facts)
                                                 + "".join(f"\n- {n}" for n in self.bench["notes"]) + "\n")
        if self.bench["rows"] and final:
            plots = self.work / "plots"
            shutil.rmtree(plots, ignore_errors=True)
            plots.mkdir()
            pngs = plot(self.bench["rows"], plots / "bench")
            if pngs:
                with tarfile.open(self.out / "plots.tar", "w") as tar:
                    for p in pngs:
                        tar.add(p, arcname=p.name)
        (self.out / "pytest.txt").write_text("\n\n".join(self.test_reports) or "no test stage ran\n")
        with tarfile.open(self.out / "logs.tar.gz", "w:gz") as tar:
            for p in sorted(self.logs.iterdir()) + sorted(self.work.glob("*.jsonl")):
                tar.add(p, arcname=f"logs/{p.name}")
        enforce_limits(self.out)


OUTPUT_FILES = ("summary.md", "gpu_check.json", "results.json", "results.md", "pytest.txt", "logs.tar.gz",
                "plots.tar")


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows of both, a later row replacing an earlier one of the same measurement."""
    def key(r):
        return (r["op"], r["provider"], r["mode"], r["metric"], r["x_name"], str(r["x_value"]),
                json.dumps(r.get("config"), sort_keys=True, default=str))

    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})
    return list(merged.values())


def enforce_limits(out: Path) -> list[tuple[str, int]]:
    """Keep ``out`` inside the limits: text files over 16 MiB cut to their head and tail, any
    other oversized file or any file past the 8th removed (named in ``dropped.txt``, which takes
    a slot). Returns (name, bytes) of what is left."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    dropped = []
    for p in files:
        if p.stat().st_size <= MAX_FILE_BYTES:
            continue
        if p.suffix in (".md", ".txt", ".json", ".log"):
            data = p.read_bytes()
            half = (MAX_FILE_BYTES - 256) // 2
            p.write_bytes(data[:half] + b"\n\n[... cut by gpu_check to fit 16 MiB ...]\n\n" + data[-half:])
        else:
            dropped.append(f"{p.relative_to(out)} ({p.stat().st_size} bytes)")
            p.unlink()
    files = sorted((p for p in out.rglob("*") if p.is_file()), key=lambda p: (p.name not in OUTPUT_FILES, p.name))
    if len(files) > MAX_FILES or dropped:
        keep = MAX_FILES - 1
        for p in files[keep:]:
            dropped.append(f"{p.relative_to(out)} ({p.stat().st_size} bytes)")
            p.unlink()
        (out / "dropped.txt").write_text("over the device tool's limits, not returned:\n" + "\n".join(dropped) + "\n")
    return [(str(p.relative_to(out)), p.stat().st_size) for p in sorted(out.rglob("*")) if p.is_file()]


def ensure_kernels_link() -> str:
    """``import sepkit.kernels`` from a source tree needs sepkit/kernels -> ../kernels (setup.py
    maps it on install; a bare copy of the repository has no link): make it when missing."""
    link = ROOT / "sepkit" / "kernels"
    if (link / "__init__.py").exists():
        return "sepkit/kernels resolves"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(Path("..") / "kernels")
    return "linked sepkit/kernels -> ../kernels"


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# workers (child processes: a crash or a hang there never takes the check down)
# --------------------------------------------------------------------------------------------
def facts_worker(path: Path) -> int:
    import datetime as dt
    import platform

    facts = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "python": platform.python_version(), "executable": sys.executable, "cpus": os.cpu_count(),
             "imports": {d: _importable(m) for d, m, _ in DEPENDENCIES}}
    import torch

    facts.update(torch=torch.__version__, cuda=torch.version.cuda, gpu=None)
    try:
        import triton

        facts["triton"] = triton.__version__
    except ImportError:
        facts["triton"] = None
    import sepkit

    facts["sepkit"] = sepkit.__version__
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        facts.update(gpu=p.name, capability=f"{p.major}.{p.minor}", sm_count=p.multi_processor_count,
                     memory_gib=round(p.total_memory / 2**30, 1),
                     l2_mib=round(getattr(p, "L2_cache_size", 0) / 2**20, 1),
                     device_count=torch.cuda.device_count())
        try:
            import pynvml

            pynvml.nvmlInit()
            h = pynvml.nvmlDeviceGetHandleByIndex(0)
            facts.update(driver=pynvml.nvmlSystemGetDriverVersion(),
                         max_sm_clock_mhz=pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM))
            pynvml.nvmlShutdown()
        except Exception as exc:
            facts["nvml"] = f"unavailable ({type(exc).__name__})"
    Path(path).write_text(json.dumps(facts, indent=1))
    print(json.dumps(facts, indent=1))
    return 0


class _TimeUp(BaseException):
    """Raised by SIGALRM in a benchmark module at its share of the stage (a BaseException, so
    the modules' own ``except Exception`` keeps going past it)."""


def bench_worker(path: Path, ops: list[str], deadline: float, quick: bool, dry: bool) -> int:
    import importlib

    out = dict(facts={}, notes=[], rows=[], status={}, imported=[])

    def save():
        Path(path).write_text(json.dumps(out, indent=1, default=str))

    modules = {}
    for op in ops:
        try:
            module = importlib.import_module(f"perf.bench_{op}")
            if not callable(getattr(module, "run", None)):
                raise TypeError(f"perf/bench_{op}.py has no run(ctx)")
            modules[op] = module
            out["imported"].append(op)
        except Exception as exc:
            out["status"][op] = f"failed to import: {type(exc).__name__}: {str(exc)[:200]}"
    if dry:
        for op in modules:
            out["status"][op] = "imported (dry run)"
        save()
        return 0
    import torch

    from perf.harness import Context

    try:
        ctx = Context(quick=quick)
    except Exception as exc:  # no CUDA, or the ceilings could not be measured
        for op in modules:
            out["status"][op] = f"failed: the benchmark context: {type(exc).__name__}: {exc}"
        save()
        return 1
    out["facts"] = ctx.facts
    print(f"device {ctx.facts['gpu']}: copy {ctx.copy_bandwidth:.0f} GB/s, bf16 dot {ctx.matmul_tflops:.0f} TFLOP/s",
          flush=True)

    def alarm(signum, frame):
        raise _TimeUp()

    signal.signal(signal.SIGALRM, alarm)
    names = list(modules)
    for i, op in enumerate(names):
        left = deadline - time.time()
        if left < 5:
            out["status"][op] = "skipped for time"
            continue
        share = left / (len(names) - i)
        before = len(ctx.rows)
        t = time.time()
        signal.setitimer(signal.ITIMER_REAL, share)
        try:
            modules[op].run(ctx)
            out["status"][op] = "done"
        except _TimeUp:
            out["status"][op] = f"stopped for time at its share of {share:.0f} s after {len(ctx.rows) - before} rows"
        except Exception as exc:
            out["status"][op] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        print(f"bench_{op}: {out['status'][op]} ({time.time() - t:.0f} s)", flush=True)
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        except Exception:  # a failed launch can poison the context: the next module will say so
            pass
        out["rows"], out["notes"] = ctx.rows, ctx.notes
        save()
    out["rows"], out["notes"] = ctx.rows, ctx.notes
    save()
    return 0


# --------------------------------------------------------------------------------------------
STAGES = ("facts", "check", "kernel-tests", "model-tests", "kernel-bench", "model-bench", "sweep")


def run_check(out: Path, budget_s: float = 480, dry: bool = False, max_examples: int = 20,
              workers: int = 0, only: tuple[str, ...] = ()) -> Check:
    """Run every stage (see the module docstring), or the facts and those in ``only``, and write
    ``out``; returns the record."""
    chk = Check(out, budget_s, dry, max_examples, workers)
    if only:
        original = chk.stage

        def selected(name, fn):
            if name == "facts" or name in only:
                return original(name, fn)
            st = Stage(name, 0, "skipped", 0, "not selected (--only)")
            chk.stages.append(st)
            return st

        chk.stage = selected
    try:
        chk.stage("facts", chk.facts_stage)
        if not dry and not chk.facts.get("gpu"):
            for name in STAGES[1:]:
                chk.stages.append(Stage(name, 0, "skipped", 0, "no CUDA device here (--dry-run checks the plumbing "
                                        "on a CPU)"))
            chk.pack()
            return chk
        chk.stage("check", chk.check_stage)
        chk.stage("kernel-tests", lambda st, cap: chk.tests_stage(st, cap, kernel=True))
        chk.stage("model-tests", lambda st, cap: chk.tests_stage(st, cap, kernel=False))
        chk.stage("kernel-bench", lambda st, cap: chk.bench_stage(st, cap, kernel=True, quick=True))
        chk.stage("model-bench", lambda st, cap: chk.bench_stage(st, cap, kernel=False, quick=True))
        if dry:
            chk.stages.append(Stage("sweep", 0, "skipped", 0, "dry run: the full-size sweep only runs on a GPU"))
        else:
            chk.stage("sweep", lambda st, cap: chk.bench_stage(st, cap, kernel=True, quick=False))
        chk.pack(final=True)
    finally:
        shutil.rmtree(chk.work, ignore_errors=True)
    return chk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: $OUT, else gpu-check-out)")
    parser.add_argument("--dry-run", action="store_true", help="CPU plumbing check: tiny work, nothing timed")
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-time budget in seconds (default 480)")
    parser.add_argument("--max-examples", type=int, default=20, help="hypothesis examples per kernel test (default 20)")
    parser.add_argument("--workers", type=int, default=0, help="pytest-xdist workers for the test stages (default 0)")
    parser.add_argument("--only", default="", help="comma-separated stages to run after the facts (a rerun), "
                        f"from: {', '.join(STAGES[1:])}")
    parser.add_argument("--worker", choices=("facts", "bench"), help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--ops", default="", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "facts":
        return facts_worker(args.json)
    if args.worker == "bench":
        rc = bench_worker(args.json, [o for o in args.ops.split(",") if o], args.deadline, args.quick, args.dry_run)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)  # the results are saved: never wait on compile workers or CUDA teardown

    if args.budget_s < 60:
        parser.error(f"--budget-s must be >= 60 seconds, got {args.budget_s:g}")
    if args.max_examples < 1:
        parser.error(f"--max-examples must be >= 1, got {args.max_examples}")
    only = tuple(x for x in args.only.split(",") if x)
    unknown = [x for x in only if x not in STAGES[1:]]
    if unknown:
        parser.error(f"--only: unknown stage {unknown[0]!r}; choose from {', '.join(STAGES[1:])}")
    out = args.out or Path(os.environ.get("OUT") or "gpu-check-out")
    chk = run_check(out, args.budget_s, args.dry_run, args.max_examples, args.workers, only)
    print(chk.summary())
    print("output:", ", ".join(f"{n} ({s} B)" for n, s in enforce_limits(out)))
    return 1 if any(st.status == "FAIL" for st in chk.stages) else 0


if __name__ == "__main__":
    sys.exit(main())
