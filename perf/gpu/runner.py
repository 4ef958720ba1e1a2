"""One run of the GPU check: the time budget and the stages' caps, child processes killed at their
cap, the stages' records, and the output folder, rewritten after every stage (so an interrupted
run still leaves something) and kept inside the output limits (:class:`Limits`: what can come
back from the machine that ran the check).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import ROOT

#: The default wall-time budget (seconds) of a run; the stages' caps are given for it.
DEFAULT_BUDGET_S = 480.0
#: Seconds kept back for packing the output and printing the table.
RESERVE_S = 15
#: A stage with less time than this left is skipped for time.
MIN_STAGE_S = 8
#: Default output limits: files in the output folder, bytes per file (``--max-files``,
#: ``--max-file-mib``).
MAX_FILES, MAX_FILE_BYTES = 8, 16 * 2**20
#: The files a run writes (:func:`enforce_limits` keeps these before any other file).
OUTPUT_FILES = ("summary.md", "gpu_check.json", "results.json", "results.md", "pytest.txt", "logs.tar.gz",
                "plots.tar")


@dataclass(frozen=True)
class Limits:
    """What may come back from the output folder: at most ``max_files`` files, none over
    ``max_file_bytes`` (see :func:`enforce_limits`)."""

    max_files: int = MAX_FILES
    max_file_bytes: int = MAX_FILE_BYTES

    def describe(self) -> str:
        return f"{self.max_files} files, {_size(self.max_file_bytes)} each"


def _size(nbytes: int) -> str:
    return f"{nbytes // 2**20} MiB" if nbytes % 2**20 == 0 else f"{nbytes} bytes"


@dataclass
class Stage:
    """One stage's record: its cap and time (seconds), its result and what it says about it."""

    name: str
    cap_s: float
    status: str = "not run"     # pass, FAIL, skipped, skipped for time, partial
    seconds: float = 0.0
    detail: str = ""
    skipped_for_time: list = field(default_factory=list)


class Check:
    """One run of the check: the budget, the work folder, the stages' records, the output.

    Args:
        out: the output folder.
        budget_s: wall-time budget in seconds.
        dry: the CPU plumbing check (Triton's interpreter, no CUDA device, tiny work).
        max_examples: hypothesis examples per kernel test.
        workers: pytest-xdist workers of the test stages (0: none).
        limits: the output limits.
        caps: nominal cap (seconds, for :data:`DEFAULT_BUDGET_S`) of each stage by name.
        only: run the stage "facts" and these alone; the others are recorded "not selected".
    """

    def __init__(self, out: Path, budget_s: float, dry: bool, max_examples: int, workers: int, *,
                 limits: Limits = Limits(), caps: dict | None = None, only: tuple[str, ...] = ()):
        self.t0 = time.time()
        self.out, self.budget_s, self.dry = out, budget_s, dry
        self.max_examples, self.workers = max_examples, workers
        self.limits, self.caps, self.only = limits, dict(caps or {}), tuple(only)
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
        """The stage's nominal cap scaled to this budget (at least 20 s or the nominal cap, so a
        small budget still starts it), cut to what is left."""
        nominal = self.caps[name]
        scaled = max(nominal * self.budget_s / DEFAULT_BUDGET_S, min(nominal, 20))
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
        """Run ``fn(stage, cap)`` under the stage's cap (skipped for time when too little is left,
        "not selected" when ``only`` leaves it out), record it and rewrite the output."""
        if self.only and name != "facts" and name not in self.only:
            st = Stage(name, 0, "skipped", 0, "not selected (--only)")
            self.stages.append(st)
            return st
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
        """(Re)write every output file from what is known now, inside :attr:`limits` (the plots
        only when ``final``: drawing them takes seconds)."""
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
        enforce_limits(self.out, self.limits)


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows of both, a later row replacing an earlier one of the same measurement."""
    def key(r):
        return (r["op"], r["provider"], r["mode"], r["metric"], r["x_name"], str(r["x_value"]),
                json.dumps(r.get("config"), sort_keys=True, default=str))

    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in new})
    return list(merged.values())


def enforce_limits(out: Path, limits: Limits = Limits()) -> list[tuple[str, int]]:
    """Keep ``out`` inside ``limits``: text files over ``max_file_bytes`` cut to their head and
    tail, any other oversized file or any file past the ``max_files``-th (:data:`OUTPUT_FILES`
    first) removed and named in ``dropped.txt``, which takes a slot. Returns (name, bytes) of
    what is left."""
    files = sorted(p for p in out.rglob("*") if p.is_file())
    dropped = []
    for p in files:
        if p.stat().st_size <= limits.max_file_bytes:
            continue
        if p.suffix in (".md", ".txt", ".json", ".log"):
            data = p.read_bytes()
            half = (limits.max_file_bytes - 256) // 2
            cut = f"\n\n[... cut by gpu_check to fit {_size(limits.max_file_bytes)} ...]\n\n".encode()
            p.write_bytes(data[:half] + cut + data[-half:])
        else:
            dropped.append(f"{p.relative_to(out)} ({p.stat().st_size} bytes)")
            p.unlink()
    files = sorted((p for p in out.rglob("*") if p.is_file()), key=lambda p: (p.name not in OUTPUT_FILES, p.name))
    if len(files) > limits.max_files or dropped:
        keep = limits.max_files - 1
        for p in files[keep:]:
            dropped.append(f"{p.relative_to(out)} ({p.stat().st_size} bytes)")
            p.unlink()
        (out / "dropped.txt").write_text(f"over the output limits ({limits.describe()}), not returned:\n"
                                         + "\n".join(dropped) + "\n")
    return [(str(p.relative_to(out)), p.stat().st_size) for p in sorted(out.rglob("*")) if p.is_file()]


