"""Training memory: activation checkpointing changes nothing but memory, the fused pairs store
only their inputs, and attention never keeps an L x L tensor for its backward pass."""
import pytest
import torch

from perf.saved import SavedTensors
from sepkit.codecs import IdentityCodec
from sepkit.models.codecformer import Codecformer
from sepkit.models.dip import DIPFrontend
from sepkit.models.mixture2set import MixtureToSet
from sepkit.models.ncsnpp import NCSNpp
from sepkit.models.separators import build_separator
from sepkit.models.separators.conv_tasnet import TemporalBlock
from sepkit.models.tse import ConvTasNetTSE, DualPathTSE
from sepkit.nn import GlobalLayerNorm, MultiheadAttention, Snake, TransformerBlock
from sepkit.nn.fused import layer_norm_linear, prelu_global_norm

SEPARATORS = {
    "convtasnet": dict(n_filters=16, kernel_size=16, stride=8, bottleneck=8, hidden=16, skip=8, layers=3, repeats=2),
    "dprnn": dict(n_filters=8, kernel_size=4, stride=2, bottleneck=8, hidden=8, chunk_size=12, n_blocks=2),
    "sepformer": dict(n_filters=16, kernel_size=16, stride=8, nhead=2, dim_feedforward=32, n_layers=2, n_blocks=2,
                      chunk_size=10, dropout=0.1),
    "bilstm": dict(n_filters=16, kernel_size=40, stride=20, hidden=8, n_layers=2),
}


def _outputs(out) -> list[torch.Tensor]:
    if isinstance(out, tuple):
        return [t for o in out for t in _outputs(o)]
    return [torch.view_as_real(out) if out.is_complex() else out]


def same_with_and_without(build, inputs, seed=0):
    """Build twice (weights shared), run both in training mode on ``inputs`` with the same random
    state, and compare outputs and every parameter gradient."""
    torch.manual_seed(seed)
    plain = build("none").train()
    ckpt = build("blocks").train()
    ckpt.load_state_dict(plain.state_dict())
    results = []
    for model in (plain, ckpt):
        torch.manual_seed(seed + 1)  # dropout draws the same masks in both
        outs = _outputs(model(*inputs))
        g = torch.Generator().manual_seed(seed + 2)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((outs, grads))
    (o1, g1), (o2, g2) = results
    assert len(g1) > 0 and g1.keys() == g2.keys()
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("name", sorted(SEPARATORS))
def test_separators_same_outputs_and_gradients_with_checkpointing(name):
    mix = torch.randn(2, 803)
    same_with_and_without(lambda c: build_separator(name, checkpointing=c, **SEPARATORS[name]), (mix,))


def test_checkpointing_stores_less():
    args = SEPARATORS["sepformer"]
    mix = torch.randn(1, 1601)
    sizes = {}
    for mode in ("none", "blocks"):
        model = build_separator("sepformer", checkpointing=mode, **args).train()
        with SavedTensors(model) as saved:
            model(mix)
        sizes[mode] = saved.total_bytes
    assert sizes["blocks"] < 0.5 * sizes["none"]


def test_method_models_same_with_checkpointing():
    torch.manual_seed(0)
    wave = torch.randn(2, 1203)
    same_with_and_without(lambda c: Codecformer(IdentityCodec(8000), d_model=16, nhead=2, dim_feedforward=32,
                                                n_layers=2, dropout=0.1, checkpointing=c), (wave,))
    same_with_and_without(lambda c: DIPFrontend("small", conv_channels=16, d_model=32, n_layers=2, n_heads=2,
                                                ffn_dim=64, final_dim=16, codevector_dim=16, num_vars=24,
                                                pos_conv_kernel=16, pos_conv_groups=4, checkpointing=c),
                          (torch.randn(2, 1600),))
    same_with_and_without(lambda c: MixtureToSet(n_slots=2, embed_dim=8, n_mels=16, d_model=16, nhead=2,
                                                 dim_feedforward=32, n_layers=2, n_decoder_layers=1,
                                                 checkpointing=c), (torch.randn(2, 4000),))
    emb = torch.randn(2, 8)
    same_with_and_without(lambda c: ConvTasNetTSE(emb_dim=8, n_filters=16, bottleneck=8, hidden=16, skip=8, layers=2,
                                                  repeats=2, checkpointing=c), (wave, emb))
    same_with_and_without(lambda c: DualPathTSE(emb_dim=8, n_filters=8, channels=8, hidden=8, chunk_size=12,
                                                n_blocks=2, n_tokens=2, nhead=2, checkpointing=c), (wave, emb))
    x = torch.randn(2, 1, 16, 8, dtype=torch.complex64)
    y = torch.randn(2, 1, 16, 8, dtype=torch.complex64)
    t = torch.rand(2) * 0.9 + 0.05
    same_with_and_without(lambda c: NCSNpp(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                                           n_freq=16, checkpointing=c), (x, y, t))


