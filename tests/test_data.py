"""Data: synthetic generator, the LibriMix layout round trip, WSJ0-mix and REAL-M trees, errors."""
import csv

import numpy as np
import pytest
import torch

from sepkit.data import (
    AudioError, DynamicMixing, LibriMix, MixtureSpec, RealM, SyntheticMixtures, WSJ0Mix, collate, read_audio,
    write_audio, write_synthetic_librimix,
)

SPEC = MixtureSpec(sample_rate=8000, n_src=2, min_duration=0.5, max_duration=0.8)


def test_synthetic_mixtures_are_deterministic_and_sum_to_the_mixture():
    a = SyntheticMixtures(3, SPEC, seed=1)
    b = SyntheticMixtures(3, SPEC, seed=1)
    for i in range(3):
        x, y = a[i], b[i]
        assert torch.equal(x["mixture"], y["mixture"]) and x["sources"].shape[0] == 2
        torch.testing.assert_close(x["mixture"], x["sources"].sum(0), atol=1e-6, rtol=0)
        assert (x["sources"].pow(2).mean(-1) > 1e-6).all()  # no silent source
    assert not torch.equal(a[0]["mixture"], SyntheticMixtures(3, SPEC, seed=2)[0]["mixture"])


def test_speakers_differ_in_pitch():
    """Sources of one mixture come from different speakers: their spectra are not the same."""
    rec = SyntheticMixtures(1, MixtureSpec(sample_rate=16000, min_duration=1.0, max_duration=1.0), seed=3).draw(0)
    assert rec["speakers"][0] != rec["speakers"][1]
    s = rec["sources"]
    corr = np.corrcoef(np.abs(np.fft.rfft(s[0])), np.abs(np.fft.rfft(s[1])))[0, 1]
    assert corr < 0.9


def test_noisy_reverberant_mixtures():
    spec = MixtureSpec(sample_rate=8000, min_duration=0.5, max_duration=0.5, noise=True, reverb=True)
    rec = SyntheticMixtures(1, spec, seed=0).draw(0)
    assert rec["noise"] is not None and rec["rt60"] is not None
    np.testing.assert_allclose(rec["mixture"], rec["sources"].sum(0) + rec["noise"], atol=1e-6)


def test_librimix_layout_round_trip(tmp_path):
    spec = MixtureSpec(sample_rate=8000, n_src=2, min_duration=0.5, max_duration=0.8, noise=True)
    root = write_synthetic_librimix(tmp_path, spec, {"train-100": 4, "dev": 2}, seed=0)
    assert root == tmp_path / "Libri2Mix" / "wav8k" / "min"
    with open(root / "metadata" / "mixture_train-100_mix_both.csv") as f:
        header = next(csv.reader(f))
    assert header == ["mixture_ID", "mixture_path", "source_1_path", "source_2_path", "noise_path", "length"]
    ds = LibriMix(root, "train-100", mix="both")
    assert len(ds) == 4 and ds.n_src == 2
    item = ds[0]
    ref = SyntheticMixtures(4, spec, split="train-100", seed=0).draw(0)
    # 16-bit PCM: equal to the generated signal within quantisation
    np.testing.assert_allclose(item["mixture"].numpy(), ref["mixture"], atol=1e-4)
    assert LibriMix(root, "train-100", mix="single")[0]["sources"].shape[0] == 1
    cropped = LibriMix(root, "train-100", mix="clean", segment=0.4)
    assert cropped[1]["mixture"].shape == (3200,) and cropped[1]["sources"].shape == (2, 3200)
    batch = collate([cropped[i] for i in range(2)])
    assert batch["mixture"].shape == (2, 3200) and batch["sources"].shape == (2, 2, 3200)


