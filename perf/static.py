"""``python -m perf static``: compile every Triton kernel for sm_90a and sm_80 without a GPU.

What it does, in a process where ``TRITON_INTERPRET`` is unset (the kernels must be real
``JITFunction``/``Autotuner`` objects; the command refuses to run otherwise):

1. **Capture.** Runs sepkit's public ops (forward and backward) on CPU tensors at the benchmark
   shapes, at fp32/fp16/bf16, with ``JITFunction.run`` and ``Autotuner.run`` patched to record
   the bound arguments instead of launching. Nothing is computed (outputs stay uninitialised).
2. **Enumerate.** For an autotuned kernel, every config its own pruning filter keeps for the
   recorded arguments (the configs the autotuner may pick there); for a plain launch, the one
   the launcher chose.
3. **Specialise.** The kernel's own Triton binder turns the arguments into the signature,
   constexprs and attributes of a real launch (16-byte pointer alignment, integers divisible
   by 16, integers equal to 1), for the compile target.
4. **Compile.** ``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`` to PTX,
   then the wheel's ``ptxas -v`` (``--gpu-name sm_90a`` / ``sm_80``) for registers, spills and
   stack; the PTX is scanned for 128-bit global accesses (``ld.global*.v4`` /
   ``st.global*.v4``) and tensor-core instructions (``wgmma`` / ``mma.sync``).

Each (kernel, config, dtype, target) row records: registers per thread, spill store/load
bytes, stack frame bytes, shared memory bytes (Triton's dynamic allocation), blocks and warps
per SM (the occupancy those imply: H100 for sm_90a, A100 for sm_80), the count of scalar and
vector global loads/stores, tensor-core instruction counts, and a verdict.

The verdict ``ok`` needs: compiled, no spill bytes, shared memory within the device's per-block
limit, tensor cores for every dot kernel in fp16/bf16 (and fp32 when the kernel was launched with
TF32), and for memory-bound kernels (``MEMORY_BOUND``) 128-bit global loads.

Results: ``perf/results/static-triton<version>-<date>.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

#: Targets: (name, compute capability, ptxas --gpu-name, device for occupancy).
TARGETS = {
    "sm_90a": (90, "sm_90a", "H100"),
    "sm_80": (80, "sm_80", "A100"),
}
#: Per-SM resources (registers, warps, blocks, shared memory per SM and per block, bytes).
DEVICES = {
    "H100": dict(regs=65536, warps=64, blocks=32, smem_sm=233472, smem_block=232448, smem_reserved=1024),
    "A100": dict(regs=65536, warps=64, blocks=32, smem_sm=167936, smem_block=166912, smem_reserved=1024),
}
#: Kernels whose speed is bounded by memory bandwidth: 128-bit global loads are required.
MEMORY_BOUND = {
    "_snake_fwd_kernel", "_snake_bwd_kernel", "_stft_mask_fwd_kernel", "_stft_mask_bwd_kernel",
    "_attn_bwd_delta_kernel", "_attn_fwd_combine_kernel",
}
#: Kernels whose inner products run on ``tl.dot``: tensor cores are required (fp32: with TF32).
DOT_KERNELS = {"_attn_fwd_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel", "_mmd_fwd_kernel",
               "_mmd_bwd_kernel"}
DTYPES = ("float32", "float16", "bfloat16")
OPS = ("attention", "mmd", "nce", "snake", "stft_mask")


# ----------------------------------------------------------------------------------------------
# 1. capture


@dataclasses.dataclass
class Launch:
    """One recorded launch: the JIT function (or autotuner), positional and keyword arguments."""

    op: str
    dtype: str
    fn: object
    args: tuple
    kwargs: dict
    autotuner: object = None


@contextlib.contextmanager
def _recording(sink: list, op: str, dtype: str):
    """Patch Triton's launch entry points to record instead of launching; let CPU tensors in."""
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    import torch
    from sepkit.kernels import _backend

    saved = (JITFunction.run, Autotuner.run, _backend.device_reasons, torch.cuda.get_device_properties)

    def jit_run(self, *args, grid=None, warmup=False, **kwargs):
        sink.append(Launch(op, dtype, self, args, dict(kwargs)))
        return None

    def tuner_run(self, *args, **kwargs):
        kwargs.pop("grid", None)
        kwargs.pop("warmup", None)
        sink.append(Launch(op, dtype, self.fn, args, dict(kwargs), autotuner=self))
        return None

    class _Props:  # an H100 SXM, for launchers that size their grids to the device
        multi_processor_count = 132
        name = "static-compile"

    JITFunction.run = jit_run
    Autotuner.run = tuner_run
    _backend.device_reasons = lambda tensors: [] if _backend.HAS_TRITON else ["triton is not installed"]
    torch.cuda.get_device_properties = lambda *a, **k: _Props()
    try:
        yield
    finally:
        JITFunction.run, Autotuner.run, _backend.device_reasons, torch.cuda.get_device_properties = saved


