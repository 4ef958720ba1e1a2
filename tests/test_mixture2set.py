"""Mixture-to-set predictor, Hungarian set loss with presence, online speaker memory, clustering."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sepkit.metrics.clustering import adjusted_rand_index, kmeans, normalized_mutual_info, silhouette_score
from sepkit.models.mixture2set import MixtureToSet, SetEmbeddingLoss, SpeakerMemory, cosine_cost

TINY = dict(embed_dim=16, d_model=32, nhead=2, dim_feedforward=64, n_layers=1, n_decoder_layers=1,
            sample_rate=8000, n_mels=24)


def _brute_force(pred, target, n):
    """Minimum over injective assignments of the n real targets to slots of the summed cosine distance."""
    S = pred.shape[0]
    cost = 1 - F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).t()
    best = min(sum(cost[p[j], j].item() for j in range(n)) for p in itertools.permutations(range(S)))
    return best / n if n else 0.0


@pytest.mark.parametrize("seed", range(4))
def test_hungarian_loss_is_the_brute_force_minimum_and_order_invariant(seed):
    g = torch.Generator().manual_seed(seed)
    B, S, D = 5, 3, 8
    pred = F.normalize(torch.randn(B, S, D, generator=g), dim=-1)
    target = torch.randn(B, S, D, generator=g)
    n = torch.tensor([3, 2, 1, 3, 2])
    loss_fn = SetEmbeddingLoss(presence_weight=0.0)
    logits = torch.zeros(B, S)
    loss, _ = loss_fn(pred, logits, target, n)
    # The loss averages over all real targets; recombine the per-example brute-force optima.
    want = sum(_brute_force(pred[b], target[b], int(n[b])) * int(n[b]) for b in range(B)) / int(n.sum())
    assert loss.item() == pytest.approx(want, abs=1e-5)
    # Permuting the real targets of each example (padding stays last) leaves the loss unchanged,
    # and the padded rows can hold anything.
    shuffled = target.clone()
    for b in range(B):
        k = int(n[b])
        shuffled[b, :k] = target[b, torch.randperm(k, generator=g)]
        shuffled[b, k:] = torch.randn(S - k, D, generator=g) * 100
    again, _ = loss_fn(pred, logits, shuffled, n)
    assert again.item() == pytest.approx(loss.item(), abs=1e-5)
    # Permuting the predicted slots too.
    perm = torch.randperm(S, generator=g)
    third, _ = loss_fn(pred[:, perm], logits, target, n)
    assert third.item() == pytest.approx(loss.item(), abs=1e-5)


def test_presence_targets_with_one_to_three_speakers():
    B, S, D = 3, 3, 8
    torch.manual_seed(0)
    target = F.normalize(torch.randn(B, S, D), dim=-1)
    n = torch.tensor([1, 2, 3])
    pred = target.clone()
    pred[0] = target[0, [2, 0, 1]]  # the one real speaker of example 0 sits in slot 1
    logits = torch.randn(B, S)
    loss, logs = SetEmbeddingLoss(presence_weight=1.0)(pred, logits, target, n)
    perm = logs["perm"]
    assert perm[0, 0].item() == 1
    present = torch.zeros(B, S)
    for b in range(B):
        present[b, perm[b, : int(n[b])]] = 1.0
    assert present.sum(1).tolist() == [1.0, 2.0, 3.0]
    want = F.binary_cross_entropy_with_logits(logits, present)
    assert logs["cos_dist"] == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(want.item(), abs=1e-6)


def test_set_loss_trains_embeddings_and_presence():
    torch.manual_seed(1)
    B, S, D = 6, 3, 8
    target = F.normalize(torch.randn(B, S, D), dim=-1)
    n = torch.tensor([1, 2, 3, 1, 2, 3])
    pred = torch.nn.Parameter(torch.randn(B, S, D))
    logits = torch.nn.Parameter(torch.zeros(B, S))
    opt = torch.optim.Adam([pred, logits], lr=0.1)
    loss_fn = SetEmbeddingLoss()
    for _ in range(150):
        loss, logs = loss_fn(F.normalize(pred, dim=-1), logits, target, n)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["cos_dist"] < 0.01
    assert logs["presence_acc"] == 1.0
    assert ((logits > 0).sum(1) == n).all()


def test_set_loss_bad_inputs():
    loss_fn = SetEmbeddingLoss()
    pred, logits, target = torch.randn(2, 3, 4), torch.zeros(2, 3), torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="n_speakers"):
        loss_fn(pred, logits, target, torch.tensor([1, 4]))
    with pytest.raises(ValueError, match="targets must have shape"):
        loss_fn(pred, logits, torch.randn(2, 2, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="presence_logits"):
        loss_fn(pred, torch.zeros(2, 2), target, torch.tensor([1, 2]))
    assert cosine_cost(pred, pred).diagonal(dim1=1, dim2=2).abs().max() < 1e-6


@pytest.mark.parametrize("encoder", ["fbank", "learned"])
def test_mixture_to_set_shapes_and_padding(encoder):
    torch.manual_seed(0)
    model = MixtureToSet(encoder=encoder, n_filters=32, kernel_size=16, pool=4, **TINY).eval()
    wave = torch.randn(1, 6000) * 0.1
    with torch.no_grad():
        out = model(wave)
        assert out.embeddings.shape == (1, 3, 16) and out.presence_logits.shape == (1, 3)
        assert torch.allclose(out.embeddings.norm(dim=-1), torch.ones(1, 3), atol=1e-5)
        padded = torch.cat([wave, torch.zeros(1, 2000)], dim=1)
        both = model(torch.cat([padded, torch.randn(1, 8000) * 0.1]), torch.tensor([6000, 8000]))
    if encoder == "fbank":  # zero padding is what the centred STFT sees anyway: exact
        assert torch.allclose(both.embeddings[0], out.embeddings[0], atol=1e-5)
        assert torch.allclose(both.presence_logits[0], out.presence_logits[0], atol=1e-5)
    assert not torch.allclose(both.embeddings[0], both.embeddings[1])


def test_mixture_to_set_bad_inputs():
    model = MixtureToSet(**TINY)
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 800), torch.tensor([900, 10]))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        model(torch.randn(2, 2, 800))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(2, 800, dtype=torch.int16))
    with pytest.raises(ValueError, match="encoder"):
        MixtureToSet(encoder="wavlm")


def _speaker(i, d=64):
    return F.normalize(torch.randn(d, generator=torch.Generator().manual_seed(100 + i)), dim=0)


def _window(speakers, d=64, noise=0.05, seed=0):
    """Slots holding the given speakers (noisy), the rest absent (presence logit -5)."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(3, d, generator=g)
    logits = torch.full((3,), -5.0)
    for slot, spk in speakers.items():
        emb[slot] = _speaker(spk, d) + noise * torch.randn(d, generator=g)
        logits[slot] = 5.0
    return F.normalize(emb, dim=-1), logits


