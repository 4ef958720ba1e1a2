"""ECAPA-TDNN teacher: official key layout, parity with SpeechBrain, front end, AAM-softmax."""
import math

import pytest
import torch

from sepkit.models.speaker import ECAPATDNN, AAMSoftmax, LogMelFilterbank

SMALL = dict(channels=[64, 64, 64, 64, 192], lin_neurons=32, attention_channels=16, se_channels=16)


def _randomise(state: dict, seed: int = 0) -> dict:
    """Non-trivial BatchNorm statistics and biases, so a wrong key or order shows."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state.items():
        v = v.clone()
        if v.is_floating_point():
            if k.endswith("running_var"):
                v = torch.rand(v.shape, generator=g) * 1.5 + 0.5
            elif k.endswith("running_mean") or k.endswith("bias"):
                v = torch.randn(v.shape, generator=g) * 0.1
            elif ".norm.weight" in k or k.startswith("asp_bn.norm.weight"):
                v = torch.rand(v.shape, generator=g) + 0.5
        out[k] = v
    return out


def _official_keys() -> list[str]:
    """The key list of the public verification checkpoint, built from its documented layout."""
    keys = []

    def tdnn(prefix):
        keys.extend(f"{prefix}.{k}" for k in ("conv.conv.weight", "conv.conv.bias", "norm.norm.weight",
                                               "norm.norm.bias", "norm.norm.running_mean", "norm.norm.running_var",
                                               "norm.norm.num_batches_tracked"))

    tdnn("blocks.0")
    for i in (1, 2, 3):
        tdnn(f"blocks.{i}.tdnn1")
        for j in range(7):
            tdnn(f"blocks.{i}.res2net_block.blocks.{j}")
        tdnn(f"blocks.{i}.tdnn2")
        keys += [f"blocks.{i}.se_block.conv{n}.conv.{w}" for n in (1, 2) for w in ("weight", "bias")]
    tdnn("mfa")
    tdnn("asp.tdnn")
    keys += ["asp.conv.conv.weight", "asp.conv.conv.bias"]
    keys += [f"asp_bn.norm.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    keys += ["fc.conv.weight", "fc.conv.bias"]
    return keys


def test_default_layout_is_the_official_checkpoint():
    model = ECAPATDNN()
    state = model.state_dict()
    assert sorted(state) == sorted(_official_keys())
    assert state["blocks.0.conv.conv.weight"].shape == (1024, 80, 5)
    assert state["mfa.conv.conv.weight"].shape == (3072, 3072, 1)
    assert state["asp.tdnn.conv.conv.weight"].shape == (128, 9216, 1)
    assert state["fc.conv.weight"].shape == (192, 6144, 1)
    assert state["blocks.1.res2net_block.blocks.0.conv.conv.weight"].shape == (128, 128, 3)
    n_params = sum(p.numel() for p in model.parameters())
    assert 20.7e6 < n_params < 20.8e6  # the public model's 20.7 M


def test_from_speechbrain_loads_an_official_layout_file(tmp_path):
    state = _randomise(ECAPATDNN(**SMALL).state_dict())
    path = tmp_path / "embedding_model.ckpt"
    torch.save(state, path)
    model = ECAPATDNN.from_speechbrain(path)
    assert not model.training
    assert model.config["channels"] == SMALL["channels"] and model.embed_dim == 32
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    out = model(torch.randn(2, 8000) * 0.1)
    assert out.shape == (2, 32) and torch.isfinite(out).all()


def test_from_speechbrain_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        ECAPATDNN.from_speechbrain(tmp_path / "missing.ckpt")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, foreign)
    with pytest.raises(ValueError, match="ECAPA-TDNN layout"):
        ECAPATDNN.from_speechbrain(foreign)
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"model": torch.nn.Linear(2, 2)}, unsafe)  # needs code execution to unpickle
    with pytest.raises(ValueError, match="weights_only"):
        ECAPATDNN.from_speechbrain(unsafe)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights_only"):
        ECAPATDNN.from_speechbrain(corrupt)


@pytest.mark.parametrize("config", [SMALL, {}], ids=["small", "official"])
def test_embed_features_matches_speechbrain(config):
    sb = pytest.importorskip("speechbrain.lobes.models.ECAPA_TDNN")
    torch.manual_seed(0)
    ref = sb.ECAPA_TDNN(80, **({"channels": [1024, 1024, 1024, 1024, 3072], "lin_neurons": 192} | config)).eval()
    state = _randomise(ref.state_dict())
    ref.load_state_dict(state)
    ours = ECAPATDNN.from_state_dict(state)
    feats = torch.randn(3, 41, 80)
    lengths = torch.tensor([41, 30, 17])
    with torch.no_grad():
        for lens in (None, lengths):
            want = ref(feats, None if lens is None else lens / 41.0).squeeze(1)
            got = ours.embed_features(feats, lens)
            assert got.shape == want.shape
            assert (got - want).abs().max() <= 1e-5 * max(1.0, want.abs().max().item())


def test_frontend_matches_speechbrain_fbank_and_sentence_norm():
    feats_mod = pytest.importorskip("speechbrain.lobes.features")
    norm_mod = pytest.importorskip("speechbrain.processing.features")
    wave = torch.randn(2, 12345) * 0.1
    want = feats_mod.Fbank(n_mels=80)(wave)
    want = norm_mod.InputNormalization(norm_type="sentence", std_norm=False)(want, torch.ones(2))
    got = LogMelFilterbank()(wave)
    assert got.shape == want.shape == (2, 1 + 12345 // 160, 80)
    assert (got - want).abs().max() < 1e-4


def test_lengths_exclude_padding():
    model = ECAPATDNN(**SMALL).eval()
    wave = torch.randn(1, 8000) * 0.1
    padded = torch.cat([wave, torch.randn(1, 4800)], dim=1)
    with torch.no_grad():
        a = model(wave)
        masked = model(padded, torch.tensor([8000]))
        unmasked = model(padded)
    cos = torch.nn.functional.cosine_similarity
    # The padded frames leave the statistics; only the convolutions at the boundary still see them.
    assert cos(a, masked).item() > cos(a, unmasked).item()
    assert cos(a, masked).item() > 0.9


def test_bad_inputs():
    model = ECAPATDNN(**SMALL)
    with pytest.raises(ValueError, match=r"feats must be .*\(B, F, 80\)"):
        model.embed_features(torch.randn(2, 30, 40))
    with pytest.raises(ValueError, match="lengths"):
        model.embed_features(torch.randn(2, 30, 80), torch.tensor([31, 3]))
    with pytest.raises(ValueError, match="wave must be"):
        model(torch.randn(2, 3, 100))
    with pytest.raises(ValueError, match="wave must be"):
        model(torch.zeros(2, 100, dtype=torch.long))


def test_aam_softmax_margin_and_training():
    head = AAMSoftmax(4, 3, margin=0.2, scale=4.0)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4))
    emb = torch.tensor([[1.0, 0.2, 0.0, 0.0]])
    labels = torch.tensor([0])
    cos = head.cosine(emb)[0]
    theta = math.acos(cos[0].item())
    logits = torch.tensor([math.cos(theta + 0.2), cos[1].item(), cos[2].item()]) * 4.0
    want = torch.nn.functional.cross_entropy(logits[None], labels)
    assert torch.allclose(head(emb, labels), want, atol=1e-5)
    plain = AAMSoftmax(4, 3, margin=0.0, scale=4.0)
    plain.load_state_dict(head.state_dict())
    assert head(emb, labels) > plain(emb, labels)  # the margin penalises the target class
    with pytest.raises(ValueError, match="labels"):
        head(emb, torch.tensor([3]))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        head(torch.randn(2, 5), torch.tensor([0, 1]))

    # A small ECAPA learns to tell three synthetic "speakers" (sine voices) apart.
    torch.manual_seed(0)
    model = ECAPATDNN(n_mels=24, channels=[16, 16, 16, 16, 48], lin_neurons=16, attention_channels=8,
                      se_channels=8, res2net_scale=4, sample_rate=8000, n_fft=200)
    head = AAMSoftmax(16, 3)
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=3e-3)
    t = torch.arange(2400) / 8000.0

    def batch():
        f0 = torch.tensor([120.0, 220.0, 400.0])
        labels = torch.randint(0, 3, (8,))
        phase = torch.rand(8, 1) * 6.28
        wave = sum(torch.sin(2 * math.pi * k * f0[labels][:, None] * t + phase) / k for k in (1, 2, 3))
        return wave * 0.1 + 0.01 * torch.randn(8, 2400), labels

    first = None
    for _ in range(15):
        wave, labels = batch()
        loss = head(model(wave), labels)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_speaker_task_data_and_eer():
    from sepkit.data.speakers import SpeakerUtterances
    from sepkit.train.tasks.speaker import equal_error_rate

    ds = SpeakerUtterances(6, 8000, (0.5, 0.5), 3, "dev")
    assert [int(ds[i]["speaker"]) for i in range(6)] == [0, 1, 2, 0, 1, 2]
    assert ds[0]["wave"].shape == (4000,) and not torch.equal(ds[0]["wave"], ds[3]["wave"])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    perfect = torch.nn.functional.one_hot(labels, 3).float()
    assert equal_error_rate(perfect, labels) == 0.0
    assert equal_error_rate(torch.randn(60, 8), torch.arange(60) % 3) > 0.2
