"""The DIP frontend: shapes and parameter counts, masking, quantizer, pretraining losses, the
separators' frontend hook, checkpoints and bad input. Runs use a tiny configuration."""
import math
import pickle

import pytest
import torch
from torch import nn

from sepkit.losses import MPCLoss
from sepkit.models import build_separator
from sepkit.models.dip import (
    DIP_CONFIGS, DIPFrontend, DIPPretrainLoss, build_dip_separator, load_frontend, pooled_linear_mmd, span_mask,
)

TINY = dict(conv_channels=16, d_model=32, n_layers=1, n_heads=2, ffn_dim=64, final_dim=16, codevector_dim=16,
            num_vars=24, pos_conv_kernel=16, pos_conv_groups=4)
SEPARATORS_SMALL = {
    "convtasnet": dict(n_filters=16, kernel_size=16, stride=8, bottleneck=8, hidden=16, skip=8, layers=3, repeats=2),
    "dprnn": dict(n_filters=8, kernel_size=4, stride=2, bottleneck=8, hidden=8, chunk_size=12, n_blocks=2),
    "sepformer": dict(n_filters=16, kernel_size=16, stride=8, nhead=2, dim_feedforward=32, n_layers=1, n_blocks=2,
                      chunk_size=10),
    "bilstm": dict(n_filters=16, kernel_size=40, stride=20, hidden=8, n_layers=1),
}


def tiny(seed: int = 0, **kwargs) -> DIPFrontend:
    torch.manual_seed(seed)
    return DIPFrontend("small", **{**TINY, **kwargs})


def wave(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, length, generator=torch.Generator().manual_seed(seed))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- sizes


