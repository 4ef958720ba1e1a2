"""GCRN: causality, streaming = offline, export, the complex mask, parameter counts, the Wav2Vec2
variants training, bad input, the DNS-style data."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sepkit.data.audio import write_audio
from sepkit.data.dns import DNSMixtures, DNSTestSet, mix_at_snr
from sepkit.losses import si_sdr_loss
from sepkit.models.gcrn import GCRN, build_ssl_model, count_parameters, macs_per_second
from sepkit.models.streaming import StreamingEnhancer, export_step

TINY = dict(win_length=64, hop_length=32, channels=(4, 8), lstm_groups=2, lstm_layers=2)
TINY_SSL = dict(
    extractor_conv_layer_config=[(8, 10, 5), (8, 3, 2), (8, 3, 2), (8, 3, 2), (8, 3, 2), (8, 2, 2), (8, 2, 2)],
    encoder_embed_dim=16, encoder_pos_conv_kernel=8, encoder_pos_conv_groups=2, encoder_num_layers=1,
    encoder_num_heads=2, encoder_ff_interm_features=32,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these models are small and the streaming loop is per frame, where
    thread hand-offs cost more than they give (and CI CPUs are shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _eval(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode with non-trivial batch-norm statistics (so the test sees the normalisation)."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def _speechlike(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    tone = torch.sin(2 * torch.pi * 220 * t) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 3 * t))
    return 0.3 * tone + 0.05 * torch.randn(batch, n, generator=g)


# ----------------------------------------------------------------------------- sizes


def test_parameter_counts_pinned_and_footprint():
    torch.manual_seed(0)
    tan_wang = GCRN("tan_wang")
    assert count_parameters(tan_wang) == 9_767_240  # Tan and Wang report 9.77 M
    assert tan_wang.n_bins == 161 and tan_wang.feature_size == 1024 and tan_wang.latency_samples == 320
    ondevice = GCRN("ondevice")
    assert count_parameters(ondevice) == 2_547_896
    footprint = sum(t.numel() * t.element_size() for t in list(ondevice.parameters()) + list(ondevice.buffers()))
    assert footprint < 16e6, footprint
    assert (ondevice.win_length, ondevice.hop_length, ondevice.n_bins) == (400, 320, 201)
    assert ondevice.latency_samples == 400


def test_macs_per_second_counts_lstm_and_convolutions():
    small = GCRN("ondevice", **TINY)
    macs = macs_per_second(small)
    frames = small.num_frames(16000)
    lstm = sum(4 * m.hidden_size * (m.input_size + m.hidden_size) for m in small.lstm.lstms) * frames
    # the conv/linear part is positive and the LSTM part is in it
    assert macs > lstm > 0
    # doubling the encoder/decoder width costs more
    assert macs_per_second(GCRN("ondevice", **{**TINY, "channels": (8, 16)})) > macs


# ----------------------------------------------------------------------------- causality and streaming


@pytest.mark.parametrize("config", ["tan_wang", "ondevice"])
def test_strictly_causal(config):
    torch.manual_seed(1)
    model = _eval(GCRN(config))
    x = _speechlike(1, 6000)
    t0 = 4000
    y = torch.randn(1, 6000 - t0)
    x2 = x.clone()
    x2[:, t0:] = y
    with torch.no_grad():
        a, b = model(x), model(x2)
    cut = t0 - model.latency_samples
    assert torch.equal(a[:, :cut], b[:, :cut])
    assert (a[:, t0:] - b[:, t0:]).abs().max() > 1e-3  # the perturbation does reach the output


@pytest.mark.parametrize("config,seed,n", [("tan_wang", 0, 2237), ("ondevice", 1, 4001), ("tiny", 2, 3001)])
def test_streaming_equals_offline_random_chunks(config, seed, n):
    torch.manual_seed(seed)
    model = _eval(GCRN("ondevice", **TINY) if config == "tiny" else GCRN(config))
    x = _speechlike(2, n, seed)
    with torch.no_grad():
        offline = model(x)
    stream = StreamingEnhancer(model)
    rng = np.random.default_rng(seed)
    outs, i = [], 0
    while i < x.shape[1]:
        n = int(rng.choice([0, 1, 7, 160, 333, 900]))
        out = stream.process(x[:, i : i + n])
        i += n
        outs.append(out)
        assert sum(o.shape[1] for o in outs) <= i  # never ahead of the input
    outs.append(stream.flush())
    online = torch.cat(outs, dim=1)
    assert online.shape == offline.shape
    assert (online - offline).abs().max() < 1e-5
    # reset() starts a new stream: the same input gives the same output
    again = torch.cat([stream.process(x), stream.flush()], dim=1)
    assert (again - offline).abs().max() < 1e-5


_TINY_STREAM = {}


@given(chunks=st.lists(st.integers(0, 150), min_size=1, max_size=12), length=st.integers(1, 700))
def test_streaming_equals_offline_any_chunking(chunks, length):
    """Any chunking (empty chunks, single samples, inputs shorter than a window) matches offline."""
    if "model" not in _TINY_STREAM:
        torch.manual_seed(9)
        _TINY_STREAM["model"] = _eval(GCRN("ondevice", **TINY))
    model = _TINY_STREAM["model"]
    x = _speechlike(1, length, length)
    with torch.no_grad():
        offline = model(x)
    stream = StreamingEnhancer(model)
    outs, i, k = [], 0, 0
    while i < length:
        n = chunks[k % len(chunks)] or (1 if k > 50 else 0)
        outs.append(stream.process(x[:, i : i + n]))
        i, k = i + n, k + 1
    outs.append(stream.flush())
    online = torch.cat(outs, dim=1)
    assert online.shape == (1, length)
    assert (online - offline).abs().max() < 1e-5


def test_nan_chunk_raises_and_leaves_state_unchanged():
    torch.manual_seed(2)
    model = _eval(GCRN("ondevice", **TINY))
    x = _speechlike(1, 1000)
    with torch.no_grad():
        offline = model(x)
    stream = StreamingEnhancer(model)
    first = stream.process(x[:, :300])
    bad = x[:, 300:400].clone()
    bad[0, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        stream.process(bad)
    with pytest.raises(ValueError, match="batch"):
        stream.process(torch.zeros(3, 10))
    rest = torch.cat([first, stream.process(x[:, 300:]), stream.flush()], dim=1)
    assert (rest - offline).abs().max() < 1e-5


def test_exported_step_matches_eager():
    torch.manual_seed(3)
    model = _eval(GCRN("ondevice"))
    module, kind = export_step(model, batch=2)
    assert kind in ("export", "torchscript")
    frame = _speechlike(2, model.win_length, 5)
    h, c = model.init_state(2)
    h, c = h + 0.1, c - 0.1
    with torch.no_grad():
        want = model.step(frame, h, c)
        got = module(frame, h, c)
    for a, b in zip(want, got):
        assert (a - b).abs().max() < 1e-5
    # the exported step drives a whole stream to the offline result
    x = _speechlike(2, 2000, 6)
    with torch.no_grad():
        offline = model(x)
    stream = StreamingEnhancer(model, step=module)
    online = torch.cat([stream.process(x[:, :1234]), stream.process(x[:, 1234:]), stream.flush()], dim=1)
    assert (online - offline).abs().max() < 1e-5


def test_concat_variant_is_not_causal_and_refuses_to_stream():
    torch.manual_seed(6)
    model = _eval(GCRN("ondevice", "concat", **TINY, ssl_config=TINY_SSL))
    assert not model.causal
    with pytest.raises(ValueError, match="not causal"):
        StreamingEnhancer(model)
    # as documented: the Wav2Vec2 transformer lets future input change past output
    x = _speechlike(1, 4000)
    x2 = x.clone()
    x2[:, 3000:] = 0.5
    with torch.no_grad():
        a, b = model(x), model(x2)
    assert (a[:, :1000] - b[:, :1000]).abs().max() > 1e-6


# ----------------------------------------------------------------------------- the mask


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_stft_mask_equals_explicit_complex_multiply(backend):
    torch.manual_seed(4)
    model = GCRN("ondevice", **TINY, backend=backend)
    spec = torch.randn(2, 5, model.n_bins, 2)
    mask = torch.randn(2, 5, model.n_bins, 2)
    got = torch.view_as_complex(model.apply_mask(spec, mask))
    want = torch.view_as_complex(spec) * torch.view_as_complex(mask)
    assert (got - want).abs().max() < 1e-5


def test_identity_mask_reconstructs_input():
    """Analysis, overlap-add synthesis and framing invert each other (the mask is the only change)."""
    for config in ("tan_wang", "ondevice"):
        model = GCRN(config)
        x = _speechlike(2, 4001)
        frames = model._padded(x).unfold(-1, model.win_length, model.hop_length)
        y = model.synthesize_frames(model.analyze(frames))
        K = y.shape[1]
        out = torch.nn.functional.fold(y.transpose(1, 2), (1, (K - 1) * model.hop_length + model.win_length),
                                       (1, model.win_length), stride=(1, model.hop_length))[:, 0, 0]
        front = model.win_length - model.hop_length
        assert (out[:, front : front + 4001] - x).abs().max() < 1e-5


# ----------------------------------------------------------------------------- variants train


def _fit(model, loss_fn, params, steps=12, lr=3e-3):
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def _batch():
    clean = _speechlike(2, 1600, 7)
    noise = torch.randn(2, 1600, generator=torch.Generator().manual_seed(8))
    noisy = torch.stack([mix_at_snr(c, n, 0.0)[0] for c, n in zip(clean, noise)])
    return noisy, clean


@pytest.mark.parametrize("variant", ["base", "concat", "distill", "pretrain"])
def test_each_variant_trains_with_decreasing_loss(variant):
    torch.manual_seed(5)
    model = GCRN("ondevice", variant, **TINY, ssl_config=TINY_SSL)
    noisy, clean = _batch()
    trainable = [p for n, p in model.named_parameters() if not n.startswith("ssl.")]
    assert all(not p.requires_grad for p in (model.ssl.parameters() if model.ssl is not None else []))

    def enhance():
        return si_sdr_loss(model(noisy), clean).mean()

    if variant in ("base", "concat"):
        losses = _fit(model, enhance, trainable)
    elif variant == "distill":
        def distill():
            est, feats = model.forward_features(noisy)
            return si_sdr_loss(est, clean).mean() + model.embedding_loss(feats, clean)

        losses = _fit(model, distill, trainable)
    else:
        # stage 1: the encoder (and projection) learns the noisy speech's Wav2Vec2 embeddings
        stage1 = [p for n, p in model.named_parameters() if n.startswith(("encoder.", "embed_proj."))]
        pre = _fit(model, lambda: model.embedding_loss(model.encoder_features(noisy), noisy), stage1)
        assert pre[-1] < 0.8 * pre[0], pre
        losses = _fit(model, enhance, trainable)
    assert losses[-1] < losses[0] - 1.0, losses  # at least 1 dB of SI-SDR (plus the L1 term) gained
    assert all(np.isfinite(losses))


def test_ssl_checkpoint_loading_and_refusals(tmp_path):
    ssl = build_ssl_model(TINY_SSL, seed=11)
    assert not any(p.requires_grad for p in ssl.parameters())
    path = tmp_path / "w2v.pt"
    torch.save(ssl.state_dict(), path)
    loaded = build_ssl_model(TINY_SSL, path, seed=99)
    for (k, a), (_, b) in zip(ssl.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    # same seed, same random model (a rebuilt model matches the trained one)
    again = build_ssl_model(TINY_SSL, seed=11)
    assert all(torch.equal(a, b) for a, b in zip(ssl.state_dict().values(), again.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="ssl_ckpt"):
        build_ssl_model(TINY_SSL, tmp_path / "missing.pt")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a torchaudio Wav2Vec2Model"):
        build_ssl_model(TINY_SSL, tmp_path / "foreign.pt")
    torch.save({"x": object()}, tmp_path / "pickle.pt")
    with pytest.raises(ValueError, match="code"):
        build_ssl_model(TINY_SSL, tmp_path / "pickle.pt")
    with pytest.raises(ValueError, match="unknown key"):
        build_ssl_model({"encoder_embed_dimm": 4})


def test_bad_arguments_and_input():
    with pytest.raises(ValueError, match="config"):
        GCRN("tanwang")
    with pytest.raises(ValueError, match="variant"):
        GCRN(variant="fusion")
    with pytest.raises(ValueError, match="hop_length"):
        GCRN(win_length=100, hop_length=200)
    model = GCRN("ondevice", **TINY)
    with pytest.raises(ValueError, match="batch, time"):
        model(torch.zeros(1, 1, 100))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 100, dtype=torch.long))
    bad = torch.zeros(1, 100)
    bad[0, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        model(bad)
    with pytest.raises(ValueError, match="base variant"):
        model.ssl_embeddings(torch.zeros(1, 100))
    # silence in, finite silence out
    assert torch.isfinite(model(torch.zeros(1, 500))).all()


# ----------------------------------------------------------------------------- DNS-style data


def _write(path, wav):
    write_audio(path, wav, 16000, subtype="FLOAT")


def test_dns_mixtures_on_the_fly(tmp_path):
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        _write(tmp_path / "clean" / f"clean_fileid_{i}.wav", 0.3 * torch.sin(torch.arange(8000 + 800 * i) * 0.05 * (i + 1)))
    for i in range(2):
        _write(tmp_path / "noise" / f"noise_{i}.wav", 0.1 * torch.randn(3000, generator=g))  # shorter: looped
    data = DNSMixtures(tmp_path / "clean", tmp_path / "noise", segment=0.25, num_examples=6, seed=3)
    assert len(data) == 6
    snrs = []
    for i in range(6):
        item = data[i]
        assert item["mixture"].shape == (4000,) and item["sources"].shape == (1, 4000)
        noise = item["mixture"] - item["sources"][0]
        snr = 10 * torch.log10(item["sources"].pow(2).mean() / noise.pow(2).mean())
        assert -5.01 <= float(snr) <= 5.01
        snrs.append(float(snr))
        again = data[i]
        assert torch.equal(item["mixture"], again["mixture"]) and item["id"] == again["id"]
    assert max(snrs) - min(snrs) > 1.0  # the SNR is drawn, not fixed
    fixed = DNSMixtures(tmp_path / "clean", tmp_path / "noise", segment=None, snr_range=(-5, -5))
    item = fixed[1]
    noise = item["mixture"] - item["sources"][0]
    assert item["mixture"].shape == (8800,)
    assert abs(float(10 * torch.log10(item["sources"].pow(2).mean() / noise.pow(2).mean())) + 5) < 0.01
    other = DNSMixtures(tmp_path / "clean", tmp_path / "noise", segment=0.25, num_examples=6, seed=4)
    assert not torch.equal(other[0]["mixture"], data[0]["mixture"])
    with pytest.raises(FileNotFoundError, match="noise"):
        DNSMixtures(tmp_path / "clean", tmp_path / "nothing")
    with pytest.raises(ValueError, match="snr_range"):
        DNSMixtures(tmp_path / "clean", tmp_path / "noise", snr_range=(5, -5))


def test_dns_test_set_layout(tmp_path):
    for i in (0, 2, 10):
        clean = 0.2 * torch.sin(torch.arange(1600) * 0.01 * (i + 1))
        _write(tmp_path / "clean" / f"clean_fileid_{i}.wav", clean)
        _write(tmp_path / "noisy" / f"book_00{i}_snr-5_fileid_{i}.wav", clean + 0.01)
    data = DNSTestSet(tmp_path)
    assert [data[j]["id"] for j in range(len(data))] == ["fileid_0", "fileid_2", "fileid_10"]
    item = data[1]
    assert item["mixture"].shape == (1600,) and item["sources"].shape == (1, 1600)
    assert torch.allclose(item["mixture"] - item["sources"][0], torch.full((1600,), 0.01), atol=1e-6)
    _write(tmp_path / "noisy" / "book_fileid_7.wav", torch.zeros(100))
    with pytest.raises(ValueError, match="only in noisy: \\['7'\\]"):
        DNSTestSet(tmp_path)


# ----------------------------------------------------------------------------- the task


def _tiny_recipe(variant="base", *more):
    from sepkit.train import load_recipe

    tiny = (f"model.args={{config: ondevice, variant: {variant}, win_length: 64, hop_length: 32, channels: [4, 8], "
            f"lstm_groups: 2, lstm_layers: 1, ssl_config: {_yaml(TINY_SSL)}}}")
    return load_recipe("recipes/gcrn.yaml", "demo", [
        tiny, "data.dataset=synthetic", "data.segment=0.25", "data.batch_size=2",
        "data.synthetic={num_train: 8, num_valid: 2, num_test: 2, min_duration: 0.5, max_duration: 0.5}",
        "train.max_steps=2", "train.eval_every=2", "train.ckpt_every=2", "train.log_every=1",
        "task_args.perceptual=false", "task_args.pretrain_steps=2", *more])


def _yaml(d):
    import json

    return json.dumps(d)


def test_task_recipe_checks():
    from sepkit.train import ConfigError, load_recipe, make_task

    cfg = load_recipe("recipes/gcrn.yaml")
    assert cfg.task == "gcrn" and cfg.data.sample_rate == 16000 and cfg.model.args["config"] == "ondevice"
    for override, match in [("model.args.variant=fusion", "variant"), ("data.sample_rate=8000", "16000"),
                            ("task_args.eval_snrr=3", "eval_snrr"), ("task_args.train_snr=[5, -5]", "train_snr"),
                            ("task_args.stage=pretrain", "variant=pretrain")]:
        with pytest.raises(ConfigError, match=match):
            make_task(load_recipe("recipes/gcrn.yaml", "demo", [override]))
    task = make_task(load_recipe("recipes/gcrn.yaml", "demo", ["data.dataset=synthetic"]))
    # the demo preset's training SNRs drawn in [-5, 20] (the recipe's: [-5, 5]), evaluation at a fixed -5 dB
    assert cfg.task_args["train_snr"] == [-5.0, 5.0]
    assert task.dataset("train").spec.snr_range == (-5.0, 20.0)
    assert task.dataset("test").spec.snr_range == (-5.0, -5.0)


def test_task_trains_pretrain_variant_in_two_stages_and_reloads(tmp_path):
    from sepkit.train import load_trained, make_task, train

    cfg = _tiny_recipe("pretrain")
    result = train(cfg, tmp_path / "run", progress=False, test=False)
    assert result["step"] == 2
    stage1 = tmp_path / "run" / "prereq-pretrain"
    assert (stage1 / "checkpoints" / "LATEST").exists()
    task, model = load_trained(tmp_path / "run")
    assert task.cfg.model.args["encoder_ckpt"] == str(stage1)
    assert model.ssl is not None and not any(p.requires_grad for p in model.ssl.parameters())
    # the stage-1 task follows its own loss; a fresh stage-2 model starts from the stage-1 encoder
    from sepkit.train.checkpoint import read_weights, resolve_checkpoint

    stage1_weights = read_weights(resolve_checkpoint(stage1))
    fresh = make_task(task.cfg).build_model()
    for key, value in fresh.encoder_state_dict().items():
        assert torch.equal(value, stage1_weights[key]), key
    assert "embedding_l1" in make_task(_tiny_recipe("pretrain", "task_args.stage=pretrain")).monitor


def test_task_distill_step_logs_both_losses():
    from sepkit.train import make_task

    task = make_task(_tiny_recipe("distill"))
    model = task.build_model()
    assert task.frozen(model) == ("ssl",)
    items = [task.dataset("train")[i] for i in range(2)]
    loss, logs = task.training_step(model, task.collate(items))
    assert set(logs) == {"enhance", "embedding_l1"}
    assert abs(float(loss.detach()) - (logs["enhance"] + logs["embedding_l1"])) < 1e-4


def test_task_infer_stream_equals_offline_and_resamples_8k(capsys):
    from sepkit.train import make_task

    task = make_task(_tiny_recipe("base"))
    torch.manual_seed(0)
    model = _eval(task.build_model())
    wav = _speechlike(1, 4000)[0]
    offline = task.infer(model, wav, 16000)["enhanced"]
    streamed = task.infer(model, wav, 16000, stream=True)["enhanced"]
    assert offline.shape == wav.shape and (offline - streamed).abs().max() < 1e-5
    assert "RTF" in capsys.readouterr().err
    low = task.infer(model, wav[::2].clone(), 8000)["enhanced"]
    assert low.shape == (2000,)
    assert "resampling 8000 Hz -> 16000 Hz" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--steps"):
        task.infer(model, wav, 16000, steps=4)


def test_task_reads_dns_layout(tmp_path):
    from sepkit.data.dns import write_synthetic_dns
    from sepkit.train import ConfigError, make_task

    write_synthetic_dns(tmp_path / "dns", num_train=3, num_noise=2, num_valid=2, num_test=2, duration=0.5)
    task = make_task(_tiny_recipe("base", "data.dataset=dns", f"data.root={tmp_path / 'dns'}"))
    train_ds, valid_ds, test_ds = (task.dataset(w) for w in ("train", "valid", "test"))
    assert isinstance(train_ds, DNSMixtures) and isinstance(test_ds, DNSTestSet)
    assert valid_ds.snr_range == (-5.0, -5.0) and train_ds.snr_range == (-5.0, 20.0)  # the demo preset's train_snr
    assert train_ds[0]["mixture"].shape == (4000,)  # 0.25 s crops
    item = test_ds[0]
    noise = item["mixture"] - item["sources"][0]
    assert abs(float(10 * torch.log10(item["sources"].pow(2).mean() / noise.pow(2).mean())) + 5) < 0.05
    with pytest.raises(ConfigError, match="data.root is required"):
        make_task(_tiny_recipe("base", "data.dataset=dns")).dataset("train")
    with pytest.raises(ConfigError, match="neither"):
        make_task(_tiny_recipe("base", "data.dataset=dns", f"data.root={tmp_path}")).dataset("train")