def _leaves(fn, seen=None):
    """The leaf tensors an autograd graph reaches (to ask for their gradients)."""
    seen = set() if seen is None else seen
    out = []
    stack = [fn]
    while stack:
        f = stack.pop()
        if f is None or id(f) in seen:
            continue
        seen.add(id(f))
        if hasattr(f, "variable"):
            out.append(f.variable)
        stack.extend(g for g, _ in f.next_functions)
    return out


def _workloads(quick: bool):
    """(op name, function of a torch dtype that runs the op forward and backward)."""
    import torch
    from sepkit import kernels as K

    def z(*shape, dtype, grad=True):
        # values never matter (nothing is launched): uninitialised memory costs nothing to make
        return torch.empty(*shape, dtype=dtype).requires_grad_(grad)

    def backward(out):
        leaves = [t for t in _leaves(out.grad_fn) if t.requires_grad]
        torch.autograd.grad(out, leaves, torch.empty_like(out), allow_unused=True)

    def attention(dtype):
        B, H = 1, 2  # benchmark: 4 x 8 (same tiles, pruning and divisibility)
        shapes = [(1024, 1024, False, 64), (1024, 1024, True, 64), (4096, 16, False, 64), (4096, 64, False, 64),
                  (4096, 256, False, 64), (4, 2048, False, 64), (4, 8192, False, 64)]
        if not quick:
            shapes += [(1024, 1024, False, 32), (1024, 1024, True, 32), (1024, 1024, False, 128),
                       (1024, 1024, True, 128), (4, 2048, False, 128), (4096, 4096, False, 64)]
        for lq, lk, causal, dh in shapes:
            q, k, v = z(B, H, lq, dh, dtype=dtype), z(B, H, lk, dh, dtype=dtype), z(B, H, lk, dh, dtype=dtype)
            backward(K.attention(q, k, v, causal=causal, backend="triton"))
        q, k, v = z(B, H, 1000, 64, dtype=dtype), z(B, H, 1000, 64, dtype=dtype), z(B, H, 1000, 64, dtype=dtype)
        backward(K.attention(q, k, v, kv_lengths=[900], backend="triton"))

    def mmd(dtype):
        for n, d in ([(4096, 256)] if quick else [(1024, 64), (4096, 64), (4096, 256), (16384, 256)]):
            x = (torch.arange(n * d, dtype=torch.float32).reshape(n, d) % 7 / 7).to(dtype).requires_grad_()
            y = (torch.arange(n * d, dtype=torch.float32).reshape(n, d) % 5 / 5).to(dtype).requires_grad_()
            backward(K.mmd(x, y, backend="triton"))

    def nce(dtype):
        for steps in ([500] if quick else [500, 1500]):
            t_total, n, k, d = 8 * steps, 4 * steps, 100, 256
            c = torch.ones(n, d, dtype=dtype).requires_grad_()  # nce checks finiteness
            t = torch.ones(t_total, d, dtype=dtype).requires_grad_()
            pos = torch.arange(n) * 2
            neg = (torch.arange(n * k).reshape(n, k) * 7) % t_total
            backward(K.nce(c, t, pos, neg, backend="triton"))

    def snake(dtype):
        B, C = 2, 1024  # benchmark: B = 16; the batch changes neither tiles nor divisibility
        for T in ([4096] if quick else [1024, 8192]):
            x = z(B, C, T, dtype=dtype)
            a, b = z(C, dtype=torch.float32), z(C, dtype=torch.float32)
            backward(K.snake(x, a, backend="triton"))
            backward(K.snake(x, a, b, logscale=True, backend="triton"))
            xl = z(B, T, C, dtype=dtype)
            backward(K.snake(xl, a, dim=2, backend="triton"))

    def stft_mask(dtype):
        B, F = 2, 257  # benchmark: B = 16 (same tiles and divisibility)
        for T in ([1024] if quick else [1024, 4096]):
            spec, mask = z(B, F, T, 2, dtype=dtype), z(B, F, T, 2, dtype=dtype)
            backward(K.stft_mask(spec, mask, kind="complex", backend="triton"))
            backward(K.stft_mask(spec, mask, kind="complex", bound="tanh", compress=K.SGMSE_COMPRESSION,
                                 backend="triton"))
            mag = z(B, F, T, dtype=dtype)
            backward(K.stft_mask(spec, mag, kind="magnitude", bound="sigmoid", backend="triton"))
            backward(K.stft_mask(spec, mag, kind="magnitude", bound="tanh", compress=K.SGMSE_COMPRESSION,
                                 backend="triton"))
            backward(K.compress_spec(spec, backend="triton"))
            backward(K.decompress_spec(spec, backend="triton"))

    return {"attention": attention, "mmd": mmd, "nce": nce, "snake": snake, "stft_mask": stft_mask}