def test_checkpointing_under_autocast():
    args = SEPARATORS["convtasnet"]
    mix = torch.randn(2, 803)
    outs = []
    for mode in ("none", "blocks"):
        torch.manual_seed(0)
        model = build_separator("convtasnet", checkpointing=mode, **args).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(mix)
        out.float().square().mean().backward()
        outs.append((out.float(), model.masker.blocks[0].conv_in.weight.grad.clone()))
    assert outs[0][0].abs().max() > 0
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-5, atol=1e-6)


def test_bad_checkpointing_value_is_named():
    with pytest.raises(ValueError, match="checkpointing must be one of"):
        build_separator("convtasnet", checkpointing="yes")
    with pytest.raises(ValueError, match="checkpointing"):
        build_separator("sepformer", checkpointing=True)
    from sepkit.train import load_recipe, make_task

    with pytest.raises(ValueError, match="checkpointing"):
        make_task(load_recipe("dprnn", "demo", ["model.args.checkpointing=all"])).build_model()
    model = make_task(load_recipe("sepformer", "demo", ["model.args.checkpointing=blocks"])).build_model()
    assert all(stack.checkpointing == "blocks" for b in model.masker.blocks for stack in (b.intra, b.inter))


# -- the fused pairs -----------------------------------------------------------------------------

