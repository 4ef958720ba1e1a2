"""Mixture-to-set speaker embeddings: a (noisy) mixture -> a set of S speaker embeddings aligned
with a frozen single-speaker teacher, and an online speaker memory for long recordings.

* :class:`MixtureToSet` - encoder (log-Mel filterbank or a learned conv filterbank), a
  transformer over frames, S learned queries cross-attending to the frames (few queries over a
  long memory: the set-query shape of ``sepkit.nn.CrossAttention``), each projected to the
  teacher's dimension and L2-normalised, plus a presence logit per slot.
* :class:`SetEmbeddingLoss` - Hungarian assignment of predicted slots to the teacher embeddings
  of the clean sources (minimum summed cosine distance), loss = mean matched cosine distance +
  ``presence_weight`` x BCE of the presence logits (matched slots are "present").
* :class:`SpeakerMemory` - online re-identification over sliding windows, RTTM export.

S = 3 (LibriMix's largest speaker count) is the paper's choice. The presence logits are a sepkit
extension (the paper fixes S = 3 and always uses every slot); they let batches mix 1..S
speakers and tell the memory which slots to trust.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sepkit.data import resample
from sepkit.errors import InputError
from sepkit.losses import best_permutation_hungarian
from sepkit.nn import CrossAttention, MultiheadAttention, SinusoidalPositionalEncoding, TransformerBlock
from sepkit.nn.checkpoint import check_checkpointing, run_block

from .separators.base import Encoder, as_waveform_batch, frame_padding
from .speaker import LogMelFilterbank

__all__ = ["MixtureToSet", "SetOutput", "SetEmbeddingLoss", "cosine_cost", "SpeakerMemory", "WindowLabels",
           "QueryDecoderLayer", "SetWithTeacher", "teacher_embed"]


class SetOutput(NamedTuple):
    """embeddings (B, S, D) unit-norm; presence_logits (B, S)."""

    embeddings: torch.Tensor
    presence_logits: torch.Tensor


class QueryDecoderLayer(nn.Module):
    """One layer of the set decoder, pre-norm: queries cross-attend to the frames, then attend to
    each other (so two slots can agree not to describe the same speaker), then a feed-forward.

    queries (B, S, E), frames (B, L, E), ``lengths`` (B,) valid frames -> (B, S, E).
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float = 0.0,
                 backend: str | None = None):
        super().__init__()
        self.cross_attn = CrossAttention(d_model, nhead, backend=backend)
        self.self_attn = MultiheadAttention(d_model, nhead, backend=backend)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, dim_feedforward), nn.GELU(), nn.Dropout(dropout),
                                nn.Linear(dim_feedforward, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        q = queries + self.dropout(self.cross_attn(self.norm1(queries), frames, key_lengths=lengths))
        q = q + self.dropout(self.self_attn(self.norm2(q)))
        return q + self.dropout(self.ff(self.norm3(q)))


class MixtureToSet(nn.Module):
    """Mixture (B, T) -> S speaker embeddings (B, S, D) and presence logits (B, S).

    Args:
        n_slots: S, the largest number of speakers (3).
        embed_dim: D, the teacher's embedding size (192 for the public ECAPA-TDNN).
        encoder: "fbank" (log-Mel, 25 ms / 10 ms, sentence mean normalisation) or "learned"
            (Conv1d filterbank of ``n_filters`` filters, ``kernel_size`` samples, stride half of it,
            ReLU, then frames pooled by ``pool``).
        sample_rate: Hz of the input (the fbank's STFT sizes follow it).
        n_mels: Mel bins of the fbank encoder.
        n_filters, kernel_size, pool: learned encoder.
        d_model, nhead, dim_feedforward: transformer width, heads, feed-forward width.
        n_layers: transformer layers over frames.
        n_decoder_layers: :class:`QueryDecoderLayer` layers.
        dropout: dropout in both stacks.
        backend: attention backend (None: automatic).
        checkpointing: "none" (default) or "blocks": recompute each encoder transformer layer in the backward pass
            (:mod:`sepkit.nn.checkpoint`).

    ``forward(mixture, lengths=None)`` with ``lengths`` (B,) valid samples returns
    :class:`SetOutput`. Frames past a length are ignored as keys everywhere.
    """

    ENCODERS = ("fbank", "learned")

    def __init__(self, n_slots: int = 3, embed_dim: int = 192, encoder: str = "fbank", sample_rate: int = 16000,
                 n_mels: int = 80, n_filters: int = 256, kernel_size: int = 32, pool: int = 8, d_model: int = 256,
                 nhead: int = 4, dim_feedforward: int = 1024, n_layers: int = 4, n_decoder_layers: int = 2,
                 dropout: float = 0.0, max_frames: int = 20000, backend: str | None = None,
                 checkpointing: str = "none"):
        super().__init__()
        self.checkpointing = check_checkpointing("MixtureToSet", checkpointing)
        if encoder not in self.ENCODERS:
            raise InputError(f"MixtureToSet: encoder must be one of {self.ENCODERS}, got {encoder!r}")
        if n_slots < 1 or embed_dim < 1:
            raise InputError(f"MixtureToSet: need n_slots >= 1 and embed_dim >= 1, got {n_slots}, {embed_dim}")
        self.n_slots, self.embed_dim, self.encoder_kind, self.sample_rate = n_slots, embed_dim, encoder, sample_rate
        if encoder == "fbank":
            n_fft = int(round(0.025 * sample_rate))
            self.fbank = LogMelFilterbank(sample_rate, n_mels, n_fft)
            self.input = nn.Linear(n_mels, d_model)
        else:
            self.conv_encoder = Encoder(n_filters, kernel_size, kernel_size // 2, "relu")
            self.pool = pool
            self.input = nn.Linear(n_filters, d_model)
        self.pos = SinusoidalPositionalEncoding(d_model, max_len=max_frames)
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, nhead, dim_feedforward, dropout=dropout, activation="gelu", backend=backend)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.queries = nn.Parameter(torch.randn(n_slots, d_model) * 0.02)
        self.decoder = nn.ModuleList(
            QueryDecoderLayer(d_model, nhead, dim_feedforward, dropout, backend) for _ in range(n_decoder_layers)
        )
        self.out_norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, embed_dim)
        self.presence = nn.Linear(d_model, 1)

    def frames(self, mixture: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder output (B, L, d_model) and valid frame counts (B,) (None when ``lengths`` is)."""
        wave = as_waveform_batch("MixtureToSet", mixture, self)
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=wave.device).long()
            if lengths.shape != (wave.shape[0],) or bool((lengths < 1).any()) or bool((lengths > wave.shape[1]).any()):
                raise InputError(f"MixtureToSet: lengths must be ({wave.shape[0]},) sample counts in [1, {wave.shape[1]}]")
        if self.encoder_kind == "fbank":
            feats = self.fbank(wave, lengths)
            frame_lengths = self.fbank._frame_lengths(lengths, wave.shape[0], feats.shape[1])
        else:
            k, s = self.conv_encoder.kernel_size, self.conv_encoder.stride
            left, right, _ = frame_padding(wave.shape[-1], k, s)
            w = self.conv_encoder(F.pad(wave, (left, right)))  # (B, N, F)
            if self.pool > 1:
                w = F.avg_pool1d(w, self.pool, self.pool, ceil_mode=True)
            feats = w.transpose(1, 2)
            frame_lengths = None
            if lengths is not None:
                frame_lengths = torch.clamp(-(-lengths // (s * self.pool)), 1, feats.shape[1])
        if feats.shape[1] > self.pos.max_len:
            raise InputError(f"MixtureToSet: {feats.shape[1]} frames exceed max_frames={self.pos.max_len}; "
                             "process long recordings in windows (SpeakerMemory)")
        return self.pos(self.input(feats)), frame_lengths

    def forward(self, mixture: torch.Tensor, lengths: torch.Tensor | None = None) -> SetOutput:
        """mixture (B, T) or (B, 1, T) at ``sample_rate``; ``lengths`` (B,) valid samples."""
        x, frame_lengths = self.frames(mixture, lengths)
        for layer in self.layers:
            x = run_block(layer, x, frame_lengths, checkpointing=self.checkpointing)
        x = self.norm(x)
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
        for layer in self.decoder:
            q = layer(q, x, frame_lengths)
        q = self.out_norm(q)
        emb = F.normalize(self.proj(q), dim=-1, eps=1e-8)
        return SetOutput(emb, self.presence(q).squeeze(-1))


def cosine_cost(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cosine distance matrix ``1 - cos(pred[b, i], target[b, j])``: (B, S, D), (B, S', D) -> (B, S, S')."""
    return 1.0 - torch.einsum("bid,bjd->bij", F.normalize(pred, dim=-1, eps=1e-8), F.normalize(target, dim=-1, eps=1e-8))


def _check_set_inputs(pred, logits, target, n_speakers):
    for name, t, dims in (("embeddings", pred, 3), ("presence_logits", logits, 2), ("targets", target, 3)):
        if not isinstance(t, torch.Tensor) or t.dim() != dims or not t.is_floating_point():
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise InputError(f"SetEmbeddingLoss: {name} must be a floating-point tensor with {dims} dims, got {got}")
    B, S, D = pred.shape
    if logits.shape != (B, S):
        raise InputError(f"SetEmbeddingLoss: presence_logits must have shape ({B}, {S}), got {tuple(logits.shape)}")
    if target.shape != (B, S, D):
        raise InputError(f"SetEmbeddingLoss: targets must have shape ({B}, {S}, {D}) (padded to the slot count), "
                         f"got {tuple(target.shape)}")
    n_speakers = torch.as_tensor(n_speakers, device=pred.device).long()
    if n_speakers.shape != (B,) or bool((n_speakers < 0).any()) or bool((n_speakers > S).any()):
        raise InputError(f"SetEmbeddingLoss: n_speakers must be ({B},) counts in [0, {S}], got {n_speakers.tolist()}")
    return n_speakers


class SetEmbeddingLoss(nn.Module):
    """Permutation-invariant set loss with presence.

    ``forward(embeddings (B, S, D), presence_logits (B, S), targets (B, S, D), n_speakers (B,))``
    where ``targets[b, :n_speakers[b]]`` are the teacher embeddings of example b's sources and
    the rest is padding (any values). Per example, the Hungarian algorithm assigns each real
    target a distinct slot minimising the summed cosine distance (padding columns cost 0, so
    they take the leftover slots). Returns ``(loss, logs)``:

        loss = mean over all real targets of the matched cosine distance
               + presence_weight * mean over all slots of BCE(presence_logit, slot matched)

    and ``perm`` in ``logs["perm"]`` (B, S): ``perm[b, j]`` the slot assigned to target j.
    """

    def __init__(self, presence_weight: float = 1.0):
        super().__init__()
        if presence_weight < 0:
            raise InputError(f"SetEmbeddingLoss: presence_weight must be >= 0, got {presence_weight}")
        self.presence_weight = presence_weight

    @staticmethod
    def assign(embeddings: torch.Tensor, targets: torch.Tensor, n_speakers: torch.Tensor):
        """(cost (B, S, S) with padded columns zeroed, perm (B, S), valid (B, S) target mask)."""
        S = embeddings.shape[1]
        valid = torch.arange(S, device=embeddings.device)[None, :] < n_speakers[:, None]  # (B, S) targets
        cost = cosine_cost(embeddings, targets) * valid[:, None, :].to(embeddings.dtype)
        return cost, best_permutation_hungarian(cost), valid

    def forward(self, embeddings, presence_logits, targets, n_speakers):
        n_speakers = _check_set_inputs(embeddings, presence_logits, targets, n_speakers)
        cost, perm, valid = self.assign(embeddings, targets, n_speakers)
        chosen = torch.gather(cost, 1, perm.unsqueeze(1)).squeeze(1)  # (B, S): cost[b, perm[b, j], j]
        n_real = valid.sum().clamp(min=1)
        cos_loss = (chosen * valid).sum() / n_real
        present = torch.zeros_like(presence_logits)
        present.scatter_(1, perm, valid.to(present.dtype))  # slot perm[b, j] is present iff target j is real
        bce = F.binary_cross_entropy_with_logits(presence_logits, present)
        loss = cos_loss + self.presence_weight * bce
        acc = ((presence_logits > 0) == (present > 0.5)).float().mean()
        return loss, {"cos_dist": float(cos_loss.detach()), "presence_bce": float(bce.detach()),
                      "presence_acc": float(acc), "perm": perm}


# --------------------------------------------------------------------------------------------
# Online memory


@dataclass
class WindowLabels:
    """Labels of one window: ``start``, ``end`` in seconds, ``labels[s]`` the memory slot of
    prediction slot s (-1 when the slot is absent), ``similarity[s]`` its cosine to the centroid
    before the update (nan for new or absent slots)."""

    start: float
    end: float
    labels: list[int]
    similarity: list[float]


class SpeakerMemory:
    """Online speaker memory over the windows of a long recording.

    For each window, the slots whose presence probability is at least ``presence_threshold``
    are matched to the memory centroids by the Hungarian algorithm on cosine similarity
    (maximising the summed similarity). A match with similarity >= ``threshold`` takes that
    speaker's label and updates its centroid by a running mean (``c <- c + (e - c) / n``);
    an unmatched slot, or one matched below the threshold, opens a new speaker. When
    ``max_speakers`` speakers exist, it joins the most similar speaker not already used in the
    window (or the most similar overall if all are), so the memory stays bounded. Nothing is
    random: the same windows give the same labels.

    Args:
        threshold: cosine similarity needed to re-identify a speaker (0.5).
        presence_threshold: sigmoid(presence logit) needed to use a slot (0.5).
        max_speakers: bound on the number of memory slots (16).
    """

    def __init__(self, threshold: float = 0.5, presence_threshold: float = 0.5, max_speakers: int = 16):
        if not -1.0 <= threshold <= 1.0:
            raise InputError(f"SpeakerMemory: threshold is a cosine similarity in [-1, 1], got {threshold}")
        if not 0.0 <= presence_threshold <= 1.0:
            raise InputError(f"SpeakerMemory: presence_threshold must be in [0, 1], got {presence_threshold}")
        if max_speakers < 1:
            raise InputError(f"SpeakerMemory: max_speakers must be >= 1, got {max_speakers}")
        self.threshold, self.presence_threshold, self.max_speakers = threshold, presence_threshold, max_speakers
        self.reset()

    def reset(self) -> None:
        self.centroids: list[np.ndarray] = []
        self.counts: list[int] = []
        self.history: list[WindowLabels] = []

    @property
    def num_speakers(self) -> int:
        return len(self.centroids)

    def _similarities(self, emb: np.ndarray) -> np.ndarray:
        if not self.centroids:
            return np.zeros((emb.shape[0], 0))
        c = np.stack(self.centroids)
        c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        e = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return e @ c.T

    def _add(self, label: int | None, e: np.ndarray) -> int:
        if label is None:
            self.centroids.append(e.copy())
            self.counts.append(1)
            return len(self.centroids) - 1
        self.counts[label] += 1
        self.centroids[label] = self.centroids[label] + (e - self.centroids[label]) / self.counts[label]
        return label

    def update(self, embeddings, presence_logits=None, start: float = 0.0, end: float = 0.0) -> WindowLabels:
        """Assign the slots of one window. embeddings (S, D); presence_logits (S,) or None (all
        slots present). Returns the window's :class:`WindowLabels` (also kept in ``history``)."""
        from scipy.optimize import linear_sum_assignment

        emb = torch.as_tensor(embeddings).detach().to("cpu", torch.float64)
        if emb.dim() != 2:
            raise InputError(f"SpeakerMemory.update: embeddings must be (S, D), got {tuple(emb.shape)}")
        if self.centroids and emb.shape[1] != self.centroids[0].shape[0]:
            raise InputError(f"SpeakerMemory.update: embeddings have D={emb.shape[1]}, the memory holds "
                             f"D={self.centroids[0].shape[0]}")
        if not bool(torch.isfinite(emb).all()):
            raise InputError("SpeakerMemory.update: embeddings contain NaN or Inf")
        S = emb.shape[0]
        if presence_logits is None:
            present = np.ones(S, dtype=bool)
        else:
            logits = torch.as_tensor(presence_logits).detach().to("cpu", torch.float64)
            if logits.shape != (S,):
                raise InputError(f"SpeakerMemory.update: presence_logits must be ({S},), got {tuple(logits.shape)}")
            present = (torch.sigmoid(logits) >= self.presence_threshold).numpy()
        emb = emb.numpy()
        labels, sims = [-1] * S, [float("nan")] * S
        idx = np.flatnonzero(present)
        sim = self._similarities(emb[idx])
        pending = list(range(len(idx)))
        used: set[int] = set()
        if sim.shape[1] > 0 and len(idx):
            rows, cols = linear_sum_assignment(-sim)
            for r, c in zip(rows, cols):
                if sim[r, c] >= self.threshold:
                    labels[idx[r]], sims[idx[r]] = int(c), float(sim[r, c])
                    used.add(int(c))
                    pending.remove(r)
        for r in pending:  # new speakers, or the nearest one once the memory is full
            if self.num_speakers < self.max_speakers:
                labels[idx[r]] = -2  # opened below, after the matched updates
                continue
            order = np.argsort(-sim[r], kind="stable")
            free = [int(c) for c in order if int(c) not in used]
            c = free[0] if free else int(order[0])
            labels[idx[r]], sims[idx[r]] = c, float(sim[r, c])
            used.add(c)
        for s in range(S):
            if labels[s] >= 0:
                self._add(labels[s], emb[s])
            elif labels[s] == -2:
                labels[s] = self._add(None, emb[s])
        window = WindowLabels(float(start), float(end), labels, sims)
        self.history.append(window)
        return window

    @torch.no_grad()
    def process(self, model: nn.Module, wave: torch.Tensor, sample_rate: int, window: float = 4.0,
                hop: float = 2.0, batch_size: int = 8) -> list[WindowLabels]:
        """Run ``model`` (a :class:`MixtureToSet`) over ``wave`` (T,) in windows of ``window``
        seconds every ``hop`` seconds (the last window ends at the end of the recording) and
        update the memory in time order. Returns the new windows' labels."""
        if not isinstance(wave, torch.Tensor) or wave.dim() != 1 or not wave.is_floating_point():
            raise InputError("SpeakerMemory.process: wave must be a floating-point (T,) tensor")
        if not 0 < hop <= window:
            raise InputError(f"SpeakerMemory.process: need 0 < hop <= window, got hop={hop}, window={window}")
        win, step = int(round(window * sample_rate)), int(round(hop * sample_rate))
        T = wave.shape[0]
        starts = list(range(0, max(T - win, 0) + 1, step))
        if starts[-1] + win < T:
            starts.append(T - win)
        device = next(model.parameters()).device
        out = []
        for i in range(0, len(starts), batch_size):
            chunk = starts[i: i + batch_size]
            batch = torch.stack([F.pad(wave[s: s + win], (0, max(0, win - (T - s)))) for s in chunk]).to(device)
            lengths = torch.tensor([min(win, T - s) for s in chunk], device=device)
            res = model(batch, lengths)
            for j, s in enumerate(chunk):
                out.append(self.update(res.embeddings[j], res.presence_logits[j], s / sample_rate,
                                       min(s + win, T) / sample_rate))
        return out

    def segments(self, windows: Sequence[WindowLabels] | None = None) -> list[tuple[float, float, int]]:
        """(start, end, speaker) turns: each window's present speakers cover the window, runs of
        overlapping or touching windows of one speaker are merged. Sorted by start, speaker."""
        windows = self.history if windows is None else windows
        turns: dict[int, list[list[float]]] = {}
        for w in windows:
            for label in sorted({l for l in w.labels if l >= 0}):
                runs = turns.setdefault(label, [])
                if runs and w.start <= runs[-1][1] + 1e-9:
                    runs[-1][1] = max(runs[-1][1], w.end)
                else:
                    runs.append([w.start, w.end])
        flat = [(a, b, k) for k, runs in turns.items() for a, b in runs]
        return sorted(flat, key=lambda t: (t[0], t[2]))

    def to_rttm(self, file_id: str = "recording", windows: Sequence[WindowLabels] | None = None) -> str:
        """RTTM text: one ``SPEAKER <file_id> 1 <onset> <duration> <NA> <NA> spk<k> <NA> <NA>``
        line per merged turn (seconds with 3 decimals)."""
        if not file_id or any(c.isspace() for c in file_id):
            raise InputError(f"SpeakerMemory.to_rttm: file_id must be a non-empty token without spaces, got {file_id!r}")
        lines = [f"SPEAKER {file_id} 1 {a:.3f} {b - a:.3f} <NA> <NA> spk{k} <NA> <NA>"
                 for a, b, k in self.segments(windows)]
        return "\n".join(lines) + ("\n" if lines else "")


def teacher_embed(teacher: nn.Module, waves: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(N, T) waves at ``sample_rate`` -> (N, D) teacher embeddings (resampled to its rate)."""
    rate = int(getattr(teacher, "sample_rate", sample_rate))
    with torch.no_grad():
        return teacher(resample(waves, sample_rate, rate)).float()



class SetWithTeacher(nn.Module):
    """``predictor`` (:class:`MixtureToSet`) and a frozen ``teacher``; ``forward`` is the
    predictor's.

    The targets are the teacher's embeddings minus ``teacher_mean`` (D,), a running mean of
    the teacher's embeddings over the training sources (momentum ``center_momentum``, like a
    BatchNorm statistic; saved with the predictor). A teacher trained briefly with a margin
    softmax puts every embedding near one common direction (different speakers at cosine
    0.87 for the demo teacher, 0.66 within a speaker vs -0.08 across speakers once centred);
    a cosine target is informative only after centring. ``center_momentum=0`` turns it off.
    """

    def __init__(self, teacher: nn.Module, sample_rate: int, center_momentum: float = 0.01, **predictor_args):
        super().__init__()
        if not 0.0 <= center_momentum <= 1.0:
            raise InputError(f"SetWithTeacher: center_momentum must be in [0, 1], got {center_momentum}")
        self.teacher = teacher
        self.sample_rate, self.center_momentum = sample_rate, center_momentum
        self.predictor = MixtureToSet(embed_dim=teacher.embed_dim, sample_rate=sample_rate, **predictor_args)
        self.register_buffer("teacher_mean", torch.zeros(teacher.embed_dim))
        self.register_buffer("mean_initialised", torch.tensor(False))

    def forward(self, mixture: torch.Tensor, lengths: torch.Tensor | None = None):
        return self.predictor(mixture, lengths)

    def embed(self, waves: torch.Tensor, update: bool = False) -> torch.Tensor:
        """(N, T) single-speaker waves -> (N, D) centred teacher embeddings; ``update`` moves
        the running mean first (training)."""
        e = teacher_embed(self.teacher, waves, self.sample_rate).to(self.teacher_mean.device)
        if update and self.center_momentum > 0 and e.shape[0]:
            with torch.no_grad():
                if not bool(self.mean_initialised):
                    self.teacher_mean.copy_(e.mean(0))
                    self.mean_initialised.fill_(True)
                else:
                    self.teacher_mean.lerp_(e.mean(0), self.center_momentum)
        return e - self.teacher_mean if self.center_momentum > 0 else e

    def targets(self, sources: torch.Tensor, n_speakers: torch.Tensor, update: bool = False) -> torch.Tensor:
        """(B, S, T) padded sources -> (B, S, D) centred teacher embeddings (zeros at padding)."""
        B, S, _ = sources.shape
        valid = torch.arange(S, device=sources.device)[None, :] < n_speakers[:, None]
        out = torch.zeros(B, S, self.teacher.embed_dim, device=sources.device)
        out[valid] = self.embed(sources[valid], update).to(out.device)
        return out

