"""The main job, shortened: synthesize data, train, evaluate, separate; and bad input on the way."""
import pytest
import soundfile as sf
import torch

from sepkit.cli import main
from sepkit.data import read_audio, write_audio

TINY_MODEL = ["model.args.n_filters=16", "model.args.bottleneck=8", "model.args.hidden=16", "model.args.skip=8",
              "model.args.layers=2", "model.args.repeats=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LibriMix-layout synthetic set and a checkpoint trained on it through the command line."""
    tmp = tmp_path_factory.mktemp("job")
    assert main(["data", "synth", "--out", str(tmp / "data"), "--train", "8", "--dev", "2", "--test", "2",
                 "--min-duration", "0.5", "--max-duration", "0.7"]) == 0
    root = tmp / "data" / "Libri2Mix" / "wav8k" / "min"
    data = [f"data.root={root}", "data.dataset=librimix", "data.segment=0.25",
            "data.batch_size=2"]
    code = main(["train", "convtasnet", "--preset", "demo", "--out", str(tmp / "run"), "--no-progress",
                 *data, *TINY_MODEL, "train.max_steps=3", "train.eval_every=3", "train.ckpt_every=3"])
    assert code == 0
    return tmp, root, data


def test_main_job_path(trained, capsys):
    tmp, root, data = trained
    assert main(["eval", "convtasnet", "--preset", "demo", "--ckpt", str(tmp / "run"), *data, *TINY_MODEL]) == 0
    out = capsys.readouterr().out
    assert "si_sdri" in out and (tmp / "run" / "checkpoints" / "step-0000003" / "eval_test.csv").is_file()
    mix = next((root / "test" / "mix_clean").glob("*.wav"))
    assert main(["separate", "--ckpt", str(tmp / "run"), str(mix), "-o", str(tmp / "sep")]) == 0
    for k in (1, 2):
        wav, rate = read_audio(tmp / "sep" / f"{mix.stem}_s{k}.wav")
        assert rate == 8000 and wav.shape[-1] == sf.info(str(mix)).frames and wav.abs().max() > 0


def test_separate_resamples_and_chunks_long_input(trained):
    tmp, root, _ = trained
    long = tmp / "long16k.wav"
    write_audio(long, torch.randn(16000 * 3) * 0.1, 16000)
    assert main(["separate", "--ckpt", str(tmp / "run"), str(long), "-o", str(tmp / "sep2"), "--chunk", "1",
                 "--overlap", "0.25"]) == 0
    wav, rate = read_audio(tmp / "sep2" / "long16k_s1.wav")
    assert rate == 16000 and wav.shape == (48000,)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: write_audio(p, torch.randn(2, 4000) * 0.1, 8000), "expected mono audio, got 2 channels"),
        (lambda p: sf.write(p, [], 8000), "empty audio"),
        (lambda p: write_audio(p, torch.randn(100) * 0.1, 8000), "too short"),
        (lambda p: sf.write(p, [0.1, float("nan")] * 2000, 8000, subtype="FLOAT"), "NaN or Inf"),
    ],
)
def test_separate_rejects_bad_audio(trained, tmp_path, capsys, make, message):
    tmp, _, _ = trained
    bad = tmp_path / "bad.wav"
    make(bad)
    assert main(["separate", "--ckpt", str(tmp / "run"), str(bad), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_separate_never_overwrites_without_asking(trained, tmp_path, capsys):
    tmp, root, _ = trained
    mix = next((root / "test" / "mix_clean").glob("*.wav"))
    out = tmp_path / "out"
    out.mkdir()
    existing = out / f"{mix.stem}_s1.wav"
    existing.write_bytes(b"keep me")
    assert main(["separate", "--ckpt", str(tmp / "run"), str(mix), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and existing.read_bytes() == b"keep me"


def test_truncated_or_foreign_checkpoint(trained, tmp_path, capsys):
    import shutil

    tmp, root, data = trained
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tmp / "run" / "checkpoints" / "step-0000003", ckpt)
    assert main(["eval", "dprnn", "--preset", "demo", "--ckpt", str(ckpt), *data]) == 2
    assert "holds a convtasnet model" in capsys.readouterr().err
    blob = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(blob[:100])
    mix = next((root / "test" / "mix_clean").glob("*.wav"))
    assert main(["separate", "--ckpt", str(ckpt), str(mix), "-o", str(tmp_path / "o")]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err


def test_config_key_that_does_not_exist(capsys, tmp_path):
    assert main(["train", "convtasnet", "--preset", "demo", "--out", str(tmp_path / "r"), "train.max_stepz=3"]) == 2
    assert "train has no key max_stepz" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_data_synth_refuses_to_overwrite(trained, capsys):
    tmp, _, _ = trained
    assert main(["data", "synth", "--out", str(tmp / "data"), "--train", "1", "--dev", "0", "--test", "0"]) == 2
    assert "nothing was overwritten" in capsys.readouterr().err


def test_distributed_training_with_torchrun_on_cpu(tmp_path):
    """torchrun with two CPU processes (gloo): DistributedDataParallel trains a model with activation
    checkpointing (``model.args.checkpointing=blocks``), rank 0 reports and saves."""
    import subprocess
    import sys

    import socket

    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port,
            "-m", "sepkit", "train", "convtasnet", "--preset", "demo", "--out", str(tmp_path / "ddp"),
            "--no-progress", "--no-test", "data.dataset=synthetic", "data.segment=0.25", "data.batch_size=2", "data.synthetic.num_train=8",
            "data.synthetic.num_valid=2", *TINY_MODEL, "model.args.checkpointing=blocks", "train.max_steps=2",
            "train.eval_every=2", "train.ckpt_every=2"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("run folder:") == 1  # rank 0 alone reports
    assert (tmp_path / "ddp" / "checkpoints" / "step-0000002" / "model.safetensors").is_file()
