"""torch.compile as one switch (``train.compile``, ``--compile``): the same numbers and checkpoints
as eager, eager with one notice where it cannot compile, graph breaks only around the LSTMs, and
no recompilation per input length.

Most tests compile with the ``aot_eager`` backend (dynamo's graphs, guards and recompilations,
AOTAutograd's backward, no C++ build: seconds, not minutes); the inductor tests build C++ for
tiny models."""
from __future__ import annotations

import json

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from sepkit.cli import main
from sepkit.data import write_audio
from sepkit.errors import BackendError, ConfigError, InputError, InputTypeError
from sepkit.models.separators import build_separator
from sepkit.train import compiling, load_recipe, load_trained, resolve_checkpoint, train
from sepkit.train.compiling import compile_model, compile_problems, is_compiled

TINY_RUN = [
    "data.segment=0.25", "data.batch_size=2", "data.synthetic.num_train=8", "data.synthetic.num_valid=2",
    "data.synthetic.num_test=4", "data.synthetic.min_duration=0.3", "data.synthetic.max_duration=0.6",
    "model.args.n_filters=16", "model.args.bottleneck=8", "model.args.hidden=16", "model.args.skip=8",
    "model.args.layers=2", "model.args.repeats=1", "train.log_every=1", "train.eval_every=2", "train.ckpt_every=2",
]
TINY_MODELS = {
    "convtasnet": dict(n_filters=16, kernel_size=8, stride=4, bottleneck=8, hidden=16, skip=8, layers=2, repeats=1),
    "dprnn": dict(n_filters=8, kernel_size=4, stride=2, bottleneck=8, hidden=8, chunk_size=20, n_blocks=2),
    "sepformer": dict(n_filters=16, kernel_size=8, stride=4, d_model=16, nhead=2, dim_feedforward=32, n_layers=1,
                      n_blocks=1, chunk_size=20),
    "bilstm": dict(n_filters=8, kernel_size=8, stride=4, hidden=8, n_layers=2),
}


@pytest.fixture(autouse=True)
def graphs_only(monkeypatch):
    """Compile with aot_eager (the inductor tests set BACKEND back) from a clean dynamo cache."""
    monkeypatch.setattr(compiling, "BACKEND", "aot_eager")
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def pair(name: str, seed: int = 0):
    """Two copies of a tiny separator with the same weights."""
    torch.manual_seed(seed)
    a = build_separator(name, n_src=2, **TINY_MODELS[name])
    b = build_separator(name, n_src=2, **TINY_MODELS[name])
    b.load_state_dict(a.state_dict())
    return a, b


def frames_compiled() -> int:
    """Frames dynamo has compiled so far (each recompilation is one more)."""
    return counters["frames"]["ok"]


def test_train_compile_is_a_range_checked_recipe_key():
    assert load_recipe("convtasnet", "demo", ["train.compile=max-autotune"]).train.compile == "max-autotune"
    assert load_recipe("convtasnet", "demo").train.compile == "none"
    with pytest.raises(ConfigError, match=r"train\.compile='fast': must be none, default or max-autotune"):
        load_recipe("convtasnet", "demo", ["train.compile=fast"])
    with pytest.raises(ConfigError, match="compile='fast'"):
        compile_model(torch.nn.Linear(2, 2), "fast")


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_compiled_separator_gives_eager_outputs_and_gradients(name):
    """Forward and every gradient under a shared random upstream gradient, in training mode;
    the module stays itself (same state-dict keys, no ``_orig_mod.``)."""
    compiled, eager = pair(name)
    keys = list(eager.state_dict())
    assert compile_model(compiled, "default") is compiled and is_compiled(compiled)
    assert list(compiled.state_dict()) == keys and not any("_orig_mod" in k for k in keys)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1203, generator=g)
    upstream = torch.randn(2, 2, 1203, generator=g)
    outs = []
    for model in (compiled, eager):
        model.train()
        y = model(x)
        (y * upstream).sum().backward()
        outs.append((y.detach(), {k: p.grad for k, p in model.named_parameters()}))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
    for k in outs[1][1]:
        torch.testing.assert_close(outs[0][1][k], outs[1][1][k], rtol=1e-4, atol=1e-6, msg=k)
    assert frames_compiled() > 0
    compile_model(compiled, "none")
    assert not is_compiled(compiled) and "forward" not in compiled.__dict__


