"""Batches from DataLoader workers: the sampler's order, bit-identical batches for any worker
count and across resume, and items that fail in a worker."""
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sepkit.data import MixtureSpec, SyntheticMixtures, collate, write_synthetic_librimix
from sepkit.data.loading import Batches, EpochBatchSampler, Failure, Loaded, LoaderOptions, iterate, make_loader
from sepkit.errors import AudioError, ConfigError
from sepkit.train import load_recipe, resolve_checkpoint, train
from sepkit.train.evaluate import items

TINY = [
    "data.segment=0.25", "data.batch_size=2", "data.synthetic.num_train=7", "data.synthetic.num_valid=2",
    "data.synthetic.num_test=2", "data.synthetic.min_duration=0.3", "data.synthetic.max_duration=0.4",
    "model.args.n_filters=16", "model.args.bottleneck=8", "model.args.hidden=16", "model.args.skip=8",
    "model.args.layers=2", "model.args.repeats=1", "train.log_every=1", "train.eval_every=2", "train.ckpt_every=1",
    "data.dynamic_mixing=true",
]


def _old_batch_keys(m, n, batch_size, seed, rank, world):
    """The trainer's order before the loader: micro-batch m of rank ``rank``."""
    per_micro = batch_size * world
    epoch, pos = divmod(m, n // per_micro)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    start = pos * per_micro + rank * batch_size
    return [(epoch, int(i)) for i in order[start:start + batch_size]]


@pytest.mark.parametrize("n, batch_size, world, seed", [(7, 2, 1, 0), (11, 2, 2, 5), (9, 1, 3, 1)])
def test_the_sampler_keeps_the_trainers_order_and_ranks_are_disjoint(n, batch_size, world, seed):
    per_epoch = n // (batch_size * world)
    stop = 3 * per_epoch + 1
    for rank in range(world):
        got = list(EpochBatchSampler(n, batch_size, seed, rank, world, start=0, stop=stop))
        assert got == [_old_batch_keys(m, n, batch_size, seed, rank, world) for m in range(stop)]
        # a sampler started anywhere continues the same order
        assert list(EpochBatchSampler(n, batch_size, seed, rank, world, start=4, stop=stop)) == got[4:]
    for epoch in range(3):
        seen = [k for r in range(world) for b in EpochBatchSampler(n, batch_size, seed, r, world, 0, stop)
                for k in b if k[0] == epoch]
        assert len(seen) == len(set(seen)) == per_epoch * batch_size * world  # disjoint, last group dropped
    with pytest.raises(ValueError, match="fewer than one batch"):
        EpochBatchSampler(3, 2, 0, 0, 2, 0, 1)


class GlobalRandom(torch.utils.data.Dataset):
    """Items drawn from the global generators (what a careless custom data set does)."""

    def __len__(self):
        return 9

    def __getitem__(self, i):
        return {"mixture": torch.randn(5) + np.random.rand() + random.random(), "id": str(i)}


def stack_mixtures(items_):
    return {"mixture": torch.stack([i["mixture"] for i in items_])}


def _batches(dataset, workers, start=0, stop=10, coll=collate):
    sampler = EpochBatchSampler(len(dataset), 2, 3, start=start, stop=stop)
    loader = make_loader(Batches(dataset, coll, 3, "train item"), sampler, LoaderOptions(num_workers=workers, seed=3))
    return list(loader)


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]) if isinstance(x[k], torch.Tensor) else x[k] == y[k], k


def test_batches_are_bit_identical_for_0_1_and_2_workers_and_from_any_start():
    spec = MixtureSpec(min_duration=0.25, max_duration=0.25, noise=True)
    data = SyntheticMixtures(9, spec, num_speakers=4, seed=2, dynamic_mixing=True)  # new draws every epoch
    ref = _batches(data, 0)
    assert not torch.equal(ref[0]["mixture"], ref[4]["mixture"])  # epochs differ (4 batches per epoch)
    _same(ref, _batches(data, 1))
    _same(ref, _batches(data, 2))
    _same(ref[6:], _batches(data, 2, start=6))

    state = torch.get_rng_state()
    plain = _batches(GlobalRandom(), 0, coll=stack_mixtures)
    assert torch.equal(torch.get_rng_state(), state)  # the main process's stream is left alone
    _same(plain, _batches(GlobalRandom(), 2, coll=stack_mixtures))


