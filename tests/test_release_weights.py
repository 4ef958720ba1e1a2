"""Released weights into sepkit's models: SGMSE+ Lightning checkpoints (against the ``sgmse``
package where it is installed, a test-only baseline) and ``sepkit convert --from sgmse``."""
import sys
import types

import pytest
import torch

from sepkit.errors import CheckpointError
from sepkit.files import load_strict
from sepkit.models.ncsnpp import NCSNpp
from sepkit.models.sgmse import OUVESDE, SGMSE, pc_sampler
from sepkit.models.sgmse_release import (DATA_MODULE, DataModuleReference, convert_release_state,
                                         load_sgmse_release, release_layout)

SMALL = dict(nf=8, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(16,))
TINY = dict(nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(64,))  # on 256 bins, as released


def perturbed(net: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Every weight moved off its initialisation (zero-initialised projections included, so that the
    attention and the output pyramid take part)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return net.eval()


def release_keys(net: NCSNpp) -> dict:
    """``net``'s weights in the release's layout (``all_modules.<n>``), by the inverse mapping."""
    own = net.state_dict()
    out = {"output_layer.weight": own["output_layer.weight"], "output_layer.bias": own["output_layer.bias"]}
    for n, (prefix, kind) in enumerate(release_layout(net)):
        sub = {k[len(prefix) + 1:]: v for k, v in own.items() if k.startswith(prefix + ".")}
        if kind == "same":
            out.update({f"all_modules.{n}.{k}": v.clone() for k, v in sub.items()})
            continue
        out[f"all_modules.{n}.GroupNorm_0.weight"] = sub["GroupNorm_0.weight"].clone()
        out[f"all_modules.{n}.GroupNorm_0.bias"] = sub["GroupNorm_0.bias"].clone()
        for i, (w, b) in enumerate(zip(sub["attn.in_proj_weight"].chunk(3), sub["attn.in_proj_bias"].chunk(3))):
            out[f"all_modules.{n}.NIN_{i}.W"], out[f"all_modules.{n}.NIN_{i}.b"] = w.t().contiguous(), b.clone()
        out[f"all_modules.{n}.NIN_3.W"] = sub["attn.out_proj.weight"].t().contiguous()
        out[f"all_modules.{n}.NIN_3.b"] = sub["attn.out_proj.bias"].clone()
    return out


def spec(b, f, n, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, 1, f, n, dtype=torch.complex64, generator=gen)


# ------------------------------------------------------------------ against the sgmse package

def sgmse_pair():
    """(the package's NCSN++ with random weights, sepkit's NCSN++ holding the same weights)."""
    backbones = pytest.importorskip("sgmse.backbones.ncsnpp")
    torch.manual_seed(0)
    ref = perturbed(backbones.NCSNpp(**SMALL, image_size=64))
    ours = NCSNpp(**SMALL, n_freq=64, scale_by_time=True).eval()
    load_strict(ours, convert_release_state(ref.state_dict(), ours), "sgmse NCSN++")
    return ref, ours


def test_release_score_equals_the_sgmse_package():
    ref, ours = sgmse_pair()
    model = SGMSE(ours, parametrisation="score")
    x, y = spec(2, 64, 16, 1), spec(2, 64, 16, 2)
    t = torch.tensor([0.05, 0.8])
    with torch.no_grad():
        want = -ref(torch.cat([x, y], dim=1), t)      # the package's ScoreModel.forward
        got = model.score(x, t, y)
        ours_default = SGMSE(ours).score(x, t, y)       # sepkit's parametrisation on the same weights
    assert want.abs().max() > 0.1
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    assert (ours_default - want).abs().max() > 1e-2 * want.abs().max()


def test_release_pc_trajectory_equals_the_sgmse_package():
    ref, ours = sgmse_pair()  # skips without the sgmse package
    from sgmse.sampling import get_pc_sampler
    from sgmse.sdes import OUVESDE as ReleaseSDE

    model = SGMSE(ours, parametrisation="score", time_grid="sgmse")
    y = spec(1, 64, 8, 3)
    visited = {"release": [], "sepkit": []}

    def release_score(x, yy, t):
        visited["release"].append(x.clone())
        return -ref(torch.cat([x, yy], dim=1), t)

    def sepkit_score(x, t, yy):
        visited["sepkit"].append(x.clone())
        return model.score(x, t, yy)

    sde = ReleaseSDE(theta=1.5, sigma_min=0.05, sigma_max=0.5, N=30)
    torch.manual_seed(7)
    want, _ = get_pc_sampler("reverse_diffusion", "ald", sde, release_score, y, eps=0.03, snr=0.5, corrector_steps=1)()
    torch.manual_seed(7)  # the same noise: prior, corrector and predictor draws in the same order
    got = pc_sampler(sepkit_score, OUVESDE(N=30), y, 30, 0.5, 1, 0.03, seed=None, time_grid="sgmse")
    assert len(visited["sepkit"]) == len(visited["release"]) == 60
    for a, b in zip(visited["sepkit"], visited["release"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    torch.manual_seed(7)
    uniform = pc_sampler(sepkit_score, OUVESDE(N=30), y, 30, 0.5, 1, 0.03, seed=None)
    assert (uniform - want).abs().max() > 10 * (got - want).abs().max()  # the grid matters


# ------------------------------------------------------------ the Lightning file, without sgmse

HPARAMS = {"backbone": "ncsnpp", "sde": "ouve", "lr": 1e-4, "ema_decay": 0.999, "t_eps": 0.03, "num_eval_files": 20,
           "loss_type": "score_matching", "theta": 1.5, "sigma_min": 0.05, "sigma_max": 0.5, "N": 30,
           "sampler_type": "pc", "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [64], "nf": 8,
           "centered": True, "base_dir": "/data/VB-DMD", "batch_size": 8, "n_fft": 510, "hop_length": 128,
           "num_frames": 256, "window": "hann", "num_workers": 4, "spec_factor": 0.15, "spec_abs_exponent": 0.5,
           "normalize": "noisy", "transform_type": "exponent", "gpus": 1}


class Unrelated:
    """A class a file may reference that sepkit must not run."""


def write_lightning(path, monkeypatch, trained: NCSNpp, averaged: NCSNpp | None, extra_hp=None, extra=None):
    """A Lightning checkpoint as the release writes it: dnn.* weights, torch_ema's state, and
    hyper_parameters holding a pickled reference to the data-module class (a stand-in module
    named like the release's, removed again before anything reads the file)."""
    fake = types.ModuleType("sgmse.data_module")

    class SpecsDataModule:
        pass

    SpecsDataModule.__module__, SpecsDataModule.__qualname__ = "sgmse.data_module", "SpecsDataModule"
    fake.SpecsDataModule = SpecsDataModule
    package = types.ModuleType("sgmse")
    package.data_module = fake
    state = {f"dnn.{k}": v for k, v in release_keys(trained).items()}
    blob = {
        "epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.1.0", "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'pesq', 'mode': 'max'}": {"best_model_score": torch.tensor(2.9),
                                                                           "best_model_path": "/ckpt/epoch=3.ckpt"}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}],
        "lr_schedulers": [], "hparams_name": "kwargs",
        "hyper_parameters": {**HPARAMS, "data_module_cls": SpecsDataModule, **(extra_hp or {})},
        **(extra or {}),
    }
    if averaged is not None:
        shadow = list(release_keys(averaged).values())
        keys = list(release_keys(averaged))
        assert keys == [k[4:] for k in state]
        blob["ema"] = {"decay": 0.999, "num_updates": 1200, "shadow_params": shadow, "collected_params": None}
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "sgmse", package)
        m.setitem(sys.modules, "sgmse.data_module", fake)
        torch.save(blob, path)
    return path