def test_memory_returning_speaker_gets_the_old_slot():
    mem = SpeakerMemory(threshold=0.5)
    script = [{0: 0, 1: 1}, {2: 0, 0: 1}, {1: 2}, {0: 2}, {2: 3}, {1: 0}, {0: 1, 1: 3}]
    labels = []
    for t, spk in enumerate(script):
        emb, logits = _window(spk, seed=t)
        w = mem.update(emb, logits, start=2.0 * t, end=2.0 * t + 4.0)
        labels.append({spk[s]: w.labels[s] for s in spk})
        assert all(w.labels[s] == -1 for s in range(3) if s not in spk)
    first = {}
    for window in labels:
        for spk, label in window.items():
            first.setdefault(spk, label)
            assert label == first[spk], f"speaker {spk} relabelled after a gap"
    assert sorted(first.values()) == [0, 1, 2, 3] and mem.num_speakers == 4
    assert mem.counts == [3, 3, 2, 2]
    # Deterministic: a fresh memory replays to the same labels.
    again = SpeakerMemory(threshold=0.5)
    for t, spk in enumerate(script):
        again.update(*_window(spk, seed=t))
    assert [w.labels for w in again.history] == [w.labels for w in mem.history]


def test_memory_is_bounded_and_exports_rttm():
    mem = SpeakerMemory(threshold=0.5, max_speakers=2)
    for t, spk in enumerate([{0: 0}, {0: 1}, {0: 2}, {0: 0}]):
        mem.update(*_window(spk, seed=t), start=float(t), end=float(t) + 1.0)
    assert mem.num_speakers == 2
    assert mem.history[2].labels[0] in (0, 1)
    rttm = mem.to_rttm("rec1").splitlines()
    assert rttm[0] == "SPEAKER rec1 1 0.000 1.000 <NA> <NA> spk0 <NA> <NA>"
    assert all(len(line.split()) == 10 for line in rttm)
    # Touching windows of one speaker merge into one turn.
    mem = SpeakerMemory()
    for t in range(3):
        mem.update(*_window({0: 5}, seed=t), start=float(t), end=float(t) + 1.5)
    assert mem.segments() == [(0.0, 3.5, 0)]
    with pytest.raises(ValueError, match="file_id"):
        mem.to_rttm("two words")


