"""TF-GridNet: parameter counts of both presets, shapes, any number of sources, odd and tiny lengths,
the attention and norms against float64 formulas, checkpointing, the frontend hook, errors, the
ESPnet loader and ``sepkit convert --from espnet``; parity with ESPnet's ``TFGridNetV2`` when espnet
is installed (a test-only baseline).

Forward/backward runs use reduced configurations; the presets are only instantiated."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from sepkit.cli import main
from sepkit.errors import CheckpointError, InputError
from sepkit.models import SEPARATORS, TFGridNet, build_separator
from sepkit.models.separators.tfgridnet import TFGRIDNET_CONFIGS, GridNetBlock, load_espnet

SMALL = dict(n_fft=32, hop_length=8, emb_dim=8, emb_ks=4, emb_hs=1, hidden=6, n_blocks=2, nhead=2, attn_qk_dim=40)
# The same configuration in ESPnet's TFGridNetV2 argument names.
SMALL_ESPNET = dict(n_fft=32, stride=8, emb_dim=8, emb_ks=4, emb_hs=1, lstm_hidden_units=6, n_layers=2,
                    attn_n_head=2, attn_approx_qk_dim=40)
ESPNET_DEFAULT_PARAMS = 8_175_874
PAPER_PARAMS = 14_435_602
TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _flush_denormals():
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small(**kwargs) -> TFGridNet:
    torch.manual_seed(0)
    return TFGridNet(**{**SMALL, **kwargs})


def _wave(batch: int, length: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, length, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _randomise(module: nn.Module, std: float = 0.3, seed: int = 0) -> None:
    """Perturb every parameter (norm scales and PReLU slopes included) so no path is trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def _espnet():
    pytest.importorskip("espnet2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from espnet2.enh.separator.tfgridnetv2_separator import TFGridNetV2
    return TFGridNetV2


def _espnet_out(model, x: torch.Tensor) -> torch.Tensor:
    lengths = torch.full((x.shape[0],), x.shape[-1])
    return torch.stack(model(x, lengths)[0], dim=1)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


# ---------------------------------------------------------------- parameter counts

def test_preset_parameter_counts():
    assert n_params(TFGridNet()) == ESPNET_DEFAULT_PARAMS
    assert n_params(TFGridNet(config="paper")) == PAPER_PARAMS
    assert round(PAPER_PARAMS / 1e6, 1) == 14.4  # the paper's table
    assert TFGRIDNET_CONFIGS["paper"]["emb_dim"] == 64 and TFGRIDNET_CONFIGS["paper"]["hidden"] == 256
    # One more source adds 2 output channels of the 3x3 transposed convolution (D x 2 x 9 + 2).
    assert n_params(TFGridNet(n_src=3)) - ESPNET_DEFAULT_PARAMS == 48 * 2 * 9 + 2


def test_preset_parameter_counts_match_espnet():
    TFGridNetV2 = _espnet()
    assert n_params(TFGridNetV2(None)) == ESPNET_DEFAULT_PARAMS
    assert n_params(TFGridNetV2(None, emb_dim=64, lstm_hidden_units=256)) == PAPER_PARAMS
    for kw in ({"emb_dim": 128, "emb_ks": 1, "emb_hs": 1}, {"n_srcs": 3, "n_fft": 256, "stride": 128}):
        ours = {"emb_dim": "emb_dim", "emb_ks": "emb_ks", "emb_hs": "emb_hs", "n_srcs": "n_src", "n_fft": "n_fft",
                "stride": "hop_length"}
        assert n_params(TFGridNet(**{ours[k]: v for k, v in kw.items()})) == n_params(TFGridNetV2(None, **kw))


def test_registered_for_recipes():
    assert SEPARATORS["tfgridnet"] is TFGridNet
    assert isinstance(build_separator("TF-GridNet", n_src=3, **SMALL), TFGridNet)
    from sepkit.train.config import load_recipe

    for preset, count in ((None, ESPNET_DEFAULT_PARAMS), ("librimix", ESPNET_DEFAULT_PARAMS)):
        cfg = load_recipe("tfgridnet", preset)
        assert cfg.model.name == "tfgridnet" and cfg.data.sample_rate == 8000 and cfg.data.segment == 4.0
        assert n_params(build_separator(cfg.model.name, n_src=cfg.data.n_src, **cfg.model.args)) == count
    demo = load_recipe("tfgridnet", "demo")
    assert demo.data.dataset == "synthetic"
    model = build_separator(demo.model.name, n_src=demo.data.n_src, **demo.model.args)
    assert n_params(model) < 200_000


# ---------------------------------------------------------------- forward / backward

@pytest.mark.parametrize("n_src", [1, 2, 3])
@pytest.mark.parametrize("length", [803, 1001])
def test_forward_backward_any_sources_odd_lengths(n_src, length):
    model = small(n_src=n_src)
    _randomise(model, std=0.1)
    assert length % model.hop_length != 0
    x = _wave(2, length).requires_grad_()
    y = model(x)
    assert y.shape == (2, n_src, length) and torch.isfinite(y).all()
    (y * _wave(2, n_src * length, seed=1).view_as(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_input_layouts_tiny_lengths_and_scale():
    model = small().eval()
    x = _wave(3, 99)
    with torch.no_grad():
        assert torch.equal(model(x), model(x[:, None]))
        for length in (1, 5, 16, 17, 33):  # 16 and shorter cannot be reflected by the centred STFT
            y = model(_wave(1, length))
            assert y.shape == (1, 2, length) and torch.isfinite(y).all()
        # variance normalisation: the output follows the input's scale, and silence gives silence
        torch.testing.assert_close(model(7.0 * x), 7.0 * model(x), rtol=1e-4, atol=1e-5)
        assert model(torch.zeros(2, 200)).abs().max() < 1e-6
    assert model.num_frames(99) == 99 // 8 + 1


@pytest.mark.parametrize("ks,hs", [(4, 1), (3, 2), (2, 2), (1, 1)])
def test_float32_matches_float64(ks, hs):
    model = small(emb_ks=ks, emb_hs=hs).eval()
    _randomise(model, std=0.2)
    x = _wave(2, 517, seed=4, dtype=torch.float64)
    with torch.no_grad():
        ref = model.double()(x)
        out = model.float()(x.float())
    assert _rel(out.double(), ref) < 1e-4


def test_attention_path_matches_the_formula_in_float64():
    """The attention branch against a direct float64 computation of the paper's formula (no ESPnet)."""
    torch.manual_seed(1)
    block = GridNetBlock(emb_dim=8, emb_ks=4, emb_hs=1, n_freqs=17, hidden=6, nhead=2, attn_qk_dim=40).double()
    _randomise(block, std=0.3, seed=2)
    z = torch.randn(2, 17, 11, 8, dtype=torch.float64)  # (B, F, T, D)
    got = block._attention(z)  # (B, T, F, D)
    x = z.permute(0, 3, 2, 1)  # (B, D, T, F) as in the paper's notation
    H, E, Cv, Fq = 2, math.ceil(40 / 17), 4, 17

    def head_proj(conv, norm, channels):
        y = F.conv2d(x, conv.weight, conv.bias).view(2, H, channels, 11, Fq)
        y = torch.where(y >= 0, y, norm.act.weight.view(1, H, 1, 1, 1) * y)
        mu = y.mean(dim=(2, 4), keepdim=True)
        var = y.var(dim=(2, 4), unbiased=False, keepdim=True)
        y = (y - mu) / torch.sqrt(var + 1e-5) * norm.gamma + norm.beta
        return y.transpose(2, 3).reshape(2 * H, 11, channels * Fq)  # (B H, T, c F)

    q = head_proj(block.attn_conv_Q, block.attn_norm_Q, E)
    k = head_proj(block.attn_conv_K, block.attn_norm_K, E)
    v = head_proj(block.attn_conv_V, block.attn_norm_V, Cv)
    att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(E * Fq), dim=-1) @ v
    att = att.view(2, H, 11, Cv, Fq).permute(0, 1, 3, 2, 4).reshape(2, H * Cv, 11, Fq)
    proj, act, norm = block.attn_concat_proj
    y = act(F.conv2d(att, proj.weight, proj.bias))
    mu = y.mean(dim=(1, 3), keepdim=True)
    y = (y - mu) / torch.sqrt(y.var(dim=(1, 3), unbiased=False, keepdim=True) + 1e-5) * norm.gamma + norm.beta
    torch.testing.assert_close(got, y.permute(0, 2, 3, 1), rtol=1e-10, atol=1e-10)


def test_recurrent_path_matches_unfold_lstm_and_transposed_convolution():
    """The overlap-add of the transposed convolution against torch's ConvTranspose1d, in float64."""
    torch.manual_seed(3)
    for ks, hs in ((4, 1), (3, 2)):
        block = GridNetBlock(emb_dim=8, emb_ks=ks, emb_hs=hs, n_freqs=17, hidden=6, nhead=2, attn_qk_dim=40).double()
        _randomise(block, std=0.3)
        L = block._padded_size(13)
        x = torch.randn(2, 5, L, 8, dtype=torch.float64)
        x.requires_grad_()
        got = block._rnn_path(x, "intra")
        h = block.intra_norm(x).reshape(10, L, 8).transpose(1, 2)  # (N, D, L)
        seq = F.unfold(h[..., None], (ks, 1), stride=(hs, 1)).transpose(1, 2)
        ref = block.intra_linear(block.intra_rnn(seq)[0].transpose(1, 2)).transpose(1, 2).reshape(2, 5, L, 8)
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
        w = torch.randn_like(got)
        grads = [torch.autograd.grad((out * w).sum(), [x, block.intra_linear.weight, block.intra_rnn.weight_ih_l0])
                 for out in (got, ref)]
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_checkpointing_same_outputs_and_gradients():
    x = _wave(2, 803, seed=5)
    results = []
    for mode in ("none", "blocks"):
        model = small(checkpointing=mode).train()
        _randomise(model, std=0.1)
        y = model(x)
        (y * _wave(2, 2 * 803, seed=6).view_as(y)).sum().backward()
        results.append((y.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (y1, g1), (y2, g2) = results
    torch.testing.assert_close(y1, y2, rtol=1e-6, atol=1e-7)
    assert g1.keys() == g2.keys()
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_stores_less():
    from perf.saved import SavedTensors

    sizes = {}
    for mode in ("none", "blocks"):
        model = small(checkpointing=mode).train()
        with SavedTensors(model) as saved:
            model(_wave(1, 1601))
        sizes[mode] = saved.total_bytes
    assert sizes["blocks"] < 0.5 * sizes["none"]


# ---------------------------------------------------------------- frontend hook

class TinyFrontend(nn.Module):
    """Stand-in for a pretrained frontend: (B, T) -> (B, 6, T // 40)."""

    output_dim = 6

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 6, 40, stride=40)

    def forward(self, wave):
        return self.conv(wave[:, None])


def test_frontend_features_are_added_to_the_embedding():
    base = small().eval()
    hooked = small(frontend_dim=6).eval()
    hooked.load_state_dict(base.state_dict(), strict=False)
    x = _wave(2, 801)
    feats = torch.randn(2, 6, 13, generator=torch.Generator().manual_seed(3))  # any frame rate
    with torch.no_grad():
        assert torch.equal(hooked(x, frontend_features=feats), base(x))  # the adapter starts at zero
        nn.init.normal_(hooked.adapter.proj.weight)
        emb = hooked.embed(x, feats)
        frames = base.num_frames(801)
        assert emb.shape == (2, 8, frames, 17)
        want = base.embed(x) + hooked.adapter.proj(F.interpolate(feats, size=frames, mode="linear"))[..., None]
        torch.testing.assert_close(emb, want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(hooked(x, frontend_features=feats), base(x))
    with pytest.raises(InputError, match="expected \\(2, 6, T'\\)"):
        hooked(x, frontend_features=torch.randn(2, 5, 13))
    with pytest.raises(InputError, match="built without frontend_dim"):
        base(x, frontend_features=feats)


def test_frontend_module_runs_on_the_mixture_and_trains():
    model = small(frontend=TinyFrontend())
    assert model.adapter.frontend_dim == 6
    x = _wave(2, 803)
    model(x).square().mean().backward()
    assert model.adapter.proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(model(x), model(x, frontend_features=model.frontend(x)))
    with pytest.raises(InputError, match="frontend_dim"):
        small(frontend=nn.Conv1d(1, 4, 3))


# ---------------------------------------------------------------- errors

def test_bad_inputs_and_arguments_raise_clear_errors():
    model = small()
    with pytest.raises(InputError, match=r"\(B, T\) or \(B, 1, T\)"):
        model(torch.randn(2, 2, 100))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.ones(1, 100, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model([0.0] * 100)
    with pytest.raises(InputError, match="no samples"):
        model(torch.zeros(1, 0))
    for kwargs, match in [({"n_src": 0}, "n_src must be a positive int"),
                          ({"nhead": 3}, "emb_dim=8 must be divisible by nhead=3"),
                          ({"n_fft": 31}, "n_fft must be even"),
                          ({"emb_ks": 2, "emb_hs": 3}, "emb_hs=3 must not exceed emb_ks=2"),
                          ({"window": "kaiser"}, "window must be one of"),
                          ({"config": "large"}, "config must be one of"),
                          ({"checkpointing": "all"}, "checkpointing must be one of"),
                          ({"init": "orthogonal"}, "init must be one of"),
                          ({"hidden": 0}, "hidden must be a positive int")]:
        with pytest.raises(InputError, match=match):
            small(**kwargs)


# ---------------------------------------------------------------- ESPnet parity and loading

def _espnet_state(n_src: int = 2, seed: int = 0, **overrides) -> dict:
    """A state dict in the layout ESPnet saves (``separator.*`` keys): from ESPnet's own module
    when espnet is installed, else written by sepkit's model (whose keys are ESPnet's)."""
    torch.manual_seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from espnet2.enh.separator.tfgridnetv2_separator import TFGridNetV2
        ours = {"n_fft": "n_fft", "stride": "hop_length", "lstm_hidden_units": "hidden", "n_layers": "n_blocks",
                "attn_n_head": "nhead", "attn_approx_qk_dim": "attn_qk_dim", "emb_dim": "emb_dim",
                "emb_ks": "emb_ks", "emb_hs": "emb_hs"}
        conf = {k: overrides.get(v, SMALL[v]) for k, v in ours.items()}
        model = TFGridNetV2(None, n_srcs=n_src, **conf)
    except ImportError:
        model = TFGridNet(n_src, **{**SMALL, **overrides})
    _randomise(model, std=0.3, seed=seed)
    return {f"separator.{k}": v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("ks,hs,n_src", [(4, 1, 2), (3, 2, 3), (2, 2, 1)])
def test_parity_with_espnet(ks, hs, n_src):
    TFGridNetV2 = _espnet()
    torch.manual_seed(0)
    ref = TFGridNetV2(None, **{**SMALL_ESPNET, "emb_ks": ks, "emb_hs": hs, "n_srcs": n_src}).eval()
    _randomise(ref)
    ours = TFGridNet.from_espnet({f"separator.{k}": v for k, v in ref.state_dict().items()},
                                 config={**SMALL_ESPNET, "emb_ks": ks, "emb_hs": hs, "n_srcs": n_src})
    for length in (1001, 333, 64):
        x = _wave(2, length, seed=length)
        with torch.no_grad():
            assert _rel(ours(x), _espnet_out(ref, x)) < TOL, length


def test_parity_with_espnet_default_configuration():
    TFGridNetV2 = _espnet()
    torch.manual_seed(0)
    ref = TFGridNetV2(None).eval()
    _randomise(ref, std=0.05)
    ours = TFGridNet.from_espnet(ref.state_dict())
    x = _wave(2, 403, seed=9)
    with torch.no_grad():
        assert _rel(ours(x), _espnet_out(ref, x)) < TOL


def test_gradients_match_espnet():
    TFGridNetV2 = _espnet()
    torch.manual_seed(0)
    ref = TFGridNetV2(None, **SMALL_ESPNET).double().train()
    _randomise(ref)
    ours = TFGridNet(init="default", **SMALL).double().train()
    ours.load_state_dict(ref.state_dict())
    x = _wave(2, 601, seed=9, dtype=torch.float64)
    a, b = ours(x), _espnet_out(ref, x)
    w = _wave(2, 2 * 601, seed=10, dtype=torch.float64).view_as(a)
    (a * w).sum().backward()
    (b * w).sum().backward()
    theirs = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        if name.endswith("attn_norm_K.beta"):  # adds q . beta to a whole row of scores: zero gradient
            assert p.grad.abs().max() < 1e-6 * theirs[name.replace("beta", "gamma")].grad.abs().max()
            continue
        assert _rel(p.grad, theirs[name].grad) < TOL, name  # (ESPnet computes its STFT in float32)


def test_espnet_xavier_initialisation_follows_espnet():
    TFGridNetV2 = _espnet()
    from espnet2.torch_utils.initialize import initialize

    ref = TFGridNetV2(None, **SMALL_ESPNET)
    initialize(ref, "xavier_uniform")
    ours = small()
    for (name, a), (_, b) in zip(sorted(ours.state_dict().items()), sorted(ref.state_dict().items())):
        zero, one = torch.count_nonzero(a) == 0, bool((a == 1).all())
        assert zero == (torch.count_nonzero(b) == 0) and one == bool((b == 1).all()), name
        if a.dim() > 1:  # same Xavier bound: the spread agrees
            assert a.abs().max() <= b.abs().max() * 1.5 + 1e-6 and b.abs().max() <= a.abs().max() * 1.5 + 1e-6, name


def test_from_espnet_reads_the_config_beside_the_file(tmp_path):
    state = _espnet_state(n_src=3, seed=1, emb_ks=3, emb_hs=2, hop_length=16)
    torch.save(state, tmp_path / "valid.loss.best.pth")
    conf = {"separator": "tfgridnetv2", "separator_conf": {**SMALL_ESPNET, "n_srcs": 3, "emb_ks": 3, "emb_hs": 2,
                                                             "stride": 16, "window": "hann", "activation": "prelu"}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(conf))
    loaded = load_espnet(tmp_path / "valid.loss.best.pth")
    model = loaded.model
    assert not model.training and model.n_src == 3 and model.hop_length == 16
    assert loaded.name == "tfgridnet" and loaded.args["emb_hs"] == 2 and loaded.sample_rate == 8000
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[f"separator.{name}"]), name
    rebuilt = TFGridNet(**loaded.args)
    rebuilt.load_state_dict(model.state_dict())
    x = _wave(1, 701)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model(x))


def test_from_espnet_refusals(tmp_path):
    state = _espnet_state()
    with pytest.raises(CheckpointError, match="not an ESPnet TFGridNetV2 state dict"):
        TFGridNet.from_espnet({"separator.foo": torch.zeros(1)})
    v1 = dict(state, **{"separator.blocks.0.attn_conv_Q_0.0.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="v1"):
        TFGridNet.from_espnet(v1)
    with pytest.raises(CheckpointError, match="keys outside the separator"):
        TFGridNet.from_espnet(dict(state, **{"loss.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="emb_dim=16 contradicts the weights"):
        TFGridNet.from_espnet(state, config={"emb_dim": 16})
    with pytest.raises(CheckpointError, match="separator is 'dprnn'"):
        TFGridNet.from_espnet(state, config={"separator": "dprnn", "separator_conf": {}})
    with pytest.raises(CheckpointError, match="unknown separator_conf key 'depth'"):
        TFGridNet.from_espnet(state, config={"depth": 3})
    broken = dict(state)
    del broken["separator.blocks.1.inter_rnn.bias_hh_l0"]
    with pytest.raises(CheckpointError, match="blocks.1.inter_rnn.bias_hh_l0"):
        TFGridNet.from_espnet(broken)
    with pytest.raises(TypeError, match="checkpoint path or a state dict"):
        TFGridNet.from_espnet(42)
    with pytest.raises(FileNotFoundError):
        TFGridNet.from_espnet(tmp_path / "missing.pth")


def test_convert_from_espnet_end_to_end(tmp_path, capsys):
    from sepkit.train import load_trained

    state = _espnet_state(seed=2)
    release = tmp_path / "exp" / "enh_train_tfgridnetv2"
    release.mkdir(parents=True)
    torch.save(state, release / "valid.si_snr.ave.pth")
    (release / "config.yaml").write_text(yaml.safe_dump({"separator": "tfgridnetv2",
                                                         "separator_conf": {**SMALL_ESPNET, "n_srcs": 2}}))
    out = tmp_path / "ckpt"
    assert main(["convert", "--from", "espnet", str(release / "valid.si_snr.ave.pth"), "--out", str(out)]) == 0
    assert "tfgridnet, 2 sources at 8000 Hz" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "meta.json", "model.safetensors"]
    task, rebuilt = load_trained(out)
    assert task.cfg.model.name == "tfgridnet" and task.cfg.recipe == "tfgridnet-espnet"
    original = load_espnet(release / "valid.si_snr.ave.pth").model
    x = _wave(1, 1001, seed=3)
    with torch.no_grad():
        assert (rebuilt.eval()(x) - original(x)).abs().max() < 1e-6
    assert main(["convert", "--from", "espnet", str(release / "valid.si_snr.ave.pth"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    torch.save({"separator.conv.0.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    assert main(["convert", "--from", "espnet", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "not an ESPnet TFGridNetV2 state dict" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