@pytest.fixture()
def release(tmp_path, monkeypatch):
    torch.manual_seed(1)
    trained = perturbed(NCSNpp(**TINY, scale_by_time=True), seed=1)
    averaged = perturbed(NCSNpp(**TINY, scale_by_time=True), seed=2)
    path = write_lightning(tmp_path / "epoch=3.ckpt", monkeypatch, trained, averaged)
    monkeypatch.setitem(sys.modules, "sgmse", None)  # not importable from here on: nothing may need it
    monkeypatch.setitem(sys.modules, "sgmse.data_module", None)
    return path, trained, averaged


def test_lightning_checkpoint_loads_without_sgmse_with_its_ema(release):
    path, trained, averaged = release
    loaded = load_sgmse_release(path)
    assert loaded.weights == "ema" and loaded.steps == 30 and loaded.sample_rate == 16000
    assert loaded.args["nf"] == 8 and loaded.args["ch_mult"] == [1, 2, 2] and loaded.args["scale_by_time"] is True
    assert loaded.args["parametrisation"] == "score" and loaded.args["time_grid"] == "sgmse"
    model = loaded.model
    assert model.parametrisation == "score" and model.time_grid == "sgmse" and model.t_eps == 0.03
    x, y, t = spec(1, 256, 8, 4), spec(1, 256, 8, 5), torch.tensor([0.3])
    with torch.no_grad():
        want = -averaged(x, y, t)
        assert want.abs().max() > 0.1
        torch.testing.assert_close(model.score(x, t, y), want, rtol=1e-5, atol=1e-6)
        plain = load_sgmse_release(path, ema=False)
        assert plain.weights == "trained"
        torch.testing.assert_close(plain.model.score(x, t, y), -trained(x, y, t), rtol=1e-5, atol=1e-6)
        assert (plain.model.score(x, t, y) - want).abs().max() > 1e-2


