"""The report of a demo run (``sepkit demo``): facts, ``report.md``/``report.json``, ``report.png``.

:func:`build_report` gathers what a reader needs to judge a run (recipe, task, model size,
steps, seconds per stage, the machine, the test summary and its headline figure),
:func:`write_report` writes it as Markdown and JSON, :func:`draw_report` draws the training and
validation curves of ``metrics.csv`` above the task's example panel
(:meth:`~sepkit.train.tasks.Task.plot_example`). The drawing helpers a panel uses
(:func:`plot_signal`, :func:`plot_signals`, :func:`plot_curves`) live here too. matplotlib is
imported only inside the drawing functions, with the Agg backend (no display needed).
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import sys
from pathlib import Path

import torch

# metric -> (label, unit) for the report; other metrics show under their own names
METRIC_LABELS = {
    "si_sdr": ("SI-SDR", "dB"), "si_sdri": ("SI-SDRi", "dB"), "sdr": ("SDR", "dB"), "sdri": ("SDRi", "dB"),
    "pesq": ("PESQ", ""), "estoi": ("ESTOI", ""), "stoi": ("STOI", ""), "accuracy": ("accuracy", ""),
    "eer": ("EER", ""),
}
# the figure a report leads with, when the task names none (``Task.headline``)
HEADLINE_ORDER = ("si_sdri", "si_sdr", "sdri")
# the keys of report.json, in order (documented in sepkit/commands/demo.py)
REPORT_KEYS = ("recipe", "task", "dataset", "parameters", "steps", "stages", "machine", "summary", "test_items",
               "headline", "example", "panel", "files")
# how report.md names the built-in data sets (others by their ``data.dataset`` name)
DATASET_NAMES = {"synthetic": "synthetic", "spoken": "spoken-corpus"}
# training-log columns that are bookkeeping, not curves
NOT_CURVES = ("lr", "steps_per_s")


# -- facts --------------------------------------------------------------------------------
def read_history(run_dir: str | os.PathLike) -> dict:
    """The curves of ``run_dir/metrics.csv``: ``{(split, name): (steps, values)}`` (lists, in
    step order; test rows left out). An absent or unreadable file gives ``{}``."""
    path = Path(run_dir) / "metrics.csv"
    history: dict = {}
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return history
    for row in rows:
        try:
            step, split, name, value = int(row["step"]), row["split"], row["name"], float(row["value"])
        except (KeyError, TypeError, ValueError):
            continue
        if split == "test":
            continue
        steps, values = history.setdefault((split, name), ([], []))
        steps.append(step)
        values.append(value)
    return history


def machine(device: torch.device | str) -> dict:
    """Where the run ran: ``device`` (e.g. ``cpu``, ``cuda:0``), ``name`` (CPU model or GPU
    name), ``threads`` (torch's intra-op threads), ``cores`` (the CPUs this process may use),
    and the ``torch``, ``triton`` and ``python`` versions (``triton`` None when absent)."""
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_name()
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"device": str(device), "name": name, "threads": torch.get_num_threads(), "cores": cores,
            "torch": torch.__version__, "triton": triton_version, "python": platform.python_version()}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model`` (frozen submodules included)."""
    return sum(p.numel() for p in model.parameters())


def headline(task, summary: dict) -> dict | None:
    """The figure the report leads with: ``{"metric", "label", "value", "unit"}`` for the task's
    ``headline`` metric when it names one, else the first of SI-SDRi, SI-SDR, SDRi, the task's
    monitor, the first metric, that the summary holds (None for an empty summary)."""
    order = [getattr(task, "headline", None), *HEADLINE_ORDER, getattr(task, "monitor", None), *summary]
    metric = next((m for m in order if m is not None and m in summary), None)
    if metric is None:
        return None
    label, unit = METRIC_LABELS.get(metric, (metric, ""))
    return {"metric": metric, "label": label, "value": _finite(summary[metric][0]), "unit": unit}


def median_item(rows: list[dict], metric: str | None) -> int:
    """Index of the row whose ``metric`` is the median (the lower of the middle two), the demo's
    representative example; 0 when no row has a finite ``metric``."""
    values = sorted((float(r[metric]), i) for i, r in enumerate(rows)
                    if metric is not None and isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric]))
    return values[(len(values) - 1) // 2][1] if values else 0


def headline_text(head: dict | None) -> str:
    """``"test SI-SDRi 5.41 dB"`` (or ``"no test metrics"``)."""
    if head is None:
        return "no test metrics"
    value = "n/a" if head["value"] is None else f"{head['value']:.2f}"
    return f"test {head['label']} {value}{' ' + head['unit'] if head['unit'] else ''}"


def _finite(x):
    x = float(x)
    return x if math.isfinite(x) else None


def build_report(*, recipe: str, task, model: torch.nn.Module, steps: int, stages: dict, device, summary: dict,
                 n_items: int, panel: bool, files: dict, example: dict | None = None) -> dict:
    """The content of ``report.json`` (keys :data:`REPORT_KEYS`).

    ``stages``: seconds per stage; ``device``: where the model ran; ``panel``: whether the
    picture has the task's example panel; ``example``: the shown item (``{id, metric: value}``);
    ``summary``: :func:`~sepkit.train.evaluate.summarize`'s
    ``{metric: (mean, std)}``; ``files``: paths relative to the output folder."""
    return {
        "recipe": recipe,
        "task": task.name,
        "dataset": str(task.cfg.data.dataset),
        "parameters": count_parameters(model),
        "steps": int(steps),
        "stages": {k: round(float(v), 2) for k, v in stages.items()},
        "machine": machine(device),
        "summary": {k: {"mean": _finite(m), "std": _finite(s)} for k, (m, s) in summary.items()},
        "test_items": int(n_items),
        "headline": headline(task, summary),
        "example": {k: (_finite(v) if isinstance(v, float) else v) for k, v in (example or {}).items()},
        "panel": bool(panel),
        "files": files,
    }


def format_markdown(report: dict) -> str:
    """``report.md``: the headline, the run, the machine, the test summary and the files."""
    m = report["machine"]
    head = report["headline"]
    stages = report["stages"]
    lines = [f"# sepkit demo: {report['recipe']}", "",
             f"**{headline_text(head)}** (mean over {report['test_items']} held-out "
             f"{DATASET_NAMES.get(report.get('dataset'), report.get('dataset', 'test'))} test items)", "",
             "| | |", "|---|---|",
             f"| recipe | {report['recipe']} |", f"| task | {report['task']} |",
             f"| parameters | {report['parameters']:,} |", f"| training steps | {report['steps']} |",
             f"| machine | {m['device']}: {m['name']}, {m['threads']} threads ({m['cores']} cores) |",
             f"| versions | torch {m['torch']}, triton {m['triton'] or 'not installed'}, python {m['python']} |",
             "", "Wall time per stage (seconds):", "",
             "| " + " | ".join(stages) + " | total |", "|" + "---:|" * (len(stages) + 1),
             "| " + " | ".join(f"{v:.1f}" for v in stages.values()) + f" | {sum(stages.values()):.1f} |",
             "", ("Test set (mean and standard deviation over items; per item in "
                  f"`{report['files'].get('test_metrics', 'test_metrics.csv')}`):"), "",
             "| metric | mean | std |", "|---|---:|---:|"]
    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    for k, v in report["summary"].items():
        label, unit = METRIC_LABELS.get(k, (k, ""))
        lines.append(f"| {label}{' (' + unit + ')' if unit else ''} | {fmt(v['mean'])} | {fmt(v['std'])} |")
    shown = report.get("example") or {}
    if shown.get("id") is not None:
        figures = ", ".join(f"{METRIC_LABELS.get(k, (k, ''))[0]} {v:.2f}" for k, v in shown.items()
                            if k != "id" and isinstance(v, float))
        lines += ["", f"Example: test item `{shown['id']}`" + (f" ({figures}; the median item)" if figures else "")
                  + ", audio in `example/`."]
    lines += ["", "Files:", ""]
    for key, value in report["files"].items():
        if isinstance(value, dict):
            lines.append(f"- {key}: " + ", ".join(f"`{p}`" for p in value.values()))
        else:
            lines.append(f"- {key}: `{value}`")
    if "report_png" in report["files"]:
        lines += ["", f"![curves and example]({report['files']['report_png']})"]
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, write) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_report(out: str | os.PathLike, report: dict) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.json`` (atomically); returns both paths."""
    out = Path(out)
    md = _atomic_write(out / "report.md", lambda p: p.write_text(format_markdown(report)))
    js = _atomic_write(out / "report.json", lambda p: p.write_text(json.dumps(report, indent=2) + "\n"))
    return md, js


# -- drawing ------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spectrogram_db(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Log-magnitude spectrogram (F, frames) in dB of ``wave`` (T,): 32 ms Hann windows, a
    quarter-window hop, floored at -200 dB (silence)."""
    n_fft = 1 << max(4, round(math.log2(0.032 * sample_rate)))
    x = torch.nan_to_num(wave.detach().float().cpu().reshape(-1))
    if x.numel() < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - x.numel()))
    spec = torch.stft(x, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs()
    return 20 * torch.log10(spec.clamp_min(1e-10))


def plot_signal(fig, wave: torch.Tensor, sample_rate: int, title: str, color: str = "C0",
                top_db: float | None = None, range_db: float = 80.0, peak: float | None = None) -> None:
    """Waveform (top, small) and spectrogram (below, 0 to the Nyquist frequency in kHz) of
    ``wave`` (T,) at ``sample_rate`` Hz in the (sub)figure ``fig``. The colours span
    ``range_db`` dB below ``top_db`` (default: the spectrogram's own peak); give cells one
    ``top_db`` so that their levels compare (a silent source looks silent); ``peak``: the
    waveform's amplitude range (default its own peak)."""
    wave = wave.detach().float().cpu().reshape(-1)
    duration = wave.numel() / sample_rate
    ax_w, ax_s = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2.5], "hspace": 0.05})
    t = torch.arange(wave.numel()) / sample_rate
    ax_w.plot(t.numpy(), wave.numpy(), color=color, linewidth=0.4)
    peak = (float(wave.abs().max()) if peak is None else float(peak)) or 1.0
    ax_w.set_ylim(-1.05 * peak, 1.05 * peak)
    ax_w.set_yticks([])
    ax_w.set_title(title, fontsize=9)
    spec = spectrogram_db(wave, sample_rate)
    top = float(spec.max()) if top_db is None else float(top_db)
    ax_s.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=top - range_db, vmax=top,
                extent=(0, duration, 0, sample_rate / 2000), interpolation="nearest")
    ax_s.set_xlim(0, duration)
    ax_s.set_ylabel("kHz", fontsize=8)
    ax_s.set_xlabel("s", fontsize=8)
    for ax in (ax_w, ax_s):
        ax.tick_params(labelsize=7)


