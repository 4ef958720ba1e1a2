"""Results files and the README performance table, generated from result rows (never by hand).

``write_results(ctx, out_dir)`` writes ``<stamp>-<gpu>.json`` (facts, notes, rows), a Markdown
table and one PNG plot per (op, mode) of throughput against size per provider.
``python -m perf.report`` rewrites the README's performance table from every JSON in
perf/results/: per op, mode and size, sepkit's median against each baseline's.
"""
from __future__ import annotations

import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "perf" / "results"
START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"
#: The ops sepkit benchmarks, in README order.
OPS = ("snake", "stft_mask", "attention", "mmd", "nce")
OURS = "sepkit"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


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
    lines = [
        f"Device: {facts.get('gpu')} (copy {facts.get('copy_bandwidth_gbs')} GB/s, bf16 dot "
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
    paths = []
    for (op, mode), provs in series.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        for prov, pts in sorted(provs.items()):
            pts.sort(key=lambda p: float(p[0]) if isinstance(p[0], (int, float)) else 0)
            ax.plot([str(p[0]) for p in pts], [p[1] for p in pts], marker="o", label=prov)
        unit, xname = units[(op, mode)]
        ax.set_title(f"{op} ({mode})")
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
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = ctx.facts["date"].replace(":", "").replace("+0000", "Z")[:15]
    prefix = out_dir / f"{stamp}-{_slug(ctx.facts['gpu'])}"
    data = dict(facts=ctx.facts, notes=ctx.notes, rows=ctx.rows)
    json_path = Path(f"{prefix}.json")
    json_path.write_text(json.dumps(data, indent=1))
    md_path = Path(f"{prefix}.md")
    md_path.write_text(markdown_table(ctx.rows, ctx.facts) + "".join(f"\n- {n}" for n in ctx.notes) + "\n")
    return [json_path, md_path, *plot(ctx.rows, prefix)]


def readme_table(results_dir: Path = RESULTS) -> str:
    """The README's table: the newest results file per op, or 'not yet measured on a GPU'."""
    newest = {}
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        for op in {r["op"] for r in data.get("rows", [])}:
            newest[op] = data
    parts = []
    for op in OPS:
        if op not in newest:
            continue
        data = newest[op]
        parts.append(f"**{op}**\n\n" + markdown_table([r for r in data["rows"] if r["op"] == op], data["facts"]))
    missing = [op for op in OPS if op not in newest]
    if missing:
        lines = ["| op | result |", "|---|---|"] + [f"| {op} | not yet measured on a GPU |" for op in missing]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def update_readme(readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{readme_table()}{END}{tail}")


if __name__ == "__main__":
    update_readme()
    print("README performance table updated from", RESULTS, file=sys.stderr)