@pytest.mark.parametrize("name", ["dprnn", "bilstm"])
def test_rnn_separators_break_their_graphs_only_around_the_lstms(name):
    compiled, eager = pair(name)
    compile_model(compiled, "default")
    x = torch.randn(1, 900)
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(x), eager.eval()(x), rtol=0, atol=0)
    reasons = list(counters["graph_break"])
    assert reasons and all("torch.compiler.disable" in r for r in reasons), reasons
    assert counters["stats"]["unique_graphs"] >= 2  # the layers around the LSTMs compiled


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_inputs_of_many_lengths_compile_a_few_times_not_once_per_length(name):
    """Static at the first length, dynamic from the second (torch's automatic dynamic shapes).
    Beyond that a graph recompiles only where torch's convolution changes its CPU backend with
    the input's size (oneDNN past 20480 input elements, a guard dynamo keeps): a few size ranges,
    each compiled once. So after lengths that span the ranges, no other length compiles."""
    compiled, eager = pair(name)
    compile_model(compiled.eval(), "default")
    eager.eval()
    first = [1000, 1333, 877, 2048, 1501, 999, 3001, 640, 5500, 2600, 21000]
    again = [1100, 2900, 700, 5300, 2700, 1900, 4001, 20999, 23003, 1234]
    seen = []
    with torch.no_grad():
        for n in first + again:
            x = torch.randn(1, n)
            torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-6)
            seen.append(frames_compiled())
    assert seen[1] > seen[0], seen  # the second length compiles the dynamic graph
    per_compile = seen[1] - seen[0]  # frames of one compile (more than one around the LSTMs)
    assert seen[len(first) - 1] - seen[1] <= 3 * per_compile, seen  # a few size ranges, not one per length
    assert seen[len(first):] == [seen[len(first) - 1]] * len(again), seen  # then nothing more


def test_input_errors_stay_the_users_errors(capsys):
    model, _ = pair("convtasnet")
    compile_model(model, "default")
    with pytest.raises(InputTypeError, match="floating-point"):
        model(torch.ones(1, 800, dtype=torch.int64))
    with pytest.raises(InputError, match=r"\(B, T\) or \(B, 1, T\)"):
        model(torch.randn(1, 2, 800))
    assert is_compiled(model) and "torch.compile failed" not in capsys.readouterr().err


def broken_backend(gm, example_inputs):
    raise RuntimeError("no kernels for this graph")


def test_a_graph_the_backend_cannot_build_runs_eagerly_with_one_notice(capsys):
    model, eager = pair("convtasnet")
    compile_model(model, "default", what="train.compile", backend=broken_backend)
    x = torch.randn(1, 800)
    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(model(x), eager(x), rtol=0, atol=0)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.compile: torch.compile failed (RuntimeError: no kernels for this graph); "\
        "running eagerly from here on" in err
    assert not is_compiled(model)

    strict, _ = pair("convtasnet")
    compile_model(strict, "max-autotune", what="--compile", backend=broken_backend)
    with pytest.raises(BackendError, match=r"--compile=max-autotune: torch.compile failed on this machine "
                                           r"\(RuntimeError: no kernels for this graph\)"):
        strict(x)


def test_a_training_run_whose_backend_fails_finishes_eagerly(tmp_path, monkeypatch, capsys):
    """Never a crash mid-run: the same weights as an eager run, and one notice."""
    train(load_recipe("convtasnet", "demo", TINY_RUN + ["train.max_steps=2"]), tmp_path / "eager", progress=False,
          test=False)
    monkeypatch.setattr(compiling, "BACKEND", broken_backend)
    cfg = load_recipe("convtasnet", "demo", TINY_RUN + ["train.max_steps=2", "train.compile=default"])
    train(cfg, tmp_path / "broken", progress=False, test=False)
    assert "train.compile: torch.compile failed (RuntimeError: no kernels for this graph)" in capsys.readouterr().err
    a, b = (_weights(tmp_path / n) for n in ("eager", "broken"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_what_cannot_compile_here_is_one_line_before_any_work(monkeypatch, capsys):
    monkeypatch.setattr(compiling, "BACKEND", "inductor")
    # inductor's config is patched with its own context manager: a monkeypatched entry does not come back
    with torch._inductor.config.patch({"cpp.cxx": ("sepkit-no-such-compiler",)}):
        problems = compile_problems("cpu")
        assert len(problems) == 1 and "inductor needs a C++ compiler on the CPU" in problems[0]
        model, _ = pair("convtasnet")
        compile_model(model, "default", what="--compile")
        err = capsys.readouterr().err
        assert err.startswith("sepkit: --compile: torch.compile cannot run here (inductor needs a C++ compiler")
        assert err.count("\n") == 1 and err.rstrip().endswith("running eagerly") and not is_compiled(model)
        with pytest.raises(BackendError, match="--compile=max-autotune: torch.compile cannot run here"):
            compile_model(model, "max-autotune", what="--compile")
    assert torch._inductor.config.cpp.cxx != ("sepkit-no-such-compiler",)


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(resolve_checkpoint(run_dir) / "model.safetensors"))


def test_compiled_training_matches_eager_and_resumes_across_both(tmp_path):
    """aot_eager runs the traced graphs themselves: the weights match an eager run to rounding,
    a run resumes compiled from an eager checkpoint and eager from a compiled one, and no
    checkpoint holds a compiled module's key prefix."""
    def cfg(steps, mode):
        return load_recipe("convtasnet", "demo", TINY_RUN + [f"train.max_steps={steps}", f"train.compile={mode}"])

    train(cfg(4, "none"), tmp_path / "eager", progress=False, test=False)
    train(cfg(4, "default"), tmp_path / "compiled", progress=False, test=False)
    train(cfg(2, "none"), tmp_path / "split", progress=False, test=False)
    train(cfg(4, "default"), tmp_path / "split", resume=True, progress=False, test=False)
    train(cfg(2, "default"), tmp_path / "split2", progress=False, test=False)
    train(cfg(4, "none"), tmp_path / "split2", resume=True, progress=False, test=False)
    ref = _weights(tmp_path / "eager")
    for run in ("compiled", "split", "split2"):
        got = _weights(tmp_path / run)
        assert list(got) == list(ref) and not any("_orig_mod" in k for k in got)
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=f"{run}: {k}")
    assert (tmp_path / "compiled" / "checkpoints" / "step-0000004" / "config.yaml").read_text().count("compile: default")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("compile") / "run"
    train(load_recipe("convtasnet", "demo", TINY_RUN + ["train.max_steps=2"]), run, progress=False, test=False)
    return run


