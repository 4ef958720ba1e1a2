"""Attention layers of every sepkit transformer, on the ``sepkit.kernels.attention`` op.

* :class:`MultiheadAttention` - self-attention, parameters named and initialised as in
  ``torch.nn.MultiheadAttention`` (``in_proj_weight``, ``in_proj_bias``, ``out_proj``), so its
  state dict loads into and from one.
* :class:`CrossAttention` - queries from one sequence, keys and values from another, separate
  projections (``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``, ``in_proj_bias``,
  ``out_proj``: the names ``torch.nn.MultiheadAttention`` uses when ``kdim``/``vdim`` differ from
  ``embed_dim``; a packed ``in_proj_weight`` is split on load).
* :class:`TransformerBlock` - attention + feed-forward with residuals, pre-norm by default;
  submodule names of ``torch.nn.TransformerEncoderLayer`` (``self_attn``, ``linear1``,
  ``linear2``, ``norm1``, ``norm2``), so its state dict loads too.
* :class:`SinusoidalPositionalEncoding`, :class:`LearnedPositionalEncoding`.

Differences from ``torch.nn.MultiheadAttention`` (batch_first=True is the only layout):

* ``forward`` returns the output tensor only; attention weights are never materialised.
* Padding is given as valid lengths (``lengths`` / ``key_lengths``, (B,) integers); a boolean
  ``key_padding_mask`` (True = padding) is accepted too but must mark a suffix of each row.
* No arbitrary ``attn_mask``: only the causal mask (``causal=True`` at construction; it is
  bottom-right aligned when the query and key lengths differ, see
  ``sepkit.kernels.reference.attention``). No ``add_bias_kv`` / ``add_zero_attn``.
* No dropout on the attention probabilities (the flash-style kernel does not apply one);
  :class:`TransformerBlock` applies dropout to the residual branches and inside the feed-forward.
* A query with no valid key (all keys padded) gets a zero attention output, not NaN.

Backends (``backend=`` of every layer): None (automatic: the Triton kernel on CUDA, torch's
fused SDPA, the fastest exact eager path, on the CPU; the reference stays the specification
and the tests' oracle), ``"triton"``, ``"torch"`` (the float64-correct reference), ``"sdpa"``
(``torch.nn.functional.scaled_dot_product_attention``) and ``"xformers"``
(``xformers.ops.memory_efficient_attention``, imported only when used) - all with the same
masking semantics, so models can be compared across implementations.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError

from .fused import layer_norm_linear
from .graph import ReLU

LAYER_BACKENDS = (None, "triton", "torch", "sdpa", "xformers")
ACTIVATIONS = ("relu", "gelu", "snake")


def _check_backend(backend) -> None:
    if backend not in LAYER_BACKENDS:
        raise InputError(f"attention layers: backend must be one of {LAYER_BACKENDS}, got {backend!r}")


def lengths_from_padding_mask(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """Valid lengths (B,) from a boolean (B, L) padding mask (True = padding, a suffix per row)."""
    if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool or key_padding_mask.dim() != 2:
        raise InputError("key_padding_mask must be a boolean (B, L) tensor with True at padded positions")
    lengths = (~key_padding_mask).sum(dim=1)
    if not torch.compiler.is_compiling():
        positions = torch.arange(key_padding_mask.shape[1], device=key_padding_mask.device)
        if not bool(((positions[None, :] >= lengths[:, None]) == key_padding_mask).all()):
            raise InputError("key_padding_mask must mark a suffix of each row (right padding); "
                             "other patterns are not supported by the attention layers")
    return lengths


def _lengths(lengths, key_padding_mask, batch: int, length: int, device, what: str) -> torch.Tensor | None:
    if lengths is not None and key_padding_mask is not None:
        raise InputError(f"give {what} or key_padding_mask, not both")
    if key_padding_mask is not None:
        if key_padding_mask.shape != (batch, length):
            raise InputError(f"key_padding_mask must have shape ({batch}, {length}), got {tuple(key_padding_mask.shape)}")
        return lengths_from_padding_mask(key_padding_mask)
    if lengths is None:
        return None
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.tensor(list(lengths), dtype=torch.int64)
    if lengths.shape != (batch,):
        raise InputError(f"{what} must have shape ({batch},), got {tuple(lengths.shape)}")
    return lengths.to(device)


def _safe_mask(lq: int, lk: int, lengths, causal: bool, batch: int, device):
    """(mask (B,1,Lq,Lk) with empty rows opened, row_valid (B,1,Lq,1)) or (None, None)."""
    from sepkit.kernels.reference.attention import attention_mask

    mask = attention_mask(lq, lk, lengths, causal, batch, device)
    if mask is None:
        return None, None
    row_valid = mask.any(dim=-1, keepdim=True)
    # A row without a valid key would be NaN in SDPA/xformers: open it, then zero its output.
    return mask | ~row_valid, row_valid


def _sdpa(q, k, v, lengths, causal):
    from sepkit.kernels.attention import attention_sdpa

    return attention_sdpa(q, k, v, kv_lengths=lengths, causal=causal)


def _xformers(q, k, v, lengths, causal):
    try:
        import xformers.ops as xops
    except ImportError as err:
        raise ImportError("attention backend 'xformers' needs the xformers package "
                          "(pip install xformers), which is not importable here") from err
    b, h, lq, dh = q.shape
    lk = k.shape[2]
    qx, kx, vx = (t.transpose(1, 2) for t in (q, k, v))  # xformers layout (B, L, H, Dh)
    if lengths is None and not causal:
        out = xops.memory_efficient_attention(qx, kx, vx)
        return out.transpose(1, 2)
    if lengths is None and lq <= lk:
        out = xops.memory_efficient_attention(qx, kx, vx, attn_bias=xops.fmha.attn_bias.LowerTriangularFromBottomRightMask())
        return out.transpose(1, 2)
    mask, row_valid = _safe_mask(lq, lk, lengths, causal, b, q.device)
    # Additive bias; xformers wants its last dimension stored with a stride multiple of 8.
    padded = (lk + 7) // 8 * 8
    bias = torch.zeros(b, h, lq, padded, dtype=q.dtype, device=q.device)[..., :lk]
    bias.masked_fill_(~mask, float("-inf"))
    out = xops.memory_efficient_attention(qx, kx, vx, attn_bias=bias).transpose(1, 2)
    return out * row_valid.to(out.dtype)


def attend(q, k, v, lengths=None, causal: bool = False, backend: str | None = None) -> torch.Tensor:
    """Scaled dot-product attention on (B, H, L, Dh) heads with any layer backend.

    ``lengths`` are valid key lengths (B,); ``causal`` is bottom-right aligned. Returns
    (B, H, Lq, Dh); rows without a valid key are zero.
    """
    _check_backend(backend)
    if backend == "sdpa":
        return _sdpa(q, k, v, lengths, causal)
    if backend == "xformers":
        return _xformers(q, k, v, lengths, causal)
    from sepkit.kernels import attention

    return attention(q, k, v, kv_lengths=lengths, causal=causal, backend=backend)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, l, e = x.shape
    return x.view(b, l, heads, e // heads).transpose(1, 2)  # (B, H, L, Dh)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, l, d = x.shape
    return x.transpose(1, 2).reshape(b, l, h * d)


def _check_input(layer: str, name: str, x, dim: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[-1] != dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{layer}: {name} must have shape (B, L, {dim}) (batch first), got {shape}")


class MultiheadAttention(nn.Module):
    """Multi-head self-attention, (B, L, E) -> (B, L, E).

    Args:
        embed_dim: model width E.
        num_heads: heads H (E must be divisible by H; head width E / H).
        bias: add biases to the input and output projections.
        causal: each position attends to itself and the past only.
        backend: None, "triton", "torch", "sdpa" or "xformers" (see the module docstring).

    Parameters (as ``torch.nn.MultiheadAttention``): ``in_proj_weight`` (3E, E),
    ``in_proj_bias`` (3E,), ``out_proj`` (Linear E -> E).
    """

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, causal: bool = False,
                 backend: str | None = None, device=None, dtype=None):
        super().__init__()
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise InputError(f"MultiheadAttention: embed_dim={embed_dim} must be a positive multiple of num_heads={num_heads}")
        _check_backend(backend)
        kw = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.causal, self.backend = embed_dim, num_heads, causal, backend
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **kw))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **kw)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None = None,
                key_padding_mask: torch.Tensor | None = None, norm: nn.LayerNorm | None = None) -> torch.Tensor:
        """x (B, L, E); ``lengths`` (B,) valid positions, or ``key_padding_mask`` (B, L) True at
        padding. Returns (B, L, E); padded positions are computed too (they attend to the valid
        ones), as in torch. ``norm``: a LayerNorm applied to ``x`` first, fused with the input
        projection so that its output is not stored for the backward pass
        (:func:`sepkit.nn.fused.layer_norm_linear`)."""
        _check_input("MultiheadAttention", "x", x, self.embed_dim)
        lengths = _lengths(lengths, key_padding_mask, x.shape[0], x.shape[1], x.device, "lengths")
        if norm is not None:
            qkv = layer_norm_linear(x, norm, self.in_proj_weight, self.in_proj_bias)
        else:
            qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.chunk(3, dim=-1)
        q, k, v = (_split_heads(t, self.num_heads) for t in (q, k, v))
        out = attend(q, k, v, lengths, self.causal, self.backend)
        return self.out_proj(_merge_heads(out))

    def extra_repr(self) -> str:
        return f"{self.embed_dim}, num_heads={self.num_heads}, causal={self.causal}, backend={self.backend!r}"


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries (B, Lq, E) over keys (B, Lk, kdim), values (B, Lk, vdim).

    Args:
        embed_dim: query and output width E.
        num_heads: heads H (E divisible by H).
        kdim: key width (E when None).
        vdim: value width (kdim when None).
        bias: biases on the projections.
        causal: bottom-right aligned causal mask (query i sees keys j <= i + Lk - Lq).
        backend: None, "triton", "torch", "sdpa" or "xformers".

    Parameters (as ``torch.nn.MultiheadAttention`` with separate projections): ``q_proj_weight``
    (E, E), ``k_proj_weight`` (E, kdim), ``v_proj_weight`` (E, vdim), ``in_proj_bias`` (3E,),
    ``out_proj`` (Linear E -> E). A state dict with a packed ``in_proj_weight`` (3E, E) loads too.
    """

    def __init__(self, embed_dim: int, num_heads: int, kdim: int | None = None, vdim: int | None = None,
                 bias: bool = True, causal: bool = False, backend: str | None = None, device=None, dtype=None):
        super().__init__()
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
            raise InputError(f"CrossAttention: embed_dim={embed_dim} must be a positive multiple of num_heads={num_heads}")
        _check_backend(backend)
        kw = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.causal, self.backend = embed_dim, num_heads, causal, backend
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = self.kdim if vdim is None else vdim
        self.head_dim = embed_dim // num_heads
        self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **kw))
        self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **kw))
        self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **kw))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **kw)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        packed = state_dict.pop(prefix + "in_proj_weight", None)
        if packed is not None:
            if packed.shape != (3 * self.embed_dim, self.embed_dim) or self.kdim != self.embed_dim or self.vdim != self.embed_dim:
                raise InputError(f"CrossAttention: a packed in_proj_weight {tuple(packed.shape)} needs "
                                 f"kdim = vdim = embed_dim = {self.embed_dim}")
            for name, w in zip(("q", "k", "v"), packed.chunk(3, dim=0)):
                state_dict.setdefault(f"{prefix}{name}_proj_weight", w)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor | None = None,
                key_lengths: torch.Tensor | Sequence[int] | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """query (B, Lq, E), key (B, Lk, kdim), value (B, Lk, vdim) (``key`` when None);
        ``key_lengths`` (B,) valid keys, or ``key_padding_mask`` (B, Lk) True at padding.
        Returns (B, Lq, E); a query whose keys are all padding gets out_proj's bias."""
        value = key if value is None else value
        _check_input("CrossAttention", "query", query, self.embed_dim)
        _check_input("CrossAttention", "key", key, self.kdim)
        _check_input("CrossAttention", "value", value, self.vdim)
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise InputError(f"CrossAttention: query {tuple(query.shape)}, key {tuple(key.shape)} and value "
                             f"{tuple(value.shape)} must share the batch size, key and value the length")
        lengths = _lengths(key_lengths, key_padding_mask, key.shape[0], key.shape[1], key.device, "key_lengths")
        bq = bk = bv = None
        if self.in_proj_bias is not None:
            bq, bk, bv = self.in_proj_bias.chunk(3)
        q = _split_heads(F.linear(query, self.q_proj_weight, bq), self.num_heads)
        k = _split_heads(F.linear(key, self.k_proj_weight, bk), self.num_heads)
        v = _split_heads(F.linear(value, self.v_proj_weight, bv), self.num_heads)
        out = attend(q, k, v, lengths, self.causal, self.backend)
        return self.out_proj(_merge_heads(out))

    def extra_repr(self) -> str:
        return (f"{self.embed_dim}, num_heads={self.num_heads}, kdim={self.kdim}, vdim={self.vdim}, "
                f"causal={self.causal}, backend={self.backend!r}")


