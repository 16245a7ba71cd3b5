"""Seeded, stratified index splits: pure functions of labels, fraction and seed."""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, take), ``take`` holding ``fraction`` of every class.

    Each class keeps at least one example, so a tiny class never vanishes from training.
    """
    rng = np.random.default_rng(seed)
    keep, take = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_take = min(round(fraction * len(idx)), len(idx) - 1)
        take.append(idx[:n_take])
        keep.append(idx[n_take:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(take))


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` indices with the class proportions of ``labels`` (largest remainders)."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    quota = np.floor(exact).astype(int)
    for i in np.argsort(quota - exact)[: size - quota.sum()]:
        quota[i] += 1
    picked = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked))
