"""Results files and the README performance table, generated from result rows (never by hand).

``write_results(ctx, out_dir)`` writes ``<stamp>-<gpu>.json`` (facts, notes, rows), a Markdown
table and one PNG plot per (op, mode) of throughput against size per provider.
A smoke run's results (``python -m perf --smoke``: ``facts["smoke"]`` true, every row marked
:data:`SMOKE_MARK`) say so in every file and are never written into perf/results/, read into the
README's table nor merged. ``python -m perf.report`` rewrites the README's performance table from every JSON in
perf/results/: per op, mode and size, sepkit's median against each baseline's, then the
docs/DESIGN.md targets (:func:`targets`) met or missed. ``python -m perf.report --from DIR`` first
merges a folder that ``python -m perf.gpu_check`` returned (its ``results.json``, ``results.md``,
``summary.md`` and ``plots.tar``) into perf/results/ under ``<stamp>-<gpu>`` names.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results"
START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"
#: The ops sepkit benchmarks, in README order.
OPS = ("snake", "stft_mask", "attention", "mmd", "nce")
OURS = "sepkit"
#: Provider names that mean "with sepkit's kernels" / "the reference backend" in model-level rows.
KERNEL_PROVIDERS = ("sepkit", "kernels", "triton")
REFERENCE_PROVIDERS = ("reference", "torch")
#: The label of every figure of a smoke run (rows, JSON, Markdown, plots).
SMOKE_MARK = "smoke, not a measurement"


def is_inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (both resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


def is_smoke(data: dict) -> bool:
    """Whether results (``facts``, ``rows``) come from a smoke run."""
    return bool((data.get("facts") or {}).get("smoke")) or any(r.get("smoke") for r in data.get("rows") or [])


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _stamp(date: str) -> str:
    """The file-name stamp of a results file from its ISO date (as ``write_results`` names them)."""
    return date.replace(":", "").replace("+0000", "Z")[:15]


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3g}"


def comparison_rows(rows: list[dict]) -> list[dict]:
    """One line per (op, mode, size): our time, each baseline's time and speedup, % of ceiling."""
    by = defaultdict(dict)
    ceiling = {}
    for r in rows:
        key = (r["op"], r["mode"], r["x_name"], str(r["x_value"]))
        if r["metric"] in ("time", "oom"):
            by[key][r["provider"]] = "oom" if r["metric"] == "oom" else r["p50"]
        if r["provider"] == OURS and r["metric"] in ("pct_copy_bandwidth", "pct_matmul_rate"):
            ceiling[key] = (r["p50"], "copy" if r["metric"] == "pct_copy_bandwidth" else "dot")
    out = []
    for key, times in by.items():
        ours = times.get(OURS)
        if ours is None:
            continue
        baselines = {}
        for prov, t in times.items():
            if prov == OURS:
                continue
            baselines[prov] = (t, None if t == "oom" or ours == "oom" else t / ours)
        out.append(dict(op=key[0], mode=key[1], shape=f"{key[2]}={key[3]}", ours=ours, baselines=baselines,
                        ceiling=ceiling.get(key)))
    return out


