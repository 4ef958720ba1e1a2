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