def test_layer_norm_linear_gradcheck_and_equality():
    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(6).double()
    lin = torch.nn.Linear(6, 5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)

    def fused(x, nw, nb, w, b):
        norm.weight, norm.bias = torch.nn.Parameter(nw), torch.nn.Parameter(nb)
        return layer_norm_linear(x, norm, w, b)

    from sepkit.nn.fused import _LayerNormLinear

    args = (x, norm.weight.detach().clone().requires_grad_(), norm.bias.detach().clone().requires_grad_(),
            lin.weight.detach().clone().requires_grad_(), lin.bias.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda x, nw, nb, w, b: _LayerNormLinear.apply(x, nw, nb, 1e-5, w, b), args)
    x32 = torch.randn(5, 7, 6)
    n32, l32 = torch.nn.LayerNorm(6), torch.nn.Linear(6, 5)
    torch.testing.assert_close(layer_norm_linear(x32, n32, l32.weight, l32.bias), l32(n32(x32)), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = l32(n32(x32)), layer_norm_linear(x32, n32, l32.weight, l32.bias)
    assert a.dtype == b.dtype == torch.bfloat16
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_prelu_global_norm_gradcheck_and_equality():
    from sepkit.nn.fused import _PReLUGlobalNorm

    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    for pw in (torch.tensor([0.25]), torch.rand(3, 1)):
        args = (x, pw.double().requires_grad_(), (torch.rand(3) + 0.5).double().requires_grad_(),
                torch.randn(3, dtype=torch.float64, requires_grad=True))
        assert torch.autograd.gradcheck(lambda x, p, w, b: _PReLUGlobalNorm.apply(x, p, w, b, 1e-8), args)
    prelu, norm = torch.nn.PReLU(), GlobalLayerNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x32 = torch.randn(2, 16, 50, requires_grad=True)
    ref = norm(prelu(x32))
    ref.square().sum().backward()
    grads = [t.grad.clone() for t in (x32, prelu.weight, norm.weight, norm.bias)]
    for t in (x32, prelu.weight, norm.weight, norm.bias):
        t.grad = None
    out = prelu_global_norm(x32, prelu, norm)
    out.square().sum().backward()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    for g, t in zip(grads, (x32, prelu.weight, norm.weight, norm.bias)):
        torch.testing.assert_close(t.grad, g, rtol=1e-6, atol=1e-6)


# -- what the layers store -------------------------------------------------------------------------

def test_pre_norm_transformer_block_stores_no_normalised_copy():
    B, L, E = 2, 40, 16
    block = TransformerBlock(E, 2, 4 * E).train()
    x = torch.randn(B, L, E, requires_grad=True)
    with SavedTensors(block) as saved:
        block(x)
    unit = B * L * E * 4
    # x, q/k/v, the attention output, x + attention, the feed-forward hidden (4 units): 10 units;
    # the norms' outputs (2 more) are recomputed in the backward pass
    assert saved.total_bytes < 10.5 * unit
    assert saved.total_bytes >= 10 * unit


def test_temporal_block_stores_no_prelu_output():
    block = TemporalBlock(8, 32, 8, 3, 2, "gLN", False).train()
    x = torch.randn(1, 8, 300, requires_grad=True)
    with SavedTensors(block) as saved:
        block(x)
    hidden = 32 * 300 * 4
    # the two convolution outputs (PReLU inputs) and the two norm outputs (the next convs' inputs)
    assert 4 * hidden <= saved.total_bytes < 4.5 * hidden


def test_temporal_block_same_outputs_with_and_without_gradients():
    # training computes the residual and skip convolutions as one product, inference as two
    torch.manual_seed(3)
    block = TemporalBlock(8, 32, 6, 3, 2, "gLN", False).eval()
    x = torch.randn(2, 8, 300)
    res, skip = block(x)
    with torch.no_grad():
        res0, skip0 = block(x)
    torch.testing.assert_close(res0, res.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(skip0, skip.detach(), rtol=1e-5, atol=1e-6)
    assert res.shape == (2, 8, 300) and skip.shape == (2, 6, 300)


@pytest.mark.parametrize("backend", [None, "sdpa", "triton"])
def test_attention_saves_no_score_matrix(backend):
    L = 48 if backend != "triton" else 32
    attn = MultiheadAttention(16, 2, backend=backend).train()
    x = torch.randn(2, L, 16, requires_grad=True)
    with SavedTensors(attn) as saved:
        attn(x).sum().backward()
    assert saved.records, "nothing recorded"
    for r in saved.records:
        assert list(r["shape"]).count(L) < 2, f"an L x L tensor is saved: {r}"
    assert saved.total_bytes < 8 * x.numel() * 4


def test_snake_saves_its_input_only():
    layer = Snake(8)
    x = torch.randn(2, 8, 64, requires_grad=True)
    with SavedTensors(layer) as saved:
        layer(x)
    assert saved.total_bytes <= x.numel() * 4 + 8 * 4 * 2


@pytest.mark.parametrize("beta,logscale,dim", [(False, False, 1), (True, True, -1), (False, True, 1), (True, False, 1)])
def test_snake_automatic_cpu_path_gradients(beta, logscale, dim):
    """The automatic CPU path recomputes sin/cos in its backward: float64 gradcheck."""
    from sepkit.kernels import snake

    torch.manual_seed(0)
    x = (3 * torch.randn(2, 4, 6, dtype=torch.float64)).requires_grad_()
    C = x.shape[dim]
    a = (torch.rand(C, dtype=torch.float64) + (0.0 if logscale else 1e-3)).requires_grad_()
    b = (torch.rand(C, dtype=torch.float64) + 0.2).requires_grad_() if beta else None
    inputs = [x, a] + ([b] if beta else [])
    assert torch.autograd.gradcheck(lambda *t: snake(t[0], t[1], t[2] if beta else None, dim=dim,
                                                     logscale=logscale), inputs)