def test_memory_process_runs_a_model_over_windows():
    torch.manual_seed(0)
    model = MixtureToSet(**TINY).eval()
    wave = torch.randn(8000 * 5) * 0.1
    mem = SpeakerMemory(presence_threshold=0.0)
    windows = mem.process(model, wave, 8000, window=2.0, hop=1.0)
    assert [w.start for w in windows] == [0.0, 1.0, 2.0, 3.0]
    assert windows[-1].end == 5.0
    assert all(len(w.labels) == 3 and min(w.labels) >= 0 for w in windows)
    with pytest.raises(ValueError, match="hop"):
        mem.process(model, wave, 8000, window=1.0, hop=2.0)


def test_memory_bad_inputs():
    with pytest.raises(ValueError, match="threshold"):
        SpeakerMemory(threshold=2.0)
    mem = SpeakerMemory()
    mem.update(torch.randn(3, 8))
    with pytest.raises(ValueError, match="D=8"):
        mem.update(torch.randn(3, 9))
    with pytest.raises(ValueError, match="NaN"):
        mem.update(torch.full((3, 8), float("nan")))
    with pytest.raises(ValueError, match="presence_logits"):
        mem.update(torch.randn(3, 8), torch.zeros(2))


def test_clustering_metrics_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for trial in range(5):
        n = 40
        true = rng.integers(0, 4, n)
        pred = np.where(rng.random(n) < 0.6, true, rng.integers(0, 5, n))
        x = rng.normal(size=(n, 6)) + true[:, None]
        assert adjusted_rand_index(true, pred) == pytest.approx(metrics.adjusted_rand_score(true, pred), abs=1e-10)
        assert normalized_mutual_info(true, pred) == pytest.approx(
            metrics.normalized_mutual_info_score(true, pred), abs=1e-10)
        for metric in ("euclidean", "cosine"):
            assert silhouette_score(x, pred, metric) == pytest.approx(
                metrics.silhouette_score(x, pred, metric=metric), abs=1e-8)
    labels = ["a", "a", "b", "b"]
    assert adjusted_rand_index(labels, [1, 1, 0, 0]) == 1.0
    assert normalized_mutual_info(labels, [1, 1, 0, 0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same length"):
        adjusted_rand_index([0, 1], [0, 1, 2])
    with pytest.raises(ValueError, match="clusters"):
        silhouette_score(np.zeros((3, 2)), [0, 0, 0])


def test_kmeans_recovers_separated_clusters_deterministically():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 5)) * 10
    truth = np.repeat(np.arange(3), 20)
    x = centres[truth] + rng.normal(size=(60, 5))
    labels = kmeans(x, 3, seed=0)
    assert adjusted_rand_index(truth, labels) == 1.0
    assert np.array_equal(labels, kmeans(x, 3, seed=0))
    with pytest.raises(ValueError, match="n_clusters"):
        kmeans(x, 0)


