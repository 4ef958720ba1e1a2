"""On-the-fly augmentation: measured RIRs (no optional package needed), image-source rooms
(pyroomacoustics, skipped without it), noise at an SNR, speed, gain, determinism, failures."""
import importlib.util

import numpy as np
import pytest
import torch
from scipy.signal import fftconvolve

from sepkit.cli import main
from sepkit.data import MixtureSpec, SyntheticMixtures, resample, write_audio
from sepkit.data.augment import Augmented, augment_spec
from sepkit.errors import ConfigError

SR = 8000
HAVE_PRA = importlib.util.find_spec("pyroomacoustics") is not None


class Items(torch.utils.data.Dataset):
    """Fixed random items: two sources and (optionally) noise already in the mixture."""

    def __init__(self, n=4, T=2000, residual=0.0, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.sources = 0.02 * torch.randn(n, 2, T, generator=g)
        self.residual = residual * torch.randn(n, T, generator=g)
        self.n_src, self.sample_rate = 2, SR

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, i):
        return {"mixture": self.sources[i].sum(0) + self.residual[i], "sources": self.sources[i].clone(), "id": str(i)}


def _rir(rng, n=1200, direct=30):
    h = np.zeros(n)
    h[direct] = -0.8  # a negative direct path: polarity is kept, scale made unit
    tail = np.arange(n - direct - 1)
    h[direct + 1:] = 0.3 * rng.standard_normal(len(tail)) * np.exp(-tail / 300)
    return h


