"""Export to ONNX (run in onnxruntime), torch.export and TorchScript: every exportable model gives
the PyTorch outputs within 1e-4 relative at two batch sizes and two lengths, one of them prime (a
multiple of no stride); the GCRN step streams in onnxruntime like the offline model; the kernel
ops export through their references; refusals say what and why.

Small configurations throughout: an export traces the whole graph, whatever the model's size."""
import operator

import pytest
import torch

from sepkit.errors import InputError
from sepkit.exporting import FORMATS, ExportCheckError, export, exportable, load, relative_error

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
ort = pytest.importorskip("onnxruntime")

SEPARATORS = {
    "convtasnet": dict(n_filters=16, kernel_size=16, stride=8, bottleneck=8, hidden=16, skip=8, layers=3, repeats=2),
    "dprnn": dict(n_filters=8, kernel_size=4, stride=2, bottleneck=8, hidden=8, chunk_size=12, n_blocks=2),
    "sepformer": dict(n_filters=16, kernel_size=16, stride=8, nhead=2, dim_feedforward=32, n_layers=1, n_blocks=2,
                      chunk_size=10),
    "bilstm": dict(n_filters=16, kernel_size=16, stride=8, hidden=8, n_layers=2),
}
TINY_CODEC = dict(encoder_dim=4, encoder_rates=[2, 4, 5, 8], latent_dim=16, decoder_dim=32, decoder_rates=[8, 5, 4, 2],
                  n_codebooks=2, codebook_size=16, codebook_dim=4, sample_rate=16000)
TINY_GCRN = dict(win_length=64, hop_length=32, channels=(4, 8), lstm_groups=2, lstm_layers=2)



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Frame-sized work runs faster on one thread than on an oversubscribed shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

