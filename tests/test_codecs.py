"""sepkit.codecs: the DAC layout of the official release, round trips, weight files, parity."""
import math

import pytest
import torch

from sepkit.codecs import DAC, DAC_CONFIGS, Codec, IdentityCodec, round_trip
from sepkit.losses import CodecSISDRLoss, SISDRLoss


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small convolutions run faster on one thread than on an oversubscribed shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Tiny codecs with the official rate layouts (the shapes only depend on the rates).
TINY = {
    name: dict(cfg, encoder_dim=4, latent_dim=16, decoder_dim=32, n_codebooks=3, codebook_size=32, codebook_dim=4)
    for name, cfg in DAC_CONFIGS.items()
}
PARAMS = {"16khz": 74_175_906, "24khz": 74_708_706, "44khz": 76_651_890}


def official_keys(cfg: dict) -> dict[str, tuple]:
    """The key -> shape layout of an official DAC weights file, enumerated from the configuration."""
    keys = {}

    def conv(name, cin, cout, k, transpose=False):
        keys[f"{name}.weight_g"] = (cin if transpose else cout, 1, 1)
        keys[f"{name}.weight_v"] = (cin, cout, k) if transpose else (cout, cin, k)
        keys[f"{name}.bias"] = (cout,)

    def res(name, dim):
        keys[f"{name}.block.0.alpha"] = (1, dim, 1)
        conv(f"{name}.block.1", dim, dim, 7)
        keys[f"{name}.block.2.alpha"] = (1, dim, 1)
        conv(f"{name}.block.3", dim, dim, 1)

    d = cfg["encoder_dim"]
    conv("encoder.block.0", 1, d, 7)
    for i, s in enumerate(cfg["encoder_rates"]):
        d *= 2
        for j in range(3):
            res(f"encoder.block.{i + 1}.block.{j}", d // 2)
        keys[f"encoder.block.{i + 1}.block.3.alpha"] = (1, d // 2, 1)
        conv(f"encoder.block.{i + 1}.block.4", d // 2, d, 2 * s)
    n = len(cfg["encoder_rates"])
    keys[f"encoder.block.{n + 1}.alpha"] = (1, d, 1)
    conv(f"encoder.block.{n + 2}", d, cfg["latent_dim"], 3)
    for q in range(cfg["n_codebooks"]):
        conv(f"quantizer.quantizers.{q}.in_proj", cfg["latent_dim"], cfg["codebook_dim"], 1)
        conv(f"quantizer.quantizers.{q}.out_proj", cfg["codebook_dim"], cfg["latent_dim"], 1)
        keys[f"quantizer.quantizers.{q}.codebook.weight"] = (cfg["codebook_size"], cfg["codebook_dim"])
    c = cfg["decoder_dim"]
    conv("decoder.model.0", cfg["latent_dim"], c, 7)
    for i, s in enumerate(cfg["decoder_rates"]):
        cin, cout = c // 2**i, c // 2 ** (i + 1)
        keys[f"decoder.model.{i + 1}.block.0.alpha"] = (1, cin, 1)
        conv(f"decoder.model.{i + 1}.block.1", cin, cout, 2 * s, transpose=True)
        for j in range(3):
            res(f"decoder.model.{i + 1}.block.{j + 2}", cout)
    m = len(cfg["decoder_rates"])
    keys[f"decoder.model.{m + 1}.alpha"] = (1, cout, 1)
    conv(f"decoder.model.{m + 2}", cout, 1, 7)
    return keys


def randomised(model: DAC, seed: int = 0) -> DAC:
    """Perturb Snake alphas, weight-norm gains and biases so that no parameter sits at its init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha") or name.endswith("weight_g"):
                p.mul_(torch.empty(p.shape).uniform_(0.5, 1.5, generator=g))
            elif name.endswith("bias"):
                p.add_(0.01 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("name", sorted(DAC_CONFIGS))
def test_official_configurations_have_the_official_layout(name):
    cfg = DAC_CONFIGS[name]
    with torch.device("meta"):
        model = DAC(**cfg)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_keys(cfg)
    assert model.hop_length == math.prod(cfg["encoder_rates"])
    assert model.frame_rate == pytest.approx(cfg["sample_rate"] / model.hop_length)
    assert model.latent_dim == 1024
    assert isinstance(model, Codec)


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("length", [1, 1001])
def test_round_trip_shapes_at_odd_lengths(name, length):
    torch.manual_seed(0)
    model = DAC(**TINY[name]).eval()
    audio = 0.1 * torch.randn(2, 1, length)
    frames = math.ceil(length / model.hop_length)
    with torch.no_grad():
        out = model(audio)
        assert out.audio.shape == audio.shape and torch.isfinite(out.audio).all()
        assert out.z.shape == (2, 16, frames)
        assert out.codes.shape == (2, 3, frames) and out.codes.dtype == torch.long
        assert int(out.codes.min()) >= 0 and int(out.codes.max()) < 32
        y = model.decode(out.z)
    odd = any(r % 2 for r in TINY[name]["decoder_rates"])
    lost = 8 if odd else 0   # kernel 2s, padding ceil(s/2): the rate 5 loses one sample, then x4 x2
    assert y.shape == (2, 1, frames * model.hop_length - lost)


def test_full_16khz_round_trip_at_odd_length():
    torch.manual_seed(0)
    model = DAC(**DAC_CONFIGS["16khz"]).eval()
    audio = 0.1 * torch.randn(1, 1, 321)
    with torch.no_grad():
        out = model(audio, n_quantizers=4)
    assert out.audio.shape == (1, 1, 321) and out.codes.shape == (1, 4, 2) and out.z.shape == (1, 1024, 2)
    assert torch.isfinite(out.audio).all() and out.audio.abs().max() <= 1


def test_quantizer_from_codes_and_straight_through():
    torch.manual_seed(0)
    model = randomised(DAC(**TINY["16khz"]))
    z = torch.randn(2, 16, 7)
    model.eval()
    with torch.no_grad():
        z_q, codes = model.quantize(z, n_quantizers=2)
        assert codes.shape == (2, 2, 7)
        torch.testing.assert_close(model.from_codes(codes), z_q, rtol=1e-5, atol=1e-5)
        full, all_codes = model.quantize(z)
        assert torch.equal(all_codes[:, :2], codes)  # stages are residual: the first two do not change
        torch.testing.assert_close(model.from_codes(all_codes), full, rtol=1e-5, atol=1e-5)
    model.train()
    audio = 0.1 * torch.randn(2, 1, 640)
    out = model(audio)
    (out.audio.pow(2).mean() + out.commitment_loss + out.codebook_loss).backward()
    assert model.encoder.block[0].weight_v.grad is not None and model.encoder.block[0].weight_v.grad.abs().sum() > 0
    assert model.quantizer.quantizers[0].codebook.weight.grad.abs().sum() > 0


def test_official_layout_state_dict_loads_and_round_trips(tmp_path):
    cfg = TINY["24khz"]
    g = torch.Generator().manual_seed(1)
    state = {k: torch.rand(shape, generator=g) + 0.5 for k, shape in official_keys(cfg).items()}
    path = tmp_path / "weights_tiny.pth"
    torch.save({"state_dict": state, "metadata": {"kwargs": dict(cfg)}}, path)
    model = DAC.from_pretrained(path)
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    model.save(tmp_path / "again.pth")
    blob = torch.load(tmp_path / "again.pth", weights_only=True)
    assert set(blob) == {"state_dict", "metadata"} and blob["metadata"]["kwargs"]["sample_rate"] == 24000
    again = DAC.from_pretrained(tmp_path / "again.pth")
    audio = 0.1 * torch.randn(1, 1, 777)
    with torch.no_grad():
        torch.testing.assert_close(again(audio).audio, model(audio).audio, rtol=0, atol=0)


def test_parametrized_weight_norm_keys_load():
    torch.manual_seed(0)
    model = randomised(DAC(**TINY["44khz"]))
    state = {}
    for k, v in model.state_dict().items():
        k = k.replace("weight_g", "parametrizations.weight.original0").replace("weight_v", "parametrizations.weight.original1")
        state[k] = v
    other = DAC(**TINY["44khz"])
    other.load_weights(state)
    for k, v in model.state_dict().items():
        assert torch.equal(other.state_dict()[k], v)


def test_weight_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights file"):
        DAC.from_pretrained(tmp_path / "absent.pth")
    torch.save({"weights": {}}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="'state_dict'"):
        DAC.from_pretrained(tmp_path / "foreign.pth")
    model = DAC(**TINY["16khz"])
    torch.save({"state_dict": model.state_dict()}, tmp_path / "nometa.pth")
    with pytest.raises(ValueError, match="metadata"):
        DAC.from_pretrained(tmp_path / "nometa.pth")
    torch.save({"state_dict": model.state_dict(), "metadata": {"kwargs": {**TINY["16khz"], "hop": 3}}}, tmp_path / "kw.pth")
    with pytest.raises(ValueError, match="hop"):
        DAC.from_pretrained(tmp_path / "kw.pth")
    state = model.state_dict()
    del state["encoder.block.0.weight_g"]
    torch.save({"state_dict": state, "metadata": {"kwargs": TINY["16khz"]}}, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="encoder.block.0.weight_g"):
        DAC.from_pretrained(tmp_path / "missing.pth")
    torch.save({"state_dict": model.state_dict(), "metadata": {"kwargs": TINY["24khz"] | {"latent_dim": 8}}}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match="does not match"):
        DAC.from_pretrained(tmp_path / "shape.pth")
    torch.save({"state_dict": model.state_dict(), "metadata": {"kwargs": TINY["16khz"]}, "x": IdentityCodec()},
               tmp_path / "code.pth")
    with pytest.raises(ValueError, match="weights_only"):
        DAC.from_pretrained(tmp_path / "code.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError):
        DAC.from_pretrained(tmp_path / "junk.pth")


def test_input_errors():
    model = DAC(**TINY["16khz"])
    with pytest.raises(ValueError, match=r"\(B, 1, T\)"):
        model.encode(torch.zeros(2, 100))
    with pytest.raises(TypeError, match="floating"):
        model.encode(torch.zeros(1, 1, 100, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 16, F\)"):
        model.decode(torch.zeros(1, 8, 5))
    with pytest.raises(ValueError, match="n_quantizers"):
        model.quantize(torch.zeros(1, 16, 5), n_quantizers=4)
    with pytest.raises(ValueError, match="encoder_rates"):
        DAC(encoder_rates=[])


def test_codec_si_sdr_equals_si_sdr_with_the_identity_codec():
    torch.manual_seed(0)
    codec = IdentityCodec(8000)
    assert isinstance(codec, Codec)
    clean = torch.randn(3, 1, 501)
    estimate = clean + 0.3 * torch.randn_like(clean)
    transmitted = round_trip(codec, clean)
    assert torch.equal(transmitted, clean)
    codec_loss = CodecSISDRLoss(reduction="none")(estimate[:, 0], transmitted[:, 0])
    plain = SISDRLoss(reduction="none")(estimate[:, 0], clean[:, 0])
    assert torch.equal(codec_loss, plain)
    # and it differs from SI-SDR when the codec is not the identity
    dac = DAC(**TINY["16khz"]).eval()
    lossy = round_trip(dac, clean)
    assert not torch.allclose(CodecSISDRLoss(reduction="none")(estimate[:, 0], lossy[:, 0]), plain)


def test_parity_with_the_official_package():
    dac = pytest.importorskip("dac")
    import warnings

    cfg = dict(TINY["16khz"], n_codebooks=4, codebook_size=64)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = dac.DAC(**cfg).eval()
    with torch.no_grad():  # move every parameter away from its init
        for name, p in ref.named_parameters():
            if name.endswith("alpha") or name.endswith("weight_g"):
                p.mul_(torch.empty(p.shape).uniform_(0.5, 1.5))
    ours = DAC(**cfg).eval()
    ours.load_weights(ref.state_dict())
    audio = 0.3 * torch.randn(2, 1, 1003)
    with torch.no_grad():
        z_ref = ref.encoder(ref.preprocess(audio, cfg["sample_rate"]))
        z = ours.encode(audio)
        torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-5)
        zq_ref, codes_ref, *_ = ref.quantizer(z_ref, None)
        zq, codes = ours.quantize(z)
        assert torch.equal(codes, codes_ref)
        torch.testing.assert_close(zq, zq_ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours.decode(zq_ref), ref.decode(zq_ref), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours(audio).audio, ref(audio)["audio"], rtol=1e-4, atol=1e-5)
    # and the other way: our state dict loads strictly into the official model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = dac.DAC(**cfg)
    back.load_state_dict(ours.state_dict(), strict=True)
