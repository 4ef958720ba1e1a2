"""wav2vec2 contrastive loss: forward and forward+backward time and peak memory.

Providers: sepkit (Triton: candidates gathered in registers, per-step statistics only), gathered
(the fairseq-style computation written out below: gather the (K, N, D) negatives, stack the
positive on top, cosine similarity in fp32, -inf where a negative equals its positive,
cross-entropy summed) and torch.compile of it. Batch B = 8 utterances of T in {500, 1500}
steps, half of them masked (N ~ B T / 2 selected steps), K = 100 negatives sampled by
``sepkit.losses.sample_negatives``, D = 256, storage ``ctx.dtype`` (bf16), temperature 0.1. A smoke
run takes B = 2, T = 32, K = 8, D = 32 in float32.

Bytes counted (what the gather must read at least once, GB/s against the copy bandwidth):
forward N (K + 2) D elements (context, positive and negatives) plus the indices; forward+backward
adds a second pass over the candidates, the scatter's read of the context rows and the
gradient writes, 3 N (K + 2) D + (N + T_total) D elements in all.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from sepkit.kernels import nce
from sepkit.losses import sample_negatives

K = 100
D = 256
TEMPERATURE = 0.1


def gathered_nce(context: torch.Tensor, targets: torch.Tensor, pos_idx: torch.Tensor, neg_idx: torch.Tensor,
                 temperature: float = TEMPERATURE) -> torch.Tensor:
    """The usual materialized computation: (K + 1, N, D) candidates, fp32 cosine, cross-entropy."""
    y = targets[pos_idx]                                         # (N, D)
    negs = targets[neg_idx].permute(1, 0, 2)                     # (K, N, D)
    neg_is_pos = (y == negs).all(-1)                             # (K, N)
    cand = torch.cat([y.unsqueeze(0), negs], dim=0)              # (K + 1, N, D)
    logits = torch.cosine_similarity(context.float(), cand.float(), dim=-1) / temperature
    logits = torch.cat([logits[:1], logits[1:].masked_fill(neg_is_pos, float("-inf"))], dim=0)
    target = torch.zeros(logits.shape[1], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.transpose(0, 1), target, reduction="sum")


def run(ctx) -> None:
    batch, k, d = ctx.sizes(full=(8, K, D), quick=(8, K, D), smoke=(2, 8, 32))
    lengths = ctx.sizes(full=[500, 1500], quick=[500], smoke=[32])
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    for steps in lengths:
        mask = torch.rand(batch, steps, device=ctx.device, generator=gen) < 0.5
        pos, neg = sample_negatives(None, mask, k, generator=gen)
        n, t_total = pos.numel(), batch * steps
        targets = torch.randn(t_total, d, device=ctx.device, dtype=ctx.dtype, generator=gen)
        context = torch.randn(n, d, device=ctx.device, dtype=ctx.dtype, generator=gen)
        es = context.element_size()
        fwd_bytes = n * (k + 2) * d * es + n * (k + 1) * 8
        full_bytes = 3 * n * (k + 2) * d * es + (n + t_total) * d * es + 2 * n * (k + 1) * 8
        config = dict(B=batch, T=steps, N=n, K=k, D=d, dtype=str(ctx.dtype), temperature=TEMPERATURE)
        compiled = ctx.try_compile(gathered_nce, context, targets, pos, neg, name="torch.compile(gathered)")
        providers = {
            "sepkit": lambda c, t: nce(c, t, pos, neg, TEMPERATURE, "sum", backend="triton"),
            "gathered": lambda c, t: gathered_nce(c, t, pos, neg),
            "gathered.compile": None if compiled is None else (lambda c, t: compiled(c, t, pos, neg)),
        }
        ctx.time_providers(providers, (context, targets), op="nce", x_name="B*T", x_value=t_total, config=config,
                           work={"fwd": dict(nbytes=fwd_bytes), "full": dict(nbytes=full_bytes)}, peaks=("fwd", "full"),
                           label=f"T={steps}")
        del context, targets
        ctx.empty_cache()
