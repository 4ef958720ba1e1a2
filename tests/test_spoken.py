"""The spoken corpus (``data.dataset: spoken``): sentences from the shipped word list, voices
drawn per utterance, espeak-ng rendering into a cache, mixtures deterministic in the seed, the
LibriMix-layout writer, and one line with exit 2 when the synthesizer is missing.

Tests that render audio render a handful of short utterances and are skipped where espeak-ng
is not installed (CI installs it)."""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch

from sepkit.cli import main
from sepkit.data import LibriMix
from sepkit.data.spoken import (
    FEMALE,
    HELD_OUT,
    MALE,
    SpokenCorpus,
    SpokenMixtures,
    draw_utterances,
    find_synthesizer,
    random_sentence,
    render,
    vocabulary,
)
from sepkit.data.synth import MixtureSpec
from sepkit.errors import AudioError, ConfigError, DependencyError
from sepkit.train import load_recipe, make_task

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")

TINY_SPOKEN = ["data.segment=0.25", "data.batch_size=2", "data.synthetic.num_train=3", "data.synthetic.num_valid=2",
               "data.synthetic.num_test=2", "data.synthetic.min_duration=0.4", "data.synthetic.max_duration=0.6",
               "model.args.n_filters=16", "model.args.bottleneck=8", "model.args.hidden=16", "model.args.skip=8",
               "model.args.layers=2", "model.args.repeats=1"]


def test_vocabulary_and_sentences_are_seeded_english():
    voc = vocabulary()
    assert {"noun", "verb", "adjective", "adverb", "name", "place"} <= set(voc)
    assert len(voc["noun"]) > 300 and len(voc["verb"]) > 150
    assert ("go", "went") not in voc["verb"] and ("swim", "swam") in voc["verb"]  # (base, past) pairs
    a = [random_sentence(np.random.default_rng(3)) for _ in range(2)]
    assert a[0] == a[1]  # same generator state, same sentence
    many = [random_sentence(np.random.default_rng(i)) for i in range(40)]
    assert len(set(many)) == 40
    words = set(voc["noun"]) | set(voc["adjective"]) | {w for pair in voc["verb"] for w in pair}
    for s in many:
        assert s[0].isupper() and s[-1] in ".?!"
        assert any(w.strip(".,?!").lower() in words for w in s.split())
        assert " a a" not in s and not any(f" a {v}" in s for v in "aeiou")  # "an" before a vowel


def test_utterances_are_deterministic_and_hold_out_voices():
    train = draw_utterances(200, "train", seed=0)
    assert train == draw_utterances(200, "train", seed=0)
    assert train != draw_utterances(200, "train", seed=1)
    assert {u.variant for u in train} <= set(MALE + FEMALE) - HELD_OUT
    test = draw_utterances(100, "test", seed=0)
    assert {u.variant for u in test} <= HELD_OUT
    assert {u.text for u in test}.isdisjoint({u.text for u in draw_utterances(100, "dev", seed=0)})
    females = sum(u.female for u in train)
    assert 70 < females < 130  # about half
    assert all((u.variant in FEMALE) == u.female for u in train)
    assert len({u.speaker for u in train}) > 100
    assert all(0.9 <= u.scale <= 1.1 and 125 <= u.rate <= 225 and len(u.text.split()) >= 8 for u in train)


