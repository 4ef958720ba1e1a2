"""The ``speaker`` task: speaker classification with AAM-softmax, training an ECAPA-TDNN teacher.

The mixture-to-set and TSE recipes need a single-speaker embedding teacher. With the public
SpeechBrain checkpoint at hand, point them at it (``model.args.teacher_ckpt``); otherwise this
task trains a small ECAPA-TDNN on the built-in synthetic speakers, so nothing is downloaded.

Data: single-speaker synthetic utterances of the ``train`` speaker pool
(``data.synthetic.num_speakers`` classes), each item ``{"wave": (T,), "speaker": int64, "id"}``;
validation and test use other utterances of the same speakers (closed-set accuracy, the
monitor) plus an open-set check on unseen speakers: ``eer``, the equal error rate of cosine
scoring over all utterance pairs of the ``test`` speaker pool.

Model (``model.name: ecapa``): :class:`~sepkit.models.speaker.SpeakerClassifier`, an
:class:`sepkit.models.speaker.ECAPATDNN` (``model.args``, sample rate from ``data``) and an
:class:`~sepkit.models.speaker.AAMSoftmax` head (``task_args.margin``, ``task_args.scale``).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from sepkit.data.mixing import collate_tensors
from sepkit.data.speakers import SpeakerUtterances
from sepkit.errors import InputError
from sepkit.models.speaker import SpeakerClassifier

from ..config import ConfigError
from ..evaluate import items as iterate_items
from .base import Task

SPLITS = {"train": "train", "valid": "dev", "test": "test"}


@dataclasses.dataclass
class SpeakerOptions:
    """margin, scale: AAM-softmax (0.2, 30, the VoxCeleb recipe's); noise: add coloured noise
    to the utterances (SNR 5..20 dB); num_open_set: utterances of unseen speakers for the EER
    (4 per speaker of the test pool, at most this many)."""

    margin: float = 0.2
    scale: float = 30.0
    noise: bool = False
    num_open_set: int = 64


def equal_error_rate(embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """EER of cosine scoring over all pairs of (N, D) ``embeddings`` with (N,) ``labels``."""
    e = nn.functional.normalize(embeddings.double(), dim=-1)
    scores = e @ e.t()
    iu = torch.triu_indices(len(labels), len(labels), 1)
    s = scores[iu[0], iu[1]]
    same = (labels[iu[0]] == labels[iu[1]])
    if same.all() or not same.any():
        raise InputError("equal_error_rate: need both same-speaker and different-speaker pairs")
    order = torch.argsort(s, descending=True)
    same = same[order].double()
    tp = torch.cumsum(same, 0) / same.sum()  # accepted targets at each threshold
    fp = torch.cumsum(1 - same, 0) / (1 - same).sum()
    fnr = 1 - tp
    i = int(torch.argmin((fnr - fp).abs()))
    return float((fnr[i] + fp[i]) / 2)


class SpeakerTask(Task):
    """AAM-softmax speaker classification on synthetic speakers (see the module docstring)."""

    name = "speaker"
    monitor = "accuracy"
    monitor_mode = "max"
    Options = SpeakerOptions

    def check_config(self) -> None:
        if self.cfg.data.dataset != "synthetic":
            raise ConfigError(f"data.dataset={self.cfg.data.dataset!r}: the speaker task trains on the built-in "
                              "synthetic speakers only (use a pretrained ECAPA-TDNN for real data)")
        if self.cfg.model.name.lower() != "ecapa":
            raise ConfigError(f"model.name={self.cfg.model.name!r}: the speaker task trains 'ecapa'")
        for key in ("sample_rate", "n_classes"):
            if key in self.cfg.model.args:
                raise ConfigError(f"model.args.{key}: set by the task (data.sample_rate, data.synthetic.num_speakers)")
        if self.num_speakers < 2:
            raise ConfigError(f"data.synthetic.num_speakers={self.num_speakers}: need at least 2 speakers")

    @property
    def num_speakers(self) -> int:
        return int(self.cfg.data.synthetic.get("num_speakers", 100))

    def build_model(self) -> nn.Module:
        args = dict(self.cfg.model.args)
        args.setdefault("n_fft", int(round(0.025 * self.sample_rate)))
        try:
            return SpeakerClassifier(self.num_speakers, self.options.margin, self.options.scale,
                                     sample_rate=self.sample_rate, **args)
        except TypeError as exc:
            raise ConfigError(f"model.args: {exc}") from None

    def dataset(self, which: str):
        data, syn = self.cfg.data, self.cfg.data.synthetic
        sizes = {"train": syn.get("num_train", 20000), "valid": syn.get("num_valid", 200), "test": syn.get("num_test", 400)}
        if which == "train" and data.segment is not None:
            duration = (data.segment, data.segment)
        else:
            duration = (syn.get("min_duration", 2.0), syn.get("max_duration", 3.0))
        return SpeakerUtterances(int(sizes[which]), self.sample_rate, duration, self.num_speakers, SPLITS[which],
                                 pool="train", seed=self.cfg.train.seed, noise=self.options.noise)

    def collate(self, items: list[dict]) -> dict:
        return collate_tensors([{k: v for k, v in it.items() if k != "speaker_id"} for it in items])

    def training_step(self, model, batch):
        emb = model(batch["wave"])
        loss = model.head(emb, batch["speaker"])
        with torch.no_grad():
            acc = (model.head.cosine(emb).argmax(1) == batch["speaker"]).float().mean()
        return loss, {"accuracy": float(acc)}

    @torch.no_grad()
    def evaluate(self, model, dataset, progress=False, max_items=None):
        model.eval()
        device = self.model_device(model)
        rows = []
        for item in iterate_items(dataset, max_items, progress):
            emb = model(item["wave"].to(device).unsqueeze(0))
            pred = int(model.head.cosine(emb).argmax(1))
            rows.append({"id": item["id"], "accuracy": float(pred == int(item["speaker"]))})
        return rows

    @torch.no_grad()
    def open_set_eer(self, model) -> float:
        """EER on utterances of the unseen ``test`` speaker pool."""
        n_spk = max(2, min(self.num_speakers, self.options.num_open_set // 4))
        ds = SpeakerUtterances(4 * n_spk, self.sample_rate, (2.0, 3.0), n_spk, "test", pool="test",
                               seed=self.cfg.train.seed, noise=self.options.noise)
        device = self.model_device(model)
        embs = torch.cat([model(ds[i]["wave"].to(device).unsqueeze(0)).cpu() for i in range(len(ds))])
        labels = torch.tensor([i % n_spk for i in range(len(ds))])
        return equal_error_rate(embs, labels)

    def validate(self, model, dataset) -> dict:
        rows = self.evaluate(model, dataset, max_items=self.cfg.train.max_valid_items)
        return {"accuracy": float(np.mean([r["accuracy"] for r in rows])), "eer": self.open_set_eer(model)}

    def infer(self, model, waveform, sample_rate, **options):
        raise InputError("the speaker task produces embeddings, not audio: load the run with "
                         "sepkit.train.load_trained(path) and call model(wave) for (B, D) embeddings")

    def output_names(self) -> list[str]:
        return []

    # -- the demo's example ----------------------------------------------------------------
    @torch.no_grad()
    def example(self, model, item: dict, max_speakers: int = 8, max_items: int = 200) -> dict:
        """``item``'s utterance as ``"input"`` (T,), and the embeddings of the test set's
        utterances of its first ``max_speakers`` speakers (among the first ``max_items`` items):
        ``"embeddings"`` (N, D) and ``"speakers"`` (N,) for the panel."""
        model.eval()
        device = self.model_device(model)
        test = self.dataset("test")
        chosen, embeddings, speakers = [], [], []
        for i in range(min(len(test), max_items)):
            it = test[i]
            spk = int(it["speaker"])
            if spk not in chosen:
                if len(chosen) == max_speakers:
                    continue
                chosen.append(spk)
            embeddings.append(model(it["wave"].to(device).unsqueeze(0)).float().cpu())
            speakers.append(spk)
        return {"input": item["wave"].float(), "embeddings": torch.cat(embeddings),
                "speakers": torch.tensor(speakers)}

    def plot_example(self, fig, example: dict, sample_rate: int) -> bool:
        """A 2-D PCA projection of the test embeddings (length-normalised, as cosine scoring
        sees them) coloured by speaker, beside the example utterance."""
        from ..report import plot_signal

        emb = torch.nn.functional.normalize(example["embeddings"].double(), dim=-1)
        speakers = example["speakers"]
        if emb.shape[0] < 3:
            return False
        centred = emb - emb.mean(0, keepdim=True)
        _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
        xy = (centred @ vh[:2].T).numpy()
        explained = (sv[:2] ** 2 / (sv ** 2).sum()).tolist()
        left, right = fig.subfigures(1, 2, width_ratios=[1, 1.3])
        ax = left.subplots()
        for k, spk in enumerate(sorted(set(speakers.tolist()))):
            sel = (speakers == spk).numpy()
            ax.scatter(xy[sel, 0], xy[sel, 1], s=18, color=f"C{k % 10}", label=f"speaker {spk}")
        ax.set_title(f"test embeddings, PCA ({100 * sum(explained):.0f} % of the variance)", fontsize=10)
        ax.set_xlabel(f"PC 1 ({100 * explained[0]:.0f} %)", fontsize=8)
        ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f} %)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, ncol=2)
        left.subplots_adjust(left=0.14, right=0.97, bottom=0.1, top=0.92)
        plot_signal(right, example["input"], sample_rate, "example utterance")
        return True


TASK = SpeakerTask