def test_files_needing_other_code_or_another_network_are_refused(tmp_path, monkeypatch):
    net = perturbed(NCSNpp(**TINY, scale_by_time=True))
    bad = write_lightning(tmp_path / "code.ckpt", monkeypatch, net, None, extra={"extra": Unrelated()})
    with pytest.raises(CheckpointError, match=r"needs the Python object .*Unrelated.*refused"):
        load_sgmse_release(bad)
    other = write_lightning(tmp_path / "48k.ckpt", monkeypatch, net, None, extra_hp={"backbone": "ncsnpp_48k"})
    with pytest.raises(CheckpointError, match="backbone='ncsnpp_48k'"):
        load_sgmse_release(other)
    bigger = write_lightning(tmp_path / "nf.ckpt", monkeypatch, net, None, extra_hp={"nf": 16})
    with pytest.raises(CheckpointError, match="different model"):
        load_sgmse_release(bigger)
    deeper = write_lightning(tmp_path / "deep.ckpt", monkeypatch, net, None, extra_hp={"ch_mult": [1, 2, 2, 2]})
    with pytest.raises(CheckpointError, match="modules where NCSN"):
        load_sgmse_release(deeper)
    with pytest.raises(CheckpointError, match="not found"):
        load_sgmse_release(tmp_path / "absent.ckpt")
    assert DataModuleReference.__name__ and DATA_MODULE == "sgmse.data_module.SpecsDataModule"


# ------------------------------------------------- sepkit convert --from sgmse, separate, init

def test_convert_then_separate_enhances_as_the_release(release, tmp_path, capsys):
    from sepkit.cli import main
    from sepkit.data import read_audio, write_audio
    from sepkit.train import load_trained, read_meta

    path, _, averaged = release
    out = tmp_path / "sgmse-vbdmd"
    assert main(["convert", "--from", "sgmse", str(path), "--out", str(out)]) == 0
    assert "task diffusion at 16000 Hz" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "meta.json", "model.safetensors"]
    meta = read_meta(out)
    assert meta["task"] == "diffusion" and meta["weights"] == "ema" and meta["converted_from"] == "sgmse:epoch=3.ckpt"
    task, model = load_trained(out)
    assert task.options.steps == 30 and model.time_grid == "sgmse" and model.backbone.scale_by_time
    direct = load_sgmse_release(path).model
    gen = torch.Generator().manual_seed(5)
    noisy = (0.3 * torch.randn(2000, generator=gen)).clamp(-1, 1)
    write_audio(tmp_path / "noisy.wav", noisy, 16000)
    wav, _ = read_audio(tmp_path / "noisy.wav")
    assert main(["separate", "--ckpt", str(out), str(tmp_path / "noisy.wav"), "-o", str(tmp_path / "enh"),
                 "--steps", "3"]) == 0
    est, rate = read_audio(tmp_path / "enh" / "noisy_enhanced.wav")
    want = direct.enhance(wav.float()[None], steps=3, seed=0)[0]
    want = want * min(1.0, 0.99 / float(want.abs().max()))
    assert rate == 16000 and est.shape == want.shape
    assert (est - want).abs().max() < 2e-4 and want.abs().max() > 1e-2  # 16-bit WAV
    assert main(["convert", "--from", "sgmse", str(path), "--out", str(out)]) == 2  # exists


