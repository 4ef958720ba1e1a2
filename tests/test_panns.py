"""PANNs Cnn14: the release's state-dict layout loads, and the forward pass on those weights
equals a functional re-statement of the released model written here from the key layout."""
import math

import pytest
import torch
import torch.nn.functional as F

from sepkit.data import resample
from sepkit.models.panns import VOCAL_CLASSES, Cnn14, PannsLatent

WIDTHS = (1, 64, 128, 256, 512, 1024, 2048)


def official_state_dict(seed=0, mel_bins=64, classes=527, n_fft=1024):
    """Random weights in the exact key layout and shapes of the released Cnn14 checkpoints."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def bn(prefix, n):
        sd[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(n, generator=g)
        sd[f"{prefix}.bias"] = 0.1 * torch.randn(n, generator=g)
        sd[f"{prefix}.running_mean"] = 0.1 * torch.randn(n, generator=g)
        sd[f"{prefix}.running_var"] = 0.5 + torch.rand(n, generator=g)
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)

    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)[:, None]
    n = torch.arange(n_fft, dtype=torch.float64)[None]
    w = 0.5 - 0.5 * torch.cos(2 * math.pi * n / n_fft)
    sd["spectrogram_extractor.stft.conv_real.weight"] = (torch.cos(2 * math.pi * k * n / n_fft) * w).float()[:, None]
    sd["spectrogram_extractor.stft.conv_imag.weight"] = (-torch.sin(2 * math.pi * k * n / n_fft) * w).float()[:, None]
    sd["logmel_extractor.melW"] = torch.rand(n_fft // 2 + 1, mel_bins, generator=g) * 0.01
    bn("bn0", mel_bins)
    for i in range(6):
        cin, cout = WIDTHS[i], WIDTHS[i + 1]
        p = f"conv_block{i + 1}"
        sd[f"{p}.conv1.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * math.sqrt(2 / (9 * cin))
        sd[f"{p}.conv2.weight"] = torch.randn(cout, cout, 3, 3, generator=g) * math.sqrt(2 / (9 * cout))
        bn(f"{p}.bn1", cout)
        bn(f"{p}.bn2", cout)
    sd["fc1.weight"] = torch.randn(2048, 2048, generator=g) / math.sqrt(2048)
    sd["fc1.bias"] = 0.01 * torch.randn(2048, generator=g)
    sd["fc_audioset.weight"] = torch.randn(classes, 2048, generator=g) / math.sqrt(2048)
    sd["fc_audioset.bias"] = 0.01 * torch.randn(classes, generator=g)
    return sd


def reference(sd, wave, decision_level):
    """The released forward pass (eval mode), written from the layout."""
    def bn(x, p):
        return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            training=False, eps=1e-5)

    x = F.pad(wave[:, None], (512, 512), mode="reflect")
    re = F.conv1d(x, sd["spectrogram_extractor.stft.conv_real.weight"], stride=320)
    im = F.conv1d(x, sd["spectrogram_extractor.stft.conv_imag.weight"], stride=320)
    power = (re ** 2 + im ** 2).transpose(1, 2)[:, None]  # (B, 1, frames, 513)
    x = 10 * torch.log10(torch.clamp(power @ sd["logmel_extractor.melW"], min=1e-10))
    frames = x.shape[2]
    x = bn(x.transpose(1, 3), "bn0").transpose(1, 3)
    for i in range(1, 7):
        p = f"conv_block{i}"
        x = F.relu(bn(F.conv2d(x, sd[f"{p}.conv1.weight"], padding=1), f"{p}.bn1"))
        x = F.relu(bn(F.conv2d(x, sd[f"{p}.conv2.weight"], padding=1), f"{p}.bn2"))
        if i < 6:
            x = F.avg_pool2d(x, 2)
    x = x.mean(dim=3)
    fc1 = lambda h: F.relu(F.linear(h, sd["fc1.weight"], sd["fc1.bias"]))  # noqa: E731
    head = lambda h: torch.sigmoid(F.linear(h, sd["fc_audioset.weight"], sd["fc_audioset.bias"]))  # noqa: E731
    if decision_level is None:
        emb = fc1(torch.max(x, dim=2)[0] + torch.mean(x, dim=2))
        return {"clipwise_output": head(emb), "embedding": emb}
    x = F.max_pool1d(x, 3, 1, 1) + F.avg_pool1d(x, 3, 1, 1)
    seg = head(fc1(x.transpose(1, 2)))
    up = seg[:, :, None, :].repeat(1, 1, 32, 1).reshape(seg.shape[0], -1, seg.shape[2])
    up = torch.cat([up, up[:, -1:].repeat(1, frames - up.shape[1], 1)], dim=1)
    return {"clipwise_output": seg.max(dim=1)[0], "framewise_output": up}


@pytest.fixture(scope="module")
def state():
    return official_state_dict()


@pytest.fixture(scope="module")
def wave():
    g = torch.Generator().manual_seed(1)
    t = torch.arange(24000) / 32000
    return (0.3 * torch.sin(2 * math.pi * 440 * t) + 0.05 * torch.randn(24000, generator=g))[None].repeat(2, 1) * \
        torch.tensor([[1.0], [0.3]])


@pytest.fixture(scope="module")
def release_file(state, tmp_path_factory):
    path = tmp_path_factory.mktemp("panns") / "Cnn14.pth"
    torch.save({"model": state, "iteration": 0}, path)
    return path


@pytest.fixture(scope="module")
def fresh():
    return Cnn14()


@pytest.mark.parametrize("decision_level", [None, "max"])
def test_official_layout_loads_and_matches_reference(state, wave, decision_level, release_file):
    model = Cnn14.from_panns(release_file, decision_level=decision_level)
    assert not model.training
    with torch.no_grad():
        out = model(wave)
        ref = reference(state, wave, decision_level)
    assert out["clipwise_output"].shape == (2, 527) and out["embedding"].shape == (2, 2048)
    torch.testing.assert_close(out["clipwise_output"], ref["clipwise_output"], rtol=0, atol=1e-4)
    if decision_level is None:
        torch.testing.assert_close(out["embedding"], ref["embedding"], rtol=1e-4, atol=1e-4)
    else:
        assert out["framewise_output"].shape == (2, 76, 527)  # 2 segments x 32 frames + 12 padded
        torch.testing.assert_close(out["framewise_output"], ref["framewise_output"], rtol=0, atol=1e-4)
        assert 0.01 < float(out["framewise_output"].std())  # not a constant output


def test_fresh_front_end_is_a_hann_power_stft_and_slaney_mel(fresh):
    model = fresh
    keys = set(model.state_dict())
    assert keys == set(official_state_dict())
    wave = torch.randn(1, 8000)
    power = model.spectrogram_extractor(wave)[:, 0]
    spec = torch.stft(wave, 1024, 320, window=torch.hann_window(1024), center=True, pad_mode="reflect", return_complex=True)
    torch.testing.assert_close(power, spec.abs().square().transpose(1, 2), rtol=1e-3, atol=1e-3)
    librosa = pytest.importorskip("librosa")
    mel = librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T
    torch.testing.assert_close(model.logmel_extractor.melW, torch.from_numpy(mel).float(), rtol=1e-4, atol=1e-6)


def test_foreign_or_unsafe_checkpoints_are_refused(state, fresh, tmp_path):
    bad = {k: torch.zeros(1) for k in state if k != "fc1.bias"}
    bad["head.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match="missing .*fc1.bias.*unexpected .*head.weight"):
        fresh.load_release_state(bad)
    wrong = dict(state, **{"fc_audioset.weight": torch.zeros(10, 2048)})
    with pytest.raises(ValueError, match="fc_audioset.weight has shape"):
        fresh.load_release_state(wrong)
    torch.save({"model": {"fc1.bias": torch.zeros(1)}, "why": torch.nn.Linear(1, 1)}, tmp_path / "code.pth")
    with pytest.raises(ValueError, match="weights-only"):
        Cnn14.from_panns(tmp_path / "code.pth")
    with pytest.raises(FileNotFoundError, match="not found"):
        Cnn14.from_panns(tmp_path / "absent.pth")


def test_latent_picks_classes_and_checks_input(release_file):
    cnn = Cnn14.from_panns(release_file, decision_level="max")
    latent = PannsLatent(cnn.eval(), VOCAL_CLASSES, sample_rate=16000)
    wave = torch.randn(1, 8000) * 0.1
    out = latent(wave)
    assert out.shape == (1, 51, len(VOCAL_CLASSES)) and latent.frame_rate == 100
    with torch.no_grad():
        full = cnn(resample(wave, 16000, 32000))
    torch.testing.assert_close(out, full["framewise_output"][..., list(VOCAL_CLASSES)])
    cnn.decision_level = None
    with pytest.raises(ValueError, match="decision-level"):
        PannsLatent(cnn)
    cnn.decision_level = "max"
    with pytest.raises(ValueError, match="classes"):
        PannsLatent(cnn, (600,))
    with pytest.raises(ValueError, match="wave"):
        cnn(torch.randn(32000))
