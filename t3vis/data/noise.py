"""Synthetic label noise, so that mislabel detection (data maps, loss ranking) can be scored against the truth."""

from __future__ import annotations

import numpy as np

from ..errors import DatasetError
from .dataset import SPLITS, TextDataset


def inject_label_noise(
    ds: TextDataset,
    fraction: float,
    seed: int = 0,
    splits: tuple[str, ...] = ("train",),
) -> TextDataset:
    """Flip exactly ``round(fraction * n)`` (Python's round) labels of the ``n`` rows in ``splits``, each to a
    different class chosen uniformly; adds ``flipped`` (bool) and ``original_label`` (the true label) to every row.

    Deterministic for a seed (one ``numpy`` Generator; rows in frame order). Start from a clean dataset: noise
    on top of noise would lose the true labels.
    """
    if not 0 <= fraction <= 1:
        raise DatasetError(f"fraction={fraction!r}: expected a number between 0 and 1")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        raise DatasetError(f"splits={tuple(splits)!r}: expected a non-empty subset of {SPLITS}")
    if ds.has_noise:
        raise DatasetError(f"{ds.name}: already has injected label noise (columns flipped, original_label); "
                           "expected a clean dataset")
    frame = ds.frame
    eligible = np.flatnonzero(frame["split"].isin(list(splits)).to_numpy())
    n_flip = round(fraction * len(eligible))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(eligible, size=n_flip, replace=False))
    original = frame["label"].to_numpy(dtype=np.int64)
    labels = original.copy()
    # Adding 1..K-1 (mod K) reaches every other class with equal probability and never the same one.
    labels[chosen] = (original[chosen] + rng.integers(1, ds.n_classes, size=n_flip)) % ds.n_classes
    out = frame.copy()
    out["label"] = labels
    out["flipped"] = labels != original
    out["original_label"] = original
    step = f"inject_label_noise(fraction={fraction}, seed={seed}, splits={tuple(splits)!r})"
    return ds.with_frame(out, step)