def capture(ops=None, dtypes=DTYPES, quick: bool = False, precision: str = "highest") -> list[Launch]:
    """Record every launch of the selected ops at the benchmark shapes (see module doc).

    ``precision`` is ``torch.set_float32_matmul_precision`` during the capture ("highest": exact
    fp32 dots, "high": TF32).
    """
    import torch

    launches: list[Launch] = []
    work = _workloads(quick)
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        for op in ops or sorted(work):
            for dt in dtypes:
                with _recording(launches, op, dt):
                    work[op](getattr(torch, dt))
    finally:
        torch.set_float32_matmul_precision(old)
    return launches


# ----------------------------------------------------------------------------------------------
# 2. enumerate and specialise


@dataclasses.dataclass
class Case:
    op: str
    dtype: str
    kernel: str
    fn: object
    args: tuple
    kwargs: dict  # constexprs and launch options (num_warps, num_stages) included
    autotuned: bool

    def label(self) -> str:
        keys = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_D", "BLOCK_R", "BLOCK", "BLOCK_J", "BLOCK_E")
        tile = "x".join(str(self.kwargs[k]) for k in keys if k in self.kwargs)
        return f"{tile} w{self.kwargs.get('num_warps', 4)} s{self.kwargs.get('num_stages', 3)}"

    def flags(self) -> str:
        skip = {"BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_D", "BLOCK_R", "BLOCK", "BLOCK_J", "BLOCK_E", "num_warps",
                "num_stages", "LQ_KEY", "LK_KEY"}
        return ",".join(f"{k}={v}" for k, v in sorted(self.kwargs.items()) if k not in skip and not _is_tensor(v))


def _is_tensor(v) -> bool:
    return hasattr(v, "data_ptr")


def expand(launches: list[Launch]) -> list[Case]:
    """Every (launch, config) the launcher or autotuner may run."""
    cases = []
    for rec in launches:
        name = rec.fn.fn.__name__
        if rec.autotuner is None:
            cases.append(Case(rec.op, rec.dtype, name, rec.fn, rec.args, rec.kwargs, False))
            continue
        tuner = rec.autotuner
        tuner.nargs = dict(zip(tuner.arg_names, rec.args))
        try:
            configs = tuner.prune_configs(rec.kwargs) if len(tuner.configs) > 1 else tuner.configs
        finally:
            tuner.nargs = None
        for cfg in configs:
            cases.append(Case(rec.op, rec.dtype, name, rec.fn, rec.args, {**rec.kwargs, **cfg.all_kwargs()}, True))
    return cases