def test_separate_compiles_once_for_files_of_many_lengths(trained_run, tmp_path, capsys):
    """``sepkit separate --compile`` over files of six lengths compiles as often as over two."""
    files = []
    for k, n in enumerate([4000, 5200, 4431, 6007, 4810, 3333]):
        files.append(write_audio(tmp_path / f"in{k}.wav", torch.randn(n) * 0.1, 8000))
    compiled = []
    for inputs in (files[:2], files):
        torch._dynamo.reset()
        counters.clear()
        out = tmp_path / f"out{len(inputs)}"
        assert main(["separate", "--ckpt", str(trained_run), *map(str, inputs), "-o", str(out), "--compile"]) == 0
        compiled.append(frames_compiled())
    assert compiled[0] > 0 and compiled[1] == compiled[0], compiled
    eager = tmp_path / "eager"
    assert main(["separate", "--ckpt", str(trained_run), str(files[3]), "-o", str(eager)]) == 0
    from sepkit.data import read_audio

    a, _ = read_audio(tmp_path / "out6" / "in3_s1.wav")
    b, _ = read_audio(eager / "in3_s1.wav")
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)  # 16-bit files


def test_eval_compiles_once_for_utterances_of_many_lengths(trained_run, tmp_path, capsys):
    compiled = []
    for n in (2, 4):
        torch._dynamo.reset()
        counters.clear()
        csv = tmp_path / f"eval{n}.csv"
        assert main(["eval", "--ckpt", str(trained_run), "--max-items", str(n), "--csv", str(csv), "--compile"]) == 0
        compiled.append(frames_compiled())
    assert compiled[0] > 0 and compiled[1] == compiled[0], compiled
    assert main(["eval", "--ckpt", str(trained_run), "--csv", str(tmp_path / "eager.csv")]) == 0
    assert (tmp_path / "eager.csv").read_text() == (tmp_path / "eval4.csv").read_text()


def test_compile_mode_flag_is_checked(trained_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["separate", "--ckpt", str(trained_run), "x.wav", "-o", str(tmp_path), "--compile-mode", "fast"])
    assert err.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
    _, model = load_trained(trained_run, compile="default")
    assert is_compiled(model)


# -- inductor: the code torch.compile builds by default ---------------------------------------

@pytest.fixture
def inductor(monkeypatch, tmp_path_factory):
    if compile_problems("cpu", "inductor"):
        pytest.skip(f"inductor cannot build here: {compile_problems('cpu', 'inductor')}")
    monkeypatch.setattr(compiling, "BACKEND", "inductor")


