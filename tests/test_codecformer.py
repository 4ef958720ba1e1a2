"""sepkit.models.codecformer: parameter count, shapes, the frozen codec, one attention pass."""
import pytest
import torch

from sepkit.codecs import DAC, IdentityCodec
from sepkit.models.codecformer import Codecformer
from sepkit.nn import MultiheadAttention


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small convolutions run faster on one thread than on an oversubscribed shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# 16 kHz layout (hop 320, 50 frames/s, 1024 latent channels) with a tiny encoder and decoder.
CODEC_1024 = dict(encoder_dim=4, encoder_rates=[2, 4, 5, 8], latent_dim=1024, decoder_dim=32, decoder_rates=[8, 5, 4, 2],
                  n_codebooks=2, codebook_size=16, codebook_dim=4, sample_rate=16000)
TINY_CODEC = dict(CODEC_1024, latent_dim=16)
SMALL = dict(d_model=32, nhead=4, dim_feedforward=64, n_layers=2)


@pytest.fixture(scope="module")
def full_model():
    torch.manual_seed(0)
    return Codecformer(DAC(**CODEC_1024)).eval()


def test_default_configuration_parameter_count(full_model):
    # 1x1 1024 -> 256, 16 layers (d 256, 8 heads, FFN 1024), 1x1 256 -> 2 x 1024, gated Snake head
    assert full_model.trainable_parameters() == 16_577_280
    assert sum(p.numel() for p in full_model.parameters() if p.requires_grad) == 16_577_280
    assert len(full_model.transformer.layers) == 16
    layer = full_model.transformer.layers[0]
    assert layer.self_attn.num_heads == 8 and layer.linear1.out_features == 1024 and layer.dropout.p == 0.1
    assert layer.norm_first
    # each further source adds one 1024-channel slice of the output projection
    three = Codecformer(DAC(**CODEC_1024), n_src=3)
    assert three.trainable_parameters() - full_model.trainable_parameters() == 256 * 1024 + 1024


def test_ten_seconds_of_latents_in_one_attention_pass(full_model, monkeypatch):
    seen = []
    forward = MultiheadAttention.forward

    def spy(self, x, *args, **kwargs):
        seen.append(tuple(x.shape))
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(MultiheadAttention, "forward", spy)
    frames = int(10 * full_model.codec.frame_rate)
    assert frames == 500
    z = torch.randn(1, 1024, frames)
    with torch.no_grad():
        masks = full_model.masks(z)
    assert masks.shape == (1, 2, 1024, frames) and torch.isfinite(masks).all()
    assert seen == [(1, frames, 256)] * 16  # every layer attends over all 500 frames at once


