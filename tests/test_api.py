"""sepkit.Separator / sepkit.Enhancer on checkpoints the tests write (freshly initialised, or
trained a few steps), and the one code path they share with ``sepkit separate``: chunked
separation, block-by-block files with bounded reads, one level per set of outputs."""
import numpy as np
import pytest
import soundfile as sf
import torch

import sepkit
from sepkit.cli import main
from sepkit.data import read_audio, write_audio
from sepkit.errors import AudioError, InputError, InputTypeError

TINY_CTN = ["model.args.n_filters=16", "model.args.bottleneck=8", "model.args.hidden=16", "model.args.skip=8",
            "model.args.layers=2", "model.args.repeats=1"]
TINY_GCRN = ["model.args.win_length=64", "model.args.hop_length=32", "model.args.channels=[4,8]",
             "model.args.lstm_groups=2", "model.args.lstm_layers=2"]


def _checkpoint(out, recipe, overrides, seed=0):
    """A freshly initialised checkpoint folder of ``recipe``'s demo preset (weights-only, as a
    converted release is written)."""
    from sepkit.train import load_recipe, make_task
    from sepkit.train.checkpoint import write_model_checkpoint

    cfg = load_recipe(recipe, preset="demo", overrides=overrides)
    task = make_task(cfg)
    torch.manual_seed(seed)
    model = task.build_model()
    for m in model.modules():  # running statistics away from (0, 1)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return write_model_checkpoint(out, model, cfg.to_dict(), task.model_meta())


@pytest.fixture(scope="module")
def separator_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("ctn") / "ckpt", "convtasnet", TINY_CTN)


@pytest.fixture(scope="module")
def enhancer_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("gcrn") / "ckpt", "gcrn", TINY_GCRN)



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Frame-sized work runs faster on one thread than on an oversubscribed shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

def _wave(n, seed=0):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 0.1


def test_two_lines_separate_a_tensor_like_the_model(separator_ckpt):
    sep = sepkit.Separator.from_checkpoint(separator_ckpt)
    x = _wave(4001)
    sources = sep.separate(x)
    assert sep.sample_rate == 8000 and sep.output_names == ["s1", "s2"]
    assert sources.shape == (2, 4001) and sources.dtype == torch.float32
    with torch.no_grad():
        direct = sep.model(x[None])[0]
    torch.testing.assert_close(sources, direct)
    assert "ConvTasNet" in repr(sep)


def test_a_file_a_tensor_and_another_rate(separator_ckpt, tmp_path, capsys):
    sep = sepkit.Separator.from_checkpoint(separator_ckpt)
    x = _wave(8000)
    write_audio(tmp_path / "m.wav", x, 8000, subtype="FLOAT")
    torch.testing.assert_close(sep.separate(tmp_path / "m.wav"), sep.separate(x))
    # at 16 kHz: resampled to the model's 8 kHz and back, with a notice
    y = sep.separate(_wave(16000), sample_rate=16000)
    assert y.shape == (2, 16000)
    assert "resampling 16000 Hz -> 8000 Hz" in capsys.readouterr().err
    with pytest.raises(InputError, match="the file is at 8000 Hz"):
        sep.separate(tmp_path / "m.wav", sample_rate=16000)


def test_long_input_is_chunked_with_aligned_sources(separator_ckpt):
    sep = sepkit.Separator.from_checkpoint(separator_ckpt, chunk=0.5, overlap=0.1)
    x = _wave(8000 * 3 + 7)
    out = sep.separate(x)
    assert out.shape == (2, x.shape[0])
    from sepkit.train.inference import separate_waveform

    want = separate_waveform(sep.model, x, chunk=4000, overlap=800)
    torch.testing.assert_close(out, want)


