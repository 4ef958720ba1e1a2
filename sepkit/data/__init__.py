"""Data: audio IO, the built-in synthetic speech-like and spoken (espeak-ng) mixtures, loaders for
LibriMix, WSJ0-mix and REAL-M.

Every separation item is a dict with ``mixture`` (T,) and ``sources`` (S, T) float32 tensors
(amplitudes in [-1, 1]) and an ``id``; REAL-M items have no sources.
"""
from .audio import AudioError, audio_info, check_waveform, read_audio, resample, write_audio
from .corpora import RealM, WSJ0Mix
from .dns import DNSMixtures, DNSTestSet, write_synthetic_dns
from .librimix import LibriMix, librimix_root, write_synthetic_librimix
from .mixing import DynamicMixing, collate
from .musdb import MUSDB18
from .spoken import SpokenCorpus, SpokenMixtures
from .synth import MixtureSpec, SyntheticMixtures, make_speakers, synth_mixture
from .voicebank import VoiceBankDemand

__all__ = [
    "AudioError", "DNSMixtures", "DNSTestSet", "DynamicMixing", "LibriMix", "MUSDB18", "VoiceBankDemand", "MixtureSpec", "RealM", "SyntheticMixtures", "WSJ0Mix",
    "SpokenCorpus", "SpokenMixtures",
    "audio_info", "check_waveform", "collate", "librimix_root", "make_speakers", "read_audio", "resample",
    "synth_mixture", "write_audio", "write_synthetic_dns", "write_synthetic_librimix",
]
