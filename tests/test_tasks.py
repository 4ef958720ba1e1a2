"""The task interface and the one trainer: a toy task (tests/toy_task.py) with a frozen part,
two parameter groups, EMA and gradient accumulation; resume; eval and separate on any task's
checkpoint; the enhancement task; old checkpoints; DDP with a plateau scheduler."""
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sepkit.cli import main
from sepkit.data import read_audio, write_audio
from sepkit.train import ConfigError, load_recipe, load_trained, resolve_checkpoint, save_checkpoint, train
from sepkit.train.tasks import EnhancementTask, SeparationTask, make_task

TOY = {
    "recipe": "toy", "task": "toy_task:ToyTask", "task_args": {"length": 64, "items": 8},
    "data": {"dataset": "synthetic", "sample_rate": 8000, "n_src": 1, "segment": 0.008, "batch_size": 2},
    "model": {"name": "toy"},
    "optim": {"lr": 0.01, "scheduler": "none", "clip_grad_norm": None},
    "train": {"max_steps": 4, "eval_every": 2, "ckpt_every": 2, "log_every": 1, "ema": 0.9, "grad_accum": 2},
}


def _recipe(tmp_path, name="toy.yaml", **sections):
    raw = {k: (dict(v, **sections[k]) if isinstance(v, dict) and k in sections else v) for k, v in TOY.items()}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _files(run):
    ckpt = resolve_checkpoint(run)
    return load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "ema.safetensors"))


def test_toy_task_trains_with_ema_and_accumulation_and_resumes_bit_for_bit(tmp_path):
    recipe = _recipe(tmp_path)
    straight = train(load_recipe(recipe), tmp_path / "straight", progress=False)
    train(load_recipe(recipe, overrides=["train.max_steps=2"]), tmp_path / "split", progress=False, test=False)
    train(load_recipe(recipe), tmp_path / "split", resume=True, progress=False, test=False)
    (wa, ea), (wb, eb) = _files(tmp_path / "straight"), _files(tmp_path / "split")
    assert wa.keys() == wb.keys() == ea.keys() == {"filt.weight", "filt.bias", "gain"}  # frozen part not saved
    for k in wa:
        assert torch.equal(wa[k], wb[k]) and torch.equal(ea[k], eb[k]), k
        assert not torch.equal(wa[k], ea[k]), k  # the average lags the weights
    assert straight["lr"] == [0.01, pytest.approx(0.001)]  # two groups, their own rates
    assert set(straight["test"]) == {"mse"}
    meta = json.loads((resolve_checkpoint(tmp_path / "straight") / "meta.json").read_text())
    assert meta["task"] == "toy" and meta["frozen"] == ["frozen_part"] and meta["ema"] is True
    metrics = (tmp_path / "straight" / "metrics.csv").read_text()
    assert "est_rms" in metrics and "valid,score" in metrics  # task logs and validation reach the log