def test_exdiff_fine_tunes_from_a_converted_release(release, tmp_path):
    """task_args.init: Ex-Diff adopts the release's network and parametrisation, its backbone
    starts from the release's weights and the cross-attention from zero (a fresh Ex-Diff gives
    the release's score); one training step at a tiny learning rate stays there."""
    from sepkit.models.sad import SpeechActivityDetector
    from sepkit.train import load_trained, make_task, train
    from sepkit.train.checkpoint import write_model_checkpoint
    from sepkit.train.config import config_from_dict
    from sepkit.train.convert import convert_sgmse

    path, _, averaged = release
    converted = convert_sgmse(path, tmp_path / "converted")
    recipe = {
        "recipe": "exdiff-from-release", "task": "diffusion",
        "task_args": {"steps": 1, "valid_steps": 1, "perceptual": False, "init": str(converted)},
        "data": {"dataset": "synthetic", "sample_rate": 16000, "n_src": 1, "segment": 0.25, "batch_size": 2,
                 "synthetic": {"num_train": 2, "num_valid": 1, "num_test": 1, "min_duration": 0.3,
                               "max_duration": 0.3, "num_speakers": 2}},
        "model": {"name": "exdiff", "args": {"config": "small", "uss": "sad", "cross_heads": 2, "pe_dim": 8}},
        "optim": {"lr": 1e-9},
        "train": {"max_steps": 1, "eval_every": 1, "ckpt_every": 1, "log_every": 1, "max_valid_items": 1},
    }
    task = make_task(config_from_dict(recipe, "test"))
    sad_cfg = task.sad_config()
    torch.manual_seed(0)
    sad = SpeechActivityDetector(channels=4, layers=1, sample_rate=16000)
    sad_task = make_task(sad_cfg)
    sad_raw = sad_cfg.to_dict()
    sad_raw["model"]["args"] = {"channels": 4, "layers": 1}
    write_model_checkpoint(tmp_path / "sad", sad, sad_raw, sad_task.model_meta())
    recipe["model"]["args"]["uss_ckpt"] = str(tmp_path / "sad")

    task = make_task(config_from_dict(recipe, "test"))
    task.adopt_init()
    args = task.cfg.model.args
    assert args["parametrisation"] == "score" and args["scale_by_time"] is True and args["nf"] == 8
    assert args["config"] == "sgmse" and args["cross_heads"] == 2
    model = task.build_model()
    task.initialize(model)
    x, y, t = spec(1, 256, 8, 6), spec(1, 256, 8, 7), torch.tensor([0.4])
    lat = torch.rand(1, 5, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.score(x, t, y, latents=lat, kv_lengths=None), -averaged(x, y, t),
                                   rtol=1e-5, atol=1e-6)

    run = tmp_path / "run"
    train(config_from_dict(recipe, "test"), run, progress=False, test=False)
    _, trained = load_trained(run)
    assert trained.parametrisation == "score" and trained.time_grid == "sgmse"
    start = load_sgmse_release(path).model.backbone.state_dict()
    own = trained.backbone.state_dict()
    assert all((own[k] - v).abs().max() < 1e-6 for k, v in start.items())  # it started there (lr 1e-9)
    assert any(k.startswith("mid_cross.") for k in own)


# ----------------------------------------------------------- wav2vec2 / HuBERT weights, three layouts

