"""The ``mixture2set`` task: predict the set of speaker embeddings of a mixture from the mixture.

Model (``model.name: mixture2set``): :class:`~sepkit.models.mixture2set.SetWithTeacher`, a trainable
:class:`sepkit.models.mixture2set.MixtureToSet` (``predictor``, ``model.args``) and a frozen
teacher (``teacher``, from ``model.args.teacher_ckpt``: a ``speaker`` run folder or SpeechBrain's
``embedding_model.ckpt``). With no teacher given, one is trained first as a prerequisite (:meth:`prerequisites`) with the
``task_args.teacher_recipe`` recipe (its ``demo`` preset by default) under
``RUN/prereq-teacher``, its path recorded relative to the run.

Training: the teacher embeds every clean source (no gradient), :class:`SetEmbeddingLoss`
matches them to the predicted slots (Hungarian, cosine) and adds the presence BCE. Mixtures
hold 1..S speakers (``task_args.speaker_counts``).

Data: items ``mixture`` (T,), ``sources`` (S, T) zero-padded past ``n_speakers``,
``n_speakers`` (), ``speakers`` (S,) speaker indices (-1 padding), ``id``. Built in: synthetic
mixtures of the generator's speakers (noise per ``data.synthetic``); LibriMix: ``data.root`` plus
``task_args.extra_roots`` (e.g. Libri2Mix and Libri3Mix, noisy ``mix: both``), speaker ids
parsed from the mixture ids.

Evaluation, per mixture: matched cosine distance, presence accuracy and whether the count of
present slots is right. Over the whole set (corpus-level values, repeated on every row so the
summary's mean is the value): clustering of the embeddings, each paired with the true speaker
of the source it is assigned to, by k-means with k = the number of speakers: ``ari``, ``nmi``
and the cosine ``silhouette`` under the true labels, for

* the predicted set (slots assigned to sources by the Hungarian match to the teacher);
* ``*_ssl``: k-means (k = speakers in the mixture) on frame-level features of a torchaudio
  Wav2Vec2 / WavLM architecture (weights from ``task_args.ssl_ckpt`` or randomly initialised),
  each cluster's mean feature labelled by the source dominating its frames;
* ``*_sep``: a separator run (``task_args.separator_ckpt``, or one trained by :meth:`prerequisites`
  from ``task_args.separator_recipe``) separates S sources, the teacher embeds them, PIT on
  SI-SDR labels them.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from sepkit.data import resample
from sepkit.data.mixing import collate_tensors
from sepkit.data.speakers import LibriMixSets, SpeakerSetMixtures
from sepkit.errors import InputError
from sepkit.metrics.clustering import adjusted_rand_index, kmeans, normalized_mutual_info, silhouette_score
from sepkit.models.mixture2set import SetEmbeddingLoss, SetWithTeacher

from ..builders import synthetic_spec
from ..config import ConfigError, load_recipe
from ..evaluate import items as iterate_items
from ..evaluate import summarize
from ..prerequisites import Prerequisite
from .base import Task
from .common import SPLITS, load_teacher

# --------------------------------------------------------------------------------------------
# Data


# --------------------------------------------------------------------------------------------
# Teacher and model


# --------------------------------------------------------------------------------------------
# Baselines


def ssl_model(kind: str, ckpt: str | None):
    """A torchaudio Wav2Vec2 / WavLM model: the base architecture loading ``ckpt`` (a torchaudio
    state dict), or without it a small randomly initialised one (3 layers, 256 wide)."""
    import torchaudio

    if kind not in ("wav2vec2", "wavlm"):
        raise ConfigError(f"task_args.ssl={kind!r}: must be 'wav2vec2' or 'wavlm'")
    if ckpt is not None:
        from sepkit.models.speaker import load_state_dict_file

        model = torchaudio.models.wav2vec2_base() if kind == "wav2vec2" else torchaudio.models.wavlm_base()
        state = load_state_dict_file(ckpt, "task_args.ssl_ckpt")
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"task_args.ssl_ckpt={ckpt!r} does not fit torchaudio's {kind} base: "
                              f"{str(exc).splitlines()[0]}") from None
        return model.eval()
    g = torch.random.get_rng_state()
    torch.manual_seed(0)
    conv = [(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2
    common = dict(extractor_mode="group_norm", extractor_conv_layer_config=conv, extractor_conv_bias=False,
                  encoder_embed_dim=256, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=32,
                  encoder_pos_conv_groups=4, encoder_num_layers=3, encoder_num_heads=4,
                  encoder_attention_dropout=0.0, encoder_ff_interm_features=512, encoder_ff_interm_dropout=0.0,
                  encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0, aux_num_out=None)
    if kind == "wav2vec2":
        model = torchaudio.models.wav2vec2_model(**common)
    else:
        model = torchaudio.models.wavlm_model(encoder_num_buckets=320, encoder_max_distance=800, **common)
    torch.random.set_rng_state(g)
    return model.eval()


def dominant_source_per_frame(sources: torch.Tensor, n_frames: int, hop: int, win: int) -> torch.Tensor:
    """(n, T) sources -> (n_frames,) index of the source with the most energy in each frame."""
    energy = sources.pow(2)
    T = energy.shape[-1]
    out = torch.zeros(n_frames, dtype=torch.long)
    for f in range(n_frames):
        a, b = f * hop, min(f * hop + win, T)
        if a < T:
            out[f] = energy[:, a:b].sum(-1).argmax()
    return out


def _assign(cost: np.ndarray) -> dict[int, int]:
    """Hungarian on a (rows, cols) cost: {row: col}."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost)
    return {int(r): int(c) for r, c in zip(rows, cols)}


