"""Prerequisite runs under one rule: trained when absent, resumed when interrupted, reused when
complete, refused when their recipe changed; recorded relative to the run folder (which can
move); and the error contract (a bug inside a task is exit 1, not a user error)."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from test_gcrn import _tiny_recipe

from sepkit.cli import main
from sepkit.errors import CheckpointError, ConfigError
from sepkit.train import load_trained, read_meta, resolve_checkpoint, train
from sepkit.train import trainer as trainer_module


def _recipe(*more):
    """The GCRN pretrain variant: a 3-step encoder stage (checkpointed every step), then 2 steps."""
    return _tiny_recipe("pretrain", "task_args.pretrain_steps=3", "train.ckpt_every=1", *more)


def _interrupt_after(monkeypatch, folder: str, at_step: int):
    """Make the checkpoint write of ``folder``'s run at ``at_step`` be followed by an interrupt."""
    real = trainer_module.save_checkpoint

    def save(run_dir, step, *args, **kwargs):
        out = real(run_dir, step, *args, **kwargs)
        if Path(run_dir).name == folder and step == at_step:
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(trainer_module, "save_checkpoint", save)


def _stage1_step(run: Path) -> int:
    return int(read_meta(resolve_checkpoint(run / "prereq-pretrain"))["step"])


def test_interrupted_prerequisite_is_resumed_not_used_half_trained(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _interrupt_after(monkeypatch, "prereq-pretrain", 1)
    with pytest.raises(KeyboardInterrupt):
        train(_recipe(), run, progress=False, test=False)
    assert _stage1_step(run) == 1 and not (run / "checkpoints").exists()
    monkeypatch.undo()
    # run again (as a careless user would, without --resume): stage 1 resumes to its 3 steps first
    result = train(_recipe(), run, progress=False, test=False)
    assert result["step"] == 2 and _stage1_step(run) == 3
    meta = read_meta(resolve_checkpoint(run))
    assert meta["prerequisites"] == [{"name": "pretrain", "arg": "model.args.encoder_ckpt", "path": "prereq-pretrain",
                                      "step": 3}]
    assert meta["args"]["encoder_ckpt"] == "prereq-pretrain"          # relative to the run folder
    saved = (resolve_checkpoint(run) / "config.yaml").read_text()
    assert "encoder_ckpt: prereq-pretrain" in saved and str(tmp_path) not in saved


def test_resume_inside_the_prerequisite_starts_the_main_run_from_zero(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    _interrupt_after(monkeypatch, "prereq-pretrain", 2)
    with pytest.raises(KeyboardInterrupt):
        train(_recipe(), run, progress=False, test=False)
    monkeypatch.undo()
    result = train(_recipe(), run, resume=True, progress=False, test=False)
    assert result["step"] == 2 and _stage1_step(run) == 3
    assert "no checkpoint yet" in capsys.readouterr().err


def test_complete_prerequisite_is_reused_and_a_changed_one_refused(tmp_path, capsys):
    run = tmp_path / "run"
    train(_recipe(), run, progress=False, test=False)
    stage1 = resolve_checkpoint(run / "prereq-pretrain")
    before = {p.name: p.stat().st_mtime_ns for p in stage1.iterdir()}
    capsys.readouterr()
    result = train(_recipe("train.max_steps=3"), run, resume=True, progress=False, test=False)
    assert result["step"] == 3
    assert "is complete; reused" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in stage1.iterdir()} == before   # not retrained
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(CheckpointError, match=r"prerequisite 'pretrain'.*another recipe \(task_args\.pretrain_steps: "
                                              r"trained with 3, now 5"):
        train(_recipe("task_args.pretrain_steps=5"), run, resume=True, progress=False, test=False)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == files    # nothing written


def test_a_run_folder_moves_with_its_prerequisites(tmp_path, monkeypatch):
    run = tmp_path / "run"
    train(_recipe(), run, progress=False, test=False)
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(str(run), str(moved))
    other = tmp_path / "cwd"
    other.mkdir()
    monkeypatch.chdir(other)
    task, model = load_trained(moved)
    assert task.cfg.model.args["encoder_ckpt"] == str((moved / "prereq-pretrain").resolve())
    assert task.run_dir == moved
    noisy = tmp_path / "noisy.wav"
    import soundfile

    soundfile.write(noisy, (0.1 * torch.randn(8000)).numpy(), 16000)
    assert main(["separate", "--ckpt", str(moved), str(noisy), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "noisy_enhanced.wav").is_file()


def test_resume_of_a_folder_without_a_run_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my own file")
    with pytest.raises(ConfigError, match="a non-empty folder that is not a sepkit run"):
        train(_recipe(), tmp_path / "mine", resume=True, progress=False, test=False)
    with pytest.raises(CheckpointError, match="holds no sepkit run to resume"):
        train(_recipe(), tmp_path / "empty", resume=True, progress=False, test=False)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_a_bug_inside_a_task_is_an_internal_error(tmp_path, monkeypatch, capsys):
    """sepkit's own errors are exit 2; a bare TypeError (a bug) is exit 1 with "internal error"."""
    from sepkit.train.tasks.gcrn import GCRNTask

    def planted(self, model, batch):
        raise TypeError("unsupported operand type(s) for +: 'Tensor' and 'NoneType'")

    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(_tiny_recipe("base").to_dict()))
    monkeypatch.setattr(GCRNTask, "training_step", planted)
    assert main(["train", str(recipe), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    assert "internal error (TypeError" in capsys.readouterr().err
    monkeypatch.undo()
    assert main(["train", str(recipe), "--out", str(tmp_path / "run2"), "--no-progress", "data.batch_size=0"]) == 2
    assert os.environ.get("SEPKIT_DEBUG", "0") in ("", "0")