def torchaudio_to_fairseq(state: dict) -> dict:
    """A torchaudio Wav2Vec2Model state dict under fairseq's names (the inverse of torchaudio's
    import mapping), with weight_g / weight_v as fairseq stores the positional convolution."""
    import re

    rules = [
        (r"feature_extractor\.conv_layers\.(\d+)\.conv\.weight", r"feature_extractor.conv_layers.\1.0.weight"),
        (r"feature_extractor\.conv_layers\.0\.layer_norm\.(weight|bias)", r"feature_extractor.conv_layers.0.2.\1"),
        (r"encoder\.feature_projection\.projection\.(.+)", r"post_extract_proj.\1"),
        (r"encoder\.feature_projection\.layer_norm\.(.+)", r"layer_norm.\1"),
        (r"encoder\.transformer\.pos_conv_embed\.conv\.bias", r"encoder.pos_conv.0.bias"),
        (r"encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", r"encoder.pos_conv.0.weight_g"),
        (r"encoder\.transformer\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", r"encoder.pos_conv.0.weight_v"),
        (r"encoder\.transformer\.layer_norm\.(.+)", r"encoder.layer_norm.\1"),
        (r"encoder\.transformer\.layers\.(\d+)\.attention\.(.+)", r"encoder.layers.\1.self_attn.\2"),
        (r"encoder\.transformer\.layers\.(\d+)\.layer_norm\.(.+)", r"encoder.layers.\1.self_attn_layer_norm.\2"),
        (r"encoder\.transformer\.layers\.(\d+)\.feed_forward\.intermediate_dense\.(.+)", r"encoder.layers.\1.fc1.\2"),
        (r"encoder\.transformer\.layers\.(\d+)\.feed_forward\.output_dense\.(.+)", r"encoder.layers.\1.fc2.\2"),
        (r"encoder\.transformer\.layers\.(\d+)\.final_layer_norm\.(.+)", r"encoder.layers.\1.final_layer_norm.\2"),
    ]
    out = {}
    for k, v in state.items():
        new = next(re.sub(p, r, k) for p, r in rules if re.fullmatch(p, k))
        out[new] = v.clone()
    return out


def torchaudio_to_huggingface(state: dict, prefix: str = "") -> dict:
    """The same weights as a transformers Wav2Vec2Model / HubertModel stores them (optionally
    under the ``wav2vec2.`` prefix of a ForPreTraining / ForCTC model)."""
    out = {}
    for k, v in state.items():
        if k.startswith("encoder.feature_projection."):
            k = k[len("encoder."):]
        elif k.startswith("encoder.transformer."):
            k = "encoder." + k[len("encoder.transformer."):]
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        out[prefix + k] = v.clone()
    return out