def test_frozen_parts_neither_train_nor_enter_the_optimizer(tmp_path):
    train(load_recipe(_recipe(tmp_path)), tmp_path / "run", progress=False, test=False)
    task, model = load_trained(tmp_path / "run")
    assert torch.equal(model.frozen_part.weight, torch.tensor([[[0.25, 0.5, 0.25]]]))
    state = torch.load(resolve_checkpoint(tmp_path / "run") / "state.pt", weights_only=True)
    sizes = sorted(len(g["params"]) for g in state["optimizer"]["param_groups"])
    assert sizes == [1, 2]  # filt.weight + filt.bias, gain; never the frozen filter


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    recipe = _recipe(tmp_path)
    train(load_recipe(recipe, overrides=["train.ema=null"]), tmp_path / "accum", progress=False, test=False)
    train(load_recipe(recipe, overrides=["train.ema=null", "train.grad_accum=1", "data.batch_size=4"]),
          tmp_path / "big", progress=False, test=False)
    a = load_file(str(resolve_checkpoint(tmp_path / "accum") / "model.safetensors"))
    b = load_file(str(resolve_checkpoint(tmp_path / "big") / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_eval_and_separate_rebuild_the_task_from_the_checkpoint(tmp_path, capsys):
    train(load_recipe(_recipe(tmp_path)), tmp_path / "run", progress=False, test=False)
    assert main(["eval", "--ckpt", str(tmp_path / "run"), "--csv", str(tmp_path / "eval.csv")]) == 0
    assert "mse" in capsys.readouterr().out and (tmp_path / "eval.csv").read_text().count("\n") == 4
    wav = torch.randn(400) * 0.1
    write_audio(tmp_path / "in.wav", wav, 8000)
    assert main(["separate", "--ckpt", str(tmp_path / "run"), str(tmp_path / "in.wav"), "-o", str(tmp_path / "o")]) == 0
    assert main(["separate", "--ckpt", str(tmp_path / "run"), str(tmp_path / "in.wav"), "-o", str(tmp_path / "raw"),
                 "--no-ema"]) == 0
    ema_out, _ = read_audio(tmp_path / "o" / "in_s1.wav")
    raw_out, _ = read_audio(tmp_path / "raw" / "in_s1.wav")
    x, _ = read_audio(tmp_path / "in.wav")
    _, model = load_trained(tmp_path / "run")
    with torch.no_grad():
        expected = model(x[None])[0]
    torch.testing.assert_close(ema_out, expected, atol=2 / 32768, rtol=0)  # EMA weights, 16-bit PCM
    assert not torch.allclose(ema_out, raw_out, atol=2 / 32768)
    capsys.readouterr()
    assert main(["separate", "--ckpt", str(tmp_path / "run"), str(tmp_path / "in.wav"), "-o", str(tmp_path / "o"),
                 "--target-slot", "1"]) == 2
    assert "--target-slot not supported by the toy task" in capsys.readouterr().err
    assert main(["separate", "--ckpt", str(tmp_path / "run"), str(tmp_path / "in.wav"), "-o", str(tmp_path / "o")]) == 2
    assert "pass --overwrite" in capsys.readouterr().err


def test_checkpoints_without_task_records_still_load(tmp_path, capsys):
    cfg = load_recipe("convtasnet", "demo", ["model.args.n_filters=16", "model.args.bottleneck=8", "model.args.hidden=16",
                                             "model.args.skip=8", "model.args.layers=2", "model.args.repeats=1"])
    task = make_task(cfg)
    model = task.build_model()
    ckpt = save_checkpoint(tmp_path, 3, model, task.model_meta(), cfg.to_dict())
    meta = json.loads((ckpt / "meta.json").read_text())  # rewrite as the code before tasks wrote it
    for key in ("task", "frozen", "ema"):
        meta.pop(key)
    (ckpt / "meta.json").write_text(json.dumps(meta))
    config = yaml.safe_load((ckpt / "config.yaml").read_text())
    for key in ("task", "task_args"):
        config.pop(key)
    for key in ("grad_accum", "ema", "find_unused_parameters"):
        config["train"].pop(key)
    (ckpt / "config.yaml").write_text(yaml.safe_dump(config))
    task2, model2 = load_trained(tmp_path)
    assert isinstance(task2, SeparationTask)
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    write_audio(tmp_path / "mix.wav", torch.randn(1200) * 0.1, 8000)
    assert main(["separate", "--ckpt", str(tmp_path), str(tmp_path / "mix.wav"), "-o", str(tmp_path / "sep")]) == 0
    assert (tmp_path / "sep" / "mix_s2.wav").is_file()


def test_enhancement_task_on_noisy_synthetic_speech(tmp_path):
    over = ["data.dataset=synthetic", "data.n_src=1", "data.segment=0.25", "data.batch_size=2", "data.synthetic.num_train=4",
            "data.synthetic.num_valid=2", "data.synthetic.num_test=2", "data.synthetic.min_duration=0.3",
            "data.synthetic.max_duration=0.4", "model.args.n_filters=16", "model.args.bottleneck=8",
            "model.args.hidden=16", "model.args.skip=8", "model.args.layers=2", "model.args.repeats=1",
            "train.max_steps=2", "train.eval_every=2", "train.ckpt_every=2", "task=enhancement",
            "task_args.perceptual=false"]
    cfg = load_recipe("convtasnet", "demo", over)
    task = make_task(cfg)
    assert isinstance(task, EnhancementTask)
    item = task.dataset("train")[0]
    assert item["sources"].shape[0] == 1 and not torch.allclose(item["mixture"], item["sources"][0])  # noise is on
    result = train(cfg, tmp_path / "run", progress=False)
    assert set(result["test"]) == {"si_sdr", "si_sdri"} and result["valid"]["si_sdr"] == result["valid"]["si_sdr"]
    task2, model = load_trained(tmp_path / "run")
    out = task2.infer(model, torch.randn(16000) * 0.1, 16000)  # another rate: resampled there and back
    assert set(out) == {"enhanced"} and out["enhanced"].shape == (16000,)
    with pytest.raises(ConfigError, match="data.n_src=2"):
        make_task(load_recipe("convtasnet", "demo", ["task=enhancement"]))
    with pytest.raises(ConfigError, match="task_args.loss"):
        make_task(load_recipe("convtasnet", "demo", ["task=enhancement", "data.n_src=1", "task_args.loss=l7"]))


@pytest.mark.parametrize("override, message", [
    ("task=nonsense", "unknown task; available: .*separation"),
    ("task_args.bogus=1", "task_args.bogus"),
    ("train.grad_accum=0", "train.grad_accum=0: must be >= 1"),
    ("train.ema=1.5", "train.ema=1.5"),
])
def test_task_and_train_keys_are_checked_before_work(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(load_recipe(_recipe(tmp_path), overrides=[override]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_best_checkpoint_follows_the_monitor_and_survives_pruning(tmp_path):
    recipe = _recipe(tmp_path)
    over = ["train.eval_every=1", "train.ckpt_every=1", "train.keep_checkpoints=1", "train.max_steps=4",
            "task_args.valid_values=[1.0, 3.0, 2.0, 0.5]"]
    train(load_recipe(recipe, overrides=over), tmp_path / "run", progress=False, test=False)
    root = tmp_path / "run" / "checkpoints"
    assert (root / "BEST").read_text().strip() == "step-0000002"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-0000002", "step-0000004"]


def test_ddp_ranks_step_the_plateau_scheduler_on_rank_0s_validation(tmp_path):
    """Rank 0 alone validates; its summary is broadcast, so the learning rates (and with them the
    weights) stay equal on both ranks. Stepping on a constant elsewhere would halve the rate at
    every validation there, and only at the last two on rank 0."""
    recipe = _recipe(tmp_path, optim={"scheduler": "plateau", "scheduler_args": {"patience": 0, "factor": 0.5}},
                     train={"eval_every": 1, "ckpt_every": 4, "ema": None})
    text = yaml.safe_load(recipe.read_text())
    text["task_args"]["valid_values"] = [1.0, 2.0, 0.0, 0.0]
    recipe.write_text(yaml.safe_dump(text))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    worker = Path(__file__).parent / "ddp_plateau_worker.py"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
                           str(worker), str(recipe), str(tmp_path)], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["lr"] == r1["lr"] == [0.0025, pytest.approx(0.00025)]
    for k in r0["weights"]:
        assert torch.equal(r0["weights"][k], r1["weights"][k]), k
