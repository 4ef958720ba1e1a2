"""Published separator checkpoints (torchaudio, SpeechBrain, Asteroid) loading into sepkit.

Parity: when the original package is installed, a randomly initialised original saved in its
release format loads into sepkit and reproduces the original's output to 1e-4 on odd-length
input. Without the package, the release's key layout is written out here by hand and loaded.
Then the refusals (missing / unexpected / misshapen keys, code-executing pickles, YAML tags
that must not run) and ``sepkit convert`` -> ``separate`` / ``eval``.
"""
import math
import warnings

import pytest
import torch

from sepkit.cli import main
from sepkit.data import read_audio, write_audio
from sepkit.models.separators import DPRNN, ConvTasNet, Sepformer
from sepkit.models.separators.base import Encoder, frame_padding
from sepkit.models.separators.dual_path import chunk_padding, overlap_add, segment
from sepkit.models.separators.published import (
    PlainTagLoader, PublishedCheckpointError, load_published, read_hyperparams,
)
from sepkit.train.convert import convert_published

TOL = 1e-4
LENGTHS = (1001, 333, 17)  # odd, and one shorter than a chunk


def _randomise(module, std=0.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module.eval()


def _max_diff(ours, theirs, lengths=LENGTHS, batch=2):
    worst = 0.0
    g = torch.Generator().manual_seed(1)
    for T in lengths:
        x = torch.randn(batch, T, generator=g)
        with torch.no_grad():
            a, b = ours(x), theirs(x)
        assert a.shape == b.shape == (batch, a.shape[1], T)
        worst = max(worst, (a - b).abs().max().item())
    return worst


# -- hand-written release layouts (no package needed) ---------------------------------------

def _rand(*shape, g):
    return torch.randn(*shape, generator=g) * 0.2


def torchaudio_layout(N=16, L=4, B=8, H=12, P=3, blocks=4, S=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {"encoder.weight": _rand(N, 1, L, g=g), "decoder.weight": _rand(N, 1, L, g=g),
          "mask_generator.input_norm.weight": _rand(N, g=g), "mask_generator.input_norm.bias": _rand(N, g=g),
          "mask_generator.input_conv.weight": _rand(B, N, 1, g=g), "mask_generator.input_conv.bias": _rand(B, g=g),
          "mask_generator.output_prelu.weight": _rand(1, g=g),
          "mask_generator.output_conv.weight": _rand(S * N, B, 1, g=g),
          "mask_generator.output_conv.bias": _rand(S * N, g=g)}
    for i in range(blocks):
        p = f"mask_generator.conv_layers.{i}."
        sd.update({p + "conv_layers.0.weight": _rand(H, B, 1, g=g), p + "conv_layers.0.bias": _rand(H, g=g),
                   p + "conv_layers.1.weight": _rand(1, g=g), p + "conv_layers.2.weight": _rand(H, g=g),
                   p + "conv_layers.2.bias": _rand(H, g=g), p + "conv_layers.3.weight": _rand(H, 1, P, g=g),
                   p + "conv_layers.3.bias": _rand(H, g=g), p + "conv_layers.4.weight": _rand(1, g=g),
                   p + "conv_layers.5.weight": _rand(H, g=g), p + "conv_layers.5.bias": _rand(H, g=g),
                   p + "skip_out.weight": _rand(B, H, 1, g=g), p + "skip_out.bias": _rand(B, g=g)})
        if i < blocks - 1:
            sd.update({p + "res_out.weight": _rand(B, H, 1, g=g), p + "res_out.bias": _rand(B, g=g)})
    return sd


def asteroid_dprnn_layout(N=16, L=4, D=8, H=6, blocks=2, S=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {"encoder.filterbank._filters": _rand(N, 1, L, g=g), "decoder.filterbank._filters": _rand(N, 1, L, g=g),
          "masker.bottleneck.0.gamma": _rand(N, g=g), "masker.bottleneck.0.beta": _rand(N, g=g),
          "masker.bottleneck.1.weight": _rand(D, N, 1, g=g), "masker.bottleneck.1.bias": _rand(D, g=g),
          "masker.first_out.0.weight": _rand(1, g=g), "masker.first_out.1.weight": _rand(S * D, D, 1, 1, g=g),
          "masker.first_out.1.bias": _rand(S * D, g=g), "masker.net_out.0.weight": _rand(D, D, 1, g=g),
          "masker.net_out.0.bias": _rand(D, g=g), "masker.net_gate.0.weight": _rand(D, D, 1, g=g),
          "masker.net_gate.0.bias": _rand(D, g=g), "masker.mask_net.weight": _rand(N, D, 1, g=g)}
    for i in range(blocks):
        for path in ("intra", "inter"):
            p = f"masker.net.{i}.{path}_"
            for sfx in ("", "_reverse"):
                sd.update({p + "RNN.rnn.weight_ih_l0" + sfx: _rand(4 * H, D, g=g),
                           p + "RNN.rnn.weight_hh_l0" + sfx: _rand(4 * H, H, g=g),
                           p + "RNN.rnn.bias_ih_l0" + sfx: _rand(4 * H, g=g),
                           p + "RNN.rnn.bias_hh_l0" + sfx: _rand(4 * H, g=g)})
            sd.update({p + "linear.weight": _rand(D, 2 * H, g=g), p + "linear.bias": _rand(D, g=g),
                       p + "norm.gamma": _rand(D, g=g), p + "norm.beta": _rand(D, g=g)})
    return sd


DPRNN_ARGS = {"fb_name": "FreeFB", "n_filters": 16, "kernel_size": 4, "stride": 2, "sample_rate": 8000.0,
              "in_chan": 16, "out_chan": 16, "bn_chan": 8, "hid_size": 6, "chunk_size": 10, "hop_size": 5,
              "n_repeats": 2, "n_src": 2, "norm_type": "gLN", "mask_act": "sigmoid", "bidirectional": True,
              "rnn_type": "LSTM", "num_layers": 1, "dropout": 0, "use_mulcat": False, "encoder_activation": None}

SB_YAML = """# Parameters
sample_rate: 8000
num_spks: {S}
Encoder: !new:speechbrain.lobes.models.dual_path.Encoder
    kernel_size: {L}
    out_channels: {N}
SBtfintra: !new:speechbrain.lobes.models.dual_path.SBTransformerBlock
    num_layers: {layers}
    d_model: {D}
    nhead: {heads}
    d_ffn: {ffn}
    dropout: 0
    use_positional_encoding: True
    norm_before: True
SBtfinter: !new:speechbrain.lobes.models.dual_path.SBTransformerBlock
    num_layers: {layers}
    d_model: {D}
    nhead: {heads}
    d_ffn: {ffn}
    dropout: 0
    use_positional_encoding: True
    norm_before: True
MaskNet: !new:speechbrain.lobes.models.dual_path.Dual_Path_Model
    num_spks: !ref <num_spks>
    in_channels: {N}
    out_channels: {D}
    num_layers: {blocks}
    K: {K}
    intra_model: !ref <SBtfintra>
    inter_model: !ref <SBtfinter>
    norm: ln
    linear_layer_after_inter_intra: {linear}
    skip_around_intra: True
Decoder: !new:speechbrain.lobes.models.dual_path.Decoder
    in_channels: {N}
    out_channels: 1
    kernel_size: {L}
    stride: {stride}
    bias: False
modules:
    encoder: !ref <Encoder>
    decoder: !ref <Decoder>
    masknet: !ref <MaskNet>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <Encoder>
        masknet: !ref <MaskNet>
        decoder: !ref <Decoder>
"""
SB_SMALL = dict(S=3, L=16, N=24, D=16, heads=2, ffn=32, layers=2, blocks=2, K=10, stride=8, linear="False")


def sinusoid(length, d):
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(length, d)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    return pe[None]


def speechbrain_layout(S=3, L=16, N=24, D=16, heads=2, ffn=32, layers=2, blocks=2, seed=0, **_):
    g = torch.Generator().manual_seed(seed)
    mask = {"norm.weight": _rand(N, g=g), "norm.bias": _rand(N, g=g), "conv1d.weight": _rand(D, N, 1, g=g),
            "prelu.weight": _rand(1, g=g), "conv2d.weight": _rand(S * D, D, 1, 1, g=g), "conv2d.bias": _rand(S * D, g=g),
            "output.0.weight": _rand(D, D, 1, g=g), "output.0.bias": _rand(D, g=g),
            "output_gate.0.weight": _rand(D, D, 1, g=g), "output_gate.0.bias": _rand(D, g=g),
            "end_conv1x1.weight": _rand(N, D, 1, g=g)}
    for b in range(blocks):
        for path in ("intra", "inter"):
            p = f"dual_mdl.{b}.{path}_"
            mask.update({p + "norm.weight": _rand(D, g=g), p + "norm.bias": _rand(D, g=g),
                         p + "mdl.mdl.norm.norm.weight": _rand(D, g=g), p + "mdl.mdl.norm.norm.bias": _rand(D, g=g),
                         p + "mdl.pos_enc.pe": sinusoid(2500, D)})
            for i in range(layers):
                q = p + f"mdl.mdl.layers.{i}."
                mask.update({q + "self_att.att.in_proj_weight": _rand(3 * D, D, g=g),
                             q + "self_att.att.in_proj_bias": _rand(3 * D, g=g),
                             q + "self_att.att.out_proj.weight": _rand(D, D, g=g),
                             q + "self_att.att.out_proj.bias": _rand(D, g=g),
                             q + "pos_ffn.ffn.0.weight": _rand(ffn, D, g=g), q + "pos_ffn.ffn.0.bias": _rand(ffn, g=g),
                             q + "pos_ffn.ffn.3.weight": _rand(D, ffn, g=g), q + "pos_ffn.ffn.3.bias": _rand(D, g=g),
                             q + "norm1.norm.weight": _rand(D, g=g), q + "norm1.norm.bias": _rand(D, g=g),
                             q + "norm2.norm.weight": _rand(D, g=g), q + "norm2.norm.bias": _rand(D, g=g)})
    return {"encoder": {"conv1d.weight": _rand(N, 1, L, g=g)}, "masknet": mask, "decoder": {"weight": _rand(N, 1, L, g=g)}}


def write_speechbrain(folder, layout, **hp):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.yaml").write_text(SB_YAML.format(**dict(SB_SMALL, **hp)))
    for name, sd in layout.items():
        torch.save(sd, folder / f"{name}.ckpt")
    return folder


# -- modes ----------------------------------------------------------------------------------

def test_encoder_padding_and_chunk_modes():
    assert frame_padding(100, 16, 8, "none") == (0, 0, 11)
    with pytest.raises(ValueError, match="kernel_size=16"):
        frame_padding(15, 16, 8, "none")
    with pytest.raises(ValueError, match="padding"):
        Encoder(8, 16, 8, padding="same")
    x = torch.randn(2, 3, 37)
    for mode, hop in (("tight", 4), ("wide", 4), ("wide", 3), ("paired", 5)):
        K = 10 if mode == "paired" else 8
        left, right, n = chunk_padding(37, K, hop, mode)
        assert left + 37 + right == (n - 1) * hop + K and right >= 0
        chunks = segment(x, K, hop, mode)
        assert chunks.shape[-1] == n
        ones = overlap_add(torch.ones_like(chunks), hop, 37, mode)  # every frame is covered K / hop times
        assert torch.allclose(overlap_add(chunks, hop, 37, mode), x * ones)
    assert chunk_padding(1000, 250, 125, "paired")[2] == 10 and chunk_padding(1000, 250, 125)[2] == 9
    with pytest.raises(ValueError, match="paired"):
        chunk_padding(37, 10, 4, "paired")
    # the defaults are unchanged; the Asteroid DPRNN is the default plus a bottleneck bias
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(DPRNN()) == 2_608_001 and count(DPRNN(bottleneck_bias=True)) == 2_608_065


# -- parity with the installed originals ----------------------------------------------------

def test_torchaudio_bundle_parity(tmp_path):
    ta = pytest.importorskip("torchaudio.models")
    torch.manual_seed(0)
    original = ta.conv_tasnet_base(num_sources=2).eval()  # the CONVTASNET_BASE_LIBRI2MIX architecture
    with torch.no_grad():
        for p in original.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    torch.save(original.state_dict(), tmp_path / "conv_tasnet_base_libri2mix.pt")
    model = ConvTasNet.from_torchaudio(tmp_path / "conv_tasnet_base_libri2mix.pt")
    assert sum(p.numel() for p in model.parameters()) == 4_984_881
    assert _max_diff(model, lambda x: original(x.unsqueeze(1)), lengths=(4001, 17), batch=1) < TOL


def test_asteroid_parity(tmp_path):
    models = pytest.importorskip("asteroid.models")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctn = _randomise(models.ConvTasNet(n_src=2, n_filters=32, kernel_size=16, stride=8, bn_chan=16, hid_chan=24,
                                           skip_chan=16, n_blocks=3, n_repeats=2))
        dprnn = _randomise(models.DPRNNTasNet(n_src=3, n_filters=16, kernel_size=2, stride=1, bn_chan=8, hid_size=6,
                                              chunk_size=10, hop_size=5, n_repeats=2, mask_act="sigmoid"))
        small = dict(n_src=2, n_filters=16, kernel_size=8, stride=4, bn_chan=8, hid_chan=12, n_blocks=2, n_repeats=1)
        variants = [_randomise(models.ConvTasNet(**small, skip_chan=0, norm_type="cLN", encoder_activation="relu",
                                                 mask_act="softmax")),
                    _randomise(models.ConvTasNet(**small, skip_chan=8, causal=True, norm_type="cgLN", mask_act="relu"))]
    for name, original, cls in (("ConvTasNet", ctn, ConvTasNet), ("DPRNNTasNet", dprnn, DPRNN),
                                *(("ConvTasNet", v, ConvTasNet) for v in variants)):
        # the release format: what Asteroid's serialize() writes
        package = {"model_name": name, "state_dict": original.state_dict(), "model_args": original.get_model_args(),
                   "infos": {"software_versions": {"asteroid_version": "0.7.0"}}}
        torch.save(package, tmp_path / f"{name}.pth")
        model = cls.from_asteroid(tmp_path / f"{name}.pth")
        assert _max_diff(model, original) < TOL, name


def test_speechbrain_parity(tmp_path):
    dual_path = pytest.importorskip("speechbrain.lobes.models.dual_path")

    def block():
        return dual_path.SBTransformerBlock(num_layers=2, d_model=16, nhead=2, d_ffn=32, dropout=0.0,
                                            use_positional_encoding=True, norm_before=True)

    enc = _randomise(dual_path.Encoder(kernel_size=16, out_channels=24))
    masknet = _randomise(dual_path.Dual_Path_Model(
        num_spks=3, in_channels=24, out_channels=16, num_layers=2, K=10, intra_model=block(), inter_model=block(),
        norm="ln", linear_layer_after_inter_intra=False, skip_around_intra=True))
    dec = _randomise(dual_path.Decoder(in_channels=24, out_channels=1, kernel_size=16, stride=8, bias=False))
    folder = write_speechbrain(tmp_path / "sepformer-wsj02mix", {"encoder": enc.state_dict(),
                                                                 "masknet": masknet.state_dict(),
                                                                 "decoder": dec.state_dict()})

    def original(mix):  # the release's separation: encode, mask, decode, pad / crop to the input
        w = enc(mix)
        est = torch.stack([dec(w * m) for m in masknet(w)], dim=1)
        return torch.nn.functional.pad(est, (0, max(0, mix.shape[-1] - est.shape[-1])))[..., : mix.shape[-1]]

    model = Sepformer.from_speechbrain(folder)
    assert model.n_src == 3 and model.sample_rate == 8000
    assert _max_diff(model, original, lengths=(1001, 333, 17, 16)) < TOL


# -- the release layouts, written by hand ----------------------------------------------------

def test_layouts_without_the_packages(tmp_path):
    ta = torchaudio_layout()
    torch.save(ta, tmp_path / "ta.pt")
    m = ConvTasNet.from_torchaudio(tmp_path / "ta.pt", layers=2)
    assert (m.masker.blocks[1].dconv.weight == ta["mask_generator.conv_layers.1.conv_layers.3.weight"]).all()
    assert m.masker.blocks[-1].res_conv is None and m.encoder.stride == 2 and m.n_src == 2

    dp = asteroid_dprnn_layout()
    torch.save({"model_name": "DPRNNTasNet", "state_dict": dp, "model_args": DPRNN_ARGS}, tmp_path / "dprnn.pth")
    m = DPRNN.from_asteroid(tmp_path / "dprnn.pth")
    assert (m.masker.blocks[1].inter.rnn.weight_hh_l0_reverse == dp["masker.net.1.inter_RNN.rnn.weight_hh_l0_reverse"]).all()
    assert (m.masker.bottleneck.bias == dp["masker.bottleneck.1.bias"]).all()
    assert m.encoder.padding == "none" and m.masker.chunk_mode == "wide"

    sb = speechbrain_layout()
    m = Sepformer.from_speechbrain(write_speechbrain(tmp_path / "sb", sb))
    key = "dual_mdl.1.inter_mdl.mdl.layers.1.self_att.att.in_proj_weight"
    assert (m.masker.blocks[1].inter.layers[1].self_attn.in_proj_weight == sb["masknet"][key]).all()
    assert m.masker.chunk_mode == "paired" and m.n_src == 3
    for model in (m,):
        y = model(torch.randn(1, 401))
        assert y.shape == (1, 3, 401) and torch.isfinite(y).all()


# -- refusals -------------------------------------------------------------------------------

class NotAPlainObject:
    pass


def test_layout_errors_name_the_key_and_write_nothing(tmp_path, capsys):
    cases = {
        "missing": ({"drop": "mask_generator.conv_layers.1.skip_out.bias"}, "mask_generator.conv_layers.1.skip_out.bias"),
        "unexpected": ({"add": "mask_generator.extra.weight"}, "mask_generator.extra.weight"),
        "shape": ({"reshape": "mask_generator.conv_layers.2.conv_layers.3.weight"},
                  "mask_generator.conv_layers.2.conv_layers.3.weight"),
    }
    for kind, (change, name) in cases.items():
        sd = torchaudio_layout(blocks=8)
        if "drop" in change:
            del sd[change["drop"]]
        if "add" in change:
            sd[change["add"]] = torch.zeros(3)
        if "reshape" in change:
            sd[change["reshape"]] = torch.zeros(12, 1, 5)
        path = tmp_path / f"{kind}.pt"
        torch.save(sd, path)
        with pytest.raises(PublishedCheckpointError, match=name.replace(".", r"\.")):
            ConvTasNet.from_torchaudio(path)
        out = tmp_path / "converted" / kind
        assert main(["convert", "--from", "torchaudio", str(path), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert name in err and kind.replace("shape", "wrong shape") in err
        assert not out.exists() and not list((tmp_path / "converted").glob(".*"))

    torch.save({"state_dict": NotAPlainObject()}, tmp_path / "pickle.pt")
    with pytest.raises(PublishedCheckpointError, match="weights_only=True"):
        ConvTasNet.from_torchaudio(tmp_path / "pickle.pt")
    torch.save({"model_name": "DPRNNTasNet", "state_dict": asteroid_dprnn_layout(), "model_args": DPRNN_ARGS},
               tmp_path / "dprnn.pth")
    with pytest.raises(PublishedCheckpointError, match="not a ConvTasNet"):
        ConvTasNet.from_asteroid(tmp_path / "dprnn.pth")
    torch.save({"model_name": "DPRNNTasNet", "state_dict": asteroid_dprnn_layout(),
                "model_args": dict(DPRNN_ARGS, rnn_type="GRU")}, tmp_path / "gru.pth")
    with pytest.raises(PublishedCheckpointError, match="rnn_type"):
        DPRNN.from_asteroid(tmp_path / "gru.pth")
    with pytest.raises(FileNotFoundError, match="no file"):
        DPRNN.from_asteroid(tmp_path / "absent.pth")


class RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_asteroid_files_with_numpy_numbers(tmp_path, capsys):
    """Asteroid model files pickle numpy numbers (numpy 1 names): read as data, nothing else."""
    import zipfile

    import numpy as np

    args = dict(DPRNN_ARGS, sample_rate=np.float64(8000.0), n_filters=np.int64(16))
    torch.save({"model_name": "DPRNNTasNet", "state_dict": asteroid_dprnn_layout(), "model_args": args,
                "infos": {"loss": np.float32(-12.5)}}, tmp_path / "np2.pth")
    with zipfile.ZipFile(tmp_path / "np2.pth") as src, zipfile.ZipFile(tmp_path / "np1.pth", "w") as dst:
        for info in src.infolist():  # the names numpy 1 wrote
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n")
            dst.writestr(info.filename, data)
    for name in ("np2.pth", "np1.pth"):
        m = DPRNN.from_asteroid(tmp_path / name)
        assert m.sample_rate == 8000 and type(m.sample_rate) is int and m.encoder.n_filters == 16
    torch.save({"model_name": "DPRNNTasNet", "state_dict": {}, "model_args": {"x": RunsCode()}}, tmp_path / "code.pth")
    with pytest.raises(PublishedCheckpointError, match="code execution are refused"):
        DPRNN.from_asteroid(tmp_path / "code.pth")
    assert "must never run" not in capsys.readouterr().out


def test_hyperparams_are_read_never_run(tmp_path):
    marker = tmp_path / "ran"
    folder = write_speechbrain(tmp_path / "sb", speechbrain_layout())
    text = (folder / "hyperparams.yaml").read_text()
    (folder / "hyperparams.yaml").write_text(
        text + f"__set_seed: !apply:torch.manual_seed [1234]\n"
               f"boom: !!python/object/apply:os.system ['touch {marker}']\n")
    assert issubclass(PlainTagLoader, __import__("yaml").SafeLoader)
    hp = read_hyperparams(folder / "hyperparams.yaml")
    assert hp["Encoder"].tag == "!new:speechbrain.lobes.models.dual_path.Encoder" and hp["num_spks"] == 3
    Sepformer.from_speechbrain(folder)
    assert not marker.exists()
    bad = write_speechbrain(tmp_path / "linear", speechbrain_layout(), linear="True")
    with pytest.raises(PublishedCheckpointError, match="linear_layer_after_inter_intra"):
        Sepformer.from_speechbrain(bad)
    folder2 = write_speechbrain(tmp_path / "sb2", speechbrain_layout())
    sd = speechbrain_layout()["masknet"]
    del sd["dual_mdl.0.intra_mdl.mdl.layers.1.norm2.norm.bias"]
    torch.save(sd, folder2 / "masknet.ckpt")
    with pytest.raises(PublishedCheckpointError, match=r"masknet\.ckpt:dual_mdl\.0\.intra_mdl\.mdl\.layers\.1\.norm2"):
        Sepformer.from_speechbrain(folder2)


# -- convert, then separate and eval --------------------------------------------------------

def test_convert_then_separate_and_eval(tmp_path, capsys):
    from sepkit.train import load_trained

    torch.save({"model_name": "DPRNNTasNet", "state_dict": asteroid_dprnn_layout(), "model_args": DPRNN_ARGS},
               tmp_path / "dprnn.pth")
    sb = write_speechbrain(tmp_path / "sepformer", speechbrain_layout())
    torch.save(torchaudio_layout(blocks=8, N=16, L=16), tmp_path / "ta.pt")  # 8 blocks a repeat, as in the bundle
    g = torch.Generator().manual_seed(3)
    mix = (torch.randn(4001, generator=g) * 0.1).clamp(-1, 1)
    write_audio(tmp_path / "mix.wav", mix, 8000)
    wav, _ = read_audio(tmp_path / "mix.wav")
    for source, path in (("asteroid", tmp_path / "dprnn.pth"), ("speechbrain", sb), ("torchaudio", tmp_path / "ta.pt")):
        out = tmp_path / f"ckpt-{source}"
        assert main(["convert", "--from", source, str(path), "--out", str(out)]) == 0
        assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "meta.json", "model.safetensors"]
        original = load_published(source, path).model
        _, rebuilt = load_trained(out)
        assert _max_diff(rebuilt, original, lengths=(1001,), batch=1) < 1e-6
        assert main(["separate", "--ckpt", str(out), str(tmp_path / "mix.wav"), "-o", str(tmp_path / source)]) == 0
        with torch.no_grad():
            ref = original(wav.float()[None])[0]
        scale = min(1.0, 0.99 / ref.abs().max().item())
        for k in range(ref.shape[0]):
            est, rate = read_audio(tmp_path / source / f"mix_s{k + 1}.wav")
            assert rate == 8000 and est.shape[-1] == 4001
            assert (est - ref[k] * scale).abs().max() < 2e-4  # 16-bit WAV
    assert main(["convert", "--from", "asteroid", str(tmp_path / "dprnn.pth"), "--out", str(tmp_path / "ckpt-asteroid")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    synth = ["data.dataset=synthetic", "data.synthetic.num_test=2", "data.synthetic.min_duration=0.2",
             "data.synthetic.max_duration=0.25"]
    assert main(["eval", "--ckpt", str(tmp_path / "ckpt-asteroid"), *synth, "--csv", str(tmp_path / "e.csv")]) == 0
    assert "si_sdr" in capsys.readouterr().out and (tmp_path / "e.csv").is_file()


def test_convert_refuses_foreign_files(tmp_path, capsys):
    torch.save({"model_name": "ConvTasNet", "state_dict": {}, "model_args": {}}, tmp_path / "empty.pth")
    assert main(["convert", "--from", "torchaudio", str(tmp_path / "empty.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "'encoder.weight' missing; not a torchaudio ConvTasNet" in capsys.readouterr().err
    assert main(["convert", "--from", "speechbrain", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "no folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="source"):
        convert_published("nemo", tmp_path / "x", tmp_path / "o")


def test_refusal_names_the_object_and_never_advises_running_it(tmp_path, capsys):
    torch.save({"encoder.conv.weight": torch.randn(4, 1, 2), "x": RunsCode()}, tmp_path / "code.pt")
    with pytest.raises(ValueError) as info:
        ConvTasNet.from_torchaudio(tmp_path / "code.pt")
    message = str(info.value)
    assert "Python object print" in message and "weights_only=False" not in message
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="weights_only=True") as info:
        ConvTasNet.from_torchaudio(tmp_path / "junk.pt")
    assert "weights_only=False" not in str(info.value) and "Please file" not in str(info.value)
    assert "must never run" not in capsys.readouterr().out