@pytest.mark.parametrize("n_src,length", [(2, 1), (2, 4003), (3, 2501)])
def test_forward_shapes_with_resampling(n_src, length):
    torch.manual_seed(0)
    model = Codecformer(DAC(**TINY_CODEC), n_src=n_src, **SMALL).eval()
    mixture = 0.1 * torch.randn(2, length)
    with torch.no_grad():
        out = model(mixture)
        z = model.encode(mixture)
    assert out.shape == (2, n_src, length) and torch.isfinite(out).all()
    assert z.shape == (2, 16, -(-2 * length // 320))  # 8 kHz -> 16 kHz, then one frame per 320 samples
    with torch.no_grad():
        assert model(mixture[:, None]).shape == (2, n_src, length)
        assert model.round_trip(mixture).shape == mixture.shape


def test_codec_is_frozen_and_gradient_reaches_the_masker():
    torch.manual_seed(0)
    model = Codecformer(DAC(**TINY_CODEC), quantize=True, **SMALL)
    model.train()
    assert not model.codec.training and model.transformer.training
    assert all(not p.requires_grad for p in model.codec.parameters())
    out = model(0.1 * torch.randn(2, 2000))
    out.pow(2).mean().backward()
    assert all(p.grad is None for p in model.codec.parameters())
    assert model.conv_in.weight.grad.abs().sum() > 0 and model.head.mask_act.alpha.grad.abs().sum() > 0


def test_separator_state_dict_loads_without_codec_weights():
    torch.manual_seed(0)
    model = Codecformer(DAC(**TINY_CODEC), **SMALL).eval()
    separator = {k: v for k, v in model.state_dict().items() if not k.startswith("codec.")}
    torch.manual_seed(1)
    other = Codecformer(DAC(**TINY_CODEC), **SMALL).eval()
    other.codec.load_state_dict(model.codec.state_dict())
    other.load_state_dict(separator)
    mixture = 0.1 * torch.randn(1, 1500)
    with torch.no_grad():
        torch.testing.assert_close(other(mixture), model(mixture), rtol=0, atol=0)
    del separator["conv_in.weight"]
    with pytest.raises(RuntimeError, match="conv_in.weight"):
        other.load_state_dict(separator)


def test_identity_codec_at_the_model_rate():
    torch.manual_seed(0)
    model = Codecformer(IdentityCodec(8000), n_src=2, **SMALL).eval()
    mixture = torch.randn(2, 333)
    with torch.no_grad():
        assert torch.equal(model.round_trip(mixture), mixture)  # same rate: no resampling, exact codec
        assert model(mixture).shape == (2, 2, 333)


def test_errors():
    with pytest.raises(TypeError, match="Codec"):
        Codecformer(torch.nn.Linear(2, 2))
    model = Codecformer(IdentityCodec(8000), **SMALL)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.zeros(2, 2, 100))
    with pytest.raises(ValueError, match="n_src"):
        Codecformer(IdentityCodec(8000), n_src=0)
    with pytest.raises(ValueError, match=r"\(B, 1, F\)"):
        model.masks(torch.zeros(1, 3, 10))


# -- the codecformer and codec tasks ---------------------------------------------------------------

TINY_DATA = {"dataset": "synthetic", "sample_rate": 8000, "n_src": 2, "segment": 0.25, "batch_size": 2,
             "synthetic": {"num_train": 4, "num_valid": 1, "num_test": 1, "min_duration": 0.5, "max_duration": 0.5}}
TINY_TRAIN = {"max_steps": 2, "eval_every": 2, "ckpt_every": 2, "log_every": 1, "max_valid_items": 1}


def codecformer_config(**model_args):
    from sepkit.train.config import config_from_dict

    return config_from_dict({"recipe": "codecformer-test", "task": "codecformer", "data": TINY_DATA,
                             "model": {"name": "codecformer", "args": {**SMALL, **model_args}}, "train": TINY_TRAIN})


def test_task_without_codec_weights_names_the_key(tmp_path):
    from sepkit.train import ConfigError, make_task

    task = make_task(codecformer_config())
    with pytest.raises(ConfigError, match="model.args.codec_weights is required"):
        task.build_model()
    task = make_task(codecformer_config(codec_weights=str(tmp_path / "absent.pth")))
    with pytest.raises(ConfigError, match="model.args.codec_weights=.*not found"):
        task.build_model()
    torch.save({"weights": {}}, tmp_path / "foreign.pth")
    task = make_task(codecformer_config(codec_weights=str(tmp_path / "foreign.pth")))
    with pytest.raises(ConfigError, match="model.args.codec_weights=.*'state_dict'"):
        task.build_model()
    with pytest.raises(ConfigError, match="model.args.hop"):
        make_task(codecformer_config(hop=3))


def test_transmitted_targets_are_cached(tmp_path, monkeypatch):
    from sepkit.train import make_task

    DAC(**TINY_CODEC).save(tmp_path / "codec.pth")
    task = make_task(codecformer_config(codec_weights=str(tmp_path / "codec.pth")))
    model = task.build_model()
    assert task.frozen(model) == ("codec",)
    calls = []
    round_trip = Codecformer.round_trip
    monkeypatch.setattr(Codecformer, "round_trip", lambda self, w, **k: calls.append(w.shape[0]) or round_trip(self, w, **k))
    batch = {"mixture": torch.randn(2, 2000) * 0.1, "sources": torch.randn(2, 2, 2000) * 0.1, "id": ["a", "b"]}
    first = task.transmitted(model, batch)
    again = task.transmitted(model, batch)
    assert torch.equal(first, again) and calls == [2]
    batch["sources"][1] += 0.01  # same id, other samples (a new random crop): recomputed
    task.transmitted(model, batch)
    assert calls == [2, 1]
    loss, _ = task.training_step(model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_demo_pipeline_trains_the_codec_then_the_separator(tmp_path):
    import yaml
    from safetensors.torch import load_file

    from sepkit.train import load_trained, train

    codec_recipe = tmp_path / "codec.yaml"
    codec_recipe.write_text(yaml.safe_dump({
        "recipe": "codec-test", "task": "codec", "task_args": {"stft_windows": [64, 16], "unquantized_weight": 1.0},
        "data": TINY_DATA, "model": {"name": "dac", "args": {k: v for k, v in TINY_CODEC.items() if k != "sample_rate"}},
        "train": TINY_TRAIN}))
    cfg = codecformer_config()
    cfg.task_args = {"codec_recipe": str(codec_recipe)}
    result = train(cfg, tmp_path / "run", progress=False)
    assert {"si_sdr", "si_sdri", "si_sdri_rt", "csi_sdr"} <= set(result["test"])
    assert all(torch.isfinite(torch.tensor(v[0])) for v in result["test"].values())
    weights = tmp_path / "run" / "prereq-codec"          # the codec's run folder is the prerequisite
    assert (weights / "checkpoints" / "LATEST").is_file()
    ckpt = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))[-1]
    assert not any(k.startswith("codec.") for k in load_file(ckpt / "model.safetensors"))
    task, model = load_trained(tmp_path / "run")
    assert task.cfg.model.args["codec_weights"] == str(weights)
    out = task.infer(model, 0.1 * torch.randn(3001), 8000)
    assert sorted(out) == ["s1", "s2"] and all(v.shape == (3001,) for v in out.values())
    codec_task, codec = load_trained(tmp_path / "run" / "prereq-codec")
    assert codec_task.infer(codec, 0.1 * torch.randn(901), 8000)["decoded"].shape == (901,)


def test_mac_count_matches_the_formula_and_the_paper_ratio():
    from perf.bench_codecformer import count_macs

    macs = count_macs(1.0)
    frames, d, latent, ff, layers, S = 50, 256, 1024, 1024, 16, 2
    per_frame = (latent * d + layers * (4 * d * d + 2 * d * ff + 2 * frames * d)  # projections, FFN, QK^T and AV
                 + d * S * latent + S * 3 * latent * latent)                         # conv_out, gated head
    assert macs["codecformer_separator"] == frames * per_frame
    assert macs["codecformer_with_codec"] > macs["dac_encoder"] + macs["dac_decoder_2_sources"]
    assert macs["sepformer_over_separator"] > 40  # the paper: about 52x fewer MACs than Sepformer
