"""Every command fails cleanly and loses nothing: bad inputs (one line, exit 2, no traceback,
nothing changed on disk), interrupts and resume (each step logged once, no temporary folders),
full disks (partial outputs removed) and file modes (the user's umask)."""
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from sepkit.cli import main
from sepkit.data import write_audio
from sepkit.train import load_recipe, resolve_checkpoint, train

sys.path.insert(0, str(Path(__file__).parent))
from test_tasks import TOY  # noqa: E402

TINY = ["--preset", "demo", "data.dataset=synthetic", "data.segment=0.25", "data.batch_size=2",
        "data.synthetic.num_train=4", "data.synthetic.num_valid=2", "data.synthetic.num_test=2",
        "data.synthetic.min_duration=0.3", "data.synthetic.max_duration=0.4", "model.args.n_filters=16",
        "model.args.bottleneck=8", "model.args.hidden=16", "model.args.skip=8", "model.args.layers=2",
        "model.args.repeats=1", "train.max_steps=2", "train.eval_every=2", "train.ckpt_every=2", "--no-progress"]


def tree_hash(root: Path) -> dict:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def fails_cleanly(capsys, argv, message, watch: Path):
    before = tree_hash(watch)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0], lines[0]
    assert tree_hash(watch) == before  # nothing written, nothing replaced


def toy_recipe(tmp_path, **task_args) -> Path:
    raw = yaml.safe_load(yaml.safe_dump(TOY))
    raw["task_args"].update(task_args)
    raw["train"].update({"eval_every": 1, "ckpt_every": 2, "max_steps": 6})
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def metric_rows(run: Path) -> list[tuple]:
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    return [tuple(r[:4]) for r in rows if r[2] != "steps_per_s"]


# -- bad input, command by command ----------------------------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["optim.lr=-1e-3"], "optim.lr=-0.001: must be > 0"),
    (["train.ckpt_every=0"], "train.ckpt_every=0: must be >= 1"),
    (["train.log_every=0"], "train.log_every=0: must be >= 1"),
    (["train.max_steps=0"], "train.max_steps=0: must be >= 1"),
    (["data.batch_size=0"], "data.batch_size=0: must be >= 1"),
    (["data.segment=0"], "data.segment=0.0: must be > 0"),
    (["data.sample_rate=0"], "data.sample_rate=0: must be a rate"),
    (["model.args.n_filters=-4"], "model.args"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "--device="),
    (["--device", "banana"], "--device='banana': not a device"),
])
def test_train_rejects_bad_values(tmp_path, capsys, extra, message):
    fails_cleanly(capsys, ["train", "convtasnet", "--out", str(tmp_path / "run"), *TINY, *extra], message, tmp_path)


