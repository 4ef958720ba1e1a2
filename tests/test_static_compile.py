"""Every kernel compiles for sm_90a and sm_80 without spills or over-limit shared memory (no GPU needed).

Runs ``python -m perf static`` in a subprocess WITHOUT ``TRITON_INTERPRET`` (conftest sets it in
this process, and Triton decides at kernel definition time): the launches of every op at the
benchmark shapes are captured, and the largest config the launcher / autotuner can pick per
(kernel, dtype, precision) is compiled at fp16 and fp32 (exact, "highest") for sm_90a and sm_80
(the config filters see each target's architecture). The
largest tile is the one that runs out of registers or shared memory first. The full table
(every config, fp32/fp16/bf16, sm_90a and sm_80, TF32) is ``python -m perf static``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parent.parent


def _run_static(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = tmp_path / "static.json"
    cmd = [sys.executable, "-m", "perf", "static", "--quick", "--largest", "--target", "sm_90a", "--target", "sm_80",
           "--dtype", "float16", "--dtype", "float32", "--precision", "highest", "--no-write", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if not out.exists():
        pytest.fail(f"perf static produced no result (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def test_every_kernel_compiles_without_spills(tmp_path):
    doc = _run_static(tmp_path)
    if doc["skipped"].get("sm_90a") and doc["skipped"].get("sm_80"):
        pytest.skip(f"neither target can be built here: {doc['skipped']}")
    rows = doc["rows"]
    kernels = {r["kernel"] for r in rows}
    # every kernel of every op was captured and compiled
    expected = {"_attn_fwd_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel", "_attn_bwd_delta_kernel",
                "_attn_fwd_combine_kernel", "_mmd_fwd_kernel", "_mmd_bwd_kernel", "_nce_fwd_kernel",
                "_nce_bwd_context_kernel", "_nce_bwd_targets_kernel", "_snake_fwd_kernel", "_snake_bwd_kernel",
                "_stft_mask_fwd_kernel", "_stft_mask_bwd_kernel"}
    assert expected <= kernels, f"kernels never compiled: {sorted(expected - kernels)}"
    errors = [f"{r['kernel']} {r['dtype']} {r['config']}: {r['error']}" for r in rows if r["error"]]
    assert not errors, "compile errors:\n" + "\n".join(errors)
    limit = {"sm_90a": 232448, "sm_80": 166912}  # shared memory per block (bytes): H100, A100
    over = [f"{r['target']} {r['kernel']} {r['dtype']} {r['config']}: {r['shared']} B" for r in rows
            if r["shared"] > limit[r["target"]]]
    assert not over, "configs over the per-block shared memory limit:\n" + "\n".join(over)
    spills = [f"{r['target']} {r['kernel']} {r['dtype']} {r['flags']} {r['config']}: {r['spill_stores']} B"
              for r in rows if r["spill_stores"] or r["spill_loads"]]
    assert not spills, "register spills:\n" + "\n".join(spills)
    # no stack frame in the element-wise kernels (snake's came from libdevice's sin/cos slow path)
    stacks = [f"{r['kernel']} {r['dtype']} {r['config']}: {r['stack']} B" for r in rows
              if r["kernel"].startswith("_snake") and r["stack"]]
    assert not stacks, "stack frames:\n" + "\n".join(stacks)
    # tensor cores for every fp16 dot
    no_tc = [f"{r['kernel']} {r['config']}" for r in rows
             if r["kernel"] in ("_attn_fwd_kernel", "_attn_bwd_dkdv_kernel", "_attn_bwd_dq_kernel", "_mmd_fwd_kernel",
                                "_mmd_bwd_kernel") and r["dtype"] == "float16" and not (r["wgmma"] or r["mma_sync"])]
    assert not no_tc, "fp16 dot kernels without tensor-core instructions:\n" + "\n".join(no_tc)