def clustering_metrics(embeddings: list[torch.Tensor], labels: list[int], suffix: str = "") -> dict:
    """ARI / NMI of k-means (k = distinct labels, spherical) and the cosine silhouette, on the
    embeddings centred by their mean over the set (the same treatment for every method)."""
    x = torch.stack(embeddings).double()
    x = x - x.mean(0)
    k = len(set(labels))
    out = {}
    if k < 2 or len(labels) <= k:
        return {f"ari{suffix}": float("nan"), f"nmi{suffix}": float("nan"), f"silhouette{suffix}": float("nan")}
    pred = kmeans(x, k, normalize=True, seed=0)
    out[f"ari{suffix}"] = adjusted_rand_index(labels, pred)
    out[f"nmi{suffix}"] = normalized_mutual_info(labels, pred)
    out[f"silhouette{suffix}"] = silhouette_score(x, labels, metric="cosine")
    return out


# --------------------------------------------------------------------------------------------
# Task


@dataclasses.dataclass
class Mixture2SetOptions:
    """speaker_counts: speakers per mixture, drawn uniformly; presence_weight: weight of the
    presence BCE; teacher_recipe / teacher_preset / teacher_overrides: what :meth:`prerequisites`
    trains when ``model.args.teacher_ckpt`` is not given; extra_roots: more LibriMix roots
    (e.g. Libri3Mix beside data.root = Libri2Mix); baselines: evaluate the SSL + k-means and
    separate-then-embed baselines too; ssl / ssl_ckpt / ssl_layer: the SSL baseline's
    architecture ("wav2vec2" or "wavlm"), torchaudio state dict (None: random init) and layer
    (-1: last); separator_ckpt: a separation run for the separated-sources baseline, or
    separator_recipe / separator_preset / separator_overrides to train one in :meth:`prerequisites`
    (with data.n_src = S and this recipe's sample rate)."""

    speaker_counts: list = dataclasses.field(default_factory=lambda: [1, 2, 3])
    presence_weight: float = 1.0
    teacher_recipe: str = "speaker"
    teacher_preset: str | None = "demo"
    teacher_overrides: list = dataclasses.field(default_factory=list)
    extra_roots: list = dataclasses.field(default_factory=list)
    baselines: bool = True
    ssl: str = "wavlm"
    ssl_ckpt: str | None = None
    ssl_layer: int = -1
    separator_ckpt: str | None = None
    separator_recipe: str | None = "convtasnet"
    separator_preset: str | None = "demo"
    separator_overrides: list = dataclasses.field(default_factory=list)


