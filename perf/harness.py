"""Benchmark context: device facts, the measured ceilings, timing, memory and the result rows.

Row schema (one per measurement): op, provider, mode, metric, unit, x_name, x_value, p50, p20, p80,
config, gpu, torch, triton, sepkit, timestamp. Times are milliseconds (median p50 and the 20/80 %
quantiles); a throughput row carries the same quantiles converted to its unit. Ceilings are
measured once per run on the same device: the copy bandwidth (GB/s, a 1 GiB device-to-device
copy counted as read + write) and the dense bf16 matrix rate (TFLOP/s, 8192^3 matmul).

Smoke mode (``Context(smoke=True)``, ``python -m perf --smoke``) runs every benchmark's body on
the CPU with tiny shapes so that the whole path (providers, timing, peak memory, rows, report) is
exercised without a GPU. Nothing it prints is a measurement:

* the device is the CPU, Triton kernels run in Triton's interpreter (``TRITON_INTERPRET=1``,
  set by ``python -m perf --smoke`` before sepkit is imported) and the storage dtype is float32
  (``tl.dot`` on bf16 is not exact in the interpreter);
* shapes and model sizes come from each benchmark's ``ctx.sizes(full=..., quick=..., smoke=...)``;
  a model benchmark's automatic ("kernels", "auto") provider takes :attr:`Context.auto_backend`,
  "triton", so the interpreter runs the kernels that automatic choice picks on a GPU;
* one intra-op CPU thread (``python -m perf --smoke`` sets it: at tiny shapes more threads only
  contend);
* :meth:`Context.time` uses a CPU wall-clock timer (``time.perf_counter``: one warm-up call, then
  the median and 20/80 % quantiles of :data:`SMOKE_REPS` calls) in place of ``do_bench``;
* torch.compile providers build with inductor (C++ on the CPU) unless the run asks for
  ``compile_backend="aot_eager"`` (``--compile-backend``, see :data:`COMPILE_BACKENDS`);
* the ceilings are the same copy and matmul measurements at :data:`SMOKE_CEILING_SIZES` on the CPU
  (float32 matmul);
* :meth:`Context.peak_memory` is the peak of the running sum of the CPU allocations and frees
  that ``torch.profiler`` records during one call (``profile_memory=True``): bytes of torch CPU
  tensors only; the interpreter's own NumPy arrays are not seen;
* ``facts["smoke"]`` is True, every row carries ``smoke`` = :data:`SMOKE_MARK`, and
  ``perf.report`` refuses to write such results into perf/results/ or the README.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time as _time
from typing import Callable

import torch

from .report import SMOKE_MARK

#: Timed calls per measurement in smoke mode (after one warm-up call).
SMOKE_REPS = 2
#: torch.compile backends a smoke run may take: "inductor" (the default, what a GPU run uses:
#: on a CPU it generates and builds C++, which needs a compiler and takes seconds per graph) or
#: "aot_eager" (Dynamo's capture and AOTAutograd's forward/backward split, run eagerly: the part
#: of torch.compile that the benchmark code decides, without code generation).
COMPILE_BACKENDS = ("inductor", "aot_eager")
#: (copy bytes, matmul n) of the ceilings in smoke mode.
SMOKE_CEILING_SIZES = (2**24, 512)


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
    facts["triton"] = _triton_version()
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


def smoke_facts() -> dict:
    """The facts of a smoke run: the CPU, versions, the interpreter flag and :data:`SMOKE_MARK`."""
    import sepkit

    return {
        "gpu": "CPU smoke",
        "smoke": True,
        "smoke_note": f"tiny shapes on the CPU, Triton kernels in the interpreter, times from a CPU timer "
                      f"({SMOKE_REPS} calls after a warm-up)",
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "sepkit": sepkit.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except ImportError:
        return None


def _do_bench(fn: Callable[[], object]) -> tuple[float, float, float]:
    import triton.testing

    p50, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8], warmup=25, rep=100)
    return float(p50), float(p20), float(p80)


def _quantile(sorted_ms: list[float], q: float) -> float:
    """Linear-interpolation quantile of an ascending list."""
    pos = q * (len(sorted_ms) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (pos - lo)


def cpu_bench(fn: Callable[[], object], reps: int = SMOKE_REPS) -> tuple[float, float, float]:
    """(p50, p20, p80) milliseconds of ``fn`` by ``time.perf_counter``: one warm-up, ``reps`` calls."""
    fn()
    times = []
    for _ in range(reps):
        t0 = _time.perf_counter()
        fn()
        times.append((_time.perf_counter() - t0) * 1e3)
    times.sort()
    return statistics.median(times), _quantile(times, 0.2), _quantile(times, 0.8)


def measure_copy_bandwidth(nbytes: int = 2**30, device="cuda", bench=_do_bench) -> float:
    """GB/s of a device-to-device copy (bytes read + bytes written per second)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    p50, _, _ = bench(lambda d=dst, s=src: d.copy_(s))
    del src, dst
    return 2 * nbytes / (p50 * 1e-3) / 1e9