def test_parameter_counts_are_pinned():
    base = DIPFrontend("base")                                                # 0.5 s on a CPU
    assert sum(p.numel() for p in base.parameters()) == 95_044_608        # wav2vec2 base
    assert base.output_dim == 768 and base.sample_rate == 16000 and base.frame_rate == 50.0
    small = DIPFrontend("small")
    assert sum(p.numel() for p in small.parameters()) == 4_154_368
    assert small.output_dim == 256
    cfg = DIP_CONFIGS["base"]
    assert (cfg.conv_kernels, cfg.conv_strides) == ((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
    assert (cfg.groups, cfg.num_vars, cfg.mask_prob, cfg.mask_length) == (2, 320, 0.065, 10)
    assert cfg.hop == 320 and cfg.receptive_field == 400


def test_forward_gives_50_hz_features():
    fe = tiny().eval()
    for length in (400, 719, 720, 16000):
        out = fe(wave(2, length))
        assert out.shape == (2, 32, (length - 400) // 320 + 1) == (2, fe.output_dim, fe.num_frames(length))
    assert fe(wave(1, 16000)[:, None]).shape == (1, 32, 49)                  # (B, 1, T) accepted


def test_padding_does_not_change_valid_frames():
    fe = tiny().eval()
    a, b = wave(1, 8000, 1), wave(1, 5000, 2)
    batch = torch.zeros(2, 8000)
    batch[0], batch[1, :5000] = a[0], b[0]
    batch[1, 5000:] = 3.0                                                     # garbage in the padding
    lengths = torch.tensor([8000, 5000])
    out = fe(batch, lengths)
    frames = fe.frame_lengths(lengths)
    assert frames.tolist() == [24, 15]
    torch.testing.assert_close(out[0], fe(a)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[1, :, :15], fe(b)[0], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- masking


def test_span_mask_statistics():
    p, span = 0.065, 10
    lengths = torch.tensor([3000] * 6 + [1700] * 2)
    mask = span_mask(lengths, 3000, p, span, min_masks=2, generator=gen(1))
    assert not mask[6:, 1700:].any()                                          # padding never masked
    fraction = mask[lengths[:, None] > torch.arange(3000)].float().mean().item()
    assert abs(fraction - (1 - (1 - p) ** span)) < 0.03                       # about half: 0.49
    for row, length in zip(mask, lengths.tolist()):                           # every masked run >= span
        edges = torch.diff(torch.cat([torch.zeros(1), row[:length].float(), torch.zeros(1)]))
        runs = (edges == -1).nonzero().squeeze(1) - (edges == 1).nonzero().squeeze(1)
        assert runs.numel() > 0 and int(runs.min()) >= span
    # span 1 shows the start counts: floor(p L + u) distinct starts, at least min_masks
    starts = span_mask(torch.tensor([1000, 400, 10]), 1000, p, 1, min_masks=2, generator=gen(2)).sum(1).tolist()
    assert starts[0] in (65, 66) and starts[1] in (26, 27) and starts[2] == 2


def test_span_mask_short_utterances_and_draws_are_reproducible():
    lengths = torch.tensor([5, 1, 0, 12])
    m1 = span_mask(lengths, 12, generator=gen(3))
    m2 = span_mask(lengths, 12, generator=gen(3))
    assert torch.equal(m1, m2)
    assert not m1[1].any() and not m1[2].any()                                # < 2 frames: no mask
    assert m1[0, :5].any() and not m1[0, 5:].any()
    with pytest.raises(ValueError, match="frame_lengths"):
        span_mask(torch.tensor([13]), 12)


def test_pretrain_outputs_never_mask_padding():
    fe = tiny()
    lengths = torch.tensor([16000, 6000, 3000])
    out = fe.pretrain_outputs(wave(3, 16000), lengths, generator=gen(4))
    frames = out.frame_lengths.tolist()
    assert frames == [49, 18, 9]
    for b, n in enumerate(frames):
        assert out.mask_indices[b, :n].any() and not out.mask_indices[b, n:].any()
    assert out.context.shape == out.targets.shape == (3, 49, 16)
    assert out.cues.shape == (3, 49, 32) and out.codebook_logits.shape == (3, 49, 2, 24)
    assert 1.0 <= float(out.perplexity) <= 48.0
    bad = torch.zeros(3, 49, dtype=torch.bool)
    bad[1, 30] = True
    with pytest.raises(ValueError, match="padded frames"):
        fe.pretrain_outputs(wave(3, 16000), lengths, mask_indices=bad)


# ---------------------------------------------------------------- quantizer


def test_temperature_anneals_and_is_saved():
    fe = tiny()
    q = fe.quantizer
    assert q.temperature == 2.0
    fe.step_temperature(1000)
    assert q.temperature == pytest.approx(2.0 * 0.999995 ** 1000)
    state = fe.state_dict()
    assert int(state["quantizer.num_updates"]) == 1000
    other = tiny(seed=1)
    other.load_state_dict(state)
    assert other.quantizer.temperature == pytest.approx(q.temperature)
    fe.step_temperature(300_000)
    assert q.temperature == 0.5                                               # floor (2 * d^n < 0.5)


def test_quantizer_eval_is_hard_codebook_lookup():
    fe = tiny().eval()
    x = torch.randn(5, 16)
    quantized, logits = fe.quantizer(x)
    idx = logits.argmax(-1)                                                   # (5, G)
    entries = fe.quantizer.codebook.view(2, 24, -1)
    expected = torch.cat([entries[0, idx[:, 0]], entries[1, idx[:, 1]]], dim=-1)
    torch.testing.assert_close(quantized, expected)


# ---------------------------------------------------------------- pretraining losses


def _two_branches(fe, seed=0):
    real = fe.pretrain_outputs(wave(2, 8000, seed), torch.tensor([8000, 6000]), generator=gen(seed))
    synth = fe.pretrain_outputs(wave(3, 7000, seed + 1), generator=gen(seed + 1))
    return real, synth


@pytest.mark.parametrize("mode", ["frames", "pooled"])
def test_mic_with_alpha_zero_equals_mpc(mode):
    fe = tiny()
    real, synth = _two_branches(fe)
    mic, parts = DIPPretrainLoss(alpha=0.0, mmd=mode, num_negatives=10)(real, synth, generator=gen(7))
    mpc = MPCLoss(num_negatives=10, negatives_from="masked")
    g = gen(7)
    expected = (mpc(real.context, real.targets, real.mask_indices, real.frame_lengths, real.codebook_logits, g)
                + mpc(synth.context, synth.targets, synth.mask_indices, synth.frame_lengths, synth.codebook_logits, g)
                + 10.0 * (real.feature_penalty + synth.feature_penalty))
    assert torch.equal(mic, expected)
    assert parts["mmd"] != 0.0                                                # computed and logged, weight 0
    mic10, parts10 = DIPPretrainLoss(alpha=10.0, mmd=mode, num_negatives=10)(real, synth, generator=gen(7))
    torch.testing.assert_close(mic10, expected + 10.0 * parts10["mmd"], rtol=1e-5, atol=1e-5)


def test_single_branch_is_mpc_plus_feature_penalty():
    fe = tiny()
    real, _ = _two_branches(fe)
    loss, parts = DIPPretrainLoss(num_negatives=10)(real, generator=gen(1))
    assert set(parts) == {"loss", "mpc", "mpc_real", "feature_penalty", "perplexity"}
    assert parts["loss"] == pytest.approx(parts["mpc"] + 10.0 * parts["feature_penalty"], rel=1e-6)


def test_siamese_branches_share_weights():
    fe = tiny()
    x = wave(2, 6000, 3)
    mask = fe.compute_mask(fe.frame_lengths(torch.tensor([6000, 6000])), fe.num_frames(6000), gen(0))
    fe.eval()
    a = fe.pretrain_outputs(x, mask_indices=mask)
    b = fe.pretrain_outputs(x, mask_indices=mask)
    assert torch.equal(a.cues, b.cues) and torch.equal(a.targets, b.targets)
    fe.train()
    real, synth = _two_branches(fe, seed=5)
    loss_fn = DIPPretrainLoss(alpha=10.0, num_negatives=10)
    grads = []
    for part in ("real", "synth"):
        fe.zero_grad()
        out = real if part == "real" else synth
        loss_fn.branch_mpc(out, gen(0)).backward(retain_graph=True)
        grads.append({n: p.grad.clone() for n, p in fe.named_parameters() if p.grad is not None})
    shared = set(grads[0]) & set(grads[1])
    assert {"local_encoder.convs.0.weight", "context.layers.0.self_attn.in_proj_weight",
            "quantizer.codebook", "final_proj.weight"} <= shared                # one set of weights, both branches
    assert all(grads[0][n].abs().sum() > 0 and grads[1][n].abs().sum() > 0 for n in shared)


def test_gradients_reach_codebook_and_local_encoder():
    fe = tiny()
    real, synth = _two_branches(fe, seed=9)
    loss, _ = DIPPretrainLoss(num_negatives=10)(real, synth, generator=gen(0))
    loss.backward()
    for name in ("quantizer.codebook", "quantizer.weight_proj.weight", "local_encoder.convs.0.weight",
                 "local_encoder.convs.6.weight", "mask_emb", "context.pos_conv.conv.parametrizations.weight.original1"):
        grad = dict(fe.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_mmd_modes_react_to_a_domain_shift():
    fe = tiny().eval()
    x = wave(4, 8000, 11)
    mask = torch.zeros(4, fe.num_frames(8000), dtype=torch.bool)
    mask[:, :10] = True
    same_a = fe.pretrain_outputs(x[:2], mask_indices=mask[:2])
    same_b = fe.pretrain_outputs(x[2:], mask_indices=mask[2:])
    shifted = fe.pretrain_outputs(x[2:] * 0 + torch.sin(torch.arange(8000) * 0.3), mask_indices=mask[2:])
    assert float(pooled_linear_mmd(same_a, same_a).detach()) == 0.0
    for mode in ("frames", "pooled"):
        loss_fn = DIPPretrainLoss(mmd=mode, num_negatives=5)
        near = loss_fn(same_a, same_b, generator=gen(0))[1]["mmd"]
        far = loss_fn(same_a, shifted, generator=gen(0))[1]["mmd"]
        assert far > near, mode


# ---------------------------------------------------------------- separators


@pytest.mark.parametrize("name", sorted(SEPARATORS_SMALL))
def test_adapter_output_matches_each_separator_resolution(name):
    fe = tiny().eval()
    torch.manual_seed(0)
    model = build_dip_separator(name, fe, **SEPARATORS_SMALL[name]).eval()
    assert model.frontend is fe and model.sample_rate == fe.sample_rate == 16000
    length = 4000
    mix = wave(2, length, 4)
    frames = model.num_frames(length)
    feats = fe(mix)
    assert feats.shape == (2, 32, fe.num_frames(length)) and feats.shape[-1] != frames
    assert model.adapter(feats, frames).shape == (2, model.encoder.n_filters, frames)
    base = model.encode(mix, torch.zeros_like(feats))
    nn.init.normal_(model.adapter.proj.weight)
    with_frontend = model.encode(mix)                                         # calls the frontend itself
    assert with_frontend.shape == base.shape == (2, model.encoder.n_filters, frames)
    assert not torch.allclose(with_frontend, base)
    assert model(mix).shape == (2, 2, length)


def test_frame_rates_of_the_separators_differ():
    rates = {name: build_separator(name, **SEPARATORS_SMALL[name], sample_rate=16000).num_frames(16000)
             for name in SEPARATORS_SMALL}
    assert len(set(rates.values())) >= 3 and all(r > 49 for r in rates.values())


# ---------------------------------------------------------------- bad input


def test_separator_and_frontend_at_different_sample_rates():
    fe = tiny()
    with pytest.raises(ValueError, match=r"sample_rate=8000 Hz but the DIP frontend at 16000 Hz"):
        build_dip_separator("convtasnet", fe, sample_rate=8000, **SEPARATORS_SMALL["convtasnet"])
    fe8 = tiny(sample_rate=8000)
    assert build_dip_separator("convtasnet", fe8, **SEPARATORS_SMALL["convtasnet"]).sample_rate == 8000


def test_frontend_checkpoint_of_another_config(tmp_path):
    fe = tiny()
    fe.step_temperature(7)
    path = tmp_path / "fe.pt"
    fe.save(path)
    loaded = load_frontend(path, "small", **TINY)
    assert loaded.quantizer.temperature == fe.quantizer.temperature
    torch.testing.assert_close(loaded.state_dict(), fe.state_dict())
    with pytest.raises(ValueError, match="expected 'base'"):
        load_frontend(path, "base")
    bare = tmp_path / "bare.pt"
    torch.save(fe.state_dict(), bare)
    with pytest.raises(ValueError, match="not of this configuration.*shape mismatch"):
        load_frontend(bare, "small")
    with pytest.raises(ValueError, match="pass config="):
        load_frontend(bare)
    with pytest.raises(FileNotFoundError, match="no frontend checkpoint"):
        load_frontend(tmp_path / "missing.pt")
    code = tmp_path / "code.pt"
    with open(code, "wb") as f:
        pickle.dump({"format": "sepkit.dip_frontend", "config": nn.Linear(1, 1)}, f, protocol=2)
    with pytest.raises(ValueError, match="refused|not a readable"):
        load_frontend(code)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": [1, 2]}, foreign)
    with pytest.raises(ValueError, match="not a DIP frontend checkpoint"):
        load_frontend(foreign)


def test_bad_waveforms_and_configs():
    fe = tiny()
    with pytest.raises(TypeError, match="floating-point"):
        fe(torch.zeros(1, 1000, dtype=torch.int16))
    with pytest.raises(ValueError, match="at least 400"):
        fe(torch.zeros(1, 399))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        fe(torch.zeros(2, 2, 1000))
    bad = torch.zeros(1, 1000)
    bad[0, 3] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        fe(bad)
    with pytest.raises(ValueError, match="lengths must lie"):
        fe(torch.zeros(2, 1000), torch.tensor([1000, 1001]))
    with pytest.raises(ValueError, match="config must be one of"):
        DIPFrontend("large")
    with pytest.raises(ValueError, match="unknown config key"):
        DIPFrontend("small", d_modle=64)
    with pytest.raises(ValueError, match="multiple of n_heads"):
        DIPFrontend("small", n_heads=3)
    with pytest.raises(ValueError, match="alpha"):
        DIPPretrainLoss(alpha=-1.0)
    with pytest.raises(ValueError, match="mmd must be"):
        DIPPretrainLoss(mmd="linear")


def test_finite_outputs_on_silence():
    fe = tiny()
    real = fe.pretrain_outputs(torch.zeros(2, 6000), generator=gen(0))
    synth = fe.pretrain_outputs(torch.zeros(2, 6000), generator=gen(1))
    loss, parts = DIPPretrainLoss(num_negatives=10)(real, synth, generator=gen(2))
    loss.backward()
    assert math.isfinite(float(loss))
    assert all(torch.isfinite(p.grad).all() for p in fe.parameters() if p.grad is not None)


# ---------------------------------------------------------------- tasks and recipes

TINY_YAML = "{" + ", ".join(f"{k}: {v}" for k, v in TINY.items()) + "}"


def _pretrain_recipe(tmp_path) -> str:
    path = tmp_path / "tiny-pretrain.yaml"
    path.write_text("""
recipe: tiny-dip-pretrain
task: dip-pretrain
task_args: {alpha: 10.0, num_negatives: 8}
data:
  sample_rate: 8000
  segment: 0.5
  batch_size: 2
  synthetic: {num_train: 4, num_valid: 1, num_test: 1, min_duration: 0.6, max_duration: 0.7}
model: {name: dip, args: {config: small, conv_channels: 16, d_model: 32, n_layers: 1, n_heads: 2, ffn_dim: 64,
         final_dim: 16, codevector_dim: 16, num_vars: 24, pos_conv_kernel: 16, pos_conv_groups: 4}}
optim: {lr: 1.0e-3, scheduler: none}
train: {max_steps: 2, eval_every: 2, ckpt_every: 2, log_every: 1, max_valid_items: 1, grad_accum: 2}
""")
    return str(path)


def _separate_recipe(tmp_path, pretrain: str, frontend_ckpt: str, freeze: bool) -> str:
    path = tmp_path / f"tiny-separate-{freeze}.yaml"
    path.write_text(f"""
recipe: tiny-dip-separate
task: dip-separate
task_args: {{freeze_frontend: {str(freeze).lower()}, pretrain_recipe: {pretrain}, pretrain_preset: null, write_real: 1}}
data:
  sample_rate: 8000
  segment: 0.5
  batch_size: 2
  synthetic: {{num_train: 4, num_valid: 1, num_test: 1, min_duration: 0.6, max_duration: 0.7}}
model:
  name: convtasnet
  args: {{frontend_ckpt: {frontend_ckpt}, n_filters: 16, kernel_size: 16, stride: 8, bottleneck: 8, hidden: 16,
         skip: 8, layers: 2, repeats: 1}}
optim: {{lr: 1.0e-3, scheduler: none}}
train: {{max_steps: 1, eval_every: 1, ckpt_every: 1, log_every: 1}}
""")
    return str(path)


@pytest.fixture(autouse=False)
def _flush_denormals():
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def test_pretrain_then_separate_through_sepkit_train(tmp_path, _flush_denormals):
    from sepkit.cli import main
    from sepkit.train import load_trained, read_meta, resolve_checkpoint

    pretrain = _pretrain_recipe(tmp_path)
    run = tmp_path / "sep"
    assert main(["train", _separate_recipe(tmp_path, pretrain, "pretrain", True), "--out", str(run),
                 "--no-progress"]) == 0
    prereq = run / "prereq-dip-pretrain"
    task, frontend = load_trained(prereq)
    assert task.name == "dip_pretrain" and isinstance(frontend, DIPFrontend)
    assert int(frontend.quantizer.num_updates) == 2                           # one per optimizer update
    metrics = (prereq / "metrics.csv").read_text()
    for name in ("valid,mpc,", "valid,mmd_cues,", "valid,mmd_pooled,", "train,temperature,"):
        assert name in metrics
    ids = [line.split(",")[0] for line in (run / "test_metrics.csv").read_text().splitlines()[1:]]
    assert ids == ["synthetic/test-000000", "real/test-000000"]
    written = sorted(p.name for p in (run / "real_separated").iterdir())
    assert written == ["test-000000_s1.wav", "test-000000_s2.wav"]
    sep_task, model = load_trained(run)
    assert sep_task.cfg.model.args["frontend_ckpt"] == str(prereq)             # recorded for rebuilding
    assert read_meta(resolve_checkpoint(run)).get("frozen") == ["frontend"]
    torch.testing.assert_close(model.frontend.state_dict(), frontend.state_dict())

    tuned = tmp_path / "tuned"                                                # fine-tune the frontend
    assert main(["train", _separate_recipe(tmp_path, pretrain, str(prereq), False), "--out", str(tuned),
                 "--no-progress", "--no-test", "train.max_steps=2"]) == 0   # step 1 moves the zero-initialised adapter
    _, model = load_trained(tuned)
    after = model.frontend.state_dict()["local_encoder.convs.0.weight"]
    assert not torch.equal(after, frontend.state_dict()["local_encoder.convs.0.weight"])


def test_dip_separate_refuses_a_frontend_at_another_rate(tmp_path):
    from sepkit.train import ConfigError, load_recipe, make_task

    path = tmp_path / "fe16k.pt"
    tiny(sample_rate=16000).save(path)
    cfg = load_recipe("dip-separate", "demo", [f"model.args.frontend_ckpt={path}", "data.sample_rate=8000"])
    with pytest.raises(ConfigError, match="8000 Hz but the DIP frontend at 16000 Hz"):
        make_task(cfg).build_model()
    cfg = load_recipe("dip-separate", "demo", [f"model.args.frontend_ckpt={tmp_path / 'missing'}"])
    with pytest.raises(ConfigError, match="frontend_ckpt.*not found"):
        make_task(cfg)
    cfg = load_recipe("dip-pretrain", "demo", ["model.name=convtasnet"])
    with pytest.raises(ConfigError, match="model.name"):
        make_task(cfg)


def test_audio_folders_pair_two_domains(tmp_path):
    from sepkit.data import write_audio
    from sepkit.data.folders import AudioFolder, TwoDomains, collate_domains

    for i, seconds in enumerate((0.3, 1.0, 0.8)):
        write_audio(tmp_path / "real" / f"r{i}.wav", torch.rand(int(16000 * seconds)) - 0.5, 16000)
    write_audio(tmp_path / "synth" / "a" / "s0.flac", torch.rand(8000) - 0.5, 8000)
    write_audio(tmp_path / "synth" / "s1.wav", torch.rand(8000) - 0.5, 8000)
    real = AudioFolder(tmp_path / "real", "train", 8000, segment=0.5, held_out=1)
    assert [p.name for p in real.files] == ["r0.wav", "r1.wav"]
    assert [p.name for p in AudioFolder(tmp_path / "real", "valid", 8000, held_out=1).files] == ["r2.wav"]
    assert len(AudioFolder(tmp_path / "real", "all", 8000)) == 3
    short, long_ = real[0], real[1]
    assert short["mixture"].shape == long_["mixture"].shape == (4000,)
    assert short["length"] == 2400 and long_["length"] == 4000                 # 0.3 s resampled, zero-padded
    pairs = TwoDomains(real, AudioFolder(tmp_path / "synth", "train", 8000, segment=0.5, held_out=1))
    batch = collate_domains([pairs[0]])
    assert batch["real"].shape == (1, 4000) and batch["real_lengths"].tolist() == [2400]
    assert batch["id"] == ["r0|a/s0"]
    with pytest.raises(FileNotFoundError):
        AudioFolder(tmp_path / "nowhere", "train", 8000)
    with pytest.raises(ValueError, match="held_out"):
        AudioFolder(tmp_path / "real", "train", 8000, held_out=3)