def test_missing_synthesizer_is_one_line_exit_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng here
    with pytest.raises(DependencyError, match="apt-get install espeak-ng"):
        find_synthesizer()
    assert main(["data", "spoken", "--out", str(tmp_path / "d"), "--train", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "espeak-ng" in err and "apt-get install" in err
    assert not (tmp_path / "d").exists()
    cache = f"data.spoken.cache={tmp_path / 'cache'}"
    assert main(["train", "convtasnet", "--preset", "demo", "--out", str(tmp_path / "r"), "--no-progress", cache,
                 *TINY_SPOKEN, "train.max_steps=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "espeak-ng" in err and "apt-get install" in err and "internal error" not in err


def test_demo_falls_back_to_the_synthetic_generator_without_the_synthesizer(monkeypatch, tmp_path, capsys):
    import sepkit.commands.demo as demo

    monkeypatch.setattr(demo, "synthesizer_installed", lambda: False)
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), *TINY_SPOKEN, "train.max_steps=2", "train.eval_every=2",
                 "train.ckpt_every=2", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "espeak-ng is not installed" in captured.err and "apt-get install espeak-ng" in captured.err
    assert "held-out synthetic test set" in captured.out
    import yaml

    config = yaml.safe_load(next((out / "checkpoints").glob("step-*/config.yaml")).read_text())
    assert config["data"]["dataset"] == "synthetic"


def test_spoken_config_keys_are_checked(tmp_path):
    from sepkit.train.builders import spoken_corpus

    for override, match in [("data.spoken.utterancez=3", "utterancez"), ("data.spoken.train_utterances=0", ">= 1"),
                            ("data.spoken.cache=3", "folder path")]:
        cfg = load_recipe("convtasnet", "demo", [override])
        with pytest.raises(ConfigError, match=match):
            spoken_corpus(cfg.data, "train", 10, 0)


@needs_espeak
def test_render_speaks_at_the_rate_and_scale_asked():
    u = draw_utterances(1, "train", seed=5)[0]
    y = render(u, 8000)
    assert y.dtype == np.float32 and y.ndim == 1 and np.isfinite(y).all()
    words = len(u.text.split())
    assert 0.15 < len(y) / 8000 / words < 0.8  # seconds per word of normal speech
    active = np.abs(y) > 1e-3 * np.abs(y).max()
    assert abs(float(np.sqrt(np.mean(y[active].astype(np.float64) ** 2))) - 0.05) < 1e-3
    y16 = render(u, 16000)
    assert abs(len(y16) / 16000 - len(y) / 8000) < 0.01  # the same utterance at another rate
    import dataclasses

    slow, fast = (render(dataclasses.replace(u, scale=s), 8000) for s in (0.9, 1.1))
    assert abs(len(slow) / len(fast) - 1.1 / 0.9) < 0.05  # read at 22050 * scale Hz: durations scale by 1/scale
    assert not np.array_equal(render(dataclasses.replace(u, variant="f3", female=True), 8000)[:4000], y[:4000])


@needs_espeak
def test_corpus_renders_once_and_the_same_in_another_cache(tmp_path, monkeypatch):
    a = SpokenCorpus.build(tmp_path / "a", "train", 5, seed=2, sample_rate=8000, progress=False)
    assert len(a) == 5 and (a.folder / "audio.npy").is_file() and (a.folder / "index.json").is_file()
    assert sum(len(v) for v in a.by_speaker.values()) == 5 and a.speakers == sorted(a.by_speaker)
    import sepkit.data.spoken as spoken

    def fail(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(spoken, "render", fail)
    again = SpokenCorpus.build(tmp_path / "a", "train", 5, seed=2, sample_rate=8000, progress=False)
    assert again.folder == a.folder
    monkeypatch.undo()
    b = SpokenCorpus.build(tmp_path / "b", "train", 5, seed=2, sample_rate=8000, progress=False, workers=1)
    for i in range(5):
        assert np.array_equal(a.audio(i), b.audio(i))
    other = SpokenCorpus.build(tmp_path / "a", "train", 5, seed=3, sample_rate=8000, progress=False)
    assert other.folder != a.folder and not np.array_equal(other.audio(0)[:100], a.audio(0)[:100])
    import pickle

    blob = pickle.dumps(b)  # to a worker process: the samples stay in the file, mapped again there
    assert len(blob) < 20000 and np.array_equal(pickle.loads(blob).audio(4), b.audio(4))
    (b.folder / "index.json").write_text("{")
    with pytest.raises(AudioError, match="not a rendered spoken corpus"):
        SpokenCorpus(b.folder)
    assert not list(tmp_path.glob("a/.*tmp*"))  # no half-rendered folder left


@needs_espeak
def test_mixtures_are_deterministic_in_seed_epoch_and_index(tmp_path):
    corpus = SpokenCorpus.build(tmp_path, "train", 6, seed=0, sample_rate=8000, progress=False)
    spec = MixtureSpec(sample_rate=8000, n_src=2, min_duration=0.5, max_duration=1.0, noise=True, reverb=True)
    ds = SpokenMixtures(4, spec, corpus, split="train", seed=0)
    rec = ds.draw(1)
    assert rec["sources"].shape[0] == 2 and len(set(rec["speakers"])) == 2
    assert rec["noise"] is not None and rec["rt60"] is not None
    np.testing.assert_allclose(rec["mixture"], rec["sources"].sum(0) + rec["noise"], atol=1e-6)
    assert 0.5 * 8000 <= len(rec["mixture"]) <= 8000
    for j in range(2):
        assert float(np.sqrt(np.mean(rec["sources"][j] ** 2))) > 1e-3  # each source speaks
    item = ds[1]
    assert torch.equal(item["mixture"], SpokenMixtures(4, spec, corpus, split="train", seed=0)[1]["mixture"])
    assert not torch.equal(item["mixture"][:100], ds[2]["mixture"][:100])
    assert item["mixture"].shape != SpokenMixtures(4, spec, corpus, split="train", seed=1)[1]["mixture"].shape or \
        not torch.equal(item["mixture"], SpokenMixtures(4, spec, corpus, split="train", seed=1)[1]["mixture"])
    dm = SpokenMixtures(4, spec, corpus, split="train", seed=0, dynamic_mixing=True)
    e0 = dm[0]["mixture"]
    dm.set_epoch(1)
    e1 = dm[0]["mixture"]
    dm.set_epoch(0)
    assert torch.equal(dm[0]["mixture"], e0) and (e0.shape != e1.shape or not torch.equal(e0, e1))
    with pytest.raises(Exception, match="sample_rate"):
        SpokenMixtures(4, MixtureSpec(sample_rate=16000), corpus)


@needs_espeak
def test_recipes_build_spoken_data_sets_capped_by_their_size(tmp_path):
    cache = f"data.spoken.cache={tmp_path}"
    cfg = load_recipe("convtasnet", "demo", [cache, *TINY_SPOKEN])
    assert cfg.data.dataset == "spoken"
    task = make_task(cfg)
    train, test = task.dataset("train"), task.dataset("test")
    assert isinstance(train, SpokenMixtures) and len(train) == 3 and len(train.corpus) == 6  # 2 x 3 mixtures
    assert train[0]["mixture"].shape == (2000,) and train[0]["sources"].shape == (2, 2000)
    assert {u.variant for u in test.corpus.utterances} <= HELD_OUT
    enh = make_task(load_recipe("convtasnet", "demo", [cache, *TINY_SPOKEN, "task=enhancement", "data.n_src=1",
                                                       "task_args.perceptual=false"]))
    item = enh.dataset("valid")[0]
    assert item["sources"].shape[0] == 1 and not torch.allclose(item["mixture"], item["sources"][0])  # noisy
    gcrn = make_task(load_recipe("gcrn", "demo", [cache, "data.segment=0.25", "data.synthetic.num_train=2",
                                                  "data.synthetic.num_test=1", "data.synthetic.min_duration=0.5",
                                                  "data.synthetic.max_duration=0.5"]))
    assert isinstance(gcrn.dataset("test"), SpokenMixtures) and gcrn.dataset("test").spec.snr_range == (-5.0, -5.0)


@needs_espeak
def test_data_spoken_writes_the_librimix_layout_the_same_for_a_seed(tmp_path):
    def tree(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    args = ["--train", "3", "--dev", "1", "--test", "1", "--min-duration", "0.4", "--max-duration", "0.6", "--noise"]
    for name in ("a", "b"):
        assert main(["data", "spoken", "--out", str(tmp_path / name), "--cache", str(tmp_path / f"cache-{name}"),
                     *args]) == 0
    root = tmp_path / "a" / "Libri2Mix" / "wav8k" / "min"
    assert tree(root) == tree(tmp_path / "b" / "Libri2Mix" / "wav8k" / "min")
    ds = LibriMix(root, "train-360", mix="both")
    item = ds[0]
    assert len(ds) == 3 and item["sources"].shape[0] == 2 and item["mixture"].shape[-1] >= 3200
    assert main(["data", "spoken", "--out", str(tmp_path / "a"), *args]) == 2  # refuses to overwrite


@needs_espeak
def test_spoken_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--out", str(out), f"data.spoken.cache={tmp_path / 'cache'}", *TINY_SPOKEN,
                 "train.max_steps=2", "train.eval_every=2", "train.ckpt_every=2", "--no-progress"]) == 0
    assert "held-out spoken test set" in capsys.readouterr().out
    assert (out / "report.json").is_file() and (out / "example" / "estimate_1.wav").is_file()
