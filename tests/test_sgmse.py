"""SGMSE+: the OUVE SDE's closed forms, the DSM loss, the samplers with an oracle score, the
compressed STFT and the NCSN++ backbone's shapes and size."""
import math

import pytest
import torch

from sepkit.models.ncsnpp import SGMSE_PARAMETERS, NCSNpp, build_ncsnpp, downsample_2d, upsample_2d, _fir_kernel
from sepkit.models.sgmse import OUVESDE, SGMSE, SpecRepresentation, dsm_loss, ode_sampler, pc_sampler


def tiny(**kw):
    return NCSNpp(nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(64,), n_freq=256, **kw)


# ------------------------------------------------------------------------------------------ SDE

def test_std_at_one_is_sgmse_value():
    assert float(OUVESDE().std(torch.tensor([1.0]))) == pytest.approx(0.38898, abs=5e-5)


def test_std_solves_the_variance_ode():
    # d Var / dt = -2 theta Var + g(t)^2, Var(0) = 0, integrated by RK4 in float64
    sde = OUVESDE()
    n = 4000
    dt = 1.0 / n

    def rhs(t, v):  # g(t) = sigma_min (sigma_max / sigma_min)^t sqrt(2 log(sigma_max / sigma_min))
        g = 0.05 * 10.0 ** t * math.sqrt(2 * math.log(10.0))
        return -2 * 1.5 * v + g ** 2

    v, checks = 0.0, {}
    for i in range(n):
        t = i * dt
        k1 = rhs(t, v)
        k2 = rhs(t + dt / 2, v + dt / 2 * k1)
        k3 = rhs(t + dt / 2, v + dt / 2 * k2)
        k4 = rhs(t + dt, v + dt * k3)
        v += dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if (i + 1) % 1000 == 0:
            checks[(i + 1) * dt] = math.sqrt(v)
    ts = torch.tensor(list(checks), dtype=torch.float64)
    torch.testing.assert_close(sde.std(ts), torch.tensor(list(checks.values()), dtype=torch.float64), rtol=1e-7, atol=0)


def test_forward_sde_simulation_matches_marginals():
    # Euler-Maruyama on many complex scalars: empirical mean and std match the closed forms
    sde = OUVESDE()
    gen = torch.Generator().manual_seed(0)
    n, steps = 20000, 500
    x0 = torch.full((n, 1, 1, 1), 1.0 + 0.5j, dtype=torch.complex128)
    y = torch.full_like(x0, -0.3 + 0.2j)
    x = x0.clone()
    dt = 1.0 / steps
    for i in range(steps):
        t = torch.full((n,), i * dt, dtype=torch.float64)
        drift, g = sde.sde(x, t, y)
        x = x + drift * dt + g.reshape(-1, 1, 1, 1) * math.sqrt(dt) * torch.randn(x.shape, dtype=x.dtype, generator=gen)
    t1 = torch.ones(1, dtype=torch.float64)
    mean, std = sde.marginal_prob(x0[:1], t1, y[:1])
    assert abs(complex(x.mean()) - complex(mean.flatten()[0])) < 0.01
    assert float((x - x.mean()).abs().square().mean().sqrt()) == pytest.approx(float(std), rel=0.02)


def test_mean_interpolates_between_clean_and_noisy():
    sde = OUVESDE()
    x0 = torch.randn(3, 1, 4, 5, dtype=torch.cfloat)
    y = torch.randn_like(x0)
    t = torch.tensor([0.0, 0.5, 1.0])
    mean, _ = sde.marginal_prob(x0, t, y)
    a = torch.exp(-1.5 * t).reshape(-1, 1, 1, 1)
    torch.testing.assert_close(mean, a * x0 + (1 - a) * y)
    torch.testing.assert_close(mean[0], x0[0])