def _expand_for(launches: list[Launch], arch: int) -> list[Case]:
    """:func:`expand` with the kernels' config filters assuming compute capability ``arch``.x."""
    import importlib

    attention = importlib.import_module("sepkit.kernels.attention")  # the module (the package exports the op)
    saved = attention.STATIC_ARCH
    attention.STATIC_ARCH = arch
    try:
        return expand(launches)
    finally:
        attention.STATIC_ARCH = saved


def specialise(case: Case, backend):
    """(signature, constexprs, attrs, options) of a real launch of ``case`` for ``backend``."""
    from triton.runtime.jit import create_function_from_signature

    fn = case.fn
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(case.kwargs)
    kwargs.setdefault("debug", False)
    bound_args, specialization, options = binder(*case.args, **kwargs)
    if hasattr(fn, "_pack_args"):  # triton 3.5+ (3.8 here)
        options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound_args, specialization, options)
        return signature, constexprs, attrs, options
    # older releases build the same four things inline in JITFunction.run
    from triton._utils import find_paths_if, get_iterable_path

    sigvals = [x[0] for x in specialization]
    signature = dict(zip([p.name for p in fn.params], sigvals))
    values = list(bound_args.values())
    constexprs = {path: get_iterable_path(values, path) for path in find_paths_if(sigvals, lambda _, v: v == "constexpr")}
    attrvals = ["" if x[0] == "constexpr" else x[1] for x in specialization]
    attrs = {path: backend.parse_attr(get_iterable_path(attrvals, path))
             for path in find_paths_if(attrvals, lambda _, v: isinstance(v, str))}
    return signature, constexprs, attrs, backend.parse_options(kwargs)


def dedupe(cases: list[Case], backend) -> list[tuple[Case, tuple]]:
    """One case per distinct compiled kernel (same function, signature, constants, attrs, options)."""
    seen, out = set(), []
    for case in cases:
        spec = specialise(case, backend)
        sig, constexprs, attrs, options = spec
        key = (case.kernel, case.dtype, repr(sorted(sig.items())), repr(sorted(constexprs.items(), key=str)),
               repr(sorted(attrs.items(), key=str)), options.num_warps, options.num_stages)
        if key in seen:
            continue
        seen.add(key)
        out.append((case, spec))
    return out


# ----------------------------------------------------------------------------------------------
# 3. compile and measure


def ptxas_path() -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


