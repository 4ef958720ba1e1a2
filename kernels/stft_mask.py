"""STFT masking and power-law compression in one pass: Triton kernels, autograd op, public API.

The maths (see ``reference/stft_mask.py``): ``Y = decompress(bound(M) * compress(X))`` with a real
(magnitude) or complex ratio mask, mask bounds none / sigmoid / tanh (DCCRN's magnitude tanh that
keeps the mask's phase), and optional SGMSE+-style power-law compression (p = 0.5, s = 0.15).
``compress_spec``/``decompress_spec`` are the same kernel with no mask.

Tensors are complex or real views (..., 2); the kernel reads the interleaved (real, imaginary)
pairs, computes in fp32 and stores in the spectrogram's dtype. Magnitudes are formed without
squaring the bin (``|z| = m |z / m|``, ``m = max(|Re z|, |Im z|)``, and ``log2 |z| = log2 m +
log2(|z / m|^2) / 2``), so every finite fp32 bin is handled: no under- or overflow of |z|^2 for
|z| below 1e-19 or above 1.8e19; only the result itself can overflow (decompressing past the fp32
range). Zero-magnitude bins are mapped to zero with zero gradient under compression. On a GPU,
bins below the smallest normal fp32 (1.2e-38) may be flushed to zero by the hardware's
subnormal handling. The backward recomputes the forward from the inputs (nothing but the inputs is
saved) and writes the spectrogram and mask gradients in one pass.
"""
from __future__ import annotations

import torch

from sepkit.errors import InputError, InputTypeError

from ._alloc import empty_like
from ._backend import HAS_TRITON, INTERPRET, resolve_backend
from ._checks import FLOAT_DTYPES, check_same_device, check_tensor
from .reference.stft_mask import (
    BOUNDS,
    KINDS,
    SGMSE_COMPRESSION,
    compress_reference,
    decompress_reference,
    stft_mask_reference,
)