def plot_signals(fig, grid: list[list], sample_rate: int) -> None:
    """A grid of :func:`plot_signal` cells in ``fig``: ``grid`` is a list of rows, each a list of
    ``(title, wave)`` or None (an empty cell); each row's cells share the full width equally.
    The cells share one amplitude range and one colour scale (80 dB below the loudest)."""
    cells = [cell for row in grid for cell in row if cell is not None]
    if not cells:
        return
    peak = max(float(torch.nan_to_num(cell[1]).abs().max()) for cell in cells)
    top_db = max(float(spectrogram_db(cell[1], sample_rate).max()) for cell in cells)
    rows = fig.subfigures(len(grid), 1, squeeze=False)[:, 0]
    for row_fig, row in zip(rows, grid):
        subs = row_fig.subfigures(1, len(row), squeeze=False)[0]
        for c, (sub, cell) in enumerate(zip(subs, row)):
            if cell is not None:
                plot_signal(sub, cell[1], sample_rate, cell[0], color=f"C{c}", top_db=top_db, peak=peak)


def plot_curves(axes, history: dict, keys: list, title: str, xlabel: str = "step") -> bool:
    """Draw the ``history`` curves named by ``keys`` ((split, name) pairs) on ``axes``; returns
    whether any was drawn."""
    drawn = False
    for key in keys:
        if key in history:
            steps, values = history[key]
            axes.plot(steps, values, marker="o" if len(steps) < 12 else None, markersize=3, label=f"{key[1]}")
            drawn = True
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(xlabel, fontsize=8)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    if drawn:
        axes.legend(fontsize=7)
    return drawn


