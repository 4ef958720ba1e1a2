"""``sepkit demo``: one command trains, evaluates, runs one example and writes the report, the
picture and the audio; an existing folder is refused untouched; ``--resume`` continues."""
from __future__ import annotations

import csv
import hashlib
import json

import pytest
import torch

from sepkit.cli import main
from sepkit.data import read_audio
from sepkit.train import EnhancementTask, SeparationTask, load_recipe, make_task, train
from sepkit.train.report import REPORT_KEYS, draw_report, median_item, read_history
from sepkit.train.tasks.common import scaled_to_input

matplotlib_image = pytest.importorskip("matplotlib.image")

TINY = [
    "data.dataset=synthetic", "data.segment=0.25", "data.batch_size=2", "data.synthetic.num_train=8", "data.synthetic.num_valid=2",
    "data.synthetic.num_test=3", "data.synthetic.min_duration=0.3", "data.synthetic.max_duration=0.4",
    "model.args.n_filters=16", "model.args.bottleneck=8", "model.args.hidden=16", "model.args.skip=8",
    "model.args.layers=2", "model.args.repeats=1", "train.log_every=1", "train.eval_every=2", "train.ckpt_every=2",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class NoPanelSeparation(SeparationTask):
    """A separation task whose panel is not implemented (``task=test_demo:NoPanelSeparation``)."""

    def plot_example(self, fig, example, sample_rate):
        raise NotImplementedError


class BrokenPanelSeparation(SeparationTask):
    """A separation task whose panel fails with a bug."""

    def plot_example(self, fig, example, sample_rate):
        raise RuntimeError("a bug in the panel")


def tree_hash(folder) -> str:
    """Hash of every path, size, modification time and content under ``folder``."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        st = p.stat()
        h.update(f"{p.relative_to(folder)}|{p.is_dir()}|{st.st_mtime_ns}".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def png_shape(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    image = matplotlib_image.imread(str(path))
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert float(image[..., :3].std()) > 0.01  # not a blank canvas
    return image.shape


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["demo", "--out", str(out), *TINY, "train.max_steps=4", "--no-progress"])
    assert code == 0
    return out, buf.getvalue()


def test_demo_writes_report_picture_and_audio(demo):
    out, stdout = demo
    for k in (1, 2, 3, 4):
        assert f"[{k}/4]" in stdout
    assert f"report: {out / 'report.md'}" in stdout
    report = json.loads((out / "report.json").read_text())
    assert set(REPORT_KEYS) <= set(report)
    assert report["recipe"] == "convtasnet-demo" and report["task"] == "separation" and report["steps"] == 4
    assert set(report["stages"]) == {"train", "eval", "example", "report"}
    assert all(v >= 0 for v in report["stages"].values())
    assert set(report["machine"]) >= {"device", "name", "threads", "torch", "triton", "python"}
    assert report["machine"]["device"] == "cpu" and report["machine"]["torch"] == torch.__version__
    # the model size is the tiny Conv-TasNet's, counted from a freshly built one
    cfg = load_recipe("convtasnet", "demo", [*TINY, "train.max_steps=4"])
    assert report["parameters"] == sum(p.numel() for p in make_task(cfg).build_model().parameters())
    # the summary is the per-item CSV's mean and standard deviation
    with open(out / report["files"]["test_metrics"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == report["test_items"] == 3
    values = torch.tensor([float(r["si_sdri"]) for r in rows], dtype=torch.float64)
    assert report["summary"]["si_sdri"]["mean"] == pytest.approx(float(values.mean()), abs=1e-9)
    assert report["summary"]["si_sdri"]["std"] == pytest.approx(float(values.std()), abs=1e-9)
    assert report["headline"]["metric"] == "si_sdri" and report["headline"]["unit"] == "dB"
    # the example shown is the test item with the median SI-SDRi
    ranked = sorted(rows, key=lambda r: float(r["si_sdri"]))
    assert report["example"]["id"] == ranked[1]["id"] and f"item {ranked[1]['id']} (the median SI-SDRi)" in stdout
    assert report["example"]["si_sdri"] == pytest.approx(float(ranked[1]["si_sdri"]))
    assert f"test SI-SDRi {report['headline']['value']:.2f} dB" in stdout
    md = (out / "report.md").read_text()
    assert "SI-SDRi" in md and "convtasnet-demo" in md and "report.png" in md
    assert report["panel"] is True
    with_panel = png_shape(out / "report.png")
    assert with_panel[0] > 500  # curves and the example panel
    audio = report["files"]["audio"]
    assert set(audio) == {"mixture", "reference_1", "reference_2", "estimate_1", "estimate_2"}
    lengths = set()
    for path in audio.values():
        wav, rate = read_audio(out / path)
        assert rate == 8000 and torch.isfinite(wav).all() and wav.abs().max() <= 1.0
        lengths.add(wav.shape[-1])
    assert len(lengths) == 1
    # the mixture written is the shown test item's (16-bit; below full scale, so not rescaled)
    item = make_task(cfg).dataset("test")[int(report["example"]["id"].split("-")[-1])]
    assert item["id"] == report["example"]["id"]
    mixture, _ = read_audio(out / audio["mixture"])
    assert torch.allclose(mixture, item["mixture"], atol=2 / 32768)


def test_median_item_and_input_level():
    rows = [{"id": "a", "x": 3.0}, {"id": "b", "x": float("nan")}, {"id": "c", "x": 1.0}, {"id": "d", "x": 2.0},
            {"id": "e", "x": 5.0}]
    assert median_item(rows, "x") == 3  # 1, 2, 3, 5: the lower middle is 2 (row d); NaN left out
    assert median_item(rows, "missing") == 0 and median_item([], "x") == 0
    g = torch.Generator().manual_seed(0)
    s1, s2 = torch.randn(4000, generator=g), 0.5 * torch.randn(4000, generator=g)
    mixture = s1 + s2
    est = torch.stack([-7.0 * s1, 3.0 * s2])  # a scale-invariant model's outputs: any level, any sign
    fitted = scaled_to_input(est, mixture)
    assert torch.allclose(fitted, torch.stack([-s1, s2]), atol=0.1)  # each source at its level, the sign kept
    assert (fitted.pow(2).sum(-1) <= mixture.pow(2).sum()).all()
    cancelling = torch.stack([100 * s1, -100 * s1 + 1e-3 * s2])  # outputs that cancel: no blow-up
    assert (scaled_to_input(cancelling, mixture).pow(2).sum(-1) <= mixture.pow(2).sum()).all()
    assert torch.equal(scaled_to_input(torch.zeros(2, 4000), mixture), torch.zeros(2, 4000))
    assert torch.allclose(scaled_to_input(0.01 * s1, s1 + 0.3 * s2), s1, atol=0.1)  # one source (enhancement)


def test_existing_folder_is_refused_untouched(demo, capsys):
    out, _ = demo
    before = tree_hash(out)
    assert main(["demo", "--out", str(out), *TINY, "train.max_steps=4", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--resume" in err and "not empty" in err
    assert tree_hash(out) == before


def test_task_without_panel_draws_the_curves_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out: runs/demo-RECIPE, relative to here
    assert main(["demo", "convtasnet", *TINY, "train.max_steps=2", "task=test_demo:NoPanelSeparation",
                 "--no-progress"]) == 0
    out = tmp_path / "runs" / "demo-convtasnet"
    report = json.loads((out / "report.json").read_text())
    assert report["panel"] is False and report["task"] == "separation"
    assert report["files"]["checkpoint"] == "checkpoints/step-0000002"
    curves_only = png_shape(out / "report.png")
    assert curves_only[0] < 300  # the curves' row alone
    assert (out / "example" / "estimate_1.wav").is_file()  # the audio is still written
    # a panel that fails with a bug costs only the panel, with a note on stderr
    cfg = load_recipe("convtasnet", "demo", [*TINY, "task=test_demo:BrokenPanelSeparation"])
    task = make_task(cfg)
    model = task.build_model().eval()
    example = task.example(model, task.dataset("test")[0])
    assert draw_report(tmp_path / "broken.png", task, example, read_history(out), 8000) is False
    assert "panel failed" in capsys.readouterr().err
    assert png_shape(tmp_path / "broken.png")[0] < 300
    # the base task: no panel, and nothing to listen to without a mixture
    base = make_task(load_recipe("convtasnet", "demo", TINY))
    assert super(SeparationTask, base).plot_example(None, example, 8000) is False
    assert super(SeparationTask, base).example(model, {"wave": torch.zeros(10), "id": "x"}) == {}
    assert draw_report(tmp_path / "empty.png", base, {}, {}, 8000) is False
    assert png_shape(tmp_path / "empty.png")[0] < 300


def test_enhancement_panel(tmp_path):
    cfg = load_recipe("convtasnet", "demo", [*TINY, "task=enhancement", "data.n_src=1"])
    task = make_task(cfg)
    torch.manual_seed(0)
    model = task.build_model().eval()
    item = task.dataset("test")[0]
    example = task.example(model, item)
    assert set(example) == {"noisy", "clean", "enhanced"}
    assert all(w.shape == item["mixture"].shape for w in example.values())
    assert torch.equal(example["clean"], item["sources"][0].float())
    assert draw_report(tmp_path / "enh.png", task, example, {}, task.sample_rate) is True
    assert png_shape(tmp_path / "enh.png")[0] > 500


def test_resume_continues_an_interrupted_demo(tmp_path, capsys):
    out = tmp_path / "resumed"
    cfg = load_recipe("convtasnet", "demo", [*TINY, "train.max_steps=2"])
    train(cfg, out, progress=False, test=False)  # the demo was interrupted after training 2 steps
    assert main(["demo", "--out", str(out), *TINY, "train.max_steps=4", "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert not (out / "report.json").exists()
    assert main(["demo", "--resume", "--out", str(out), *TINY, "train.max_steps=4", "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "resumed from" in stdout and "step 2" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 4 and report["files"]["checkpoint"] == "checkpoints/step-0000004"
    steps = read_history(out)[("train", "loss")][0]
    assert steps == [1, 2, 3, 4]  # every step once: continued, not restarted
    png_shape(out / "report.png")


DIP_TINY = ["model.args.conv_channels=16", "model.args.d_model=32", "model.args.n_layers=1", "model.args.n_heads=2",
            "model.args.ffn_dim=64", "model.args.final_dim=16", "model.args.codevector_dim=16",
            "data.synthetic.num_test=1", "data.synthetic.min_duration=0.3", "data.synthetic.max_duration=0.4"]
SPEAKER_TINY = ["data.synthetic.num_test=12", "data.synthetic.num_speakers=4", "data.synthetic.min_duration=0.3",
                "data.synthetic.max_duration=0.4", "model.args.channels=[16,16,16,16,48]", "model.args.lin_neurons=16",
                "model.args.attention_channels=8", "model.args.se_channels=8", "model.args.res2net_scale=2"]
SGMSE_TINY = ["task_args.steps=2", "data.synthetic.num_test=1", "data.synthetic.min_duration=0.25",
              "data.synthetic.max_duration=0.25", "model.args.nf=8"]


def _untrained(recipe, overrides):
    task = make_task(load_recipe(recipe, "demo", overrides))
    torch.manual_seed(0)
    return task, task.build_model().eval()


def test_pretraining_panel_draws_the_loss_terms(tmp_path):
    task, model = _untrained("dip-pretrain", DIP_TINY)
    item = task.dataset("test")[0]
    example = task.example(model, item)
    assert set(example) == {"real", "synthetic"}
    assert example["real"].shape == (item["real_length"],) and example["synthetic"].shape == (item["synthetic_length"],)
    history = {("train", "loss"): ([1, 2], [3.0, 2.0]), ("train", "mpc_real"): ([1, 2], [2.0, 1.0]),
               ("train", "lr"): ([1, 2], [1e-3, 1e-3]), ("valid", "mpc"): ([2], [1.5])}
    assert draw_report(tmp_path / "dip.png", task, example, history, task.sample_rate) is True
    assert png_shape(tmp_path / "dip.png")[0] > 500
    # without loss terms in the history there is no panel: the curves alone
    assert draw_report(tmp_path / "dip0.png", task, example, {}, task.sample_rate) is False
    assert png_shape(tmp_path / "dip0.png")[0] < 300


def test_speaker_panel_projects_embeddings_by_speaker(tmp_path):
    task, model = _untrained("speaker", SPEAKER_TINY)
    item = task.dataset("test")[0]
    example = task.example(model, item, max_speakers=3)
    emb, speakers = example["embeddings"], example["speakers"]
    assert emb.shape == (len(speakers), 16) and len(set(speakers.tolist())) == 3
    assert torch.equal(example["input"], item["wave"].float())
    from sepkit.commands.demo import save_example

    written = save_example(tmp_path / "example", example, task.sample_rate)
    assert set(written) == {"input"}  # the waveform only, not the speaker labels or the embeddings
    assert draw_report(tmp_path / "spk.png", task, example, {}, task.sample_rate) is True
    assert png_shape(tmp_path / "spk.png")[0] > 500


def test_diffusion_panel_shows_the_sampler_states(tmp_path):
    task, model = _untrained("sgmse", SGMSE_TINY)
    item = task.dataset("test")[0]
    example = task.example(model, item)
    assert "score" not in vars(model)  # the recording of the states is undone
    T = item["mixture"].shape[-1]
    assert example["states"].shape == (2, T) and torch.isfinite(example["states"]).all()
    times = example["state_times"]
    assert float(times[0]) == pytest.approx(1.0) and float(times[-1]) == pytest.approx(model.t_eps)
    from sepkit.commands.demo import save_example

    assert set(save_example(tmp_path / "example", example, task.sample_rate)) == {"noisy", "clean", "enhanced"}
    # recording the states does not change what the sampler returns
    again = EnhancementTask.example(task, model, item)["enhanced"]
    assert torch.allclose(example["enhanced"], again)
    assert draw_report(tmp_path / "diff.png", task, example, {}, task.sample_rate) is True
    assert png_shape(tmp_path / "diff.png")[0] > 500


def test_tse_panel_extracts_the_enrolled_speaker(tmp_path):
    from test_tse import _tse_task_and_model  # the demo recipe's task with a tiny untrained model

    task, model = _tse_task_and_model()
    item = task.dataset("test")[0]
    example = task.example(model, item)
    assert set(example) == {"mixture", "enrollment", "target", "extracted"}
    assert example["extracted"].shape == item["mixture"].shape and torch.isfinite(example["extracted"]).all()
    assert torch.equal(example["target"], item["target"].float())
    assert draw_report(tmp_path / "tse.png", task, example, {}, task.sample_rate) is True
    assert png_shape(tmp_path / "tse.png")[0] > 500