class Mixture2SetTask(Task):
    """Mixture-to-set speaker embeddings (see the module docstring)."""

    name = "mixture2set"
    monitor = "cos_dist"
    monitor_mode = "min"
    Options = Mixture2SetOptions

    def check_config(self) -> None:
        if self.cfg.model.name.lower() != "mixture2set":
            raise ConfigError(f"model.name={self.cfg.model.name!r}: the mixture2set task trains 'mixture2set'")
        for key in ("embed_dim", "sample_rate"):
            if key in self.cfg.model.args:
                raise ConfigError(f"model.args.{key}: set by the task (the teacher's dimension, data.sample_rate)")
        counts = list(self.options.speaker_counts)
        if not counts or not all(isinstance(c, int) and 1 <= c <= self.n_slots for c in counts):
            raise ConfigError(f"task_args.speaker_counts={counts}: integers in [1, {self.n_slots}] (model.args.n_slots)")
        if self.cfg.data.dataset not in ("synthetic", "librimix"):
            raise ConfigError(f"data.dataset={self.cfg.data.dataset!r}: mixture2set reads 'synthetic' or 'librimix'")

    @property
    def n_slots(self) -> int:
        return int(self.cfg.model.args.get("n_slots", 3))

    def model_meta(self) -> dict:
        return {**super().model_meta(), "n_src": self.n_slots}

    # -- building ------------------------------------------------------------------------
    def prerequisites(self) -> list[Prerequisite]:
        """The teacher (``task_args.teacher_recipe``) into ``model.args.teacher_ckpt`` unless given;
        with ``baselines`` and a ``separator_recipe`` but no ``separator_ckpt``, the baseline
        separator into ``task_args.separator_ckpt``."""
        o, needs = self.options, []
        if not self.cfg.model.args.get("teacher_ckpt"):
            sub = load_recipe(o.teacher_recipe, o.teacher_preset,
                              [f"data.sample_rate={self.sample_rate}", *map(str, o.teacher_overrides)])
            needs.append(Prerequisite("teacher", sub, "model.args.teacher_ckpt", what="the speaker-embedding teacher"))
        if o.baselines and not o.separator_ckpt and o.separator_recipe:
            sub = load_recipe(o.separator_recipe, o.separator_preset,
                              [f"data.n_src={self.n_slots}", f"data.sample_rate={self.sample_rate}",
                               *map(str, o.separator_overrides)])
            needs.append(Prerequisite("separator", sub, "task_args.separator_ckpt", what="the baseline separator"))
        return needs

    def build_model(self) -> nn.Module:
        args = dict(self.cfg.model.args)
        teacher = load_teacher(args.pop("teacher_ckpt", None))
        try:
            return SetWithTeacher(teacher, self.sample_rate, **args)
        except TypeError as exc:
            raise ConfigError(f"model.args: {exc}") from None

    def frozen(self, model) -> tuple[str, ...]:
        return ("teacher",)

    def dataset(self, which: str):
        data = self.cfg.data
        segment = {"train": data.segment, "valid": data.valid_segment, "test": None}[which]
        if data.dataset == "librimix":
            if data.root is None:
                raise ConfigError("data.root is required for data.dataset='librimix' (give data.root=PATH)")
            split = {"train": data.train_split, "valid": data.valid_split, "test": data.test_split}[which]
            return LibriMixSets([data.root, *self.options.extra_roots], split, self.n_slots, mix=data.mix,
                                sample_rate=self.sample_rate, segment=segment, random_crop=which == "train",
                                seed=self.cfg.train.seed)
        spec, size, num_speakers = synthetic_spec(data, which, segment, n_src=1,
                                                  sizes={"num_valid": 200, "num_test": 200})
        return SpeakerSetMixtures(size, spec, self.options.speaker_counts, self.n_slots, SPLITS[which],
                                  num_speakers=num_speakers, seed=self.cfg.train.seed)

    def collate(self, items):
        return collate_tensors(items)

    # -- steps ---------------------------------------------------------------------------
    def training_step(self, model, batch):
        core = getattr(model, "module", model)
        targets = core.targets(batch["sources"], batch["n_speakers"], update=model.training)
        out = model(batch["mixture"])
        loss, logs = SetEmbeddingLoss(self.options.presence_weight)(out.embeddings.float(), out.presence_logits.float(),
                                                                     targets, batch["n_speakers"])
        logs.pop("perm")
        return loss, logs

    @torch.no_grad()
    def _item(self, model, item, device):
        mix = item["mixture"].to(device).unsqueeze(0)
        n = int(item["n_speakers"])
        sources = item["sources"][:n].to(device)
        out = model(mix)
        targets = torch.zeros(1, self.n_slots, model.teacher.embed_dim, device=device)
        targets[0, :n] = model.embed(sources)
        loss_fn = SetEmbeddingLoss(self.options.presence_weight)
        _, logs = loss_fn(out.embeddings.float(), out.presence_logits.float(), targets, item["n_speakers"].view(1).to(device))
        perm = logs["perm"][0]
        present = int((out.presence_logits[0] > 0).sum())
        row = {"id": item["id"], "cos_dist": logs["cos_dist"], "presence_acc": logs["presence_acc"],
               "count_acc": float(present == n)}
        pairs = [(out.embeddings[0, int(perm[j])].cpu(), int(item["speakers"][j])) for j in range(n)]
        return row, pairs

    def evaluate(self, model, dataset, progress=False, max_items=None, baselines: bool | None = None):
        model.eval()
        device = self.model_device(model)
        baselines = self.options.baselines if baselines is None else baselines
        rows, pred = [], ([], [])
        ssl_pairs, sep_pairs = ([], []), ([], [])
        ssl = separator = None
        if baselines:
            ssl = ssl_model(self.options.ssl, self.options.ssl_ckpt).to(device)
            if self.options.separator_ckpt:
                from ..restore import load_trained

                _, separator = load_trained(self.options.separator_ckpt, device)
        for item in iterate_items(dataset, max_items, progress):
            row, pairs = self._item(model, item, device)
            rows.append(row)
            for e, label in pairs:
                pred[0].append(e)
                pred[1].append(label)
            if ssl is not None:
                for e, label in self._ssl_pairs(ssl, item, device):
                    ssl_pairs[0].append(e)
                    ssl_pairs[1].append(label)
            if separator is not None:
                for e, label in self._separated_pairs(separator, model.embed, item, device):
                    sep_pairs[0].append(e)
                    sep_pairs[1].append(label)
        corpus = clustering_metrics(*pred)
        if ssl is not None:
            corpus.update(clustering_metrics(*ssl_pairs, suffix="_ssl"))
        if separator is not None:
            corpus.update(clustering_metrics(*sep_pairs, suffix="_sep"))
        return [{**r, **corpus} for r in rows]

    def validate(self, model, dataset) -> dict:
        rows = self.evaluate(model, dataset, max_items=self.cfg.train.max_valid_items, baselines=False)
        return {k: v[0] for k, v in summarize(rows).items()}

    @torch.no_grad()
    def _ssl_pairs(self, ssl, item, device):
        """k-means (k = speakers) on the SSL frames of the mixture; each cluster's mean feature,
        labelled by the source dominating its frames (Hungarian on the counts)."""
        n = int(item["n_speakers"])
        wave16 = resample(item["mixture"], self.sample_rate, 16000).to(device)
        feats, _ = ssl.extract_features(wave16.unsqueeze(0))
        frames = feats[self.options.ssl_layer][0].double().cpu()  # (F, C)
        hop = wave16.shape[-1] / max(1, frames.shape[0])
        scale = self.sample_rate / 16000
        owner = dominant_source_per_frame(item["sources"][:n], frames.shape[0], max(1, int(hop * scale)),
                                          max(1, int(400 * scale)))
        k = min(n, frames.shape[0])
        labels = kmeans(frames, k, seed=0)
        counts = np.zeros((k, n))
        for c, o in zip(labels, owner.tolist()):
            counts[c, o] += 1
        match = _assign(-counts)
        return [(frames[labels == c].mean(0).float(), int(item["speakers"][match[c]])) for c in range(k) if c in match]

    @torch.no_grad()
    def _separated_pairs(self, separator, embed, item, device):
        """Separate into S sources, embed them with the teacher, label each true source's best
        match (Hungarian on negative SI-SDR)."""
        from sepkit.metrics import si_sdr

        n = int(item["n_speakers"])
        est = separator(item["mixture"].to(device).unsqueeze(0))[0]  # (S', T)
        ref = item["sources"][:n].to(device)
        score = si_sdr(est[:, None, :].expand(-1, n, -1).double(), ref[None].expand(est.shape[0], -1, -1).double())
        match = _assign(-score.cpu().numpy())  # {estimate: source}
        emb = embed(est).cpu()
        return [(emb[e], int(item["speakers"][s])) for e, s in match.items()]

    def infer(self, model, waveform, sample_rate, **options):
        raise InputError("the mixture2set task predicts embeddings, not audio: use a tse run with "
                         "--target-slot, or SpeakerMemory.process(model.predictor, ...) for long recordings")

    def output_names(self) -> list[str]:
        return []


TASK = Mixture2SetTask