def test_reverse_sde_and_prior():
    sde = OUVESDE()
    y = torch.randn(2, 1, 8, 8, dtype=torch.cfloat)
    x, score = torch.randn_like(y), torch.randn_like(y)
    t = torch.tensor([0.3, 0.9])
    f, g = sde.sde(x, t, y)
    rf, rg = sde.reverse(x, t, y, score)
    torch.testing.assert_close(rf, f - g.reshape(-1, 1, 1, 1) ** 2 * score)
    torch.testing.assert_close(rg, g)
    of, og = sde.reverse(x, t, y, score, probability_flow=True)
    torch.testing.assert_close(of, f - 0.5 * g.reshape(-1, 1, 1, 1) ** 2 * score)
    assert bool((og == 0).all())
    gen = torch.Generator().manual_seed(1)
    xt = sde.prior_sampling(y[:1].expand(4000, 1, 8, 8).contiguous(), gen)
    assert float((xt - y[:1]).abs().square().mean().sqrt()) == pytest.approx(0.38898, rel=0.02)


def test_bad_sde_arguments():
    with pytest.raises(ValueError, match="sigma_min"):
        OUVESDE(sigma_min=0.6)
    with pytest.raises(ValueError, match="N"):
        OUVESDE(N=0)


# ------------------------------------------------------------------------- loss and samplers

def oracle(sde, x0):
    """Exact score of p_t(x | y) when the clean spectrogram is the single point x0."""
    def score(x, t, y):
        mean, std = sde.marginal_prob(x0, t, y)
        return -(x - mean) / std.reshape(-1, 1, 1, 1) ** 2
    return score


