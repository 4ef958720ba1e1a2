"""The fault rules on the method recipes, demo, check, perf and the Python API: nothing written
over what the user has, every value checked before any work (naming its key), a bad file or
environment value is a user error (exit 2, one line), and the API names what is wrong."""
import numpy as np
import pytest
import soundfile
import torch

from sepkit.cli import main

from test_faults import TINY, fails_cleanly


@pytest.fixture
def files(tmp_path):
    """A text file and a WAV where a checkpoint is expected."""
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    wav = tmp_path / "speech.wav"
    soundfile.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    return {"text": text, "wav": wav}


@pytest.fixture
def user_folder(tmp_path):
    """A folder of the user's own files that look like a run's outputs."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "report.md").write_text("my report\n")
    (folder / "metrics.csv").write_text("a,b\n1,2\n")
    return folder


# -- 1. nothing is written over what the user has -------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["demo", "--resume"], "holds no demo run"),
    (["demo"], "exists and is not empty"),
    (["train", "convtasnet", *TINY], "not a sepkit run"),
    (["train", "convtasnet", "--resume", *TINY], "not a sepkit run"),
    (["train", "tse", "--preset", "demo"], "not a sepkit run"),          # a method recipe
])
def test_a_folder_of_the_users_is_never_written(capsys, user_folder, argv, message):
    fails_cleanly(capsys, [*argv, "--out", str(user_folder)], message, user_folder.parent)


def test_resume_of_an_empty_or_missing_folder_says_nothing_was_saved(capsys, tmp_path):
    fails_cleanly(capsys, ["train", "convtasnet", *TINY, "--resume", "--out", str(tmp_path / "new")],
                  "holds no sepkit run to resume", tmp_path)


# -- 2. every value is checked before any work ----------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["train", "convtasnet", *TINY, "data.synthetic.num_test=0"], "data.synthetic.num_test=0"),
    (["demo", "data.synthetic.num_test=0"], "data.synthetic.num_test=0"),
    (["train", "mixture2set", "--preset", "demo", "data.synthetic.num_valid=0"], "data.synthetic.num_valid=0"),
    (["train", "exdiff", "--preset", "demo", "model.args.placements=[top]"], "placements"),
    (["check", "--seed", "99999999999999999999"], "--seed=99999999999999999999"),
    (["check", "--op", "snak"], "choose from snake, stft_mask, mmd, nce, attention"),
    (["perf", "--smoke", "--op", "snak"], "--op='snak'"),
    (["separate", "--ckpt", "run", "in.wav", "--overlap", "0"], "0 < overlap < chunk"),
])
def test_values_are_checked_before_any_work(capsys, tmp_path, argv, message):
    out = {"train": ["--out", str(tmp_path / "run")], "demo": ["--out", str(tmp_path / "run")],
           "separate": ["-o", str(tmp_path / "separated")]}.get(argv[0], [])
    fails_cleanly(capsys, [*argv, *out], message, tmp_path)


def test_check_lists_the_ops_of_the_self_test():
    from sepkit.commands.check import OPS
    from sepkit.kernels.selftest import CASES

    assert set(OPS) == {build().op for build in CASES}


def test_eval_refuses_another_number_of_sources_before_evaluating(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "convtasnet", *TINY, "--out", str(run), "--no-test"]) == 0
    capsys.readouterr()
    fails_cleanly(capsys, ["eval", "--ckpt", str(run), "data.n_src=3"], "data.n_src=3", tmp_path)


# -- 3. a bad file or environment value is a user error -------------------------------------

@pytest.mark.parametrize("recipe, key, kind", [
    ("dip-separate", "model.args.frontend_ckpt", "text"),
    ("dip-separate", "model.args.frontend_ckpt", "wav"),
    ("codecformer", "model.args.codec_weights", "wav"),
    ("mixture2set", "model.args.teacher_ckpt", "wav"),                    # a method recipe
])
def test_a_file_that_is_not_a_checkpoint_is_named(capsys, tmp_path, files, recipe, key, kind):
    fails_cleanly(capsys, ["train", recipe, "--preset", "demo", f"{key}={files[kind]}", "--out", str(tmp_path / "run")],
                  key, tmp_path)


@pytest.mark.parametrize("recipe", ["gcrn", "codecformer", "sgmse"])
def test_an_unknown_backend_is_refused_before_the_run_folder_exists(capsys, tmp_path, monkeypatch, recipe):
    monkeypatch.setenv("SEPKIT_BACKEND", "bogus")
    fails_cleanly(capsys, ["train", recipe, "--preset", "demo", "--out", str(tmp_path / "run")],
                  "SEPKIT_BACKEND='bogus' is not a backend", tmp_path)
    assert not (tmp_path / "run").exists()


def test_perf_refuses_a_file_as_its_output_folder(capsys, tmp_path):
    target = tmp_path / "results.json"
    target.write_text("{}")
    fails_cleanly(capsys, ["perf", "--smoke", "--out", str(target)], "exists and is not a folder", tmp_path)


# -- 6. the Python API names what is wrong --------------------------------------------------

def _ecapa():
    from sepkit.models.speaker import ECAPATDNN

    return ECAPATDNN(channels=[32, 32, 32, 32, 96], attention_channels=16, se_channels=16, lin_neurons=24).eval()


@pytest.mark.parametrize("lengths, message", [
    (torch.tensor([1.0, 1.0]), "relative lengths"),
    (torch.tensor([0.5, 1.0]), "relative lengths"),
    (torch.tensor([8001, 100]), r"lengths must lie in \[1, 8000\]"),
    (torch.tensor([-3, 100]), r"lengths must lie in \[1, 8000\]"),
    (torch.tensor([100]), r"lengths must have shape \(2,\)"),
])
def test_ecapa_lengths_are_sample_counts(lengths, message):
    with pytest.raises(ValueError, match=message):
        _ecapa()(torch.randn(2, 8000), lengths=lengths)


def test_ecapa_names_its_minimum_length():
    model = _ecapa()
    with pytest.raises(ValueError, match=f"at least {model.min_samples} samples"):
        model(torch.randn(1, 10))
    assert model(torch.randn(1, model.min_samples)).shape == (1, 24)
    short = torch.randn(2, 8000)
    torch.testing.assert_close(model(short, lengths=torch.tensor([8000, 8000])), model(short))


def test_separator_input_of_another_dtype_or_device_is_named():
    from sepkit.models.separators import ConvTasNet

    model = ConvTasNet(n_filters=16, bottleneck=8, hidden=16, skip=8, layers=2, repeats=1).eval()
    with pytest.raises(TypeError, match="dtype torch.float64 but the model's weights are torch.float32"):
        model(torch.randn(1, 800, dtype=torch.float64))
    with pytest.raises(TypeError, match="on meta but the model's weights are on cpu"):
        model(torch.randn(1, 800, device="meta"))
    assert model(torch.randn(1, 800)).shape == (1, 2, 800)


def test_streaming_enhancer_needs_a_model():
    from sepkit.models.streaming import StreamingEnhancer

    for bad in ("model", torch.nn.Linear(2, 2)):
        with pytest.raises(TypeError, match="StreamingEnhancer"):
            StreamingEnhancer(bad)


def test_user_errors_are_sepkit_errors_and_still_value_or_type_errors():
    from sepkit.errors import BackendError, CheckpointError, ConfigError, InputError, InputTypeError, SepkitError

    for cls, base in ((InputError, ValueError), (InputTypeError, TypeError), (ConfigError, ValueError),
                      (CheckpointError, ValueError), (BackendError, RuntimeError)):
        assert issubclass(cls, SepkitError) and issubclass(cls, base)