def test_librimix_errors(tmp_path):
    root = write_synthetic_librimix(tmp_path, SPEC, {"dev": 2}, seed=0)
    with pytest.raises(FileNotFoundError, match="metadata file not found"):
        LibriMix(root, "test")
    with pytest.raises(AudioError, match="sample rate 8000 Hz, expected 16000 Hz"):
        LibriMix(root, "dev", sample_rate=16000)[0]
    with pytest.raises(ValueError, match="none is at least"):
        LibriMix(root, "dev", segment=10.0)
    next(root.glob("dev/s2/*.wav")).unlink()
    with pytest.raises(AudioError, match="audio file not found"):
        [LibriMix(root, "dev")[i] for i in range(2)]


def _wsj_tree(tmp_path, rate=8000, missing=False):
    root = tmp_path / "wsj0-2mix"
    for split in ("tr", "cv"):
        for k in range(3):
            name = f"utt{k}.wav"
            s = torch.randn(2, 4000 + 100 * k) * 0.1
            for j in range(2):
                if not (missing and split == "cv" and j == 1 and k == 2):
                    write_audio(root / split / f"s{j + 1}" / name, s[j], rate)
            write_audio(root / split / "mix" / name, s.sum(0), rate)
    return root


def test_wsj0mix_tree(tmp_path):
    root = _wsj_tree(tmp_path)
    ds = WSJ0Mix(root, "tr")
    assert len(ds) == 3 and ds[2]["sources"].shape == (2, 4200)
    torch.testing.assert_close(ds[0]["mixture"], ds[0]["sources"].sum(0), atol=2e-4, rtol=0)
    assert WSJ0Mix(root, "tr", segment=0.5)[0]["mixture"].shape == (4000,)
    with pytest.raises(ValueError, match="split must be one of"):
        WSJ0Mix(root, "train")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        WSJ0Mix(root, "tt")


def test_wsj0mix_missing_source_and_wrong_rate(tmp_path):
    root = _wsj_tree(tmp_path, missing=True)
    with pytest.raises(FileNotFoundError, match="lack s2"):
        WSJ0Mix(root, "cv")
    with pytest.raises(AudioError, match="expected 16000 Hz"):
        WSJ0Mix(root, "tr", sample_rate=16000, segment=0.1)


def test_realm_tree(tmp_path):
    write_audio(tmp_path / "early" / "a.wav", torch.randn(800) * 0.1, 16000)
    write_audio(tmp_path / "late" / "b.wav", torch.randn(900) * 0.1, 16000)
    ds = RealM(tmp_path, sample_rate=None, resample_to=8000)
    assert len(ds) == 2 and ds[0]["id"] == "early/a" and ds[0]["mixture"].shape == (400,) and "sources" not in ds[0]
    with pytest.raises(AudioError, match="expected 8000 Hz"):
        RealM(tmp_path, sample_rate=8000)[0]


def test_dynamic_mixing_draws_new_mixtures_each_epoch():
    base = SyntheticMixtures(6, SPEC, seed=0)
    dm = DynamicMixing(base, seed=0)
    first = dm[0]
    torch.testing.assert_close(first["mixture"], first["sources"].sum(0))
    dm.set_epoch(1)
    assert not torch.equal(first["mixture"], dm[0]["mixture"][: first["mixture"].shape[0]])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"not audio at all"), "cannot read audio file"),
        (lambda p: write_audio(p, torch.zeros(2, 100), 8000), "expected mono audio, got 2 channels"),
        (lambda p: None, "audio file not found"),
    ],
)
def test_read_audio_errors(tmp_path, make, message):
    path = tmp_path / "x.wav"
    make(path)
    with pytest.raises(AudioError, match=message):
        read_audio(path)


def test_audio_rejects_empty_and_non_finite(tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 8000)
    with pytest.raises(AudioError, match="empty audio"):
        read_audio(tmp_path / "empty.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], dtype=np.float32), 8000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or Inf"):
        read_audio(tmp_path / "nan.wav")
    with pytest.raises(AudioError, match="refusing to write NaN"):
        write_audio(tmp_path / "out.wav", torch.tensor([0.0, float("inf")]), 8000)
    assert not (tmp_path / "out.wav").exists()