def toy(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(2, 1, 16, 12, dtype=torch.cfloat, generator=g) * 0.5
    y = x0 + torch.randn(x0.shape, dtype=torch.cfloat, generator=g)
    return x0, y


def test_dsm_loss_is_zero_for_the_oracle_score_and_positive_otherwise():
    sde = OUVESDE()
    x0, y = toy()
    assert float(dsm_loss(oracle(sde, x0), sde, x0, y)) < 1e-8
    bad = float(dsm_loss(lambda x, t, yy: torch.zeros_like(x), sde, x0, y, generator=torch.Generator().manual_seed(0)))
    assert bad == pytest.approx(0.5 * 16 * 12, rel=0.1)  # 0.5 E|z|^2 per bin
    with pytest.raises(ValueError, match="t_eps"):
        dsm_loss(oracle(sde, x0), sde, x0, y, t_eps=0.0)


@pytest.mark.parametrize("sampler", ["pc", "ode"])
def test_sampler_with_oracle_score_recovers_clean(sampler):
    sde = OUVESDE()
    x0, y = toy()
    if sampler == "pc":
        out = pc_sampler(oracle(sde, x0), sde, y, steps=30, seed=0)
    else:
        out = ode_sampler(oracle(sde, x0), sde, y, steps=30, seed=0)
    before = float((y - x0).abs().square().mean().sqrt())
    after = float((out - x0).abs().square().mean().sqrt())
    assert before > 0.9
    # both stop at t_eps = 0.03, where the kernel's mean is still 4.4% of the way to y; the ODE
    # also keeps the prior's offset (y - mean(1)) scaled by std(t_eps) / std(1): ~0.06 in all
    assert after < (0.02 if sampler == "pc" else 0.07), after


def test_samplers_are_seeded():
    sde = OUVESDE()
    x0, y = toy()
    score = oracle(sde, x0)
    a = pc_sampler(score, sde, y, steps=5, seed=3)
    b = pc_sampler(score, sde, y, steps=5, seed=3)
    c = pc_sampler(score, sde, y, steps=5, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(ode_sampler(score, sde, y, steps=4, seed=2), ode_sampler(score, sde, y, steps=4, seed=2))
    with pytest.raises(ValueError, match="steps"):
        pc_sampler(score, sde, y, steps=0)


def test_progress_bar_counts_the_steps(monkeypatch):
    import tqdm

    bars = []

    class Recorder(tqdm.tqdm):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            bars.append(self)

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    sde = OUVESDE()
    x0, y = toy()
    pc_sampler(oracle(sde, x0), sde, y, steps=3, seed=0, progress=True)
    ode_sampler(oracle(sde, x0), sde, y, steps=4, seed=0, progress=True)
    assert [(b.total, b.n) for b in bars] == [(3, 3), (4, 4)]


# --------------------------------------------------------------------------- representation

def test_representation_shape_compression_and_round_trip():
    rep = SpecRepresentation()
    wave = torch.randn(2, 16000) * 0.1
    spec = rep(wave)
    assert spec.shape == (2, 1, 256, 1 + 16000 // 128) and spec.is_complex()
    window = torch.hann_window(510, periodic=True)
    linear = torch.stft(wave, 510, 128, window=window, center=True, return_complex=True)
    torch.testing.assert_close(spec[:, 0], 0.15 * linear.abs() ** 0.5 * torch.exp(1j * linear.angle()), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rep.inverse(spec, 16000), wave, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="wave"):
        rep(torch.randn(16000))


# -------------------------------------------------------------------------------- backbone

def test_default_ncsnpp_is_sgmse_sized():
    with torch.device("meta"):
        net = NCSNpp()
    n = sum(p.numel() for p in net.parameters())
    assert n == SGMSE_PARAMETERS
    assert 65e6 < n < 66e6
    assert net.frame_multiple == 64 and net.resolutions == [256, 128, 64, 32, 16, 8, 4]
    assert sum(1 for m in net.modules() if type(m).__name__ == "AttnBlock") == 2 + 1 + 1  # 2 down, mid, 1 up at res 16


@pytest.mark.parametrize("frames", [4, 12])
def test_bottleneck_and_output_shapes(frames):
    net = tiny()
    seen = {}
    net.mid_attn.register_forward_hook(lambda m, i, o: seen.__setitem__("mid", o.shape))
    x = torch.randn(2, 1, 256, frames, dtype=torch.cfloat)
    out = net(x, torch.randn_like(x), torch.tensor([0.5, 0.1]))
    assert out.shape == x.shape and out.is_complex()
    assert seen["mid"] == (2, 16, 64, frames // 4)
    assert bool(torch.isfinite(torch.view_as_real(out)).all())


def test_backbone_rejects_bad_shapes():
    net = tiny()
    x = torch.randn(1, 1, 256, 6, dtype=torch.cfloat)
    with pytest.raises(ValueError, match="multiple of 4"):
        net(x, x, torch.tensor([0.5]))
    x = torch.randn(1, 1, 256, 8, dtype=torch.cfloat)
    with pytest.raises(ValueError, match="t must"):
        net(x, x, torch.tensor(0.5))
    with pytest.raises(ValueError, match="latent_dim=None"):
        net(x, x, torch.tensor([0.5]), latents=torch.zeros(1, 3, 2))


def test_enhance_any_length_and_train_step():
    torch.manual_seed(0)
    model = SGMSE(tiny())
    for length in (700, 1025, 2100):
        noisy = torch.randn(1, length) * 0.1
        out = model.enhance(noisy, steps=1, seed=0)
        assert out.shape == noisy.shape and bool(torch.isfinite(out).all())
    loss = model.loss(noisy * 0.5, noisy)
    loss.backward()
    assert loss.ndim == 0 and math.isfinite(loss.item())
    assert all(p.grad is not None for p in model.backbone.conv_in.parameters())


def test_fir_resampling_keeps_dc_and_shapes():
    k = _fir_kernel((1, 3, 3, 1))
    x = torch.ones(1, 2, 8, 6)
    up, down = upsample_2d(x, k), downsample_2d(x, k)
    assert up.shape == (1, 2, 16, 12) and down.shape == (1, 2, 4, 3)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.ones_like(up[..., 2:-2, 2:-2]))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.ones_like(down[..., 1:-1, 1:-1]))


def test_small_config():
    net = build_ncsnpp("small")
    assert net.nf == 32 and net.ch_mult == (1, 2, 2, 2)
    with pytest.raises(ValueError, match="config"):
        build_ncsnpp("huge")