def test_task_data_and_training_step():
    from sepkit.models.speaker import ECAPATDNN
    from sepkit.train import load_recipe
    from sepkit.models.mixture2set import SetWithTeacher
    from sepkit.train.tasks.mixture2set import Mixture2SetTask, clustering_metrics

    cfg = load_recipe("mixture2set", "demo", ["data.segment=0.5"])
    task = Mixture2SetTask(cfg)
    ds = task.dataset("train")
    items = [ds[i] for i in range(8)]
    counts = sorted({int(it["n_speakers"]) for it in items})
    assert counts == [1, 2, 3]
    for it in items:
        n = int(it["n_speakers"])
        assert it["sources"].shape == (3, 4000) and it["sources"][n:].abs().sum() == 0
        assert (it["speakers"][:n] >= 0).all() and (it["speakers"][n:] == -1).all()
    assert torch.equal(ds[3]["mixture"], items[3]["mixture"])  # deterministic
    torch.manual_seed(0)
    teacher = ECAPATDNN(n_mels=24, channels=[16, 16, 16, 16, 48], lin_neurons=16, attention_channels=8,
                        se_channels=8, res2net_scale=4, sample_rate=8000, n_fft=200).eval().requires_grad_(False)
    model = SetWithTeacher(teacher, 8000, **{k: v for k, v in TINY.items() if k not in ("embed_dim", "sample_rate")})
    batch = task.collate(items[:4])
    loss, logs = task.training_step(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and set(logs) == {"cos_dist", "presence_bce", "presence_acc"}
    assert model.predictor.queries.grad is not None
    assert bool(model.mean_initialised) and model.teacher_mean.abs().sum() > 0  # running mean of the targets
    # Corpus clustering: perfectly separated embeddings score 1, shuffled labels about 0.
    e = [F.one_hot(torch.tensor(i % 3), 3).float() + 0.01 * torch.randn(3) for i in range(12)]
    good = clustering_metrics(e, [i % 3 for i in range(12)])
    assert good["ari"] == 1.0 and good["nmi"] == pytest.approx(1.0) and good["silhouette"] > 0.9
    with pytest.raises(Exception, match="teacher_ckpt"):
        task.build_model()


def test_librimix_sets_read_speakers_from_the_ids(tmp_path):
    import csv

    from sepkit.data import write_audio
    from sepkit.data.speakers import LibriMixSets

    roots = []
    for ids in (["19-198-0001_26-495-0000", "26-495-0001_32-21631-0002"], ["19-198-0003_26-495-0004_32-21631-0005"]):
        n = len(ids[0].split("_"))
        root = tmp_path / f"Libri{n}Mix"
        rows = []
        for mid in ids:
            srcs = [write_audio(root / "dev" / f"s{j + 1}" / f"{mid}.wav", torch.randn(800) * 0.1, 8000) for j in range(n)]
            mix = write_audio(root / "dev" / "mix_clean" / f"{mid}.wav", torch.randn(800) * 0.1, 8000)
            rows.append([mid, str(mix.relative_to(root)), *[str(s.relative_to(root)) for s in srcs], 800])
        (root / "metadata").mkdir(parents=True)
        with open(root / "metadata" / "mixture_dev_mix_clean.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["mixture_ID", "mixture_path", *[f"source_{j + 1}_path" for j in range(n)], "length"])
            w.writerows(rows)
        roots.append(str(root))
    ds = LibriMixSets(roots, "dev", 3, sample_rate=8000)
    assert len(ds) == 3 and ds.vocab == {"19": 0, "26": 1, "32": 2}
    assert ds[0]["speakers"].tolist() == [0, 1, -1] and int(ds[0]["n_speakers"]) == 2
    assert ds[1]["speakers"].tolist() == [1, 2, -1]
    assert ds[2]["speakers"].tolist() == [0, 1, 2] and ds[2]["sources"].shape == (3, 800)