def markdown_table(rows: list[dict], facts: dict) -> str:
    smoke = bool(facts.get("smoke")) or any(r.get("smoke") for r in rows)
    lines = [f"**{SMOKE_MARK}**: {facts.get('smoke_note', 'a smoke run on the CPU')}.", ""] if smoke else []
    lines += [
        f"Device: {device_name(facts)} (copy {facts.get('copy_bandwidth_gbs')} GB/s, {facts.get('matmul_dtype', 'bf16')} dot "
        f"{facts.get('matmul_tflops_bf16')} TFLOP/s measured in the same run); torch {facts.get('torch')}, "
        f"triton {facts.get('triton')}, sepkit {facts.get('sepkit')}, {facts.get('date')}.",
        "",
        "| op | mode | shape | sepkit ms | baselines: ms (speedup) | % of ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for c in comparison_rows(rows):
        base = "; ".join(
            f"{p}: {'OOM' if t == 'oom' else _fmt(t)}" + (f" ({s:.2f}x)" if s else "") for p, (t, s) in c["baselines"].items()
        )
        ceil = f"{c['ceiling'][0]:.0f}% {c['ceiling'][1]}" if c["ceiling"] else "-"
        ours = "OOM" if c["ours"] == "oom" else _fmt(c["ours"])
        lines.append(f"| {c['op']} | {c['mode']} | {c['shape']} | {ours} | {base or '-'} | {ceil} |")
    return "\n".join(lines) + "\n"


def device_name(facts: dict) -> str:
    """The GPU's name with its compute capability, memory and driver when known."""
    extra = [f"sm_{facts['capability'].replace('.', '')}" if facts.get("capability") else None,
             f"{facts['memory_gib']} GiB" if facts.get("memory_gib") else None,
             f"driver {facts['driver']}" if facts.get("driver") else None]
    extra = [e for e in extra if e]
    return f"{facts.get('gpu')}" + (f" ({', '.join(extra)})" if extra else "")


def plot(rows: list[dict], path_prefix: Path) -> list[Path]:
    """One PNG per (op, mode): throughput (GB/s or TFLOP/s) against size, one line per provider."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    series = defaultdict(lambda: defaultdict(list))
    units = {}
    for r in rows:
        if r["metric"] in ("bandwidth", "tflops"):
            series[(r["op"], r["mode"])][r["provider"]].append((r["x_value"], r["p50"]))
            units[(r["op"], r["mode"])] = (r["unit"], r["x_name"])
    smoke = any(r.get("smoke") for r in rows)
    paths = []
    for (op, mode), provs in series.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for prov, pts in sorted(provs.items()):
            pts.sort(key=lambda p: float(p[0]) if isinstance(p[0], (int, float)) else 0)
            ax.plot([str(p[0]) for p in pts], [p[1] for p in pts], marker="o", label=prov)
        unit, xname = units[(op, mode)]
        ax.set_title(f"{op} ({mode})" + (f" - {SMOKE_MARK}" if smoke else ""))
        if smoke:
            ax.text(0.5, 0.5, SMOKE_MARK, transform=ax.transAxes, ha="center", va="center", fontsize=16,
                    color="red", alpha=0.3, rotation=20)
        ax.set_xlabel(xname)
        ax.set_ylabel(unit)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        path = Path(f"{path_prefix}-{_slug(op)}-{_slug(mode)}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_results(ctx, out_dir: Path) -> list[Path]:
    """Write ``<stamp>-<gpu>.json`` / ``.md`` / ``-<op>-<mode>.png`` into ``out_dir``; returns the paths.

    Raises ValueError for smoke results (``ctx.facts["smoke"]``) aimed at perf/results/.
    """
    out_dir = Path(out_dir)
    data = dict(facts=ctx.facts, notes=ctx.notes, rows=ctx.rows)
    smoke = is_smoke(data)
    if smoke and is_inside(out_dir, RESULTS):
        raise ValueError(f"out_dir {out_dir}: smoke results never go into {RESULTS}")
    if smoke:
        data = dict(smoke=SMOKE_MARK, **data)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _stamp(ctx.facts["date"])
    prefix = out_dir / f"{stamp}-{_slug(ctx.facts['gpu'])}"
    json_path = Path(f"{prefix}.json")
    json_path.write_text(json.dumps(data, indent=1))
    md_path = Path(f"{prefix}.md")
    md_path.write_text(markdown_table(ctx.rows, ctx.facts) + "".join(f"\n- {n}" for n in ctx.notes) + "\n")
    return [json_path, md_path, *plot(ctx.rows, prefix)]


def _times(rows: list[dict], op: str, mode: str) -> dict:
    """{(x_value as str, D or None): {provider: ms or "oom"}} of one op and mode."""
    out = defaultdict(dict)
    for r in rows:
        if r["op"] == op and r["mode"] == mode and r["metric"] in ("time", "oom"):
            key = (str(r["x_value"]), (r.get("config") or {}).get("D"))
            out[key][r["provider"]] = "oom" if r["metric"] == "oom" else r["p50"]
    return out


def _metric(rows: list[dict], op: str, mode: str, metric: str, provider: str = OURS) -> dict:
    return {str(r["x_value"]): r["p50"] for r in rows
            if r["op"] == op and r["mode"] == mode and r["metric"] == metric and r["provider"] == provider}


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _target(name: str, value, goal: str, ok, where: str = "") -> dict:
    """One target line: ``value`` None means not measured in this run."""
    verdict = "not measured" if value is None else ("met" if ok else "MISSED")
    return dict(target=name, value=value, goal=goal, verdict=verdict, where=where)


def _largest(keys) -> str | None:
    keys = [k for k in keys if not math.isnan(_num(k))]
    return max(keys, key=_num) if keys else None


def _membound_targets(rows: list[dict], op: str, modes: list[str]) -> list[dict]:
    out = []
    for mode in modes:
        pct = _metric(rows, op, mode, "pct_copy_bandwidth")
        x = _largest(pct)
        out.append(_target(f"{op} {mode}: % of copy bandwidth", None if x is None else pct[x], ">= 80%",
                           x is not None and pct[x] >= 80, f"{x} at the largest size run" if x else ""))
        times = {k[0]: v for k, v in _times(rows, op, mode).items()}
        pairs = {k: v["torch"] / v[OURS] for k, v in times.items()
                 if isinstance(v.get(OURS), float) and isinstance(v.get("torch"), float)}
        x = _largest(pairs)
        out.append(_target(f"{op} {mode}: speedup vs eager", None if x is None else pairs[x], ">= 3x",
                           x is not None and pairs[x] >= 3, x or ""))
    return out


def _attention_targets(rows: list[dict]) -> list[dict]:
    out = []
    for mode in ("fwd", "full"):
        times = {k[0]: v for k, v in _times(rows, "attention", mode).items()}
        for kind, goal, labels, bases in (
            ("self-attention", 0.9, ("self", "causal"), ("sdpa.",)),
            ("cross-attention", 1.0, ("cross", "set-query"), ("sdpa.", "xformers")),
        ):
            worst = None
            for label, t in times.items():
                if not label.startswith(labels) or not isinstance(t.get(OURS), float):
                    continue
                best = [v for p, v in t.items() if p.startswith(bases) and isinstance(v, float)]
                if best:
                    r = min(best) / t[OURS]
                    if worst is None or r < worst[0]:
                        worst = (r, label)
            out.append(_target(f"attention {mode} {kind}: vs best SDPA" + (" / xformers" if "cross" in kind else ""),
                               None if worst is None else worst[0], f">= {goal}x",
                               worst is not None and worst[0] >= goal,
                               f"worst shape: {worst[1]}" if worst else ""))
    return out


def _mmd_targets(rows: list[dict]) -> list[dict]:
    times = _times(rows, "mmd", "full")
    d256 = {k[0]: v for k, v in times.items() if k[1] == 256}
    pairs = {x: v["cdist"] / v[OURS] for x, v in d256.items()
             if isinstance(v.get(OURS), float) and isinstance(v.get("cdist"), float)}
    x = "16384" if "16384" in pairs else _largest(pairs)
    where = "" if x is None else (f"N=M={x}, D=256" + ("" if x == "16384" else " (the 16k headline size was not run)"))
    out = [_target("mmd full: speedup vs cdist at 16k x 16k x 256", None if x is None else pairs[x], ">= 5x",
                   x == "16384" and pairs[x] >= 5, where)]
    beyond = [k for k, v in times.items() if v.get("cdist") == "oom" and isinstance(v.get(OURS), float)]
    ours_oom = [k for k, v in times.items() if v.get(OURS) == "oom"]
    if beyond:
        out.append(_target("mmd runs where cdist runs out of memory", "yes", "runs", True,
                           ", ".join(f"N={k[0]} D={k[1]}" for k in sorted(beyond, key=lambda k: _num(k[0])))))
    elif ours_oom:
        out.append(_target("mmd runs where cdist runs out of memory", "no", "runs", False, "sepkit ran out of memory"))
    else:
        out.append(_target("mmd runs where cdist runs out of memory", None, "runs", False,
                           "cdist did not run out of memory at the sizes run"))
    return out


def _nce_targets(rows: list[dict]) -> list[dict]:
    out = []
    mem_ours, mem_base = (_metric(rows, "nce", "full", "peak_memory", p) for p in (OURS, "gathered"))
    common = [k for k in mem_ours if k in mem_base and mem_base[k] > 0]
    x = _largest(common)
    out.append(_target("nce full: peak memory vs gathered", None if x is None else mem_ours[x] / mem_base[x], "<= 0.1x",
                       x is not None and mem_ours[x] / mem_base[x] <= 0.1, f"B*T={x}" if x else ""))
    times = {k[0]: v for k, v in _times(rows, "nce", "full").items()}
    pairs = {k: v["gathered"] / v[OURS] for k, v in times.items()
             if isinstance(v.get(OURS), float) and isinstance(v.get("gathered"), float)}
    x = _largest(pairs)
    out.append(_target("nce full: speedup vs gathered", None if x is None else pairs[x], ">= 3x",
                       x is not None and pairs[x] >= 3, f"B*T={x}" if x else ""))
    return out


def _role(provider: str) -> str | None:
    """("kernels", "reference" or None, the model's name) of a model-level provider name."""
    p = provider.lower()
    for sep in ("-", "_", "."):
        if sep in p:
            head, _, tail = p.rpartition(sep)
            if tail in KERNEL_PROVIDERS:
                return "kernels", head
            if tail in REFERENCE_PROVIDERS:
                return "reference", head
    if p in KERNEL_PROVIDERS:
        return "kernels", ""
    if p in REFERENCE_PROVIDERS:
        return "reference", ""
    return None


def _model_targets(rows: list[dict]) -> list[dict]:
    """Training-step speedup (reference time / kernels time) for every model-level benchmark op."""
    found = defaultdict(dict)
    ops = []
    for r in rows:
        if r["op"] in OPS:
            continue
        if r["op"] not in ops:
            ops.append(r["op"])
        mode = r["mode"].lower()
        if r["metric"] not in ("time", "step_time") or not ("step" in mode or "train" in mode):
            continue
        role = _role(r["provider"])
        if role is not None:
            found[(r["op"], role[1], r["mode"], str(r["x_value"]))][role[0]] = r["p50"]
    out = []
    for op in ops:
        pairs = [(k, v["reference"] / v["kernels"]) for k, v in found.items()
                 if k[0] == op and v.get("kernels") and v.get("reference")]
        if not pairs:
            out.append(_target(f"{op} training step: kernels vs reference", None, ">= 1.5x", False,
                               "no kernels/reference step-time pair in its rows"))
        for (_, model, mode, x), ratio in pairs:
            label = f"{op}" + (f" {model}" if model and model != op else "")
            out.append(_target(f"{label} {mode}: kernels vs reference", ratio, ">= 1.5x", ratio >= 1.5, f"at {x}"))
    return out


def targets(rows: list[dict]) -> list[dict]:
    """Every docs/DESIGN.md performance target evaluated on result rows of one run.

    Each item: target, value (a ratio, a percentage, "yes"/"no", or None when not measured),
    goal, verdict ("met", "MISSED" or "not measured") and where (the shape it was read at).
    Memory-bound ops are read at their largest size, attention at its worst shape, mmd at the
    16k x 16k x 256 headline, nce at its largest batch, model benchmarks per training-step row.
    """
    out = _membound_targets(rows, "snake", ["full"])
    modes = sorted({r["mode"] for r in rows if r["op"] == "stft_mask" and r["mode"].startswith("full")}) or ["full"]
    out += _membound_targets(rows, "stft_mask", modes)
    out += _attention_targets(rows) + _mmd_targets(rows) + _nce_targets(rows) + _model_targets(rows)
    return out


def targets_table(items: list[dict]) -> str:
    lines = ["| target (docs/DESIGN.md) | measured | goal | verdict | where |", "|---|---|---|---|---|"]
    for t in items:
        v = t["value"]
        if isinstance(v, float):
            v = f"{v:.1f}%" if "%" in t["goal"] else f"{v:.2f}x"
        lines.append(f"| {t['target']} | {'-' if v is None else v} | {t['goal']} | {t['verdict']} | {t['where']} |")
    return "\n".join(lines) + "\n"


def readme_table(results_dir: Path = RESULTS) -> str:
    """The README's table: the newest results file per op, or 'not yet measured on a GPU'.

    Kernel ops come first in :data:`OPS` order, then any model-level benchmark op found, then
    the docs/DESIGN.md targets read off the newest results file.
    """
    newest = {}
    latest = None
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if not data.get("rows") or is_smoke(data):  # a smoke run is no measurement
            continue
        latest = data
        for op in {r["op"] for r in data["rows"]}:
            newest[op] = data
    parts = []
    extra = sorted(op for op in newest if op not in OPS)
    for op in (*OPS, *extra):
        if op not in newest:
            continue
        data = newest[op]
        parts.append(f"**{op}**\n\n" + markdown_table([r for r in data["rows"] if r["op"] == op], data["facts"]))
    missing = [op for op in OPS if op not in newest]
    if missing:
        lines = ["| op | result |", "|---|---|"] + [f"| {op} | not yet measured on a GPU |" for op in missing]
        parts.append("\n".join(lines) + "\n")
    if latest is not None:
        parts.append(f"**Targets** on {device_name(latest['facts'])}, {latest['facts'].get('date')}\n\n"
                     + targets_table(targets(latest["rows"])))
    return "\n".join(parts)


def replace_block(readme: Path, start: str, end: str, text: str) -> bool:
    """Replace what lies between the marker lines ``start`` and ``end`` of the file ``readme``
    with ``text``; False (nothing written) when a marker is missing. Every ``--readme`` of the
    benchmarks writes its table this way."""
    body = readme.read_text()
    if start not in body or end not in body:
        return False
    head, rest = body.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{text}{end}{tail}")
    return True


def load_text(machine: dict) -> str:
    """The 1-minute load average at the start and the end of a CPU benchmark (``machine
    ["load_average"]``: other jobs on the machine), as "a to b"."""
    before, after = machine.get("load_average", (float("nan"),) * 2)
    return f"{before:.1f} to {after:.1f}"


def update_readme(readme: Path = ROOT / "README.md", results_dir: Path = RESULTS) -> None:
    if not replace_block(readme, START, END, readme_table(results_dir)):
        raise SystemExit(f"{readme} has no {START} ... {END} markers")


def merge_from(folder: Path, results_dir: Path = RESULTS) -> list[Path]:
    """Copy a returned ``python -m perf.gpu_check`` folder's results into ``results_dir``.

    Needs ``results.json`` (facts, notes, rows) in ``folder``; names the copies
    ``<stamp>-<gpu>.json`` / ``.md``, ``<stamp>-<gpu>-check.md`` (the check's summary) and the
    PNGs out of ``plots.tar``. Returns the paths written. Raises FileNotFoundError or ValueError.
    """
    folder = Path(folder)
    src = folder / "results.json"
    if not src.is_file():
        raise FileNotFoundError(f"--from: {folder} has no results.json (the folder python -m perf.gpu_check writes)")
    try:
        data = json.loads(src.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"--from: {src} is not JSON: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("facts"), dict) or not isinstance(data.get("rows"), list):
        raise ValueError(f"--from: {src} needs 'facts' (an object) and 'rows' (a list)")
    facts = data["facts"]
    if facts.get("dry_run"):
        raise ValueError(f"--from: {src} comes from a dry run (no GPU); nothing to merge")
    if is_smoke(data):
        raise ValueError(f"--from: {src} comes from a smoke run ({SMOKE_MARK}); nothing to merge")
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = _stamp(str(facts.get("date", "undated")))
    prefix = f"{stamp}-{_slug(str(facts.get('gpu', 'gpu')))}"
    written = [results_dir / f"{prefix}.json"]
    written[0].write_text(json.dumps(data, indent=1))
    md = results_dir / f"{prefix}.md"
    md.write_text(markdown_table(data["rows"], facts) + "".join(f"\n- {n}" for n in data.get("notes", [])) + "\n")
    written.append(md)
    if (folder / "summary.md").is_file():
        written.append(Path(shutil.copyfile(folder / "summary.md", results_dir / f"{prefix}-check.md")))
    if (folder / "plots.tar").is_file():
        with tarfile.open(folder / "plots.tar") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and name.endswith(".png") and re.fullmatch(r"[A-Za-z0-9._-]+", name):
                    dest = results_dir / f"{prefix}-{name}"
                    dest.write_bytes(tar.extractfile(member).read())
                    written.append(dest)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.report", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, help="merge this returned gpu_check folder first")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder (default: perf/results)")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md", help="README to update")
    args = parser.parse_args(argv)
    try:
        if args.source is not None:
            for path in merge_from(args.source, args.results):
                print("wrote", path, file=sys.stderr)
        update_readme(args.readme, args.results)
    except (FileNotFoundError, ValueError) as err:
        print(f"perf.report: {err}", file=sys.stderr)
        return 2
    print("README performance table updated from", args.results, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