def test_separate_file_is_the_command_and_reads_block_by_block(separator_ckpt, tmp_path, monkeypatch, audio_reads):
    x = _wave(8000 * 4 + 123, seed=3)
    write_audio(tmp_path / "long.wav", x, 8000, subtype="FLOAT")
    sep = sepkit.Separator.from_checkpoint(separator_ckpt, chunk=1.0, overlap=0.25)
    reads = audio_reads
    paths = sep.separate_file(tmp_path / "long.wav", tmp_path / "api", progress=False)
    assert [p.name for p in paths] == ["long_s1.wav", "long_s2.wav"]
    assert reads and all(0 < n <= 8000 for n in reads)  # never the whole file: one chunk at a time
    monkeypatch.undo()
    # the files hold the in-memory separation, scaled together below full scale, as 16-bit PCM
    want = sep.separate(x)
    scale = min(1.0, 0.99 / float(want.abs().max()))
    for k, p in enumerate(paths):
        got, rate = read_audio(p)
        assert rate == 8000 and got.shape == x.shape
        assert float((got - want[k] * scale).abs().max()) <= 1.5 / 32768
    # sepkit separate writes the same bytes
    assert main(["separate", "--ckpt", str(separator_ckpt), str(tmp_path / "long.wav"), "-o", str(tmp_path / "cli"),
                 "--chunk", "1", "--overlap", "0.25"]) == 0
    for p in paths:
        assert (tmp_path / "cli" / p.name).read_bytes() == p.read_bytes()


def test_outputs_are_scaled_together_and_nothing_is_half_written(tmp_path):
    from sepkit.data.blocks import BlockWriters

    targets = {"a": tmp_path / "a.wav", "b": tmp_path / "b.wav"}
    with BlockWriters(targets, 8000) as w:
        w.write({"a": torch.full((100,), 0.5), "b": torch.full((100,), -1.0)})
        w.write({"a": torch.full((50,), 2.0), "b": torch.zeros(50)})
    a, _ = read_audio(targets["a"])
    b, _ = read_audio(targets["b"])
    assert a.shape == (150,) and abs(float(a[-1]) - 0.99) < 1e-4 and abs(float(a[0]) - 0.2475) < 1e-4
    assert abs(float(b[0]) + 0.495) < 1e-4
    with pytest.raises(AudioError, match="NaN"):
        with BlockWriters({"c": tmp_path / "c.wav"}, 8000) as w:
            w.write({"c": torch.zeros(10)})
            w.write({"c": torch.tensor([float("nan")])})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav"]


def test_a_run_folder_trained_a_few_steps(tmp_path):
    from sepkit.train import load_recipe, train

    cfg = load_recipe("convtasnet", preset="demo", overrides=TINY_CTN + [
        "train.max_steps=2", "train.eval_every=2", "train.ckpt_every=2", "data.batch_size=2", "data.segment=0.25",
        "data.synthetic.num_train=4", "data.synthetic.num_valid=2", "data.synthetic.num_test=2"])
    train(cfg, tmp_path / "run", progress=False, test=False)
    sep = sepkit.Separator.from_checkpoint(tmp_path / "run")
    out = sep.separate(_wave(2000))
    assert out.shape == (2, 2000) and torch.isfinite(out).all() and out.abs().max() > 0


def test_enhancer_enhances_streams_and_writes(enhancer_ckpt, tmp_path):
    enh = sepkit.Enhancer.from_checkpoint(enhancer_ckpt)
    x = _wave(4000 + 17, seed=5)
    y = enh.enhance(x)
    with torch.no_grad():
        direct = enh.model(x[None])[0]
    assert y.shape == x.shape
    torch.testing.assert_close(y, direct)
    stream = enh.stream()
    parts = [stream.process(x[None, i:i + 320]) for i in range(0, x.shape[0], 320)]
    streamed = torch.cat(parts + [stream.flush()], dim=1)[0]
    torch.testing.assert_close(streamed, y, atol=1e-5, rtol=1e-4)
    write_audio(tmp_path / "noisy.wav", x, 16000, subtype="FLOAT")
    [path] = enh.enhance_file(tmp_path / "noisy.wav", tmp_path / "out", progress=False)
    assert path.name == "noisy_enhanced.wav" and sf.info(str(path)).frames == x.shape[0]


