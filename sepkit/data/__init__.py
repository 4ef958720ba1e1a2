"""Data: audio IO, the synthetic speech-like mixture generator (the embedded default), and
loaders for LibriMix, WSJ0-2mix/3mix and REAL-M in their standard layouts."""
from .audio import AudioError, audio_info, check_waveform, read_audio, resample, write_audio
from .datasets import DatasetError, Example, LibriMix, RealM, SeparationDataset, WSJ0Mix
from .make import librimix_base, synth_librimix
from .synth import MixtureSpec, Speaker, SyntheticMixtures, make_speakers, synth_mixture, synth_utterance

__all__ = [
    "AudioError",
    "DatasetError",
    "Example",
    "LibriMix",
    "MixtureSpec",
    "RealM",
    "SeparationDataset",
    "Speaker",
    "SyntheticMixtures",
    "WSJ0Mix",
    "audio_info",
    "check_waveform",
    "librimix_base",
    "make_speakers",
    "read_audio",
    "resample",
    "synth_librimix",
    "synth_mixture",
    "synth_utterance",
    "write_audio",
]
