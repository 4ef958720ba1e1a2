"""Ex-Diff: latent cross-attention in NCSN++ (padding, placements, zero start), the guided model,
the speech-activity detector and the VoiceBank-DEMAND / MUSDB18 loaders."""
import numpy as np
import pytest
import torch

from sepkit.data.audio import write_audio
from sepkit.data.musdb import MUSDB18
from sepkit.data.voicebank import VoiceBankDemand
from sepkit.models.exdiff import ExDiff, resample_frames
from sepkit.models.ncsnpp import LatentCrossAttention, NCSNpp
from sepkit.models.sad import SpeechActivityDetector, activity_labels


def guided(placements=("bottleneck",), latent_dim=3):
    torch.manual_seed(0)
    return NCSNpp(nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), latent_dim=latent_dim,
                  placements=placements, cross_heads=2, pe_dim=8)


def randomise_cross(net):
    """A fresh network starts near-constant (zero-initialised output convolutions and projections,
    cross-attention included): give every zero-initialised weight random values."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in net.parameters():
            if float(p.abs().max()) < 1e-4:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def inputs(b=2, frames=8):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 1, 256, frames, dtype=torch.cfloat, generator=g)
    y = torch.randn(b, 1, 256, frames, dtype=torch.cfloat, generator=g)
    return x, y, torch.tensor([0.7, 0.2])[:b]


def test_padded_latents_do_not_change_valid_outputs():
    net = guided()
    randomise_cross(net)
    net.eval()
    x, y, t = inputs()
    lat = torch.rand(2, 9, 3)
    lengths = torch.tensor([9, 5])
    padded = lat.clone()
    padded[1, 5:] = float("nan")  # whatever lies past a length must not matter
    with torch.no_grad():
        both = net(x, y, t, padded, lengths)
        alone = net(x[1:], y[1:], t[1:], lat[1:, :5])
        first = net(x[:1], y[:1], t[:1], lat[:1])
    torch.testing.assert_close(both[1:], alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both[:1], first, rtol=1e-4, atol=1e-5)
    assert bool(torch.isfinite(torch.view_as_real(both)).all())


def test_latents_steer_the_output_only_once_trained():
    net = guided().eval()
    x, y, t = inputs()
    a, b = torch.zeros(2, 8, 3), torch.ones(2, 8, 3)
    with torch.no_grad():
        assert torch.equal(net(x, y, t, a), net(x, y, t, b))  # zero-initialised output projection
        randomise_cross(net)
        assert not torch.allclose(net(x, y, t, a), net(x, y, t, b), atol=1e-4)


@pytest.mark.parametrize("placements,count", [(("bottleneck",), 1), ((128,), 2), (("bottleneck", 64), 3)])
def test_placements(placements, count):
    net = guided(placements)
    blocks = [m for m in net.modules() if isinstance(m, LatentCrossAttention)]
    assert len(blocks) == count
    randomise_cross(net)
    x, y, t = inputs(frames=4)
    out = net(x, y, t, torch.rand(2, 6, 3))
    assert out.shape == x.shape
    out.abs().sum().backward()
    assert all(b.attn.q_proj_weight.grad is not None for b in blocks)


def test_bad_latents_and_placements():
    net = guided()
    x, y, t = inputs()
    with pytest.raises(ValueError, match="pass latents"):
        net(x, y, t)
    with pytest.raises(ValueError, match="latents must have shape"):
        net(x, y, t, torch.rand(2, 8, 4))
    with pytest.raises(ValueError, match="kv_lengths"):
        net(x, y, t, torch.rand(2, 8, 3), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="placements"):
        guided(placements=(17,))


def test_resample_frames_is_linear_in_time():
    lat = torch.arange(5.0)[None, :, None].repeat(1, 1, 2)  # value = frame index at 100 frames/s
    out = resample_frames(lat, 100.0, 125.0, 7)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([0.0, 0.8, 1.6, 2.4, 3.2, 4.0, 4.0]))


class StepLatent(torch.nn.Module):
    """A callable extractor: 1 where the wave is loud, at 100 frames/s."""
    frame_rate = 100.0

    def forward(self, wave):
        frames = wave.unfold(-1, 160, 160).abs().amax(-1)
        return (frames > 0.05).float()[..., None]


def test_exdiff_latents_loss_and_enhance():
    torch.manual_seed(0)
    model = ExDiff(guided(latent_dim=1), StepLatent())
    wave = torch.zeros(2, 4000)
    wave[:, 2000:] = 0.3 * torch.randn(2, 2000)
    lat = model.latents(wave)
    assert lat.shape == (2, 1 + 4000 // 128, 1)
    assert float(lat[0, :12].max()) == 0.0 and float(lat[0, 18:].min()) == 1.0
    loss = model.loss(wave * 0.5, wave + 0.01)
    loss.backward()
    assert torch.isfinite(loss)
    out = model.enhance(wave + 0.01, steps=1)
    assert out.shape == wave.shape and bool(torch.isfinite(out).all())
    with pytest.raises(ValueError, match="cross-attention"):
        ExDiff(NCSNpp(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=()), StepLatent())
    with pytest.raises(ValueError, match="D=1 but the backbone takes latent_dim=3"):
        ExDiff(guided(latent_dim=3), StepLatent()).latents(wave)


def test_activity_labels_and_detector_shapes():
    wave = torch.zeros(1, 16000)
    wave[0, 4000:8000] = 0.5 * torch.sin(torch.arange(4000) * 0.3)
    labels = activity_labels(wave)
    assert labels.shape == (1, 126)
    assert float(labels[0, :28].max()) == 0 and float(labels[0, 34:60].min()) == 1 and float(labels[0, 66:].max()) == 0
    assert float(activity_labels(torch.zeros(1, 1000)).max()) == 0
    sad = SpeechActivityDetector()
    with torch.no_grad():
        probs = sad(wave)
    assert probs.shape == (1, 126, 1) and float(probs.min()) >= 0 and float(probs.max()) <= 1
    assert sad.frame_rate == 125 and sad.dim == 1
    with pytest.raises(ValueError, match="wave"):
        sad(torch.zeros(16000))


def test_detector_learns_activity():
    torch.manual_seed(0)
    sad = SpeechActivityDetector(channels=8, layers=2)
    opt = torch.optim.Adam(sad.parameters(), lr=2e-2)
    g = torch.Generator().manual_seed(0)
    clean = torch.zeros(4, 6000)
    for i in range(4):
        s = 500 + 1000 * i
        clean[i, s:s + 2000] = 0.5 * torch.sin(torch.arange(2000) * (0.2 + 0.05 * i))
    noisy = clean + 0.02 * torch.randn(clean.shape, generator=g)
    labels = activity_labels(clean)
    for _ in range(30):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(sad.logits(noisy), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = float(((sad(noisy)[..., 0] > 0.5).float() == labels).float().mean())
    assert acc > 0.9, acc


# --------------------------------------------------------------------------------- loaders

def test_voicebank_loader(tmp_path):
    rng = np.random.default_rng(0)
    for kind in ("trainset_28spk", "testset"):
        for name in (["p226_001", "p230_002", "p230_003"] if kind != "testset" else ["p232_001"]):
            clean = 0.1 * rng.standard_normal(48000 // 2).astype(np.float32)
            write_audio(tmp_path / f"clean_{kind}_wav" / f"{name}.wav", clean, 48000, subtype="FLOAT")
            write_audio(tmp_path / f"noisy_{kind}_wav" / f"{name}.wav", clean + 0.05, 48000, subtype="FLOAT")
    train = VoiceBankDemand(tmp_path, "train")
    valid = VoiceBankDemand(tmp_path, "valid")
    test = VoiceBankDemand(tmp_path, "test")
    assert (len(train), len(valid), len(test)) == (2, 1, 1)
    item = train[0]
    assert item["id"] == "p230_002" and item["mixture"].shape == (8000,) and item["sources"].shape == (1, 8000)
    torch.testing.assert_close(item["mixture"][100:-100] - item["sources"][0, 100:-100], torch.full((7800,), 0.05),
                               rtol=0, atol=2e-3)
    crop = VoiceBankDemand(tmp_path, "train", segment=1.0)[1]
    assert crop["mixture"].shape == (16000,) and float(crop["mixture"][8100:].abs().max()) == 0  # zero-padded
    with pytest.raises(FileNotFoundError, match="clean_trainset_56spk_wav"):
        VoiceBankDemand(tmp_path, "train", speakers="56spk")
    with pytest.raises(ValueError, match="split"):
        VoiceBankDemand(tmp_path, "dev")


def test_musdb_loader(tmp_path):
    rng = np.random.default_rng(0)
    for split, tracks in (("train", ["A - one", "B - two"]), ("test", ["C - three"])):
        for track in tracks:
            vocals = 0.1 * rng.standard_normal((44100, 2)).astype(np.float32)
            rest = 0.1 * rng.standard_normal((44100, 2)).astype(np.float32)
            write_audio(tmp_path / split / track / "vocals.wav", vocals.T, 44100, subtype="FLOAT")
            write_audio(tmp_path / split / track / "mixture.wav", (vocals + rest).T, 44100, subtype="FLOAT")
    train = MUSDB18(tmp_path, "train", valid_tracks=("B - two",))
    valid = MUSDB18(tmp_path, "valid", valid_tracks=("B - two",))
    assert (len(train), len(valid), len(MUSDB18(tmp_path, "test"))) == (1, 1, 1)
    item = train[0]
    assert item["id"] == "A - one" and item["mixture"].shape == (16000,) and item["sources"].shape == (1, 16000)
    crop = MUSDB18(tmp_path, "train", segment=0.5)[0]
    assert crop["mixture"].shape == (8000,)
    (tmp_path / "test" / "C - three" / "vocals.wav").unlink()
    with pytest.raises(FileNotFoundError, match="vocals.wav"):
        MUSDB18(tmp_path, "test")


# ------------------------------------------------------------------------------ the task

def tiny_recipe(model="exdiff", uss_ckpt=None, **task_args):
    from sepkit.train.config import config_from_dict

    return config_from_dict({
        "recipe": f"{model}-tiny", "task": "diffusion",
        "task_args": {"steps": 1, "valid_steps": 1, "sad_steps": 2, "sad_batch": 2, "perceptual": False,
                      "sad_model": {"channels": 4, "layers": 1}, "pause_range": [0.05, 0.1], **task_args},
        "data": {"dataset": "synthetic", "sample_rate": 16000, "n_src": 1, "segment": 0.25, "batch_size": 2,
                 "synthetic": {"num_train": 4, "num_valid": 1, "num_test": 1, "min_duration": 0.4,
                               "max_duration": 0.4, "num_speakers": 4}},
        "model": {"name": model, "args": {"config": "small", "nf": 8, "ch_mult": [1, 2], "attn_resolutions": [],
                                          **({"uss": "sad", "cross_heads": 2, "pe_dim": 8} if model == "exdiff" else {}),
                                          **({"uss_ckpt": uss_ckpt} if uss_ckpt else {})}},
        "optim": {"lr": 1e-3},
        "train": {"max_steps": 2, "eval_every": 2, "ckpt_every": 2, "log_every": 1, "ema": 0.5, "max_valid_items": 1},
    })


@pytest.fixture(scope="module")
def exdiff_run(tmp_path_factory):
    from sepkit.train import train

    run = tmp_path_factory.mktemp("exdiff") / "run"
    train(tiny_recipe(), run, progress=False, test=False)
    return run


def test_exdiff_run_trains_the_detector_first_and_samples_with_ema(exdiff_run):
    from sepkit.train import load_trained
    from sepkit.train.checkpoint import read_weights, resolve_checkpoint

    assert (exdiff_run / "prereq-sad" / "checkpoints" / "LATEST").is_file()
    task, model = load_trained(exdiff_run)
    assert isinstance(model.extractor, SpeechActivityDetector)
    ckpt = resolve_checkpoint(exdiff_run)
    ema, raw = read_weights(ckpt, "ema.safetensors"), read_weights(ckpt, "model.safetensors")
    assert not any(k.startswith("extractor.") for k in raw)  # frozen: loaded from model.args.uss_ckpt
    own = model.state_dict()
    differ = [k for k in ema if not torch.equal(ema[k], raw[k])]
    assert differ and all(torch.equal(own[k], ema[k]) for k in ema)  # sampling uses the EMA weights
    sad = read_weights(resolve_checkpoint(exdiff_run / "prereq-sad"), "model.safetensors")
    assert all(torch.equal(model.extractor.state_dict()[k], v) for k, v in sad.items())


def test_infer_resamples_a_48k_file_with_a_notice(exdiff_run, capsys):
    from sepkit.train import load_trained

    task, model = load_trained(exdiff_run)
    wave = 0.1 * torch.randn(48000 // 4)
    out = task.infer(model, wave, 48000, steps=1, chunk=8.0, overlap=1.0)  # as sepkit separate calls it
    assert out["enhanced"].shape == wave.shape and bool(torch.isfinite(out["enhanced"]).all())
    assert "resampling 48000 Hz -> 16000 Hz" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--steps"):
        task.infer(model, wave, 48000, steps=0)
    with pytest.raises(ValueError, match="--target-slot"):
        task.check_options(model, {"target_slot": 1})


def test_a_long_recording_is_sampled_chunk_by_chunk(exdiff_run, tmp_path, monkeypatch, audio_reads):
    """The sampler's memory grows with the length it samples: a long recording goes in
    cross-faded chunks, and from file to file block by block, as the separators' do."""
    from sepkit.cli import main
    from sepkit.data import read_audio
    from sepkit.train import load_trained

    task, model = load_trained(exdiff_run)
    x = 0.1 * torch.randn(16000 * 3 + 5, generator=torch.Generator().manual_seed(4))
    calls = []
    real = model.enhance

    def spy(noisy, *args, **kwargs):
        out = real(noisy, *args, **kwargs)
        calls.append((noisy.shape[-1], out.detach().clone()))
        return out

    monkeypatch.setattr(model, "enhance", spy)
    out = task.infer(model, x, 16000, steps=1, chunk=1.0, overlap=0.25)["enhanced"]
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
    assert [n for n, _ in calls] == [16000, 16000, 16000, 12005]  # chunks start every 0.75 s
    torch.testing.assert_close(out[:12000], calls[0][1][0, :12000])  # before the first cross-fade

    write_audio(tmp_path / "long.wav", x, 16000, subtype="FLOAT")
    audio_reads.clear()
    assert main(["separate", "--ckpt", str(exdiff_run), str(tmp_path / "long.wav"), "-o", str(tmp_path / "out"),
                 "--steps", "1", "--chunk", "1", "--overlap", "0.25"]) == 0
    assert audio_reads and all(0 < n <= 16000 for n in audio_reads)  # never the whole file
    got, rate = read_audio(tmp_path / "out" / "long_enhanced.wav")
    assert rate == 16000 and got.shape == x.shape