def _randomise_batch_norms(model):
    """Running statistics away from (0, 1), so that the exported norms are really tested."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def make(name: str):
    torch.manual_seed(0)
    if name in SEPARATORS:
        from sepkit.models import build_separator

        return build_separator(name, **SEPARATORS[name])
    if name == "convtasnet-causal":
        from sepkit.models import build_separator

        return build_separator("convtasnet", **SEPARATORS["convtasnet"], causal=True)
    if name == "codecformer":
        from sepkit.codecs import DAC
        from sepkit.models.codecformer import Codecformer

        return Codecformer(DAC(**TINY_CODEC), d_model=32, nhead=4, dim_feedforward=64, n_layers=2)
    if name == "tse-convtasnet":
        from sepkit.models.tse import ConvTasNetTSE

        return ConvTasNetTSE(emb_dim=16, n_filters=32, bottleneck=16, hidden=32, skip=16, layers=3, repeats=2)
    if name == "tse-dualpath":
        from sepkit.models.tse import DualPathTSE

        return DualPathTSE(emb_dim=16, n_filters=16, channels=16, hidden=16, chunk_size=10, n_blocks=2, nhead=2)
    if name == "tse-enrolled":  # a trained TSE model: the extractor and its frozen speaker-embedding teacher
        from sepkit.models.speaker import ECAPATDNN
        from sepkit.models.tse import ConvTasNetTSE
        from sepkit.train.tasks.tse import TSEWithConditioner

        teacher = ECAPATDNN(n_mels=24, channels=[16, 16, 16, 16, 48], lin_neurons=16, attention_channels=8,
                            res2net_scale=2, se_channels=8, sample_rate=8000, n_fft=200)
        extractor = ConvTasNetTSE(emb_dim=16, n_filters=32, bottleneck=16, hidden=32, skip=16, layers=3, repeats=2)
        return _randomise_batch_norms(TSEWithConditioner(extractor, teacher, 8000))
    if name in ("gcrn", "gcrn-step"):
        from sepkit.models.gcrn import GCRN

        return _randomise_batch_norms(GCRN("ondevice", **TINY_GCRN))
    if name == "sgmse-score":
        from sepkit.models.ncsnpp import NCSNpp
        from sepkit.models.sgmse import SGMSE

        return SGMSE(NCSNpp(nf=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), n_freq=256))
    raise KeyError(name)


MODELS = ["convtasnet", "convtasnet-causal", "dprnn", "sepformer", "bilstm", "codecformer", "tse-convtasnet",
          "tse-dualpath", "tse-enrolled", "gcrn", "gcrn-step", "sgmse-score"]
PART = {"gcrn-step": "step", "sgmse-score": "score"}


def _compare(ex, run, shapes):
    """Largest relative error of each output of ``run`` against the module at ``shapes``."""
    worst = 0.0
    for batch, length in shapes:
        args = ex.make_inputs(batch, length, torch.Generator().manual_seed(7 * batch + length))
        with torch.no_grad():
            want = ex.module(*args)
        want = want if isinstance(want, tuple) else (want,)
        got = run(*args)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.shape == w.shape, (batch, length, g.shape, w.shape)
            assert float(w.abs().max()) > 0  # a test on a silent output would prove nothing
            worst = max(worst, relative_error(g, w))
    return worst


@pytest.mark.parametrize("name", MODELS)
def test_onnx_runs_in_onnxruntime_like_pytorch(name, tmp_path):
    model = make(name).eval()
    done = export(model, "onnx", tmp_path / "m.onnx", part=PART.get(name))
    assert done.checks and done.max_error <= 1e-4
    ex = exportable(model, PART.get(name))
    assert ex.trace_shape not in ex.check_shapes
    # our own run, at two batch sizes and two lengths besides the export's check: for waveform
    # models one prime length (a multiple of no stride, hop or chunk)
    if ex.kind == "step":
        shapes = [(1, 0), (4, 0)]
    elif ex.kind == "score":
        m = ex.time_multiple
        shapes = [(1, 5 * m), (2, 2 * m)]
    else:
        rate = int(getattr(model, "sample_rate", 8000))
        shapes = [(1, 1009 if rate < 16000 else 2003), (4, rate // 4)]
    assert _compare(ex, load(done.path), shapes) <= 1e-4
    # the graph's batch and time axes are named, not the example's numbers
    session = ort.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    assert first.name == ex.inputs[0] and first.shape[0] == "batch"
    if ex.kind not in ("step",):
        assert "time" in first.shape


def test_gcrn_step_in_onnxruntime_streams_like_the_offline_model(tmp_path):
    from sepkit.models.streaming import StreamingEnhancer

    model = make("gcrn").eval()
    done = export(model, "onnx", tmp_path / "step.onnx", part="step")
    assert done.inputs == ("frame", "h", "c")
    step = load(done.path)
    noisy = torch.randn(2, 1601, generator=torch.Generator().manual_seed(3))
    streamer = StreamingEnhancer(model, step=lambda frame, h, c: step(frame.contiguous(), h, c))
    chunks = [streamer.process(noisy[:, i:i + 100]) for i in range(0, noisy.shape[1], 100)]
    streamed = torch.cat(chunks + [streamer.flush()], dim=1)
    with torch.no_grad():
        offline = model(noisy)
    assert streamed.shape == offline.shape
    assert relative_error(streamed, offline) <= 1e-4


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "onnx"])
@pytest.mark.parametrize("name", ["convtasnet", "dprnn", "gcrn"])
def test_torch_export_and_torchscript_files_take_any_batch_and_length(name, fmt, tmp_path):
    model = make(name).eval()
    done = export(model, fmt, tmp_path / f"m.{fmt}", part=PART.get(name))
    assert done.max_error <= 1e-4
    ex = exportable(model)
    assert _compare(ex, load(done.path, fmt), [(1, 1009), (3, 2000)]) <= 1e-4


def test_floor_division_of_sizes_is_floored_in_onnx(tmp_path):
    """The frame count ceil(T / 8) written -(-T // 8): ONNX's Div truncates, the translation floors."""

    class Frames(torch.nn.Module):
        def forward(self, x):
            n = operator.neg(operator.floordiv(-x.shape[-1], 8))
            return x.new_ones(x.shape[0], n)

    from sepkit.exporting import Exportable

    ex = Exportable(Frames(), "toy", ("x",), ("y",), lambda b, n, g: (torch.randn(b, n, generator=g),),
                    ({0: "batch", 1: "time"},), ({0: "batch", 1: "time"},), trace_shape=(2, 64),
                    check_shapes=((1, 4001), (2, 4000)))
    from sepkit.exporting import _write_onnx, check_file, trace

    _write_onnx(trace(ex), ex, tmp_path / "f.onnx")
    rows = check_file(ex, tmp_path / "f.onnx", "onnx")
    assert all(r["y"] == 0 for r in rows)


def test_models_on_the_triton_path_export_what_the_kernels_compute(tmp_path, monkeypatch):
    """With the Triton path forced (interpreter on a CPU) the eager GCRN runs the stft_mask
    kernel; the exported graph records the reference, and onnxruntime gives what the kernel gives
    (snake and attention: the direct graph below, a whole Codecformer is slow in the interpreter)."""
    from sepkit.kernels import INTERPRET

    if not INTERPRET:
        pytest.skip("needs Triton's interpreter (TRITON_INTERPRET=1, set by conftest without CUDA)")
    monkeypatch.setenv("SEPKIT_BACKEND", "triton")
    done = export(make("gcrn").eval(), "onnx", tmp_path / "gcrn.onnx")
    assert done.max_error <= 1e-4


class _Ops(torch.nn.Module):
    """The three forward custom ops called directly: what a graph traced on the kernels holds."""

    def __init__(self):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.rand(4) + 0.5)

    def forward(self, x, spec, mask):
        ops = torch.ops.sepkit
        y = ops.snake_fwd(x, self.alpha, None, 1, False)  # (B, 4, T)
        q = y.transpose(1, 2).reshape(y.shape[0], 1, -1, 4)
        a, _ = ops.attention_fwd(q, q, q, None, False, 0.5)
        z = ops.stft_mask_fwd(spec, mask, "complex", "tanh", True, True, 0.5, 0.15)
        return a, z


