"""Benchmark context: device facts, the measured ceilings, timing, memory and the result rows.

Row schema (one per measurement): op, provider, mode, metric, unit, x_name, x_value, p50, p20, p80,
config, gpu, torch, triton, sepkit, timestamp. Times are milliseconds (median p50 and the 20/80 %
quantiles); a throughput row carries the same quantiles converted to its unit. Ceilings are
measured once per run on the same device: the copy bandwidth (GB/s, a 1 GiB device-to-device
copy counted as read + write) and the dense bf16 matrix rate (TFLOP/s, 8192^3 matmul).
"""
from __future__ import annotations

import datetime as _dt
import platform
from typing import Callable

import torch


class NoCuda(RuntimeError):
    """Benchmarks need a CUDA device."""


def device_facts() -> dict:
    """Name, clocks, memory and driver of the GPU (nvidia-ml-py when installed), and versions."""
    import sepkit

    facts = {
        "gpu": torch.cuda.get_device_name(),
        "capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "sepkit": sepkit.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import triton

        facts["triton"] = triton.__version__
    except ImportError:
        facts["triton"] = None
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        facts["driver"] = pynvml.nvmlSystemGetDriverVersion()
        facts["sm_clock_mhz"] = pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)
        facts["max_sm_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)
        facts["mem_clock_mhz"] = pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)
        facts["power_limit_w"] = pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000
        pynvml.nvmlShutdown()
    except Exception as exc:  # nvidia-ml-py missing or no NVML: facts without clocks
        facts["nvml"] = f"unavailable ({type(exc).__name__})"
    return facts


def _do_bench(fn: Callable[[], object]) -> tuple[float, float, float]:
    import triton.testing

    p50, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8], warmup=25, rep=100)
    return float(p50), float(p20), float(p80)


def measure_copy_bandwidth(nbytes: int = 2**30) -> float:
    """GB/s of a device-to-device copy (bytes read + bytes written per second)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    p50, _, _ = _do_bench(lambda d=dst, s=src: d.copy_(s))
    del src, dst
    return 2 * nbytes / (p50 * 1e-3) / 1e9


def measure_matmul_tflops(n: int = 8192, dtype: torch.dtype = torch.bfloat16) -> float:
    """Dense matrix rate in TFLOP/s (2 n^3 per product)."""
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    p50, _, _ = _do_bench(lambda: a @ b)
    return 2 * n**3 / (p50 * 1e-3) / 1e12


class Context:
    """What a benchmark module's ``run(ctx)`` gets (see the module docstring)."""

    def __init__(self, quick: bool = False, dtype: torch.dtype = torch.bfloat16):
        if not torch.cuda.is_available():
            raise NoCuda("sepkit perf needs a CUDA GPU: timings on a CPU say nothing about a kernel")
        self.quick = quick
        self.dtype = dtype
        self.device = torch.device("cuda")
        self.facts = device_facts()
        self.copy_bandwidth = measure_copy_bandwidth()
        self.matmul_tflops = measure_matmul_tflops()
        self.facts.update(copy_bandwidth_gbs=round(self.copy_bandwidth, 1), matmul_tflops_bf16=round(self.matmul_tflops, 1))
        self.rows: list[dict] = []
        self.notes: list[str] = []

    # measuring -----------------------------------------------------------------------------
    def time(self, fn: Callable[[], object]) -> tuple[float, float, float]:
        """(p50, p20, p80) milliseconds of ``fn``."""
        return _do_bench(fn)

    def peak_memory(self, fn: Callable[[], object]) -> int:
        """Peak bytes allocated by one call of ``fn`` above what was allocated before it."""
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    def try_compile(self, fn: Callable, *example_args, name: str = "torch.compile") -> Callable | None:
        """``torch.compile(fn)`` warmed up on ``example_args``, or None (with a note) if it fails."""
        try:
            compiled = torch.compile(fn)
            compiled(*example_args)
            return compiled
        except Exception as exc:
            self.note(f"{name} failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}): skipped")
            return None

    # recording -----------------------------------------------------------------------------
    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            print(f"note: {text}")

    def record(self, *, op: str, provider: str, mode: str, metric: str, unit: str, x_name: str, x_value,
               p50: float, p20: float | None = None, p80: float | None = None, config: dict | None = None) -> None:
        row = dict(
            op=op, provider=provider, mode=mode, metric=metric, unit=unit, x_name=x_name, x_value=x_value,
            p50=p50, p20=p20, p80=p80, config=config or {}, gpu=self.facts["gpu"], torch=self.facts["torch"],
            triton=self.facts["triton"], sepkit=self.facts["sepkit"], timestamp=self.facts["date"],
        )
        self.rows.append(row)
        print(f"{op:10s} {provider:18s} {mode:5s} {x_name}={x_value!s:>12s} {metric}={p50:.4g} {unit}")

    def record_time(self, *, op, provider, mode, x_name, x_value, fn, nbytes=None, flops=None, config=None):
        """Time ``fn`` and record its time plus GB/s (when ``nbytes``) or TFLOP/s (when ``flops``).

        Out-of-memory is recorded as ``metric="oom"`` rather than raised.
        """
        try:
            p50, p20, p80 = self.time(fn)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            self.record(op=op, provider=provider, mode=mode, metric="oom", unit="", x_name=x_name,
                        x_value=x_value, p50=float("nan"), config=config)
            return None
        common = dict(op=op, provider=provider, mode=mode, x_name=x_name, x_value=x_value, config=config)
        self.record(metric="time", unit="ms", p50=p50, p20=p20, p80=p80, **common)
        if nbytes is not None:
            gbs = [nbytes / (t * 1e-3) / 1e9 for t in (p50, p80, p20)]  # slower time -> lower rate
            self.record(metric="bandwidth", unit="GB/s", p50=gbs[0], p20=gbs[1], p80=gbs[2], **common)
            self.record(metric="pct_copy_bandwidth", unit="%", p50=100 * gbs[0] / self.copy_bandwidth, **common)
        if flops is not None:
            tf = [flops / (t * 1e-3) / 1e12 for t in (p50, p80, p20)]
            self.record(metric="tflops", unit="TFLOP/s", p50=tf[0], p20=tf[1], p80=tf[2], **common)
            self.record(metric="pct_matmul_rate", unit="%", p50=100 * tf[0] / self.matmul_tflops, **common)
        return p50