def measure_matmul_tflops(n: int = 8192, dtype: torch.dtype = torch.bfloat16, device="cuda", bench=_do_bench) -> float:
    """Dense matrix rate in TFLOP/s (2 n^3 per product)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    p50, _, _ = bench(lambda: a @ b)
    return 2 * n**3 / (p50 * 1e-3) / 1e12


def cpu_peak_memory(fn: Callable[[], object]) -> int:
    """Peak bytes of torch CPU tensors alive during one call of ``fn`` above those alive before.

    The running sum of the allocation (+) and free (-) events that ``torch.profiler`` records
    with ``profile_memory=True``, in time order; its maximum is the peak. Memory that is not a
    torch tensor (the Triton interpreter's NumPy arrays, Python objects) is not counted.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for e in events:
        current += e.nbytes()
        peak = max(peak, current)
    return peak


class Context:
    """What a benchmark module's ``run(ctx)`` gets (see the module docstring).

    Args:
        quick: the smallest sizes only (``sizes`` returns its ``quick`` choice).
        dtype: storage dtype of the benchmarks' inputs; default bf16 on the GPU, float32 in smoke.
        smoke: run on the CPU with tiny shapes and a CPU timer (see the module docstring); needs
            no GPU. Without it a CUDA device is required (:class:`NoCuda` otherwise).
    """

    def __init__(self, quick: bool = False, dtype: torch.dtype | None = None, smoke: bool = False,
                 compile_backend: str = "inductor"):
        if compile_backend not in COMPILE_BACKENDS:
            raise ValueError(f"Context: compile_backend must be one of {COMPILE_BACKENDS}, got {compile_backend!r}")
        if compile_backend != "inductor" and not smoke:
            raise ValueError("Context: compile_backend other than 'inductor' is for smoke runs only "
                             "(a GPU run times what torch.compile builds by default)")
        self.smoke = smoke
        self.quick = quick
        self.compile_backend = compile_backend
        self.rows: list[dict] = []
        self.notes: list[str] = []
        if smoke:
            self.dtype = torch.float32 if dtype is None else dtype
            self.device = torch.device("cpu")
            self.facts = smoke_facts()
            self.facts["compile_backend"] = compile_backend
            nbytes, n = SMOKE_CEILING_SIZES
            self.copy_bandwidth = measure_copy_bandwidth(nbytes, device="cpu", bench=cpu_bench)
            self.matmul_tflops = measure_matmul_tflops(n, torch.float32, device="cpu", bench=cpu_bench)
            self.facts["matmul_dtype"] = "float32"  # the key below keeps its GPU name
        else:
            if not torch.cuda.is_available():
                raise NoCuda("sepkit perf needs a CUDA GPU: timings on a CPU say nothing about a kernel")
            self.dtype = torch.bfloat16 if dtype is None else dtype
            self.device = torch.device("cuda")
            self.facts = device_facts()
            self.copy_bandwidth = measure_copy_bandwidth()
            self.matmul_tflops = measure_matmul_tflops()
        digits = 4 if smoke else 1  # a CPU's rate is a small fraction of a TFLOP/s
        self.facts.update(copy_bandwidth_gbs=round(self.copy_bandwidth, digits),
                          matmul_tflops_bf16=round(self.matmul_tflops, digits))

    # the run's shape and device --------------------------------------------------------------
    def sizes(self, full, quick, smoke):
        """``smoke`` in a smoke run, ``quick`` with ``--quick``, ``full`` otherwise (any values)."""
        if self.smoke:
            return smoke
        return quick if self.quick else full

    @property
    def auto_backend(self) -> str | None:
        """The kernel backend of a benchmark's "automatic" provider: None (automatic choice, which
        is Triton on CUDA tensors) on the GPU; "triton" in smoke, where automatic choice would
        take the reference for CPU tensors, so that the interpreter runs the kernels a GPU would."""
        return "triton" if self.smoke else None

    def synchronize(self) -> None:
        """Wait for the device's queued work (nothing to wait for on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def empty_cache(self) -> None:
        """Release the CUDA caching allocator's unused blocks (nothing to do on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # measuring -----------------------------------------------------------------------------
    def time(self, fn: Callable[[], object]) -> tuple[float, float, float]:
        """(p50, p20, p80) milliseconds of ``fn`` (``do_bench`` on the GPU, a CPU timer in smoke)."""
        return cpu_bench(fn) if self.smoke else _do_bench(fn)

    def peak_memory(self, fn: Callable[[], object]) -> int:
        """Peak bytes allocated by one call of ``fn`` above what was allocated before it.

        On the GPU: ``torch.cuda.max_memory_allocated``. In smoke: :func:`cpu_peak_memory`.
        """
        if self.device.type != "cuda":
            return cpu_peak_memory(fn)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    def record_peak(self, fn: Callable[[], object], **common) -> None:
        """Record the peak memory of one call of ``fn`` (:meth:`peak_memory`, MiB), or a row of
        ``metric="oom"`` when it runs out of device memory; ``common``: the other :meth:`record`
        fields (op, provider, mode, x_name, x_value, config)."""
        try:
            peak = self.peak_memory(fn)
        except torch.cuda.OutOfMemoryError:
            self.empty_cache()
            self.record(metric="oom", unit="", p50=float("nan"), **common)
            return
        self.record(metric="peak_memory", unit="MiB", p50=peak / 2**20, **common)

    def time_providers(self, providers: dict[str, Callable | None], inputs: tuple[torch.Tensor, ...], *, op: str,
                       x_name: str, x_value, config: dict, work: dict[str, dict], peaks: tuple[str, ...] = ("full",),
                       label: str = "") -> None:
        """Time and record every provider ``fn(*inputs)`` of one size (None: unavailable, skipped).

        Mode "fwd" is the call on ``inputs``; mode "full" the call on leaf copies of them that
        require grad, then ``torch.autograd.grad`` of its scalar output w.r.t. all of them. Each
        mode is timed by :meth:`record_time` with the throughput arguments in ``work[mode]``
        (``nbytes=`` or ``flops=``), then the peak memory of each mode in ``peaks`` is recorded
        (:meth:`record_peak`), in that order. A provider that fails (one that cannot run this
        size) is noted as "<op> <provider> <label> failed: ..." and the others still run; the
        device cache is emptied after each.
        """
        for name, fn in providers.items():
            if fn is None:
                continue
            leaves = tuple(t.detach().requires_grad_() for t in inputs)
            calls = {"fwd": lambda f=fn: f(*inputs),
                     "full": lambda f=fn, a=leaves: torch.autograd.grad(f(*a), a)}
            common = dict(op=op, provider=name, x_name=x_name, x_value=x_value, config=config)
            try:
                for mode in ("fwd", "full"):
                    self.record_time(mode=mode, fn=calls[mode], **work.get(mode, {}), **common)
                for mode in peaks:
                    self.record_peak(calls[mode], mode=mode, **common)
            except Exception as exc:
                self.empty_cache()
                first = (str(exc).splitlines() or [""])[0]
                self.note(f"{op} {name} {label} failed: {type(exc).__name__}: {first[:120]}")
            self.empty_cache()

    def compile(self, fn: Callable) -> Callable:
        """``torch.compile(fn)`` (in smoke with ``backend=self.compile_backend``)."""
        if self.compile_backend == "inductor":
            return torch.compile(fn)
        return torch.compile(fn, backend=self.compile_backend)

    def try_compile(self, fn: Callable, *example_args, name: str = "torch.compile") -> Callable | None:
        """:meth:`compile` of ``fn`` warmed up on ``example_args``, or None (with a note) if it fails."""
        try:
            compiled = self.compile(fn)
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
        if self.smoke:
            row["smoke"] = SMOKE_MARK
        self.rows.append(row)
        tag = " (smoke)" if self.smoke else ""
        print(f"{op:10s} {provider:18s} {mode:5s} {x_name}={x_value!s:>12s} {metric}={p50:.4g} {unit}{tag}")

    def record_time(self, *, op, provider, mode, x_name, x_value, fn, nbytes=None, flops=None, config=None):
        """Time ``fn`` and record its time plus GB/s (when ``nbytes``) or TFLOP/s (when ``flops``).

        Out-of-memory is recorded as ``metric="oom"`` rather than raised.
        """
        try:
            p50, p20, p80 = self.time(fn)
        except torch.cuda.OutOfMemoryError:
            self.empty_cache()
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