_KIND_CODE = {"none": 0, "magnitude": 1, "complex": 2}
_BOUND_CODE = {"none": 0, "sigmoid": 1, "tanh": 2}

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _tanh(x):
        # series near zero (no cancellation), exp form elsewhere
        ax = tl.abs(x)
        e = tl.exp(-2.0 * ax)
        big = (1.0 - e) / (1.0 + e)
        xs = tl.minimum(ax, 0.125)  # the series is used below 0.125 only (and x * x may overflow)
        x2 = xs * xs
        small = ax * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))))
        t = tl.where(ax < 0.125, small, big)
        return tl.where(x < 0, -t, t)

    @triton.jit
    def _sigmoid(x):
        return 1.0 / (1.0 + tl.exp(-x))

    @triton.jit
    def _scaled(zr, zi):
        """m = max(|Re z|, |Im z|) (1 at z = 0), u = z / m (|u|^2 in [1, 2]; 1 at z = 0), z != 0.

        |z| = m |u| and log2 |z| = log2 m + log2(|u|^2) / 2 without squaring z: no under- or
        overflow for any finite bin.
        """
        m = tl.maximum(tl.abs(zr), tl.abs(zi))
        pos = m > 0.0
        m = tl.where(pos, m, 1.0)
        ur = zr / m
        ui = zi / m
        s2 = tl.where(pos, ur * ur + ui * ui, 1.0)
        return m, ur, ui, s2, pos

    @triton.jit
    def _power_factor(zr, zi, exponent, coef):
        """coef * |z|^(exponent - 1), 0 at z = 0; also z / m and |z / m|^2 (see ``_scaled``)."""
        m, ur, ui, s2, pos = _scaled(zr, zi)
        f = coef * tl.exp2((exponent - 1.0) * (tl.log2(m) + 0.5 * tl.log2(s2)))
        return tl.where(pos, f, 0.0), ur, ui, s2

    @triton.jit
    def _power_vjp(zr, zi, gr, gi, exponent, coef):
        """Gradient through y = coef |z|^(exponent-1) z: f (g + (exponent-1) (u.g) u / |u|^2), u = z / m."""
        f, ur, ui, s2 = _power_factor(zr, zi, exponent, coef)
        proj = (exponent - 1.0) * (ur * gr + ui * gi) / s2
        return f * (gr + proj * ur), f * (gi + proj * ui)

    @triton.jit
    def _magnitude(zr, zi):
        """|z| (1 at z = 0, where it is never used), z / |z| (0 at z = 0), and z != 0."""
        m, ur, ui, s2, pos = _scaled(zr, zi)
        n = tl.sqrt(s2)
        r = tl.where(pos, m * n, 1.0)
        return r, ur / n, ui / n, pos

    @triton.jit
    def _bounded_mask(mr, mi, KIND: tl.constexpr, BOUND: tl.constexpr):
        if BOUND == 1:
            mr = _sigmoid(mr)
            if KIND == 2:
                mi = _sigmoid(mi)
        elif BOUND == 2:
            if KIND == 1:
                mr = _tanh(mr)
            else:
                r, _dr, _di, pos = _magnitude(mr, mi)
                g = tl.where(pos, _tanh(r) / r, 1.0)
                mr = mr * g
                mi = mi * g
        return mr, mi

    @triton.jit
    def _pair_offsets(start, BLOCK: tl.constexpr):
        """Element offsets of the interleaved (real, imaginary) pairs of the BLOCK bins from
        ``start``: one contiguous run of 2 BLOCK elements (so the compiler emits vector accesses)."""
        return 2 * start + tl.arange(0, 2 * BLOCK).to(tl.int64)

    @triton.jit
    def _load_pair(P, start, n, BLOCK: tl.constexpr):
        """Real and imaginary parts of the BLOCK bins from ``start`` (those < n valid): one contiguous tile of 2 BLOCK
        elements (vector loads), split into its even and odd elements in registers."""
        flat = _pair_offsets(start, BLOCK)
        pair = tl.load(P + flat, mask=flat < 2 * n, other=1.0).to(tl.float32)
        return tl.split(tl.reshape(pair, (BLOCK, 2)))

    @triton.jit
    def _store_pair(P, start, n, re, im, BLOCK: tl.constexpr):
        """Store interleaved (real, imaginary) pairs as one contiguous tile (vector stores)."""
        flat = _pair_offsets(start, BLOCK)
        pair = tl.reshape(tl.join(re, im), (2 * BLOCK,)).to(P.dtype.element_ty)
        tl.store(P + flat, pair, mask=flat < 2 * n)

    @triton.jit
    def _load_mask(M, start, offs, mask, n, KIND: tl.constexpr, BLOCK: tl.constexpr):
        if KIND == 2:
            mr, mi = _load_pair(M, start, n, BLOCK)
        else:
            mr = tl.load(M + offs, mask=mask, other=1.0).to(tl.float32)
            mi = mr
        return mr, mi

    @triton.jit
    def _apply_mask(xr, xi, mr, mi, KIND: tl.constexpr):
        if KIND == 1:
            return mr * xr, mr * xi
        elif KIND == 2:
            return mr * xr - mi * xi, mr * xi + mi * xr
        else:
            return xr, xi

    @triton.jit
    def _stft_mask_fwd_kernel(
        X, M, Y, N, p_in, c_in, p_out, c_out,
        KIND: tl.constexpr, BOUND: tl.constexpr, COMPRESS: tl.constexpr, DECOMPRESS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        start = tl.program_id(0).to(tl.int64) * BLOCK
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        valid = offs < N
        xr, xi = _load_pair(X, start, N, BLOCK)
        if COMPRESS:
            f, _ur, _ui, _s2 = _power_factor(xr, xi, p_in, c_in)
            xr = xr * f
            xi = xi * f
        if KIND != 0:
            mr, mi = _load_mask(M, start, offs, valid, N, KIND, BLOCK)
            mr, mi = _bounded_mask(mr, mi, KIND, BOUND)
            xr, xi = _apply_mask(xr, xi, mr, mi, KIND)
        if DECOMPRESS:
            f, _ur, _ui, _s2 = _power_factor(xr, xi, p_out, c_out)
            xr = xr * f
            xi = xi * f
        _store_pair(Y, start, N, xr, xi, BLOCK)

    @triton.jit
    def _stft_mask_bwd_kernel(
        G, X, M, DX, DM, N, p_in, c_in, p_out, c_out,
        KIND: tl.constexpr, BOUND: tl.constexpr, COMPRESS: tl.constexpr, DECOMPRESS: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        start = tl.program_id(0).to(tl.int64) * BLOCK
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        valid = offs < N
        xr, xi = _load_pair(X, start, N, BLOCK)
        gr, gi = _load_pair(G, start, N, BLOCK)
        # recompute the forward up to the decompression input
        cr, ci = xr, xi
        if COMPRESS:
            f, _ur, _ui, _s2 = _power_factor(xr, xi, p_in, c_in)
            cr = xr * f
            ci = xi * f
        if KIND != 0:
            rawr, rawi = _load_mask(M, start, offs, valid, N, KIND, BLOCK)
            mr, mi = _bounded_mask(rawr, rawi, KIND, BOUND)
            zr, zi = _apply_mask(cr, ci, mr, mi, KIND)
        else:
            zr, zi = cr, ci
        if DECOMPRESS:
            gr, gi = _power_vjp(zr, zi, gr, gi, p_out, c_out)
        # through the product: gradient to the bounded mask and to the compressed spectrogram
        if KIND == 1:
            gm = gr * cr + gi * ci
            gcr = mr * gr
            gci = mr * gi
            if BOUND == 1:
                gm = gm * mr * (1.0 - mr)
            elif BOUND == 2:
                gm = gm * (1.0 - mr * mr)
            tl.store(DM + offs, gm.to(DM.dtype.element_ty), mask=valid)
        elif KIND == 2:
            gmr = gr * cr + gi * ci
            gmi = gi * cr - gr * ci
            gcr = gr * mr + gi * mi
            gci = gi * mr - gr * mi
            if BOUND == 1:
                gmr = gmr * mr * (1.0 - mr)
                gmi = gmi * mi * (1.0 - mi)
            elif BOUND == 2:
                # y = tanh(r) m/r: J = (tanh r / r) I + h(r) m m^T, h = (sech^2 r - tanh(r)/r) / r^2;
                # with the unit vector e = m / r: J = (tanh r / r) I + (h r^2) e e^T (no r^2, r^3)
                r, er, ei, pos = _magnitude(rawr, rawi)
                t = _tanh(r)
                g = tl.where(pos, t / r, 1.0)
                rs = tl.minimum(r, 0.125)  # the series is used below 0.125 only (and r * r may overflow)
                r2 = rs * rs
                hr2_big = (1.0 - t * t) - t / r
                hr2_small = r2 * (-2.0 / 3.0 + r2 * (8.0 / 15.0 + r2 * (-34.0 / 105.0 + r2 * (496.0 / 2835.0))))
                hr2 = tl.where(r < 0.125, hr2_small, hr2_big)
                dot = er * gmr + ei * gmi
                gmr, gmi = g * gmr + hr2 * dot * er, g * gmi + hr2 * dot * ei
            _store_pair(DM, start, N, gmr, gmi, BLOCK)
        else:
            gcr, gci = gr, gi
        if COMPRESS:
            gcr, gci = _power_vjp(xr, xi, gcr, gci, p_in, c_in)
        _store_pair(DX, start, N, gcr, gci, BLOCK)


def _block() -> int:
    return 1024


def _launch(kernel, n: int, args, kind: str, bound: str, compress: bool, decompress: bool):
    block = _block()
    extra = {} if INTERPRET else {"num_warps": 4}
    kernel[(triton.cdiv(n, block),)](
        *args, KIND=_KIND_CODE[kind], BOUND=_BOUND_CODE[bound], COMPRESS=compress, DECOMPRESS=decompress,
        BLOCK=block, **extra,
    )


def _exponents(power_in: float, power_out: float, scale: float):
    """(exponent, coefficient) of the compression and of the expansion."""
    return power_in, scale, 1.0 / power_out, scale ** (-1.0 / power_out)


@torch.library.custom_op("sepkit::stft_mask_fwd", mutates_args=())
def _stft_mask_fwd(
    spec: torch.Tensor, mask: torch.Tensor, kind: str, bound: str, compress: bool, decompress: bool,
    power: float, scale: float,
) -> torch.Tensor:
    spec = spec.contiguous()
    mask = mask.contiguous()
    out = empty_like(spec)
    n = spec.numel() // 2
    if n:
        p_in, c_in, p_out, c_out = _exponents(power, power, scale)
        _launch(_stft_mask_fwd_kernel, n, (spec, mask, out, n, p_in, c_in, p_out, c_out), kind, bound, compress, decompress)
    return out


@_stft_mask_fwd.register_fake
def _(spec, mask, kind, bound, compress, decompress, power, scale):
    return torch.empty_like(spec, memory_format=torch.contiguous_format)


@torch.library.custom_op("sepkit::stft_mask_bwd", mutates_args=())
def _stft_mask_bwd(
    grad: torch.Tensor, spec: torch.Tensor, mask: torch.Tensor, kind: str, bound: str, compress: bool,
    decompress: bool, power: float, scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    spec = spec.contiguous()
    mask = mask.contiguous()
    grad = grad.contiguous()
    dspec = empty_like(spec)
    dmask = empty_like(mask)
    n = spec.numel() // 2
    if n:
        p_in, c_in, p_out, c_out = _exponents(power, power, scale)
        _launch(
            _stft_mask_bwd_kernel, n, (grad, spec, mask, dspec, dmask, n, p_in, c_in, p_out, c_out),
            kind, bound, compress, decompress,
        )
    return dspec, dmask


@_stft_mask_bwd.register_fake
def _(grad, spec, mask, kind, bound, compress, decompress, power, scale):
    return (
        torch.empty_like(spec, memory_format=torch.contiguous_format),
        torch.empty_like(mask, memory_format=torch.contiguous_format),
    )


def _setup_context(ctx, inputs, output):
    spec, mask, *flags = inputs
    ctx.save_for_backward(spec, mask)
    ctx.flags = flags


def _backward(ctx, grad):
    spec, mask = ctx.saved_tensors
    dspec, dmask = _stft_mask_bwd(grad, spec, mask, *ctx.flags)
    return dspec, (dmask if ctx.flags[0] != "none" else None), None, None, None, None, None, None


_stft_mask_fwd.register_autograd(_backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------
# public functions


def _as_view(op: str, name: str, t: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """A (..., 2) real view of a complex tensor (or the real view itself), and whether it was complex."""
    if not isinstance(t, torch.Tensor):
        raise InputTypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_complex():
        if t.dtype not in (torch.complex64, torch.complex128, torch.complex32):
            raise InputTypeError(f"{op}: {name} has unsupported complex dtype {t.dtype}")
        return torch.view_as_real(t if t.dim() else t.reshape(1)), True
    check_tensor(op, name, t, min_ndim=1, dtypes=FLOAT_DTYPES)
    if t.shape[-1] != 2:
        raise InputError(
            f"{op}: {name} must be complex or a real view with a last axis of size 2 (real, imaginary); "
            f"got shape {tuple(t.shape)}"
        )
    return t, False


def _check_compression(op: str, power: float, scale: float) -> None:
    if not (isinstance(power, (int, float)) and power > 0 and power == power and power != float("inf")):
        raise InputError(f"{op}: power must be a positive finite number, got {power!r}")
    if not (isinstance(scale, (int, float)) and scale > 0 and scale != float("inf")):
        raise InputError(f"{op}: scale must be a positive finite number, got {scale!r}")


def _math_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def stft_mask(
    spec: torch.Tensor,
    mask: torch.Tensor,
    kind: str = "complex",
    bound: str = "none",
    compress: tuple[float, float] | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Apply a (bounded) magnitude or complex ratio mask to a complex STFT in one pass.

    ``Y = decompress(bound(M) * compress(X))`` (compression optional; see the module docstring).

    Args:
        spec: complex STFT of any shape (...), or its real view (..., 2).
        mask: ``kind="magnitude"``: real, shape (...) (the spectrogram's shape without the
            (real, imaginary) axis); ``kind="complex"``: complex of shape (...) or a real view
            (..., 2), in the same representation as ``spec``. Shapes must match exactly (no
            broadcasting: expand explicitly). Any float dtype; gradients come back in it.
        kind: "magnitude" or "complex".
        bound: "none", "sigmoid" or "tanh" (for complex masks: tanh of the magnitude, phase kept).
        compress: None, or (power, scale) to mask in the power-law compressed domain and expand
            the result back, e.g. ``SGMSE_COMPRESSION = (0.5, 0.15)``.
        backend: "triton", "torch" (reference) or None (automatic).
    Returns:
        The masked spectrogram in the representation and dtype of ``spec``.
    """
    op = "stft_mask"
    if kind not in KINDS:
        raise InputError(f"{op}: kind must be one of {KINDS}, got {kind!r}")
    if bound not in BOUNDS:
        raise InputError(f"{op}: bound must be one of {BOUNDS}, got {bound!r}")
    if compress is not None:
        if not (isinstance(compress, (tuple, list)) and len(compress) == 2):
            raise InputError(f"{op}: compress must be None or a (power, scale) pair, got {compress!r}")
        _check_compression(op, *compress)
    x, was_complex = _as_view(op, "spec", spec)
    if not isinstance(mask, torch.Tensor):
        raise InputTypeError(f"{op}: mask must be a torch.Tensor, got {type(mask).__name__}")
    if kind == "complex":
        if mask.is_complex() != was_complex:
            want = "complex" if was_complex else "a real (..., 2) view"
            raise InputTypeError(f"{op}: kind='complex' needs mask in the representation of spec ({want})")
        m, _ = _as_view(op, "mask", mask)
        if m.shape != x.shape:
            raise InputError(f"{op}: mask shape {tuple(mask.shape)} does not match spec shape {tuple(spec.shape)}")
    else:
        check_tensor(op, "mask", mask, dtypes=FLOAT_DTYPES)
        m = mask
        if m.shape != x.shape[:-1]:
            raise InputError(
                f"{op}: a magnitude mask must have the spectrogram's shape {tuple(x.shape[:-1])}, "
                f"got {tuple(mask.shape)}"
            )
    check_same_device(op, spec=x, mask=m)
    power, scale = compress if compress is not None else (1.0, 1.0)
    if resolve_backend(op, backend, [x, m]) == "torch":
        md = _math_dtype(x, m)
        y = stft_mask_reference(x.to(md), m.to(md), kind, bound, compress).to(x.dtype)
    else:
        y = _stft_mask_fwd(x, m, kind, bound, compress is not None, compress is not None, float(power), float(scale))
    return torch.view_as_complex(y) if was_complex else y


def _power_law_op(op: str, spec, power, scale, backend, inverse: bool) -> torch.Tensor:
    _check_compression(op, power, scale)
    x, was_complex = _as_view(op, "spec", spec)
    if resolve_backend(op, backend, [x]) == "torch":
        fn = decompress_reference if inverse else compress_reference
        y = fn(x.to(_math_dtype(x)), power, scale).to(x.dtype)
    else:
        y = _stft_mask_fwd(x, x.new_empty(0), "none", "none", not inverse, inverse, float(power), float(scale))
    return torch.view_as_complex(y) if was_complex else y


def compress_spec(spec: torch.Tensor, power: float = 0.5, scale: float = 0.15, backend: str | None = None) -> torch.Tensor:
    """Power-law compression ``scale * |X|^power * e^{j angle X}`` (SGMSE+ defaults p=0.5, s=0.15).

    Args:
        spec: complex tensor (...) or real view (..., 2).
    Returns:
        The compressed spectrogram in the representation and dtype of ``spec``.
    """
    return _power_law_op("compress_spec", spec, power, scale, backend, inverse=False)


def decompress_spec(spec: torch.Tensor, power: float = 0.5, scale: float = 0.15, backend: str | None = None) -> torch.Tensor:
    """Inverse of :func:`compress_spec`: ``(|Y| / scale)^(1/power) * e^{j angle Y}``."""
    return _power_law_op("decompress_spec", spec, power, scale, backend, inverse=True)


__all__ = ["stft_mask", "compress_spec", "decompress_spec", "SGMSE_COMPRESSION", "KINDS", "BOUNDS"]