def _activation(name: str, channels: int) -> nn.Module:
    if name == "relu":
        return ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "snake":
        from .snake import Snake

        return Snake(channels, dim=-1)
    raise InputError(f"TransformerBlock: activation must be one of {ACTIVATIONS}, got {name!r}")


class TransformerBlock(nn.Module):
    """Transformer encoder block: self-attention and feed-forward, each with a residual.

    Pre-norm (``norm_first=True``): ``x + attn(norm1(x))`` then ``x + ff(norm2(x))``; post-norm:
    ``norm1(x + attn(x))`` then ``norm2(x + ff(x))``. ``ff = linear2(dropout(act(linear1(.))))``.

    Args:
        d_model: width D.
        nhead: attention heads (D divisible by nhead).
        dim_feedforward: hidden width of the feed-forward.
        dropout: dropout on both residual branches and after the activation.
        activation: "relu", "gelu" or "snake" (``sepkit.nn.Snake`` over the hidden channels).
        norm_first: pre-norm (True) or post-norm.
        causal: causal self-attention.
        backend: attention backend (None, "triton", "torch", "sdpa", "xformers").
        layer_norm_eps: LayerNorm epsilon.

    Submodules are named as in ``torch.nn.TransformerEncoderLayer`` (``self_attn``, ``linear1``,
    ``linear2``, ``norm1``, ``norm2``), whose state dicts load here; the one difference in maths is
    that there is no dropout on the attention probabilities.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0,
                 activation: str = "relu", norm_first: bool = True, causal: bool = False,
                 backend: str | None = None, layer_norm_eps: float = 1e-5):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiheadAttention(d_model, nhead, causal=causal, backend=backend)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = _activation(activation, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _ff(self, x: torch.Tensor, norm: nn.LayerNorm | None = None) -> torch.Tensor:
        h = self.linear1(x) if norm is None else layer_norm_linear(x, norm, self.linear1.weight, self.linear1.bias)
        return self.dropout2(self.linear2(self.dropout(self.activation(h))))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """x (B, L, D), ``lengths`` (B,) valid positions (padding is ignored as keys) -> (B, L, D)."""
        if self.norm_first:  # each norm fused with the linear layer after it (nothing extra stored)
            x = x + self.dropout1(self.self_attn(x, lengths, norm=self.norm1))
            return x + self._ff(x, norm=self.norm2)
        x = self.norm1(x + self.dropout1(self.self_attn(x, lengths)))
        return self.norm2(x + self._ff(x))


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal encoding of "Attention Is All You Need": (B, L, D) -> (B, L, D).

    pe[t, 2i] = sin(t / 10000^(2i/D)), pe[t, 2i+1] = cos(t / 10000^(2i/D)); a non-persistent
    buffer of ``max_len`` positions (not in the state dict).
    """

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        if d_model < 1 or max_len < 1:
            raise InputError(f"SinusoidalPositionalEncoding: d_model and max_len must be >= 1, got {d_model}, {max_len}")
        self.d_model, self.max_len = d_model, max_len
        pos = torch.arange(max_len, dtype=torch.float64)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div[: d_model // 2])
        self.register_buffer("pe", pe.to(torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input("SinusoidalPositionalEncoding", "x", x, self.d_model)
        if x.shape[1] > self.max_len:
            raise InputError(f"SinusoidalPositionalEncoding: length {x.shape[1]} exceeds max_len={self.max_len}")
        return x + self.pe[: x.shape[1]].to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.d_model}, max_len={self.max_len}"


class LearnedPositionalEncoding(nn.Module):
    """Adds a learned per-position vector: (B, L, D) -> (B, L, D); parameter ``weight`` (max_len, D),
    initialised N(0, 0.02^2)."""

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        if d_model < 1 or max_len < 1:
            raise InputError(f"LearnedPositionalEncoding: d_model and max_len must be >= 1, got {d_model}, {max_len}")
        self.d_model, self.max_len = d_model, max_len
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input("LearnedPositionalEncoding", "x", x, self.d_model)
        if x.shape[1] > self.max_len:
            raise InputError(f"LearnedPositionalEncoding: length {x.shape[1]} exceeds max_len={self.max_len}")
        return x + self.weight[: x.shape[1]].to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.d_model}, max_len={self.max_len}"


__all__ = [
    "CrossAttention", "LearnedPositionalEncoding", "MultiheadAttention", "SinusoidalPositionalEncoding",
    "TransformerBlock", "attend", "lengths_from_padding_mask",
]