@pytest.fixture
def rir_dir(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(3):
        write_audio(tmp_path / "rirs" / f"room{k}.wav", _rir(rng), SR, subtype="FLOAT")
    return tmp_path / "rirs"


@pytest.fixture
def noise_dir(tmp_path):
    rng = np.random.default_rng(1)
    write_audio(tmp_path / "noise" / "a" / "long.wav", 0.1 * rng.standard_normal(5000), SR, subtype="FLOAT")
    write_audio(tmp_path / "noise" / "b" / "short.flac", 0.1 * rng.standard_normal(700), SR)
    return tmp_path / "noise"


def _aug(ds, **raw):
    return Augmented(ds, augment_spec(raw), SR, seed=3)


def _reference_reverb(source, path, early_ms, T):
    """float64 reference: the file's response cut 1 ms before its peak, unit peak, convolved."""
    import soundfile

    h, _ = soundfile.read(str(path), dtype="float64")
    d = int(np.argmax(np.abs(h)))
    h = h[d - 8:] / abs(h[d])
    early = h if early_ms is None else h[: 8 + int(round(early_ms * SR / 1000)) + 1]
    return fftconvolve(source, h)[:T], fftconvolve(source, early)[:T]


@pytest.mark.parametrize("early_ms", [50.0, 0.0, None])
def test_measured_rirs_give_reverberant_mixtures_and_early_targets(rir_dir, early_ms):
    ds = Items(residual=0.01)
    aug = _aug(ds, reverb="rirs", rir_dir=str(rir_dir), early_ms=early_ms)
    files = sorted(rir_dir.iterdir())
    for i in range(len(ds)):
        got = aug[i]
        rng = aug.rng(i)
        rng.random()  # the reverb_prob draw
        picks = [files[int(rng.integers(len(files)))] for _ in range(2)]
        src = ds[i]["sources"].double().numpy()
        ref = [_reference_reverb(src[j], picks[j], early_ms, src.shape[-1]) for j in range(2)]
        images = np.stack([r[0] for r in ref])
        targets = np.stack([r[1] for r in ref])
        np.testing.assert_allclose(got["sources"].numpy(), targets, atol=2e-6)
        mixture = images.sum(0) + ds.residual[i].double().numpy()  # the item's own noise is kept
        np.testing.assert_allclose(got["mixture"].numpy(), mixture, atol=2e-6)
        if early_ms == 0.0:  # the direct path alone: the sources, delayed 1 ms, polarity kept
            np.testing.assert_allclose(got["sources"][:, 8:].numpy(), -src[:, :-8], atol=1e-6)


def test_noise_is_added_at_the_drawn_snr_and_draws_depend_on_seed_epoch_and_index(noise_dir):
    ds = Items(T=1500)
    aug = _aug(ds, noise_dir=str(noise_dir), snr_range=[4.0, 4.0])
    for i in range(len(ds)):
        got = aug[i]
        speech = ds[i]["sources"].double().sum(0)
        noise = got["mixture"].double() - speech
        assert torch.equal(got["sources"], ds[i]["sources"])
        snr = 10 * torch.log10(speech.pow(2).sum() / noise.pow(2).sum())
        assert abs(float(snr) - 4.0) < 1e-4
    first = aug[1]
    assert torch.equal(first["mixture"], aug[1]["mixture"])  # deterministic
    aug.set_epoch(1)
    assert not torch.equal(first["mixture"], aug[1]["mixture"])  # a new epoch draws anew
    assert not torch.equal(_aug(ds, noise_dir=str(noise_dir))[1]["mixture"], aug[1]["mixture"])


def test_speed_and_gain(tmp_path):
    ds = Items(T=1600)
    aug = _aug(ds, speed_range=[1.1, 1.1], gain_range=[6.0, 6.0])
    got = aug[0]
    src = ds[0]["sources"]
    fast = resample(src.double(), 110, 100)  # played 10 % faster: 1455 samples, zero-padded back
    expect = torch.nn.functional.pad(fast, (0, 1600 - fast.shape[-1])) * 10 ** (6 / 20)
    torch.testing.assert_close(got["sources"].double(), expect, atol=2e-6, rtol=0)
    torch.testing.assert_close(got["mixture"].double(), expect.sum(0), atol=4e-6, rtol=0)
    loud = _aug(Items(T=1600), gain_range=[40.0, 40.0])[0]  # peak limited, relations kept
    assert float(loud["mixture"].abs().max()) <= 0.99 + 1e-6
    torch.testing.assert_close(loud["mixture"], loud["sources"].sum(0), atol=1e-5, rtol=0)


@pytest.mark.skipif(not HAVE_PRA, reason="pyroomacoustics is not installed (the augment extra)")
def test_image_source_rooms():
    ds = Items(T=2000)
    aug = _aug(ds, reverb="image", rt60_range=[0.3, 0.5], early_ms=None)
    got = aug[2]
    assert torch.equal(got["mixture"], aug[2]["mixture"])  # the rooms are deterministic draws
    torch.testing.assert_close(got["mixture"], got["sources"].sum(0), atol=1e-5, rtol=0)  # targets = images
    full, early = aug._room(2, np.random.default_rng(0))[0]
    assert abs(full).max() == pytest.approx(1.0) and np.argmax(abs(full)) == 8  # unit direct path, 1 ms in
    assert len(full) > 0.2 * SR  # a reverberant tail
    aug = _aug(ds, reverb="image", early_ms=50)
    _, early = aug._room(2, np.random.default_rng(0))[0]
    assert len(early) == 8 + 400 + 1
    item = aug[0]
    assert float((item["mixture"] - item["sources"].sum(0)).pow(2).sum()) > 0  # late reverberation in the mixture


def test_the_synthetic_default_takes_the_same_options(rir_dir, noise_dir, tmp_path):
    from sepkit.train import load_recipe
    from sepkit.train.builders import build_dataset

    cfg = load_recipe("convtasnet", "demo", ["data.synthetic.num_train=4", f"data.augment.noise_dir={noise_dir}",
                                             "data.augment.reverb=rirs", f"data.augment.rir_dir={rir_dir}",
                                             "data.augment.speed_range=[0.95,1.05]"])
    train = build_dataset(cfg.data, "train", 0)
    assert isinstance(train, Augmented)
    plain = SyntheticMixtures(4, MixtureSpec(min_duration=cfg.data.segment, max_duration=cfg.data.segment),
                              num_speakers=100)
    assert train[0]["mixture"].shape == plain[0]["mixture"].shape
    assert not torch.equal(train[0]["mixture"], plain[0]["mixture"])
    assert not isinstance(build_dataset(cfg.data, "valid", 0), Augmented)  # validation stays as it is


@pytest.mark.parametrize("override, message", [
    ("data.augment.snr_range=[10,0]", "data.augment.snr_range=[10.0, 0.0]: the range is upside down"),
    ("data.augment.noise_dir=MISSING", "data.augment.noise_dir='MISSING': folder not found"),
    ("data.augment.noise_dir=EMPTY", "data.augment.noise_dir='EMPTY': no audio files"),
    ("data.augment.noise_dir=RATE", "data.augment.noise_dir: RATE/n.wav is at 16000 Hz but data.sample_rate is 8000"),
    ("data.augment.rir_dir=RATE", "data.augment.rir_dir is set but data.augment.reverb='none'"),
    ("data.augment.reverb=rirs", "data.augment.reverb=rirs needs data.augment.rir_dir"),
    ("data.augment.reverb=room", "data.augment.reverb='room': must be one of none, image, rirs"),
    ("data.augment.loudness=3", "unknown key(s) data.augment.loudness"),
    ("data.augment.speed_range=[0.1,1]", "data.augment.speed_range=[0.1, 1.0]: factors must lie in [0.5, 2]"),
])
def test_bad_augment_settings_fail_before_any_work(tmp_path, capsys, override, message):
    (tmp_path / "EMPTY").mkdir()
    write_audio(tmp_path / "RATE" / "n.wav", np.zeros(100), 16000)
    override = override.replace("MISSING", str(tmp_path / "MISSING")).replace("EMPTY", str(tmp_path / "EMPTY"))
    override = override.replace("=RATE", f"={tmp_path / 'RATE'}")
    message = message.replace("'MISSING'", repr(str(tmp_path / "MISSING"))).replace("'EMPTY'", repr(str(tmp_path / "EMPTY")))
    message = message.replace("RATE/", f"{tmp_path / 'RATE'}/")
    out = tmp_path / "run"
    assert main(["train", "convtasnet", "--preset", "demo", "--out", str(out), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
    with pytest.raises(ConfigError):
        Augmented(Items(), augment_spec({"noise_dir": str(tmp_path / "EMPTY")}), SR)


@pytest.mark.skipif(HAVE_PRA, reason="checks the message shown without pyroomacoustics")
def test_image_rooms_without_pyroomacoustics_name_the_extra(tmp_path, capsys):
    assert main(["train", "convtasnet", "--preset", "demo", "--out", str(tmp_path / "r"), "data.augment.reverb=image"]) == 2
    assert "pip install 'sepkit[augment]'" in capsys.readouterr().err
