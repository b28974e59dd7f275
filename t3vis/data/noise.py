"""Synthetic label noise, so that mislabel detection (data maps, loss ranking) can be scored against the truth."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import DatasetError
from .dataset import SPLITS, TextDataset


def inject_label_noise(
    ds: TextDataset,
    fraction: float,
    seed: int = 0,
    splits: tuple[str, ...] = ("train",),
    targets: Mapping[str, str | Sequence[str]] | None = None,
) -> TextDataset:
    """Flip exactly ``round(fraction * n)`` (Python's round) labels of the ``n`` rows in ``splits``, each to a
    different class chosen uniformly; adds ``flipped`` (bool) and ``original_label`` (the true label) to every row.

    ``targets`` makes the noise class-conditional, as real annotation errors are (business read as tech, not as
    sport): class name -> the class, or list of classes, its flips go to (uniformly); only rows of classes named
    there are flipped, still ``round(fraction * n)`` of them.

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
    original = frame["label"].to_numpy(dtype=np.int64)
    eligible = np.flatnonzero(frame["split"].isin(list(splits)).to_numpy())
    n_flip = round(fraction * len(eligible))
    choices = None if targets is None else _target_ids(ds, targets)
    if choices is not None:
        eligible = eligible[np.isin(original[eligible], list(choices))]
        if n_flip > len(eligible):
            raise DatasetError(f"targets: only {len(eligible)} rows of the classes {sorted(targets)} to flip, "
                               f"fewer than {n_flip} (fraction={fraction}); expected more classes or a lower fraction")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(eligible, size=n_flip, replace=False))
    labels = original.copy()
    if choices is None:
        # Adding 1..K-1 (mod K) reaches every other class with equal probability and never the same one.
        labels[chosen] = (original[chosen] + rng.integers(1, ds.n_classes, size=n_flip)) % ds.n_classes
    else:
        picks = rng.random(n_flip)
        labels[chosen] = [choices[c][int(u * len(choices[c]))] for c, u in zip(original[chosen], picks)]
    out = frame.copy()
    out["label"] = labels
    out["flipped"] = labels != original
    out["original_label"] = original
    step = f"inject_label_noise(fraction={fraction}, seed={seed}, splits={tuple(splits)!r}"
    step += f", targets={dict(targets)!r})" if targets is not None else ")"
    return ds.with_frame(out, step)


def _target_ids(ds: TextDataset, targets: Mapping[str, str | Sequence[str]]) -> dict[int, list[int]]:
    """class id -> the class ids its flips go to, checked against the dataset's names."""
    position = {name: i for i, name in enumerate(ds.label_names)}
    out: dict[int, list[int]] = {}
    for source, dest in dict(targets).items():
        dest = [dest] if isinstance(dest, str) else list(dest)
        for name in [source, *dest]:
            if name not in position:
                raise DatasetError(f"targets: {name!r} is not a class of {ds.name}; expected names among "
                                   f"{ds.label_names}")
        if not dest or source in dest:
            raise DatasetError(f"targets[{source!r}] = {dest!r}: expected one or more other classes")
        out[position[source]] = [position[name] for name in dest]
    if not out:
        raise DatasetError("targets: empty; expected class name -> class(es) its flips go to")
    return out
