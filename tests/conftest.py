"""Test configuration: interpreter mode on CPU-only machines, hypothesis profiles, markers.

TRITON_INTERPRET must be set before any Triton kernel is defined (Triton decides at definition
time), so this runs before sepkit is imported.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# `ci`: few examples, derandomized, no deadline (the interpreter is slow).
# `gpu`: many examples on compiled kernels.
settings.register_profile(
    "ci", max_examples=6, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "gpu", max_examples=60, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("SEPKIT_HYPOTHESIS_PROFILE", "gpu" if torch.cuda.is_available() else "ci"))


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: long-running (still part of the default run)")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_teardown(item):
    """SpeechBrain (a parity baseline in a few tests) puts lazy placeholder modules into
    sys.modules; anything that walks sys.modules afterwards (hypothesis does) triggers their
    imports, which fail without optional packages (k2). Drop the placeholders not yet loaded."""
    import sys

    for name, module in list(sys.modules.items()):
        if type(module).__name__ in ("LazyModule", "DeprecatedModuleRedirect") and name.startswith("speechbrain"):
            del sys.modules[name]


@pytest.fixture
def audio_reads(monkeypatch):
    """The ``frames`` argument of every ``sepkit.data.read_audio`` call from here on (-1: the
    whole file), for tests that check a file is read block by block."""
    import sepkit.data
    import sepkit.data.audio

    reads, real = [], sepkit.data.audio.read_audio

    def spy(path, *args, **kwargs):
        reads.append(kwargs.get("frames", -1))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sepkit.data.audio, "read_audio", spy)
    monkeypatch.setattr(sepkit.data, "read_audio", spy)
    return reads