def pretraining_heads(cfg, gen) -> dict:
    """wav2vec2's pretraining-only tensors (fairseq names), random."""
    gv = cfg.groups * cfg.num_vars
    return {"mask_emb": torch.rand(cfg.d_model, generator=gen),
            "quantizer.vars": torch.rand(1, gv, cfg.codevector_dim // cfg.groups, generator=gen),
            "quantizer.weight_proj.weight": torch.randn(gv, cfg.conv_channels, generator=gen),
            "quantizer.weight_proj.bias": torch.randn(gv, generator=gen),
            "project_q.weight": torch.randn(cfg.final_dim, cfg.codevector_dim, generator=gen),
            "project_q.bias": torch.randn(cfg.final_dim, generator=gen),
            "final_proj.weight": torch.randn(cfg.final_dim, cfg.d_model, generator=gen),
            "final_proj.bias": torch.randn(cfg.final_dim, generator=gen)}


#: a small member of wav2vec2 base's family (group-norm extractor, post-norm transformer)
SMALL_W2V = dict(conv_channels=32, d_model=48, n_layers=2, n_heads=4, ffn_dim=64, final_dim=16, codevector_dim=16,
                 num_vars=8, pos_conv_kernel=16, pos_conv_groups=4, dropout=0.0, dropout_input=0.0,
                 dropout_features=0.0)


def small_frontend():
    from sepkit.models.dip import DIPFrontend

    return DIPFrontend("small", **SMALL_W2V)


def torchaudio_model(frontend, seed: int):
    """torchaudio's Wav2Vec2Model of ``frontend``'s architecture, random weights."""
    import torchaudio

    torch.manual_seed(seed)
    return perturbed(torchaudio.models.wav2vec2_model(**frontend.wav2vec2_arguments(), aux_num_out=None), seed=seed)


def test_dip_base_equals_torchaudio_wav2vec2_base():
    import torchaudio

    from sepkit.models.dip import DIPFrontend

    torch.manual_seed(3)
    ref = perturbed(torchaudio.models.wav2vec2_base(), seed=3, scale=0.02)
    wave = torch.randn(1, 4800, generator=torch.Generator().manual_seed(4)) * 0.1   # 15 frames, no padding
    frontend = DIPFrontend.from_wav2vec2(ref.state_dict(), "base", dropout=0.0, dropout_input=0.0)
    with torch.no_grad():
        want = ref(wave)[0]                                                        # (B, T', 768)
        got = frontend.eval()(wave).transpose(1, 2)
    assert want.abs().max() > 0.5
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_dip_frontend_equals_torchaudio_in_every_layout(tmp_path):
    from safetensors.torch import save_file

    frontend = small_frontend()
    ref = torchaudio_model(frontend, seed=3)
    state = ref.state_dict()
    gen = torch.Generator().manual_seed(4)
    wave = torch.randn(2, 6400, generator=gen) * 0.1                  # 20 frames, no padding
    with torch.no_grad():
        want = ref(wave)[0]                                           # (B, T', d): the last layer
    assert want.abs().max() > 0.5
    heads = pretraining_heads(frontend.config, gen)
    hf = torchaudio_to_huggingface(state, "wav2vec2.")
    hf.update({"wav2vec2.masked_spec_embed": heads["mask_emb"], "quantizer.codevectors": heads["quantizer.vars"],
               "quantizer.weight_proj.weight": heads["quantizer.weight_proj.weight"],
               "quantizer.weight_proj.bias": heads["quantizer.weight_proj.bias"],
               "project_q.weight": heads["project_q.weight"], "project_q.bias": heads["project_q.bias"],
               "project_hid.weight": heads["final_proj.weight"], "project_hid.bias": heads["final_proj.bias"]})
    (tmp_path / "hf").mkdir()
    save_file(hf, str(tmp_path / "hf" / "model.safetensors"))
    torch.save({"model": {**torchaudio_to_fairseq(state), **heads}}, tmp_path / "wav2vec_small_model.pt")
    sources = {"torchaudio": (state, 4), "fairseq": (tmp_path / "wav2vec_small_model.pt", 0),
               "huggingface": (tmp_path / "hf", 0)}
    for layout, (source, n_fresh) in sources.items():
        frontend = small_frontend()
        fresh = frontend.load_wav2vec2(source)
        assert len(fresh) == n_fresh, (layout, fresh)
        with torch.no_grad():
            got = frontend.eval()(wave).transpose(1, 2)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=lambda m: f"{layout}: {m}")
        if not n_fresh:
            own = frontend.state_dict()
            assert torch.equal(own["quantizer.codebook"], heads["quantizer.vars"])
            assert torch.equal(own["final_proj.weight"], heads["final_proj.weight"])
            assert torch.equal(own["mask_emb"], heads["mask_emb"]) and int(own["quantizer.num_updates"]) == 0