def test_a_graph_holding_the_custom_ops_exports_through_the_references(tmp_path):
    from sepkit.kernels import INTERPRET

    if not INTERPRET:
        pytest.skip("the ops' Triton kernels run on a CPU only in the interpreter")
    from sepkit.exporting import Exportable, _write_onnx, check_file, trace

    def inputs(b, n, g):
        return (torch.randn(b, 4, n, generator=g), torch.randn(b, n, 5, 2, generator=g).abs() + 0.1,
                torch.randn(b, n, 5, 2, generator=g))

    axes = {0: "batch", 1: "time"}
    ex = Exportable(_Ops(), "ops", ("x", "spec", "mask"), ("a", "z"), inputs, ({0: "batch", 2: "time"}, axes, axes),
                    (axes, axes), trace_shape=(2, 12), check_shapes=((1, 13), (3, 7)))
    program = trace(ex)  # decomposed: no sepkit op is left for onnxruntime
    assert not [n for n in program.graph.nodes if str(n.target).startswith("sepkit.")]
    _write_onnx(program, ex, tmp_path / "ops.onnx")
    assert all(max(r["a"], r["z"]) <= 1e-4 for r in check_file(ex, tmp_path / "ops.onnx", "onnx"))


def test_each_reference_decomposition_equals_its_op():
    from sepkit.kernels import INTERPRET
    from sepkit.kernels import decompositions as D

    if not INTERPRET:
        pytest.skip("the ops' Triton kernels run on a CPU only in the interpreter")
    g = torch.Generator().manual_seed(0)
    ops = torch.ops.sepkit
    x, a, b = torch.randn(2, 5, 37, generator=g), torch.rand(5, generator=g) + 0.5, torch.rand(5, generator=g) + 0.5
    for beta in (None, b):
        torch.testing.assert_close(D.snake_fwd(x, a, beta, 1, False), ops.snake_fwd(x, a, beta, 1, False))
    q, k, v = (torch.randn(2, 2, n, 16, generator=g) for n in (9, 13, 13))
    lengths = torch.tensor([13, 5], dtype=torch.int32)
    for lens, causal in ((None, False), (lengths, True)):
        want = ops.attention_fwd(q, k, v, lens, causal, 0.25)
        got = D.attention_fwd(q, k, v, lens, causal, 0.25)
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got[1], want[1], atol=1e-4, rtol=1e-4)
    spec, mask = torch.randn(3, 11, 2, generator=g), torch.randn(3, 11, 2, generator=g)
    for args in (("complex", "none", False, False), ("complex", "tanh", True, True), ("magnitude", "sigmoid", False, False),
                 ("none", "none", True, False), ("none", "none", False, True)):
        m = mask[..., 0] if args[0] == "magnitude" else (mask.new_empty(0) if args[0] == "none" else mask)
        s = spec.abs() + 0.1 if args[3] else spec
        torch.testing.assert_close(D.stft_mask_fwd(s, m, *args, 0.5, 0.15), ops.stft_mask_fwd(s, m, *args, 0.5, 0.15),
                                   atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- refusals

def test_a_sampler_is_refused_with_the_reason(tmp_path):
    model = make("sgmse-score")
    with pytest.raises(InputError, match="sampler.*part='score'"):
        export(model, "onnx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_refusals_name_what_and_why(tmp_path):
    with pytest.raises(InputError, match="Linear cannot be exported: sepkit exports the separators"):
        export(torch.nn.Linear(2, 2), "onnx", tmp_path / "x.onnx")
    with pytest.raises(InputError, match="part='step': ConvTasNet has no such part"):
        export(make("convtasnet"), "onnx", tmp_path / "x.onnx", part="step")
    with pytest.raises(InputError, match="format='tflite'"):
        export(make("convtasnet"), "tflite", tmp_path / "x.onnx")
    (tmp_path / "x.onnx").write_bytes(b"keep")
    with pytest.raises(FileExistsError, match="overwrite"):
        export(make("convtasnet"), "onnx", tmp_path / "x.onnx")
    assert (tmp_path / "x.onnx").read_bytes() == b"keep"


def test_a_failed_check_leaves_no_file(tmp_path, monkeypatch):
    import sepkit.exporting as E

    monkeypatch.setattr(E, "RTOL", -1.0)  # no error is small enough
    monkeypatch.setattr(E.check_file, "__defaults__", (None, -1.0))
    with pytest.raises(ExportCheckError, match="differs from the model at batch 1"):
        export(make("convtasnet"), "onnx", tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_export_command_writes_a_checked_file(tmp_path, capsys):
    from sepkit.cli import main
    from sepkit.train import load_recipe, make_task
    from sepkit.train.checkpoint import write_model_checkpoint

    cfg = load_recipe("convtasnet", preset="demo", overrides=[f"model.args.{k}={v}" for k, v in
                                                            SEPARATORS["convtasnet"].items()])
    task = make_task(cfg)
    torch.manual_seed(0)
    write_model_checkpoint(tmp_path / "ckpt", task.build_model(), cfg.to_dict(), task.model_meta())
    out = tmp_path / "model.onnx"
    assert main(["export", "--ckpt", str(tmp_path / "ckpt"), "--format", "onnx", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "inputs mixture; outputs sources" in text and "checked at batch 1" in text
    assert out.is_file()
    assert main(["export", "--ckpt", str(tmp_path / "ckpt"), "--format", "onnx", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", "--ckpt", str(tmp_path / "ckpt"), "--format", "onnx", "--part", "step",
                 "--out", str(tmp_path / "s.onnx")]) == 2
    assert "ConvTasNet has no such part" in capsys.readouterr().err