_PTXAS_RE = {
    "registers": re.compile(r"Used (\d+) registers"),
    "spill_stores": re.compile(r"(\d+) bytes spill stores"),
    "spill_loads": re.compile(r"(\d+) bytes spill loads"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
}


def run_ptxas(ptx: str, gpu_name: str) -> dict:
    """Registers/thread, spill store/load bytes and stack frame bytes from ``ptxas -v``."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run([str(ptxas_path()), "-v", f"--gpu-name={gpu_name}", str(src), "-o", str(Path(tmp) / "k.o")],
                              capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"ptxas failed: {proc.stderr.strip()[-400:]}")
    out = {}
    for key, rx in _PTXAS_RE.items():
        values = [int(v) for v in rx.findall(proc.stderr)]
        out[key] = max(values) if values else 0
    return out


def scan_ptx(ptx: str) -> dict:
    """Counts of global loads/stores (all, 128-bit) and tensor-core instructions in the PTX."""
    lines = [ln.strip() for ln in ptx.splitlines()]
    ld = [ln for ln in lines if re.match(r"(@%p\d+\s+)?ld\.global", ln)]
    st = [ln for ln in lines if re.match(r"(@%p\d+\s+)?st\.global", ln)]
    return dict(
        ld_global=len(ld), ld_global_v4=sum(".v4" in ln for ln in ld),
        st_global=len(st), st_global_v4=sum(".v4" in ln for ln in st),
        wgmma=sum(ln.startswith("wgmma.mma_async") for ln in lines),
        mma_sync=sum(bool(re.match(r"mma\.sync", ln)) for ln in lines),
        fma=sum(bool(re.match(r"fma\.rn\.f32", ln)) for ln in lines),
    )


def occupancy(registers: int, shared: int, num_warps: int, device: str) -> dict:
    """Blocks and warps per SM from registers (256-register allocation per warp) and shared memory."""
    dev = DEVICES[device]
    per_warp = -(-max(registers, 1) * 32 // 256) * 256
    warps_by_regs = dev["regs"] // per_warp
    blocks = min(dev["blocks"], warps_by_regs // num_warps, dev["warps"] // num_warps)
    if shared:
        blocks = min(blocks, dev["smem_sm"] // (shared + dev["smem_reserved"]))
    return dict(blocks_per_sm=blocks, warps_per_sm=blocks * num_warps)


def compile_one(case: Case, spec: tuple, target_name: str) -> dict:
    """Compile one case for one target; the result row (``error`` set when it failed)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cc, gpu_name, device = TARGETS[target_name]
    sig, constexprs, attrs, options = spec
    row = dict(op=case.op, kernel=case.kernel, dtype=case.dtype, config=case.label(), flags=case.flags(),
               autotuned=case.autotuned, target=target_name, num_warps=options.num_warps,
               num_stages=options.num_stages, precision=str(case.kwargs.get("PRECISION")))
    t0 = time.perf_counter()
    try:
        opts = {"num_warps": options.num_warps, "num_stages": options.num_stages}
        if getattr(options, "num_ctas", 1) != 1:
            opts["num_ctas"] = options.num_ctas
        kernel = triton.compile(ASTSource(case.fn, sig, constexprs, attrs), target=GPUTarget("cuda", cc, 32),
                                options=opts)
        ptx = kernel.asm["ptx"]
        row.update(run_ptxas(ptx, gpu_name))
        row["shared"] = int(kernel.metadata.shared)
        row.update(scan_ptx(ptx))
        row.update(occupancy(row["registers"], row["shared"], options.num_warps, device))
        row["error"] = None
    except Exception as exc:  # a compile error is a result row, and fails the verdict
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}"
    row["seconds"] = round(time.perf_counter() - t0, 2)
    row["verdict"] = verdict(row)
    return row


def verdict(row: dict) -> str:
    """"ok" or the list of failed targets (see module doc)."""
    if row.get("error"):
        return "compile error"
    bad = []
    if row["spill_stores"] or row["spill_loads"]:
        bad.append(f"spills {row['spill_stores']}B")
    dev = DEVICES[TARGETS[row["target"]][2]]
    if row["shared"] > dev["smem_block"]:
        bad.append(f"smem {row['shared'] // 1024}KB > {dev['smem_block'] // 1024}KB")
    if row["kernel"] in DOT_KERNELS:
        wants_tc = row["dtype"] != "float32" or row["precision"] == "tf32"
        tc = row["wgmma"] + row["mma_sync"]
        if wants_tc and not tc:
            bad.append("no tensor cores")
    if row["kernel"] in MEMORY_BOUND and row["ld_global"] and not row["ld_global_v4"]:
        bad.append("no 128-bit loads")
    return "ok" if not bad else "; ".join(bad)


def target_reasons() -> dict:
    """Targets the installed Triton cannot build, with the reason."""
    reasons = {}
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as exc:
        return {t: f"triton has no ahead-of-time compile API here ({exc})" for t in TARGETS}
    if not ptxas_path().exists():
        return {t: f"the triton wheel has no ptxas at {ptxas_path()}" for t in TARGETS}
    for name, (_cc, gpu_name, _dev) in TARGETS.items():
        proc = subprocess.run([str(ptxas_path()), "--help"], capture_output=True, text=True)
        if gpu_name not in proc.stdout:
            reasons[name] = f"the wheel's ptxas does not list {gpu_name}"
    return reasons


