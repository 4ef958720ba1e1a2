"""The items of the seeded datasets, fixed by checksums: a change to how they draw (the epoch, the
length, the seeded generators, the crop offsets) changes a number here.

What is pinned is what every machine computes to the same bits: the seeded generators' integer
streams, the scalars each synthetic draw takes from them, and items read from 16-bit files
without resampling (a read and a crop are exact). The synthetic waveforms themselves go through
NumPy's transcendental functions, whose last bits may differ between CPUs, so they are not.
"""
import hashlib
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from sepkit.data import MixtureSpec, SyntheticMixtures, WSJ0Mix
from sepkit.data.dns import DNSMixtures
from sepkit.data.voicebank import VoiceBankDemand


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            h.update(str((p.dtype, tuple(p.shape))).encode())
            h.update(p.contiguous().numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _stream(ds, index: int) -> list[int]:
    return ds.rng(index).integers(0, 2**62, size=3).tolist()


def _write_pcm(path, n: int, rate: int, seed: int, level: int = 6000) -> None:
    """A 16-bit file of ``n`` seeded integer samples (read back exactly as ``k / 32768``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.random.default_rng(seed).integers(-level, level + 1, size=n).astype(np.int16)
    sf.write(str(path), samples, rate, subtype="PCM_16")


@pytest.mark.parametrize("dynamic", [False, True])
def test_synthetic_mixtures_draw_the_pinned_numbers(dynamic):
    spec = MixtureSpec(sample_rate=8000, n_src=2, min_duration=0.3, max_duration=0.6, noise=True, reverb=True)
    ds = SyntheticMixtures(5, spec, split="valid", num_speakers=6, seed=3, dynamic_mixing=dynamic)
    assert len(ds) == 5
    got = []
    for epoch in (0, 2):
        ds.set_epoch(epoch)
        for i in (0, 4):
            rec = ds.draw(i)
            got.append([_stream(ds, i), rec["speakers"], rec["gains_db"], rec["snr_db"], rec["rt60"],
                        len(rec["mixture"]), ds[i]["id"]])
    want = PINNED["synthetic-dynamic" if dynamic else "synthetic-static"]
    assert _digest(got) == want, got
    if not dynamic:
        assert got[:2] == got[2:]  # the same items every epoch
    else:
        assert got[:2] != got[2:]


def test_dns_mixtures_draw_the_pinned_items(tmp_path):
    rate = 8000
    for k, n in enumerate((1200, 3000, 5100)):      # shorter and longer than the 0.25 s segment
        _write_pcm(tmp_path / "clean" / f"c{k}.wav", n, rate, seed=10 + k)
    for k, n in enumerate((700, 2600)):             # the short noise is looped
        _write_pcm(tmp_path / "noise" / f"n{k}.wav", n, rate, seed=20 + k, level=3000)
    ds = DNSMixtures(tmp_path / "clean", tmp_path / "noise", segment=0.25, snr_range=(-5.0, 5.0),
                     sample_rate=rate, num_examples=5, split="train", seed=1, dynamic_mixing=True)
    assert len(ds) == 5
    digests, snrs = [], []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        for i in range(5):
            item = ds[i]
            clean, noise = item["sources"][0].double(), (item["mixture"] - item["sources"][0]).double()
            digests.append([_stream(ds, i), _digest(item["sources"]), item["id"]])
            snrs.append(float(10 * torch.log10(clean.pow(2).sum() / noise.pow(2).sum())))
    assert _digest(digests) == PINNED["dns"], digests
    np.testing.assert_allclose(snrs, PINNED["dns-snr"], atol=1e-3)


def test_wsj0mix_crops_are_pinned(tmp_path):
    rate = 8000
    for k, n in enumerate((2400, 2000, 3900, 1500)):  # the last is shorter than the segment: dropped
        for j, folder in enumerate(("mix", "s1", "s2")):
            _write_pcm(tmp_path / "tr" / folder / f"u{k}.wav", n, rate, seed=100 * k + j)
    ds = WSJ0Mix(tmp_path, "tr", n_src=2, sample_rate=rate, segment=0.25, random_crop=True, seed=2)
    assert len(ds) == 3
    got = []
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        got += [[_digest(ds[i]["mixture"], ds[i]["sources"]), ds[i]["id"]] for i in range(len(ds))]
    assert _digest(got) == PINNED["wsj0mix"], got
    whole = WSJ0Mix(tmp_path, "tr", n_src=2, sample_rate=rate)
    assert len(whole) == 4 and whole[3]["mixture"].shape == (1500,)


def test_voicebank_crops_are_pinned(tmp_path):
    rate = 16000
    names = ("p226_001.wav", "p230_002.wav", "p231_003.wav", "p287_004.wav")
    for k, name in enumerate(names):
        n = (5000, 2500, 7000, 4000)[k]
        _write_pcm(tmp_path / "clean_trainset_28spk_wav" / name, n, rate, seed=200 + k)
        _write_pcm(tmp_path / "noisy_trainset_28spk_wav" / name, n, rate, seed=300 + k)
    got = []
    for split in ("train", "valid"):
        ds = VoiceBankDemand(tmp_path, split, sample_rate=rate, segment=0.2, random_crop=True, seed=5)
        assert len(ds) == 2
        for epoch in (0, 1):
            ds.set_epoch(epoch)
            got += [[_digest(ds[i]["mixture"], ds[i]["sources"]), ds[i]["id"]] for i in range(len(ds))]
    assert _digest(got) == PINNED["voicebank"], got


PINNED = {
    "synthetic-static": "3c9ea86ce02121bb",
    "synthetic-dynamic": "9e6f76a8fb0aa241",
    "dns": "a3fbcaf1b7c03980",
    "dns-snr": [-3.841692, 1.473771, -3.763129, 1.598325, 2.375006, -2.935607, 0.556521, -0.636651, 2.500202, 0.919509],
    "wsj0mix": "637e71632c343142",
    "voicebank": "830d559e925192dc",
}