def test_missing_uss_weights_are_a_clear_error(tmp_path):
    from sepkit.train import CheckpointError, ConfigError, make_task

    with pytest.raises(ConfigError, match="model.args.uss_ckpt is required"):
        make_task(tiny_recipe()).build_model()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="uss_ckpt=.*no USS"):
        make_task(tiny_recipe(uss_ckpt=str(tmp_path / "empty"))).build_model()
    cfg = tiny_recipe(uss_ckpt=str(tmp_path / "x.pth"))
    cfg.model.args["uss"] = "panns"
    torch.save({"model": {"fc1.weight": torch.zeros(1)}}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="uss_ckpt=.*Cnn14"):
        make_task(cfg).build_model()
    cfg = tiny_recipe("sgmse")
    cfg.model.args["uss"] = "sad"  # a guidance argument on the unguided model
    with pytest.raises(ConfigError, match="model.args: unknown key"):
        make_task(cfg)


def test_sgmse_task_metrics_and_pauses():
    from sepkit.train import make_task
    from sepkit.metrics.activity import si_sir_sar, silent_frame_db

    task = make_task(tiny_recipe("sgmse", pauses=1, pause_range=[0.1, 0.1]))
    item = task.dataset("test")[0]
    clean, noisy = item["sources"][0], item["mixture"]
    gap = (clean == 0).nonzero()
    assert 0.09 * 16000 <= len(gap) <= 0.11 * 16000  # one 0.1 s pause
    raw = task.dataset("test").dataset[0]
    torch.testing.assert_close(noisy - clean, raw["mixture"] - raw["sources"][0])  # the noise is untouched
    g = torch.Generator().manual_seed(0)
    s, n = torch.randn(8000, generator=g), torch.randn(8000, generator=g)
    sir, sar = si_sir_sar(s + 0.1 * n, s, n)
    assert sir == pytest.approx(20.0, abs=0.5) and sar > 60
    sir, sar = si_sir_sar(s + 0.1 * torch.randn(8000, generator=g), s, n)
    assert sir > 30 and sar == pytest.approx(20.0, abs=0.5)
    speech = torch.zeros(16000)
    speech[:8000] = torch.randn(8000, generator=g)
    assert silent_frame_db(speech + 0.01 * torch.randn(16000, generator=g), speech) == pytest.approx(-40.0, abs=1.0)
