"""PANNs Cnn14 audio tagging / sound event detection network (the USS latent extractor of Ex-Diff).

Kong, Cao, Iqbal, Wang, Wang, Plumbley, "PANNs: Large-scale pretrained audio neural networks for
audio pattern recognition", IEEE/ACM TASLP 2020.

Log-mel front end (power STFT by two frozen convolutions with the Hann-windowed DFT, Slaney mel
filter bank, 10 log10), ``bn0`` over the mel bins, six VGG-style conv blocks (two 3x3 conv + BN +
ReLU, 2x2 average pooling but the last), mean over frequency, then:

* ``decision_level=None`` (``Cnn14``): max + mean over time, ``fc1`` + ReLU -> ``embedding``
  (B, 2048), ``fc_audioset`` + sigmoid -> ``clipwise_output`` (B, 527);
* ``decision_level="max"`` (``Cnn14_DecisionLevelMax``): max- plus average-pooling over 3 frames,
  ``fc1`` + ReLU and ``fc_audioset`` + sigmoid per segment, repeated 32x to the mel frame rate and
  padded with the last frame (``framewise_output`` (B, frames, 527), frames = 1 + T // hop);
  ``clipwise_output`` is the max over segments. Its ``embedding`` is the clip-level one above.

State-dict keys follow the public release (``spectrogram_extractor.stft.conv_real.weight``,
``logmel_extractor.melW``, ``bn0``, ``conv_block1..6.{conv1,conv2,bn1,bn2}``, ``fc1``,
``fc_audioset``), so ``Cnn14.from_panns(path)`` loads the released checkpoints (a dict whose
``"model"`` entry is the state dict) with ``weights_only=True``. Nothing is downloaded.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sepkit.errors import InputError
from sepkit.files import load_strict

__all__ = ["Cnn14", "PannsLatent", "SPEECH_CLASSES", "VOCAL_CLASSES"]

#: AudioSet class indices of speech: Speech, Male speech, Female speech, Child speech,
#: Conversation, Narration/monologue. The ontology's other two children of Speech are left out
#: on purpose: Babbling (6) is an infant's pre-speech vocalising and Speech synthesizer (7)
#: machine-made speech; neither is the talker Ex-Diff enhances (natural speech of adults and
#: children, VoiceBank-DEMAND's read speech), and a guide that fires on them would mark as target
#: what the enhancer should treat as interference (a baby or a synthetic voice in the
#: background). The parent class Speech (0) still responds to speech-like sound of any kind.
#: The latent width is the number of classes: ``model.args.uss_classes`` chooses others (a model
#: trained with one choice needs the same one).
SPEECH_CLASSES = (0, 1, 2, 3, 4, 5)
#: AudioSet class indices of vocals: Singing, Male singing, Female singing, Child singing.
VOCAL_CLASSES = (27, 32, 33, 34)

DECISION_LEVELS = (None, "max")


class _STFTConv(nn.Module):
    """Frozen DFT convolutions: ``conv_real`` / ``conv_imag`` weights (F, 1, n_fft) (buffers under
    the release's parameter names)."""

    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.hop = hop
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        angle = -2 * math.pi * k[:, None] * n[None, :] / n_fft
        self.conv_real = nn.Module()
        self.conv_imag = nn.Module()
        self.conv_real.register_buffer("weight", (torch.cos(angle) * window).float()[:, None, :])
        self.conv_imag.register_buffer("weight", (torch.sin(angle) * window).float()[:, None, :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 1, T padded) -> power spectrogram (B, 1, frames, F)."""
        re = F.conv1d(x, self.conv_real.weight, stride=self.hop)
        im = F.conv1d(x, self.conv_imag.weight, stride=self.hop)
        return (re ** 2 + im ** 2).transpose(1, 2)[:, None]


class _Spectrogram(nn.Module):
    def __init__(self, n_fft: int, hop: int):
        super().__init__()
        self.n_fft = n_fft
        self.stft = _STFTConv(n_fft, hop)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = F.pad(wave[:, None, :], (self.n_fft // 2, self.n_fft // 2), mode="reflect")
        return self.stft(x)


class _LogMel(nn.Module):
    """Slaney mel filter bank ``melW`` (F, mel_bins) and ``10 log10(max(x, 1e-10))``."""

    def __init__(self, sample_rate: int, n_fft: int, mel_bins: int, fmin: float, fmax: float):
        super().__init__()
        import torchaudio.functional as AF

        mel = AF.melscale_fbanks(n_fft // 2 + 1, float(fmin), float(fmax), mel_bins, sample_rate, norm="slaney",
                                 mel_scale="slaney")
        self.register_buffer("melW", mel.float())

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=1e-10))


class _ConvBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.weight)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool != (1, 1) else x


class Cnn14(nn.Module):
    """PANNs Cnn14 (see the module docstring): wave (B, T) at ``sample_rate`` -> dict.

    Args (the release's constructor arguments and defaults):
        sample_rate: 32000 Hz.
        window_size: STFT size and window, 1024 samples.
        hop_size: 320 samples (10 ms).
        mel_bins: 64.
        fmin, fmax: mel range, 50 to 14000 Hz.
        classes_num: 527 AudioSet classes.
        decision_level: None (``Cnn14``) or "max" (``Cnn14_DecisionLevelMax``).

    Returns from ``forward``: ``clipwise_output`` (B, classes), ``embedding`` (B, 2048) and,
    with ``decision_level="max"``, ``framewise_output`` (B, 1 + T // hop_size, classes); all
    probabilities in [0, 1]. Dropout and SpecAugment of the release's training are not included
    (this module is for inference and frozen use).
    """

    interpolate_ratio = 32

    def __init__(self, sample_rate: int = 32000, window_size: int = 1024, hop_size: int = 320, mel_bins: int = 64,
                 fmin: float = 50, fmax: float = 14000, classes_num: int = 527, decision_level: str | None = None):
        super().__init__()
        if decision_level not in DECISION_LEVELS:
            raise InputError(f"Cnn14: decision_level must be one of {DECISION_LEVELS}, got {decision_level!r}")
        if not 0 <= fmin < fmax <= sample_rate / 2:
            raise InputError(f"Cnn14: need 0 <= fmin < fmax <= sample_rate / 2, got fmin={fmin}, fmax={fmax}, "
                             f"sample_rate={sample_rate}")
        self.sample_rate, self.window_size, self.hop_size = sample_rate, window_size, hop_size
        self.classes_num, self.decision_level = classes_num, decision_level
        self.spectrogram_extractor = _Spectrogram(window_size, hop_size)
        self.logmel_extractor = _LogMel(sample_rate, window_size, mel_bins, fmin, fmax)
        self.bn0 = nn.BatchNorm2d(mel_bins)
        widths = (1, 64, 128, 256, 512, 1024, 2048)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", _ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(2048, 2048)
        self.fc_audioset = nn.Linear(2048, classes_num)
        for fc in (self.fc1, self.fc_audioset):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    @classmethod
    def from_panns(cls, path: str | os.PathLike, **kwargs) -> "Cnn14":
        """Load a released PANNs checkpoint (``{"model": state_dict, ...}`` or a bare state dict)
        from a local file; ``kwargs`` as the constructor (e.g. ``decision_level="max"``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Cnn14.from_panns: checkpoint not found: {path}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle with code, or not a torch file
            raise InputError(f"Cnn14.from_panns: {path} is not a weights-only torch checkpoint "
                             f"(a file that needs code execution is refused): {str(err).splitlines()[0]}") from None
        state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise InputError(f"Cnn14.from_panns: {path} holds no state dict (expected a dict with a 'model' entry)")
        model = cls(**kwargs)
        model.load_release_state(state, str(path))
        return model.eval()

    def load_release_state(self, state: dict, where: str = "state dict") -> None:
        """Load a release-layout state dict strictly; a missing or foreign key is a ValueError
        naming it (``spec_augmenter`` entries, which hold nothing, are ignored)."""
        state = {k: v for k, v in state.items() if not k.startswith("spec_augmenter.")}
        load_strict(self, state, f"Cnn14: {where} does not match the Cnn14 layout")

    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """wave (B, T) -> conv features averaged over frequency (B, 2048, frames / 32)."""
        if not isinstance(wave, torch.Tensor) or wave.dim() != 2 or not wave.is_floating_point():
            raise InputError(f"Cnn14: wave must be a float (B, T) tensor at {self.sample_rate} Hz, got "
                             f"{tuple(wave.shape) if isinstance(wave, torch.Tensor) else type(wave).__name__}")
        if wave.shape[-1] <= self.window_size // 2:
            raise InputError(f"Cnn14: wave must be longer than {self.window_size // 2} samples, got {wave.shape[-1]}")
        x = self.logmel_extractor(self.spectrogram_extractor(wave.float()))  # (B, 1, frames, mel)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, (2, 2) if i < 6 else (1, 1))
        return x.mean(dim=3)

    def forward(self, wave: torch.Tensor) -> dict:
        frames = 1 + wave.shape[-1] // self.hop_size if isinstance(wave, torch.Tensor) else 0
        x = self.features(wave)
        embedding = F.relu(self.fc1(x.amax(dim=2) + x.mean(dim=2)))
        if self.decision_level is None:
            return {"clipwise_output": torch.sigmoid(self.fc_audioset(embedding)), "embedding": embedding}
        x = F.max_pool1d(x, 3, stride=1, padding=1) + F.avg_pool1d(x, 3, stride=1, padding=1)
        segments = torch.sigmoid(self.fc_audioset(F.relu(self.fc1(x.transpose(1, 2)))))  # (B, S, C)
        framewise = segments.repeat_interleave(self.interpolate_ratio, dim=1)
        if framewise.shape[1] < frames:
            framewise = torch.cat([framewise, framewise[:, -1:].expand(-1, frames - framewise.shape[1], -1)], dim=1)
        return {"clipwise_output": segments.amax(dim=1), "embedding": embedding,
                "framewise_output": framewise[:, :frames]}

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate}, classes_num={self.classes_num}, decision_level={self.decision_level!r}"


class PannsLatent(nn.Module):
    """Frame-wise probabilities of chosen AudioSet classes: the Ex-Diff USS latent.

    ``forward(wave (B, T) at sample_rate)`` -> (B, frames, len(classes)) at 100 frames/s (the
    Cnn14 hop), from a decision-level Cnn14 (frozen, in eval mode); the wave is resampled to
    32 kHz first.

    Args:
        cnn: a ``Cnn14(decision_level="max")`` (e.g. ``Cnn14.from_panns(path, decision_level="max")``).
        classes: class indices (:data:`SPEECH_CLASSES` for speech, :data:`VOCAL_CLASSES` for vocals).
        sample_rate: rate of the input waves (Hz).
    """

    def __init__(self, cnn: Cnn14, classes=SPEECH_CLASSES, sample_rate: int = 16000):
        super().__init__()
        if cnn.decision_level != "max":
            raise InputError("PannsLatent: cnn must be a decision-level model (Cnn14(decision_level='max'))")
        classes = tuple(int(c) for c in classes)
        if not classes or min(classes) < 0 or max(classes) >= cnn.classes_num:
            raise InputError(f"PannsLatent: classes must be indices in [0, {cnn.classes_num}), got {classes}")
        self.cnn, self.classes, self.sample_rate = cnn, classes, sample_rate
        self.frame_rate = cnn.sample_rate / cnn.hop_size

    @property
    def dim(self) -> int:
        return len(self.classes)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        from sepkit.data import resample

        x = resample(wave, self.sample_rate, self.cnn.sample_rate)
        return self.cnn(x)["framewise_output"][..., list(self.classes)]