def test_dip_frontend_takes_hubert_and_refuses_other_variants(tmp_path):
    import torchaudio

    from sepkit.models.dip import DIPFrontend

    frontend = small_frontend()
    hubert = torchaudio_model(frontend, seed=5)   # HuBERT base's network is wav2vec2 base's
    gen = torch.Generator().manual_seed(6)
    fairseq = torchaudio_to_fairseq(hubert.state_dict())
    d = frontend.config.d_model
    fairseq.update(mask_emb=torch.rand(d, generator=gen), label_embs_concat=torch.randn(504, 16, generator=gen),
                   **{"final_proj.weight": torch.randn(16, d, generator=gen), "final_proj.bias": torch.zeros(16)})
    fresh = frontend.load_wav2vec2(fairseq)
    assert fresh == ("quantizer", "project_q", "final_proj")
    assert torch.equal(frontend.mask_emb.detach(), fairseq["mask_emb"])
    wave = torch.randn(1, 4800, generator=gen) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(frontend.eval()(wave).transpose(1, 2), hubert(wave)[0], rtol=1e-5, atol=1e-5)
    large = torchaudio.models.wav2vec2_model(**{**frontend.wav2vec2_arguments(), "extractor_mode": "layer_norm",
                                                "extractor_conv_bias": True}, aux_num_out=None)
    with pytest.raises(CheckpointError, match="conv_layers.0.conv.bias|layer_norm"):
        small_frontend().load_wav2vec2(large.state_dict())
    with pytest.raises(CheckpointError, match="different model"):
        DIPFrontend.from_wav2vec2(hubert.state_dict(), "small")
    with pytest.raises(CheckpointError, match="layout"):
        small_frontend().load_wav2vec2({"fc.weight": torch.zeros(2, 2)})
    torch.save({"model": {}, "args": Unrelated()}, tmp_path / "fairseq_with_config.pt")
    with pytest.raises(CheckpointError, match=r"needs the Python object .*Unrelated"):
        small_frontend().load_wav2vec2(tmp_path / "fairseq_with_config.pt")
    with pytest.raises(FileNotFoundError):
        small_frontend().load_wav2vec2(tmp_path / "absent.pt")


def test_gcrn_ssl_model_reads_every_layout(tmp_path):
    from safetensors.torch import save_file

    from sepkit.models.gcrn import build_ssl_model

    tiny = dict(extractor_conv_layer_config=[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2,
                encoder_embed_dim=48, encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4, encoder_num_layers=2,
                encoder_num_heads=4, encoder_ff_interm_features=64)
    ref = perturbed(build_ssl_model(tiny, seed=1), seed=8, scale=0.05)
    state = ref.state_dict()
    torch.save(torchaudio_to_fairseq(state), tmp_path / "fairseq.pt")
    (tmp_path / "hf").mkdir()
    save_file(torchaudio_to_huggingface(state), str(tmp_path / "hf" / "model.safetensors"))
    (tmp_path / "hf" / "config.json").write_text('{"hidden_size": 48, "num_attention_heads": 4}')
    torch.save(state, tmp_path / "torchaudio.pt")
    wave = torch.randn(1, 4000, generator=torch.Generator().manual_seed(9)) * 0.1
    with torch.no_grad():
        want = ref.extract_features(wave)[0][-1]
    for path in ("torchaudio.pt", "fairseq.pt", "hf"):
        model = build_ssl_model(tiny, tmp_path / path, seed=2)
        with torch.no_grad():
            torch.testing.assert_close(model.extract_features(wave)[0][-1], want, rtol=1e-5, atol=1e-5)
    (tmp_path / "hf" / "config.json").write_text('{"hidden_size": 48, "num_attention_heads": 8}')
    with pytest.raises(CheckpointError, match="num_attention_heads=8"):
        build_ssl_model(tiny, tmp_path / "hf", seed=2)


def test_dip_pretrain_starts_from_task_args_init(tmp_path):
    from sepkit.train import ConfigError, make_task
    from sepkit.train.config import load_recipe

    cfg = load_recipe("dip-pretrain", preset="demo", overrides=[f"task_args.init={tmp_path / 'w2v.pt'}"])
    task = make_task(cfg)
    model = task.build_model()
    with pytest.raises(ConfigError, match="task_args.init=.*no file"):
        task.initialize(model)
    ref = torchaudio_model(model, seed=10)
    torch.save(ref.state_dict(), tmp_path / "w2v.pt")
    task.initialize(model)
    wave = torch.randn(1, 3200, generator=torch.Generator().manual_seed(11)) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(wave).transpose(1, 2), ref.eval()(wave)[0], rtol=1e-5, atol=1e-5)
