"""Target speaker extractors conditioned on a speaker embedding."""
import pytest
import torch

from sepkit.models.tse import ConvTasNetTSE, DualPathTSE


def _models(emb_dim=16):
    torch.manual_seed(0)
    return {
        "convtasnet": ConvTasNetTSE(emb_dim=emb_dim, n_filters=32, bottleneck=16, hidden=32, skip=16, layers=3,
                                    repeats=2),
        "dualpath": DualPathTSE(emb_dim=emb_dim, n_filters=16, channels=16, hidden=16, chunk_size=10, n_blocks=2,
                                nhead=2),
    }


@pytest.mark.parametrize("name", ["convtasnet", "dualpath"])
def test_conditioning_changes_the_output(name):
    model = _models()[name].eval()
    mix = torch.randn(2, 1601)
    e1, e2 = torch.randn(2, 16), torch.randn(2, 16)
    with torch.no_grad():
        y1, y2 = model(mix, e1), model(mix, e2)
        assert y1.shape == (2, 1601) and torch.isfinite(y1).all()
        assert (y1 - y2).abs().max() > 1e-3 * y1.abs().max()
        # The embedding is normalised inside: its scale does not matter; a (D,) vector broadcasts.
        assert torch.allclose(model(mix, 7.0 * e1), y1, atol=1e-5)
        single = model(mix, e1[0])
        assert torch.allclose(single[0], y1[0], atol=1e-5)


@pytest.mark.parametrize("name", ["convtasnet", "dualpath"])
def test_gradient_reaches_the_conditioning(name):
    model = _models()[name]
    e = torch.randn(2, 16, requires_grad=True)
    model(torch.randn(2, 800), e).pow(2).mean().backward()
    assert e.grad is not None and e.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["convtasnet", "dualpath"])
def test_wrong_embedding_dimension_is_a_clear_error(name):
    model = _models()[name]
    with pytest.raises(ValueError, match=r"embedding must have shape \(2, 16\).*got \(2, 192\)"):
        model(torch.randn(2, 800), torch.randn(2, 192))
    with pytest.raises(ValueError, match="embedding must have shape"):
        model(torch.randn(2, 800), torch.randn(3, 16))
    with pytest.raises(TypeError, match="embedding must be a floating-point"):
        model(torch.randn(2, 800), torch.zeros(2, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        model(torch.randn(2, 800), torch.full((2, 16), float("nan")))
    with pytest.raises(ValueError, match="mixture must have shape"):
        model(torch.randn(2, 2, 800), torch.randn(2, 16))


def test_extractor_learns_to_pick_the_conditioned_source():
    """Two tones, the embedding says which one: a few steps of SI-SDR training separate them."""
    from sepkit.losses import si_sdr_loss

    torch.manual_seed(0)
    model = ConvTasNetTSE(emb_dim=2, n_filters=32, kernel_size=16, stride=8, bottleneck=16, hidden=32, skip=16,
                          layers=3, repeats=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    t = torch.arange(800) / 8000.0

    def batch():
        phase = torch.rand(8, 2, 1) * 6.28
        tones = torch.sin(2 * torch.pi * torch.tensor([300.0, 1700.0])[None, :, None] * t + phase)
        which = torch.randint(0, 2, (8,))
        return tones.sum(1), tones[torch.arange(8), which], torch.nn.functional.one_hot(which, 2).float()

    losses = []
    for _ in range(30):
        mix, target, e = batch()
        loss = si_sdr_loss(model(mix, e), target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 5.0  # at least 5 dB better


def _tse_task_and_model():
    """The tse task of the demo recipe with a tiny untrained conditioner (no checkpoints)."""
    from sepkit.models.mixture2set import MixtureToSet
    from sepkit.models.speaker import ECAPATDNN
    from sepkit.train import load_recipe
    from sepkit.models.tse import TSEWithConditioner
    from sepkit.train.tasks.tse import TSETask

    torch.manual_seed(0)
    cfg = load_recipe("tse", "demo")
    task = TSETask(cfg)

    class Conditioner(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.teacher = ECAPATDNN(n_mels=24, channels=[16, 16, 16, 16, 48], lin_neurons=16, attention_channels=8,
                                     se_channels=8, res2net_scale=4, sample_rate=8000, n_fft=200)
            self.predictor = MixtureToSet(embed_dim=16, d_model=32, nhead=2, dim_feedforward=64, n_layers=1,
                                          n_decoder_layers=1, sample_rate=8000, n_mels=24)

    extractor = ConvTasNetTSE(emb_dim=16, n_filters=32, bottleneck=16, hidden=32, skip=16, layers=2, repeats=1)
    return task, TSEWithConditioner(extractor, Conditioner().eval(), 8000).eval()


def test_target_slot_option():
    task, model = _tse_task_and_model()
    with pytest.raises(ValueError, match=r"--target-slot 3 is out of range: the predictor has 3 slots, choose 0\.\.2"):
        task.check_options(model, {"target_slot": 3})
    with pytest.raises(ValueError, match="out of range"):
        task.check_options(model, {"target_slot": -1})
    with pytest.raises(ValueError, match="needs --target-slot"):
        task.check_options(model, {})
    with pytest.raises(ValueError, match="--steps not supported"):
        task.check_options(model, {"target_slot": 0, "steps": 4})
    wave = torch.randn(4000) * 0.1
    out0 = task.infer(model, wave, 8000, target_slot=0, chunk=8.0, overlap=1.0)["target"]
    out1 = task.infer(model, wave, 8000, target_slot=1)["target"]
    assert out0.shape == (4000,) and not torch.allclose(out0, out1)
    out16k = task.infer(model, torch.randn(8000) * 0.1, 16000, target_slot=2)["target"]
    assert out16k.shape == (8000,)


def test_tse_task_step_and_evaluation():
    task, model = _tse_task_and_model()
    ds = task.dataset("train")
    batch = task.collate([ds[0], ds[1]])
    assert batch["mixture"].shape == batch["target"].shape == (2, 16000)
    assert batch["enrollment"].shape == (2, 16000)
    loss, _ = task.training_step(model.train(), batch)
    loss.backward()
    assert torch.isfinite(loss) and model.extractor.films[0].gamma.weight.grad is not None
    rows = task.evaluate(model.eval(), task.dataset("valid"), max_items=2)
    assert len(rows) == 2 and {"si_sdri_enrolled", "si_sdri_predicted", "si_sdri"} <= set(rows[0])