def _draw_curves(fig, history: dict, monitor: str | None) -> None:
    """The training loss (left) and the validation metrics (right) of ``history``."""
    ax_t, ax_v = fig.subplots(1, 2)
    if not plot_curves(ax_t, history, [("train", "loss")], "training loss"):
        ax_t.text(0.5, 0.5, "no training rows in metrics.csv", ha="center", va="center", transform=ax_t.transAxes)
    valid = sorted((k for k in history if k[0] == "valid"), key=lambda k: (k[1] != monitor, k[1]))
    if not plot_curves(ax_v, history, valid, f"validation (monitor: {monitor})" if monitor else "validation"):
        ax_v.text(0.5, 0.5, "no validation rows in metrics.csv", ha="center", va="center", transform=ax_v.transAxes)


def draw_report(path: str | os.PathLike, task, example: dict, history: dict, sample_rate: int,
                title: str = "", dpi: int = 80) -> bool:
    """Draw ``report.png`` at ``path``: the curves of ``history`` (:func:`read_history`) on top,
    the task's example panel (:meth:`Task.plot_example` of ``example``, which also gets
    ``"history"``) below. A task without a panel (the base returns False, or it raises
    NotImplementedError) gets the curves alone; a panel that fails otherwise is reported on
    stderr and left out. Written atomically; returns whether the panel was drawn."""
    plt = _pyplot()
    path = Path(path)
    data = {**example, "history": history}

    def figure(with_panel: bool):
        height = 2.8 + (7.2 if with_panel else 0.0)
        fig = plt.figure(figsize=(10, height), layout="constrained" if not with_panel else None)
        if title:
            fig.suptitle(title, fontsize=11)
        if not with_panel:
            _draw_curves(fig, history, getattr(task, "monitor", None))
            return fig, False
        top, bottom = fig.subfigures(2, 1, height_ratios=[2.8, 7.2])
        _draw_curves(top, history, getattr(task, "monitor", None))
        top.subplots_adjust(left=0.07, right=0.98, bottom=0.18, top=0.80 if title else 0.88, wspace=0.2)
        drawn = bool(task.plot_example(bottom, data, sample_rate))
        return fig, drawn

    fig, drawn = None, False
    if example:
        try:
            fig, drawn = figure(True)
        except NotImplementedError:
            drawn = False
        except Exception as exc:  # noqa: BLE001 - a panel must never cost the report
            print(f"sepkit demo: the {task.name} task's example panel failed ({type(exc).__name__}: {exc}); "
                  "the picture shows the curves alone", file=sys.stderr)
            drawn = False
        if not drawn and fig is not None:
            plt.close(fig)
            fig = None
    if fig is None:
        fig, _ = figure(False)
    try:
        _atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=dpi))
    finally:
        plt.close(fig)
    return drawn