@pytest.mark.slow
def test_inductor_training_step_matches_eager(inductor):
    compiled, eager = pair("convtasnet")
    compile_model(compiled, "default")
    g = torch.Generator().manual_seed(2)
    x, upstream = torch.randn(2, 1000, generator=g), torch.randn(2, 2, 1000, generator=g)
    outs = []
    for model in (compiled, eager):
        y = model.train()(x)
        (y * upstream).sum().backward()
        outs.append((y.detach(), [p.grad for p in model.parameters()]))
    assert is_compiled(compiled)
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_compiled_demo_gives_the_eager_demos_metrics(inductor, tmp_path, capsys):
    """``sepkit demo --compile`` (inductor) against the same demo eager: the same test metrics
    within noise, and checkpoints with the same keys."""
    summaries = {}
    for flag in ([], ["--compile"]):
        out = tmp_path / ("compiled" if flag else "eager")
        assert main(["demo", "--out", str(out), *TINY_RUN, "train.max_steps=4", "--no-progress", *flag]) == 0
        summaries[bool(flag)] = json.loads((out / "report.json").read_text())["summary"]
    assert "torch.compile failed" not in capsys.readouterr().err
    for metric, stats in summaries[False].items():
        assert abs(summaries[True][metric]["mean"] - stats["mean"]) < 0.05, (metric, summaries)
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "compiled")
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)


def test_checkpoints_of_a_wrapped_compiled_model_hold_its_own_keys(tmp_path):
    """``torch.compile(model)`` (the wrapper, not sepkit's in-place compile) still writes the
    model's keys."""
    from sepkit.train.checkpoint import model_weights

    model, _ = pair("convtasnet")
    wrapped = torch.compile(model, backend="aot_eager")
    assert any(k.startswith("_orig_mod.") for k in wrapped.state_dict())
    assert list(model_weights(wrapped)) == list(model.state_dict())


# -- perf models --compile ---------------------------------------------------------------------

def test_perf_models_times_compiled_models_with_the_compile_apart():
    from perf import models

    out = models.time_in_process("sepkit", "dprnn", 0.05, 1, reps=1, warmup=1, modes=("inference",),
                                 compile="default", compile_backend="aot_eager")
    assert out["compiled"] is True and out["compile_failure"] is None
    assert len(out["inference"]["warmup_s"]) == 1 and out["inference"]["warmup_s"][0] > out["inference"]["median_s"]
    eager = models.time_in_process("sepkit", "dprnn", 0.05, 1, reps=1, warmup=0, modes=("inference",))
    assert "compiled" not in eager and eager["inference"]["warmup_s"] == []


def test_perf_models_compile_table_names_what_did_not_compile():
    from perf import models

    row = dict(model="dprnn", peer="Asteroid DPRNNTasNet", compile_mode="default", sepkit_params=1, peer_params=1,
               inference_sepkit_compiled_s=2.0, inference_peer_s=3.2, inference_sepkit_s=2.4,
               inference_ratio_peer=1.6, inference_ratio_peer_range=[1.5, 1.7], inference_ratio_sepkit=1.2,
               inference_ratio_sepkit_range=[1.2, 1.2], inference_sepkit_compiled_compile_s=30.0,
               training_sepkit_compiled_s=8.0, training_peer_s=12.0, training_sepkit_s=9.0, training_ratio_peer=1.5,
               training_ratio_sepkit=1.125, training_sepkit_compiled_compile_s=90.0,
               peer_compiled_failure="BackendCompilerFailed: x")
    doc = dict(rows=[row], config=dict(batch=1, seconds=4.0, sample_rate=8000, threads=2, reps=3, warmup=1, rounds=2,
                                       timing_malloc="steady", compile_mode="default", compile_backend="inductor"),
               machine=dict(cpu="x86_64", torch="t", date="d"))
    text = models.compile_markdown(doc)
    assert "torch.compile mode default (backend inductor)" in text and "median over 2 round(s)" in text
    line = text.splitlines()[-1]
    assert "2000 ms / 3200 ms (1.60x, rounds 1.50 to 1.70) / does not compile / eager sepkit 2400 ms (1.20x)" in line
    assert "8000 ms / 12000 ms (1.50x)" in line and "sepkit 30 / 90 s; peer: BackendCompilerFailed: x" in line


def test_relu_is_one_op_that_saves_its_output_when_compiled():
    """sepkit.nn.graph.relu: torch.relu eagerly; compiled, the op whose backward reads the
    output (values and gradients as torch.relu's, float64 reference)."""
    from sepkit.nn.graph import relu

    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 33, generator=g, dtype=torch.float64)
    x[0, :5] = 0.0
    upstream = torch.randn(64, 33, generator=g, dtype=torch.float64)
    seen = []

    def backend(gm, example_inputs):
        seen.append(str(gm.graph))
        return gm

    def f(t):
        return relu(t) * 2.0

    for fn in (f, torch.compile(f, backend=backend)):
        t = x.clone().requires_grad_(True)
        y = fn(t)
        y.backward(upstream)
        torch.testing.assert_close(y, torch.relu(x) * 2.0, rtol=0, atol=0)
        torch.testing.assert_close(t.grad, torch.where(x > 0, upstream * 2.0, torch.zeros_like(x)), rtol=0, atol=0)
    assert seen and "sepkit.relu_saving_output" in seen[0]