def _backend_for(target_name: str):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    cc = TARGETS[target_name][0]
    return make_backend(GPUTarget("cuda", cc, 32))


# worker state for the process pool (forked after capture)
_JOBS: list = []


def _job(i: int) -> dict:
    case, spec, target = _JOBS[i]
    return compile_one(case, spec, target)


def run_static(ops=None, dtypes=DTYPES, targets=tuple(TARGETS), quick=False, precisions=("highest", "high"),
               jobs: int = 2, largest_only: bool = False, log=print) -> dict:
    """Capture, enumerate, compile; the result document (facts, skipped targets, rows)."""
    from sepkit.kernels import _backend

    if _backend.INTERPRET:
        raise RuntimeError("static compilation needs TRITON_INTERPRET unset (the kernels are interpreted here)")
    import triton

    skipped = target_reasons()
    targets = [t for t in targets if t not in skipped]
    launches = []
    for precision in precisions:
        dts = dtypes if precision == "highest" else tuple(d for d in dtypes if d == "float32")
        if dts:
            launches += capture(ops, dts, quick=quick, precision=precision)
    jobs_list = []
    n_cases = 0
    for target in list(targets):
        # the autotuners' filters see this target's architecture (attention prunes per arch)
        cases = _expand_for(launches, TARGETS[target][0] // 10)
        if largest_only:
            cases = _largest(cases)
        n_cases = max(n_cases, len(cases))
        try:
            specs = dedupe(cases, _backend_for(target))
        except Exception as exc:  # an API this Triton lacks: skip the target with the reason
            skipped[target] = f"cannot specialise launches with triton {triton.__version__}: {type(exc).__name__}: {exc}"
            continue
        jobs_list += [(case, spec, target) for case, spec in specs]
    targets = [t for t in targets if t not in skipped]
    log(f"static: {len(jobs_list)} compiles (up to {n_cases} launch x config cases per target) for "
        f"{', '.join(targets) or 'no target'}")
    global _JOBS
    _JOBS = jobs_list
    rows = []
    t0 = time.perf_counter()
    if jobs > 1 and len(jobs_list) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(jobs) as pool:
            for i, row in enumerate(pool.imap(_job, range(len(jobs_list)))):
                rows.append(row)
                if (i + 1) % 25 == 0:
                    log(f"  {i + 1}/{len(jobs_list)} compiled")
    else:
        rows = [_job(i) for i in range(len(jobs_list))]
    return dict(
        facts=dict(triton=triton.__version__, date=_dt.date.today().isoformat(), ptxas=str(ptxas_path()),
                   seconds=round(time.perf_counter() - t0, 1), quick=quick, precisions=list(precisions),
                   devices=DEVICES),
        skipped=skipped, rows=rows,
    )


def _largest(cases: list[Case], by_flags: bool = False) -> list[Case]:
    """Per (kernel, dtype, precision) (and flags when ``by_flags``): the configs with the largest
    tile and the most warps (the CI subset: registers and shared memory grow with the tile)."""
    best: dict = {}
    for c in cases:
        tile = 1
        for k in ("BLOCK_M", "BLOCK_N", "BLOCK_D", "BLOCK_R", "BLOCK", "BLOCK_J", "BLOCK_K", "BLOCK_E"):
            tile *= int(c.kwargs.get(k, 1))
        key = (c.kernel, c.dtype, str(c.kwargs.get("PRECISION")), c.flags() if by_flags else "")
        score = (tile, c.kwargs.get("num_warps", 4), c.flags())
        if key not in best or score > best[key][0]:
            best[key] = (score, c)
    return [c for _, c in best.values()]


# ----------------------------------------------------------------------------------------------
# 4. report


def markdown(doc: dict) -> str:
    f = doc["facts"]
    rows = doc["rows"]
    out = [f"# Static compile: triton {f['triton']}, {f['date']}", "",
           "Every kernel x config the launchers / autotuners can pick at the benchmark shapes, compiled "
           "without a GPU (`python -m perf static`); registers and spills from the wheel's `ptxas -v`; "
           "occupancy for H100 (sm_90a) and A100 (sm_80). `v4 ld/st`: 128-bit global loads/stores "
           "of all global loads/stores in the PTX; `tc`: wgmma / mma.sync instructions.", ""]
    for t, why in doc["skipped"].items():
        out.append(f"- target {t} skipped: {why}")
    for target in TARGETS:
        sub = [r for r in rows if r["target"] == target]
        if not sub:
            continue
        ok = sum(r["verdict"] == "ok" for r in sub)
        out += ["", f"## {target}: {ok} of {len(sub)} ok", "",
                "| kernel | dtype | flags | config | regs | spill B | stack B | smem KB | warps/SM | v4 ld/st | tc | verdict |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(sub, key=lambda r: (r["op"], r["kernel"], r["dtype"], r["flags"], r["config"])):
            if r.get("error"):
                out.append(f"| {r['kernel']} | {r['dtype']} | {r['flags']} | {r['config']} | - | - | - | - | - | - | - | "
                           f"{r['verdict']}: {r['error'][:80]} |")
                continue
            tc = r["wgmma"] if target == "sm_90a" else r["mma_sync"]
            tc_s = f"{r['wgmma']}w/{r['mma_sync']}m" if (r["wgmma"] or r["mma_sync"]) else "0"
            del tc
            out.append(
                f"| {r['kernel']} | {r['dtype']} | {r['flags']} | {r['config']} | {r['registers']} | {r['spill_stores']} | "
                f"{r['stack']} | {r['shared'] / 1024:.1f} | {r['warps_per_sm']} | "
                f"{r['ld_global_v4']}/{r['ld_global']} {r['st_global_v4']}/{r['st_global']} | {tc_s} | {r['verdict']} |")
    return "\n".join(out) + "\n"


def write(doc: dict, out_dir: Path = RESULTS) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    f = doc["facts"]
    stem = f"static-triton{f['triton']}-{f['date']}"
    paths = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    paths[0].write_text(json.dumps(doc, indent=1, default=str) + "\n")
    paths[1].write_text(markdown(doc))
    return paths


def summary(doc: dict) -> str:
    lines = []
    for target in TARGETS:
        sub = [r for r in doc["rows"] if r["target"] == target]
        if sub:
            bad = [r for r in sub if r["verdict"] != "ok"]
            lines.append(f"{target}: {len(sub) - len(bad)} of {len(sub)} ok")
            for r in bad:
                lines.append(f"  {r['kernel']} {r['dtype']} {r['flags']} {r['config']}: {r['verdict']}")
    for t, why in doc["skipped"].items():
        lines.append(f"{t}: skipped ({why})")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf static", description=__doc__.splitlines()[0])
    parser.add_argument("--op", action="append", choices=OPS, help="only this op (repeatable)")
    parser.add_argument("--dtype", action="append", choices=DTYPES)
    parser.add_argument("--target", action="append", choices=tuple(TARGETS))
    parser.add_argument("--quick", action="store_true", help="fewer shapes")
    parser.add_argument("--largest", action="store_true", help="only the largest config per kernel variant")
    parser.add_argument("--precision", action="append", choices=("highest", "high"),
                        help="fp32 matmul precision(s) to capture under (default: both)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the result document here")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("perf static: unset TRITON_INTERPRET (the kernels must be compiled, not interpreted)", file=sys.stderr)
        return 2
    doc = run_static(args.op, tuple(args.dtype or DTYPES), tuple(args.target or TARGETS), quick=args.quick,
                     precisions=tuple(args.precision or ("highest", "high")), jobs=args.jobs, largest_only=args.largest,
                     log=lambda m: print(m, file=sys.stderr, flush=True))
    print(summary(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, default=str))
    if not args.no_write:
        for p in write(doc, args.out):
            print("wrote", p)
    bad = [r for r in doc["rows"] if r["verdict"] != "ok"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