def _weights(run):
    return load_file(str(resolve_checkpoint(run) / "model.safetensors"))


def test_training_is_bit_identical_for_any_worker_count_and_across_resume(tmp_path):
    runs = {}
    for workers in (0, 2):
        train(load_recipe("convtasnet", "demo", TINY + ["train.max_steps=5", f"data.num_workers={workers}"]),
              tmp_path / f"w{workers}", progress=False, test=False)
        runs[workers] = _weights(tmp_path / f"w{workers}")
    # interrupted after step 3 (an epoch has 3 micro-batches: the resume crosses an epoch), resumed
    cut = tmp_path / "cut"
    train(load_recipe("convtasnet", "demo", TINY + ["train.max_steps=3", "data.num_workers=2"]), cut, progress=False,
          test=False)
    train(load_recipe("convtasnet", "demo", TINY + ["train.max_steps=5", "data.num_workers=1"]), cut, resume=True,
          progress=False, test=False)
    runs["resumed"] = _weights(cut)
    for name in (2, "resumed"):
        assert runs[0].keys() == runs[name].keys()
        for k in runs[0]:
            assert torch.equal(runs[0][k], runs[name][k]), (name, k)


def test_evaluation_items_come_in_order_through_workers():
    spec = MixtureSpec(min_duration=0.2, max_duration=0.3)
    data = SyntheticMixtures(5, spec, num_speakers=4, seed=1)
    wrapped = Loaded(data, LoaderOptions(num_workers=2, persistent_workers=True))
    try:
        for _ in range(2):  # the persistent workers serve a second pass
            got = list(items(wrapped, max_items=4))
            assert [g["id"] for g in got] == [data[i]["id"] for i in range(4)]
            for g, i in zip(got, range(4)):
                assert torch.equal(g["mixture"], data[i]["mixture"])
        assert len(list(iterate(wrapped))) == 5
    finally:
        wrapped.close()


class Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        if i == 2:
            raise AudioError("cannot read audio file /data/x.wav: Format not recognised")
        if i == 3:
            raise KeyError("a bug")
        return {"mixture": torch.zeros(3), "id": str(i)}


def test_a_failing_item_is_carried_back_and_raised_with_the_context():
    wrapped = Loaded(Broken(), LoaderOptions(num_workers=2), "valid item")
    wrapped.context = "step 4: validation"
    with pytest.raises(AudioError, match=r"^step 4: validation: valid item 2: cannot read audio file /data/x.wav"):
        list(iterate(wrapped))
    got = Batches(Broken(), None, 0, "train item")[[(1, 3)]]
    assert isinstance(got, Failure)
    with pytest.raises(RuntimeError, match=r"step 9: train item 3 \(epoch 1\): KeyError: 'a bug'"):
        got.throw("step 9")


def test_loader_keys_are_range_checked():
    with pytest.raises(ConfigError, match="data.prefetch_factor=0"):
        load_recipe("convtasnet", "demo", ["data.prefetch_factor=0"])
    with pytest.raises(ConfigError, match="data.num_workers=-1"):
        load_recipe("convtasnet", "demo", ["data.num_workers=-1"])
    with pytest.raises(ConfigError, match="data.persistent_workers must be bool"):
        load_recipe("convtasnet", "demo", ["data.persistent_workers=3"])


def test_a_corrupt_file_in_a_worker_ends_the_run_with_its_name_and_the_step(tmp_path):
    root = write_synthetic_librimix(tmp_path / "data", MixtureSpec(min_duration=0.3, max_duration=0.4),
                                    {"train-100": 6, "dev": 2, "test": 2}, num_speakers=4)
    bad = root / "train-100" / "s2" / "train-100-000004.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + os.urandom(64))
    cmd = [sys.executable, "-m", "sepkit", "train", "convtasnet", "--preset", "demo", "--out", str(tmp_path / "run"),
           "--no-progress", "--no-test", "data.dataset=librimix", f"data.root={root}", "data.train_split=train-100", *TINY[:2],
           *[t for t in TINY if t.startswith("model.")], "data.num_workers=2", "train.max_steps=6",
           "train.eval_every=100", "train.ckpt_every=100"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("sepkit train:") and "tensorboard" not in line]
    assert len(lines) == 1, done.stderr
    assert str(bad) in lines[0] and "step " in lines[0] and "train item 4" in lines[0], lines[0]
    assert "Traceback" not in done.stderr