def test_a_long_recording_is_enhanced_in_cross_faded_chunks(enhancer_ckpt, tmp_path, monkeypatch, audio_reads):
    """Offline enhancement goes chunk by chunk as separation does (memory bounded by the chunk):
    each chunk is the model's output on that chunk alone, the overlaps cross-faded."""
    enh = sepkit.Enhancer.from_checkpoint(enhancer_ckpt, chunk=0.5, overlap=0.125)
    x = _wave(16000 + 611, seed=6)
    y = enh.enhance(x)
    with torch.no_grad():
        first = enh.model(x[None, :8000])[0]
        whole = enh.model(x[None])[0]
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    torch.testing.assert_close(y[:6000], first[:6000])  # the first chunk, before its cross-fade
    assert not torch.allclose(y, whole)  # not one pass over the recording
    write_audio(tmp_path / "long.wav", x, 16000, subtype="FLOAT")
    audio_reads.clear()
    [path] = enh.enhance_file(tmp_path / "long.wav", tmp_path / "out", progress=False)
    assert audio_reads and all(0 < n <= 8000 for n in audio_reads)
    monkeypatch.undo()
    got, _ = read_audio(path)
    scale = min(1.0, 0.99 / float(y.abs().max()))
    assert float((got - y * scale).abs().max()) <= 1.5 / 32768


def test_device_and_dtype(separator_ckpt):
    sep = sepkit.Separator.from_checkpoint(separator_ckpt, dtype=torch.bfloat16)
    x = _wave(4000)
    low = sep.separate(x)
    high = sepkit.Separator.from_checkpoint(separator_ckpt).separate(x)
    assert low.dtype == torch.float32 and low.shape == high.shape
    assert float((low - high).abs().max()) <= 0.05 * float(high.abs().max())
    with pytest.raises(InputTypeError, match="dtype must be"):
        sepkit.Separator.from_checkpoint(separator_ckpt, dtype=torch.int8)
    with pytest.raises(InputError, match="--device"):
        sepkit.Separator.from_checkpoint(separator_ckpt, device="tpu")


def test_wrong_kind_of_checkpoint_and_bad_input_are_named(separator_ckpt, enhancer_ckpt, tmp_path):
    with pytest.raises(InputError, match="enhances; use sepkit.Enhancer"):
        sepkit.Separator.from_checkpoint(enhancer_ckpt)
    with pytest.raises(InputError, match="does not enhance.*use sepkit.Separator"):
        sepkit.Enhancer.from_checkpoint(separator_ckpt)
    sep = sepkit.Separator.from_checkpoint(separator_ckpt)
    with pytest.raises(InputTypeError, match="tensor .* or a path"):
        sep.separate(np.zeros(100))
    with pytest.raises(InputError, match=r"mono waveform \(T,\)"):
        sep.separate(torch.zeros(2, 1000))
    with pytest.raises(AudioError, match="NaN"):
        sep.separate(torch.full((1000,), float("nan")))
    with pytest.raises(InputError, match="too short"):
        sep.separate(torch.randn(100))
    with pytest.raises(InputError, match="--target-slot not supported by the separation task"):
        sep.separate(torch.randn(1000), target_slot=0)
    write_audio(tmp_path / "m.wav", _wave(2000), 8000)
    sep.separate_file(tmp_path / "m.wav", tmp_path / "o", progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        sep.separate_file(tmp_path / "m.wav", tmp_path / "o", progress=False)
    sep.separate_file(tmp_path / "m.wav", tmp_path / "o", progress=False, overwrite=True)
    with pytest.raises(InputError, match="does not stream"):
        sepkit.Enhancer(sep.task, sep.model).stream()


def test_import_sepkit_stays_light():
    import subprocess
    import sys

    code = "import sys, sepkit; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
