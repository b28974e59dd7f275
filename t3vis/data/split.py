"""A deterministic, stratified train/validation split.

Determinism: the only randomness is one ``numpy.random.Generator`` seeded with ``seed`` (never Python's ``hash``,
which is salted per process), and rows are visited in frame order, so a seed gives the same split in any process.
"""

from __future__ import annotations

import numpy as np

from ..errors import DatasetError
from .dataset import TextDataset


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder): each share is the floor or
    ceiling of its exact value and the shares sum to ``total``. Ties go to the earlier entry."""
    exact = total * weights / weights.sum()
    shares = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - shares), kind="stable")
    shares[order[: total - shares.sum()]] += 1
    return shares


def split_train_validation(
    ds: TextDataset,
    validation_fraction: float = 0.2,
    seed: int = 0,
    stratify: bool = True,
    overwrite: bool = False,
) -> TextDataset:
    """Put ``round(validation_fraction * n)`` rows (Python's round: ties to even) in ``validation``, the rest in
    ``train``.

    Stratified (default): every class gets the floor or ceiling of its exact share, so class proportions match
    within one example. A dataset that already has validation rows (e.g. from its file) is returned unchanged
    unless ``overwrite=True``.
    """
    n_validation = validation_count(ds, validation_fraction, overwrite, "examples")
    if n_validation is None:
        return ds
    frame, n = ds.frame, len(ds.frame)
    rng = np.random.default_rng(seed)
    labels = frame["label"].to_numpy()
    is_validation = np.zeros(n, dtype=bool)
    if stratify:
        counts = np.bincount(labels, minlength=ds.n_classes)
        shares = apportion(n_validation, counts.astype(float))
        for label in range(ds.n_classes):
            rows = np.flatnonzero(labels == label)
            is_validation[rng.permutation(rows)[: shares[label]]] = True
    else:
        is_validation[rng.permutation(n)[:n_validation]] = True
    out = frame.copy()
    out["split"] = np.where(is_validation, "validation", "train")
    out["split"] = out["split"].astype(str)
    step = (f"split_train_validation(validation_fraction={validation_fraction}, seed={seed}, "
            f"stratify={stratify})")
    return ds.with_frame(out, step)


def validation_count(ds, validation_fraction: float, overwrite: bool, rows: str) -> int | None:
    """How many ``rows`` (examples, sentences) of ``ds`` a split puts in validation, or None when ``ds`` already
    has validation rows and ``overwrite`` is off (they are kept); a clear error for a fraction that empties a split."""
    if not 0 < validation_fraction < 1:
        raise DatasetError(f"validation_fraction={validation_fraction!r}: expected a number between 0 and 1")
    frame = ds.frame
    if (frame["split"] == "validation").any() and not overwrite:
        return None
    n = len(frame)
    n_validation = round(validation_fraction * n)
    if not 0 < n_validation < n:
        raise DatasetError(f"{ds.name}: validation_fraction={validation_fraction} of {n} {rows} leaves a split "
                           f"empty; expected more {rows} or another fraction")
    return n_validation