def test_train_rejects_bad_config_file_and_output(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: [1, 2\n")
    fails_cleanly(capsys, ["train", "convtasnet", "--config", str(bad), "--out", str(tmp_path / "r"), *TINY],
                  "not valid YAML", tmp_path)
    (tmp_path / "afile").write_text("x")
    fails_cleanly(capsys, ["train", "convtasnet", "--out", str(tmp_path / "afile"), *TINY], "is not a folder", tmp_path)


def _librimix(tmp_path) -> Path:
    assert main(["data", "synth", "--out", str(tmp_path / "d"), "--train", "2", "--dev", "2", "--test", "1",
                 "--min-duration", "0.5", "--max-duration", "0.6"]) == 0
    return tmp_path / "d" / "Libri2Mix" / "wav8k" / "min"


@pytest.mark.parametrize("content, message", [
    ("mixture_ID,mixture_path,source_1_path,source_2_path,length\n", "no rows after the header"),
    ("mixture_ID,source_1_path,source_2_path,length\nx,a,b,4000\n", "line 1: missing column(s) mixture_path"),
    ("mixture_ID,mixture_path,source_1_path,source_2_path,length\nx,a,b\n", "line 2: 3 fields"),
    ("mixture_ID,mixture_path,source_1_path,source_2_path,length\nx,a,b,c,long\n", "line 2, column length"),
    (b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00binary", "binary content"),
])
def test_librimix_metadata_problems_name_file_line_and_column(tmp_path, capsys, content, message):
    root = _librimix(tmp_path)
    meta = root / "metadata" / "mixture_train-360_mix_clean.csv"
    meta.write_bytes(content if isinstance(content, bytes) else content.encode())
    capsys.readouterr()
    fails_cleanly(capsys, ["train", "convtasnet", "--out", str(tmp_path / "run"), *TINY, "data.dataset=librimix",
                           f"data.root={root}"], message, tmp_path)


def test_librimix_with_every_utterance_shorter_than_the_segment(tmp_path, capsys):
    root = _librimix(tmp_path)
    capsys.readouterr()
    fails_cleanly(capsys, ["train", "convtasnet", "--out", str(tmp_path / "run"), *TINY, "data.dataset=librimix",
                           f"data.root={root}", "data.segment=2.0"], "none is at least 2.0 s long", tmp_path)


@pytest.mark.parametrize("argv, message", [
    (["--train", "-5"], "--train=-5: counts must be >= 0"),
    (["--train", "0", "--dev", "0", "--test", "0"], "nothing to write"),
])
def test_data_synth_rejects_bad_counts(tmp_path, capsys, argv, message):
    fails_cleanly(capsys, ["data", "synth", "--out", str(tmp_path / "d"), *argv], message, tmp_path)


def test_data_synth_refuses_a_file_as_output(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    fails_cleanly(capsys, ["data", "synth", "--out", str(tmp_path / "f"), "--train", "1"], "is not a folder", tmp_path)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy")
    train(load_recipe(toy_recipe(tmp)), tmp / "run", progress=False)
    return tmp


def test_eval_never_overwrites_and_checks_its_arguments(toy_run, tmp_path, capsys):
    ckpt = resolve_checkpoint(toy_run / "run")
    assert main(["eval", "--ckpt", str(toy_run / "run")]) == 0
    capsys.readouterr()
    fails_cleanly(capsys, ["eval", "--ckpt", str(toy_run / "run")], "pass --overwrite", toy_run)
    fails_cleanly(capsys, ["eval", "--ckpt", str(toy_run / "run"), "--csv", str(tmp_path / "e.csv"), "--max-items", "0"],
                  "--max-items=0", tmp_path)
    fails_cleanly(capsys, ["eval", "--ckpt", str(toy_run / "run"), "--csv", str(tmp_path / "e.csv"),
                           "data.sample_rate=16000"], "runs at 8000 Hz", tmp_path)
    assert main(["eval", "--ckpt", str(toy_run / "run"), "--overwrite"]) == 0
    assert not list(ckpt.glob(".*.tmp"))


def test_separate_checks_its_arguments(toy_run, tmp_path, capsys):
    write_audio(tmp_path / "in.wav", torch.randn(800) * 0.1, 8000)
    (tmp_path / "afile").write_text("x")
    run = str(toy_run / "run")
    for argv, message in [
        (["-o", str(tmp_path / "afile")], "is not a folder"),
        (["-o", str(tmp_path / "o"), "--chunk", "0"], "--chunk=0.0"),
        (["-o", str(tmp_path / "o"), "--chunk", "1", "--overlap", "1"], "overlap < chunk"),
        (["-o", str(tmp_path / "o"), "--device", "banana"], "not a device"),
        (["-o", str(tmp_path / "o"), "--steps", "0"], "--steps=0"),
    ]:
        fails_cleanly(capsys, ["separate", "--ckpt", run, str(tmp_path / "in.wav"), *argv], message, tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_audio(tmp_path / "a" / "x.wav", torch.randn(800) * 0.1, 8000)
    write_audio(tmp_path / "b" / "x.wav", torch.randn(800) * 0.1, 8000)
    fails_cleanly(capsys, ["separate", "--ckpt", run, str(tmp_path / "a" / "x.wav"), str(tmp_path / "b" / "x.wav"),
                           "-o", str(tmp_path / "o")], "would both write", tmp_path)


def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_tensor(toy_run, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "ckpt"
    shutil.copytree(resolve_checkpoint(toy_run / "run"), ckpt)
    weights = load_file(str(ckpt / "ema.safetensors"))
    weights["filt.bias"] = torch.full_like(weights["filt.bias"], float("nan"))
    save_file(weights, str(ckpt / "ema.safetensors"))
    write_audio(tmp_path / "in.wav", torch.randn(800) * 0.1, 8000)
    fails_cleanly(capsys, ["separate", "--ckpt", str(ckpt), str(tmp_path / "in.wav"), "-o", str(tmp_path / "o")],
                  "tensor filt.bias holds NaN", tmp_path / "o")


def test_debug_mode_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("SEPKIT_DEBUG", "1")
    with pytest.raises(Exception, match="optim.lr"):
        main(["train", "convtasnet", "--out", str(tmp_path / "run"), *TINY, "optim.lr=-1"])


# -- interrupts and resume ------------------------------------------------------------------

@pytest.mark.parametrize("at", [3, 6])
def test_interrupted_and_resumed_run_logs_every_step_once(tmp_path, at):
    recipe = toy_recipe(tmp_path)
    train(load_recipe(recipe), tmp_path / "straight", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(load_recipe(recipe, overrides=[f"task_args.interrupt_at={2 * at}"]), tmp_path / "cut", progress=False)
    train(load_recipe(recipe), tmp_path / "cut", resume=True, progress=False)
    assert metric_rows(tmp_path / "cut") == metric_rows(tmp_path / "straight")
    train(load_recipe(recipe), tmp_path / "cut", resume=True, progress=False)  # a finished run: test rows once
    assert metric_rows(tmp_path / "cut") == metric_rows(tmp_path / "straight")


def test_interrupt_during_a_checkpoint_write_leaves_no_temporary_folder(tmp_path, monkeypatch):
    import safetensors.torch

    recipe = toy_recipe(tmp_path)
    train(load_recipe(recipe), tmp_path / "straight", progress=False)
    real, calls = safetensors.torch.save_file, []

    def cut(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the second checkpoint (model, then EMA weights)
            raise KeyboardInterrupt("SIGTERM")
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", cut)
    with pytest.raises(KeyboardInterrupt):
        train(load_recipe(recipe), tmp_path / "cut", progress=False)
    monkeypatch.undo()
    root = tmp_path / "cut" / "checkpoints"
    assert not [p for p in root.iterdir() if p.name.startswith(".")]
    assert resolve_checkpoint(tmp_path / "cut").name == "step-0000002"
    train(load_recipe(recipe), tmp_path / "cut", resume=True, progress=False)
    assert metric_rows(tmp_path / "cut") == metric_rows(tmp_path / "straight")


def test_sigterm_then_resume_through_the_command_line(tmp_path):
    recipe = toy_recipe(tmp_path, sleep=0.3)
    cmd = [sys.executable, "-m", "sepkit", "train", str(recipe), "--out", str(tmp_path / "cut"), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    metrics = tmp_path / "cut" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and ",3,train" in "," + metrics.read_text().replace("\n", ",")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    done = subprocess.run(cmd + ["--resume", "task_args.sleep=0"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    train(load_recipe(recipe, overrides=["task_args.sleep=0"]), tmp_path / "straight", progress=False)
    assert metric_rows(tmp_path / "cut") == metric_rows(tmp_path / "straight")


def test_resume_refuses_what_changes_the_model_and_a_failed_run_starts_afresh(tmp_path, capsys):
    recipe = toy_recipe(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # fails before its first checkpoint
        train(load_recipe(recipe, overrides=["task_args.interrupt_at=2"]), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "metrics.csv").exists()
    train(load_recipe(recipe), tmp_path / "run", progress=False)
    train(load_recipe(recipe), tmp_path / "straight", progress=False)
    assert metric_rows(tmp_path / "run") == metric_rows(tmp_path / "straight")
    assert "started afresh" in capsys.readouterr().err
    fails_cleanly(capsys, ["train", str(recipe), "--out", str(tmp_path / "run"), "--resume", "data.sample_rate=16000"],
                  "data.sample_rate=8000", tmp_path / "run")


# -- full disks and file modes --------------------------------------------------------------

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", str(args[-1]) if args else None)


def test_disk_full_during_a_checkpoint_keeps_the_last_good_one(tmp_path, monkeypatch, capsys):
    import safetensors.torch

    recipe = toy_recipe(tmp_path)
    real, calls = safetensors.torch.save_file, []

    def full(*args, **kwargs):
        calls.append(1)
        if len(calls) >= 3:
            _enospc(*args)
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    assert main(["train", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no space left" in err and "Traceback" not in err
    root = tmp_path / "run" / "checkpoints"
    assert resolve_checkpoint(tmp_path / "run").name == "step-0000002"
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_disk_full_during_separation_leaves_no_half_set(tmp_path, monkeypatch, capsys):

    cfg = load_recipe("convtasnet", "demo", [a for a in TINY if "=" in a and a.startswith("model")])
    from sepkit.train import save_checkpoint
    from sepkit.train.tasks import make_task

    task = make_task(cfg)
    save_checkpoint(tmp_path / "run", 1, task.build_model(), task.model_meta(), cfg.to_dict())
    write_audio(tmp_path / "in.wav", torch.randn(1600) * 0.1, 8000)
    import sepkit.data.blocks as blocks

    real, calls = blocks.copy_scaled, []

    def full(src, dst, *args, **kwargs):  # the second output's final file fills the disk
        calls.append(dst)
        if len(calls) == 2:
            _enospc(dst)
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(blocks, "copy_scaled", full)
    assert main(["separate", "--ckpt", str(tmp_path / "run"), str(tmp_path / "in.wav"), "-o", str(tmp_path / "o")]) == 2
    assert "no space left" in capsys.readouterr().err
    assert not list((tmp_path / "o").glob("*"))


def test_disk_full_during_synthesis_removes_the_partial_data_set(tmp_path, monkeypatch, capsys):
    import sepkit.data.librimix as librimix

    real, calls = librimix.write_audio, []

    def full(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 7:
            _enospc(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(librimix, "write_audio", full)
    assert main(["data", "synth", "--out", str(tmp_path / "d"), "--train", "3", "--dev", "0", "--test", "0",
                 "--min-duration", "0.3", "--max-duration", "0.4"]) == 2
    assert "no space left" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        train(load_recipe(toy_recipe(tmp_path), overrides=["train.max_steps=2"]), tmp_path / "run", progress=False,
              test=False)
        ckpt = resolve_checkpoint(tmp_path / "run")
        write_audio(tmp_path / "x.wav", torch.randn(100) * 0.1, 8000)
    finally:
        os.umask(old)
    assert ckpt.stat().st_mode & 0o777 == 0o755
    for name in ("model.safetensors", "meta.json"):
        assert (ckpt / name).stat().st_mode & 0o777 == 0o644, name
    assert (tmp_path / "run" / "checkpoints" / "LATEST").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "x.wav").stat().st_mode & 0o777 == 0o644
