"""Clustering metrics for speaker embeddings, and the k-means baseline.

* :func:`adjusted_rand_index` - ARI (Hubert and Arabie 1985): the Rand index corrected for
  chance, 1 for identical partitions, about 0 for independent ones.
* :func:`normalized_mutual_info` - NMI with the arithmetic-mean normaliser
  ``I(U; V) / ((H(U) + H(V)) / 2)`` (natural logarithms; 1 when both partitions are a single
  cluster).
* :func:`silhouette_score` - mean silhouette ``(b - a) / max(a, b)`` over samples, with
  Euclidean or cosine distances; samples alone in their cluster count 0.
* :func:`kmeans` - Lloyd's k-means with k-means++ seeding, deterministic given ``seed``.

Labels are any hashable values (ints, strings) in a sequence or a 1-D tensor / array; the
embeddings an (N, D) tensor or array. Results are Python floats.
"""
from __future__ import annotations

import numpy as np
import torch

from sepkit.errors import InputError

__all__ = ["adjusted_rand_index", "normalized_mutual_info", "silhouette_score", "kmeans", "contingency"]


def _labels(name: str, labels) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    arr = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must be a non-empty 1-D sequence of labels, got shape {arr.shape}")
    _, codes = np.unique(arr, return_inverse=True)
    return codes.reshape(-1)


def contingency(labels_true, labels_pred) -> np.ndarray:
    """(n_true_classes, n_pred_clusters) table of co-occurrence counts."""
    a, b = _labels("labels_true", labels_true), _labels("labels_pred", labels_pred)
    if a.shape != b.shape:
        raise InputError(f"labels_true and labels_pred must have the same length, got {a.size} and {b.size}")
    table = np.zeros((a.max() + 1, b.max() + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    return table


def _comb2(x):
    x = np.asarray(x, dtype=np.float64)
    return x * (x - 1) / 2


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """Adjusted Rand index of two partitions of the same N items."""
    table = contingency(labels_true, labels_pred)
    n = table.sum()
    index = _comb2(table).sum()
    rows, cols = _comb2(table.sum(1)).sum(), _comb2(table.sum(0)).sum()
    total = _comb2(n)
    expected = rows * cols / total if total > 0 else 0.0
    maximum = (rows + cols) / 2
    if maximum == expected:  # both partitions trivial (one cluster, or all singletons, alike)
        return 1.0
    return float((index - expected) / (maximum - expected))


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(labels_true, labels_pred) -> float:
    """Normalised mutual information (arithmetic-mean normaliser)."""
    table = contingency(labels_true, labels_pred).astype(np.float64)
    n = table.sum()
    h_true, h_pred = _entropy(table.sum(1)), _entropy(table.sum(0))
    if h_true == 0.0 and h_pred == 0.0:
        return 1.0
    nz = table > 0
    pij = table[nz] / n
    outer = np.outer(table.sum(1), table.sum(0))[nz] / (n * n)
    mi = float((pij * (np.log(pij) - np.log(outer))).sum())
    denom = (h_true + h_pred) / 2
    return float(max(mi, 0.0) / denom) if denom > 0 else 0.0


def _embeddings(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise InputError(f"embeddings must be an (N, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("embeddings contain NaN or Inf")
    return x


def _distances(x: np.ndarray, metric: str) -> np.ndarray:
    if metric == "euclidean":
        sq = (x * x).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
        np.fill_diagonal(d2, 0.0)
        return np.sqrt(d2)
    if metric == "cosine":
        u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        d = np.clip(1.0 - u @ u.T, 0.0, 2.0)
        np.fill_diagonal(d, 0.0)
        return d
    raise InputError(f"silhouette_score: metric must be 'euclidean' or 'cosine', got {metric!r}")


def silhouette_score(embeddings, labels, metric: str = "euclidean") -> float:
    """Mean silhouette coefficient of (N, D) ``embeddings`` clustered by ``labels`` (N,).

    Needs 2 <= number of clusters <= N - 1 (ValueError otherwise). O(N^2) memory.
    """
    x = _embeddings(embeddings)
    codes = _labels("labels", labels)
    if codes.size != x.shape[0]:
        raise InputError(f"silhouette_score: {x.shape[0]} embeddings but {codes.size} labels")
    k = codes.max() + 1
    if not 2 <= k <= x.shape[0] - 1:
        raise InputError(f"silhouette_score: needs 2 <= clusters <= N - 1, got {k} clusters for N = {x.shape[0]}")
    d = _distances(x, metric)
    onehot = np.eye(k)[codes]  # (N, k)
    sums = d @ onehot  # (N, k) summed distances to each cluster
    sizes = onehot.sum(0)
    own = sizes[codes]
    a = sums[np.arange(len(codes)), codes] / np.maximum(own - 1, 1)
    other = sums / sizes[None, :]
    other[np.arange(len(codes)), codes] = np.inf
    b = other.min(1)
    s = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(s.mean())


def kmeans(embeddings, n_clusters: int, n_init: int = 4, max_iter: int = 100, seed: int = 0,
           normalize: bool = False) -> np.ndarray:
    """Cluster (N, D) ``embeddings`` into ``n_clusters`` by k-means (k-means++ seeding, ``n_init``
    restarts, the lowest inertia kept). ``normalize`` L2-normalises the rows first (spherical
    k-means on cosine geometry). Returns (N,) int64 labels; deterministic given ``seed``."""
    x = _embeddings(embeddings)
    n = x.shape[0]
    if not 1 <= n_clusters <= n:
        raise InputError(f"kmeans: n_clusters must be in [1, N = {n}], got {n_clusters}")
    if normalize:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(max(1, n_init)):
        centres = [x[rng.integers(n)]]
        for _ in range(1, n_clusters):
            d2 = ((x[:, None, :] - np.stack(centres)[None]) ** 2).sum(-1).min(1)
            total = d2.sum()
            centres.append(x[rng.choice(n, p=d2 / total)] if total > 0 else x[rng.integers(n)])
        c = np.stack(centres)
        labels = np.zeros(n, dtype=np.int64)
        for it in range(max_iter):
            d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
            new = d2.argmin(1)
            if it and np.array_equal(new, labels):
                break
            labels = new
            for j in range(n_clusters):
                members = x[labels == j]
                if len(members):
                    c[j] = members.mean(0)
        inertia = ((x - c[labels]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = labels.copy(), inertia
    return best
