"""Synthetic label noise, so that mislabel detection (data maps, loss ranking) can be scored against the truth."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..errors import DatasetError
from .dataset import SPLITS, TextDataset
from .tagging import TaggedDataset


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


def inject_mention_noise(
    ds: TaggedDataset,
    fraction: float,
    seed: int = 0,
    splits: tuple[str, ...] = ("train",),
    boundary_fraction: float = 0.0,
) -> TaggedDataset:
    """Flip exactly ``round(fraction * m)`` (Python's round) of the ``m`` entity mentions in ``splits`` to another
    entity type chosen uniformly: every word of the mention, ``B-``/``I-`` kept. Adds per-word ``flipped`` and
    ``original_tags`` (the true tags) to every sentence.

    ``boundary_fraction``: ``round(boundary_fraction * flips)`` of the flipped mentions also get one boundary moved
    by one word, chosen uniformly among the moves that keep a valid BIO sequence and touch no other mention: grow
    into an untouched ``O`` word just before or after it, or (two words or more) drop its first or last word to
    ``O``. Flipped mentions are tried in random order and one with no such move is passed over; if too few can
    move, ``DatasetError``. The type flips do not depend on ``boundary_fraction``.

    Deterministic for a seed (one ``numpy`` Generator; mentions in frame order). Start from a clean dataset: noise
    on top of noise would lose the true tags.
    """
    for arg, value in (("fraction", fraction), ("boundary_fraction", boundary_fraction)):
        if not 0 <= value <= 1:
            raise DatasetError(f"{arg}={value!r}: expected a number between 0 and 1")
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown or not splits:
        raise DatasetError(f"splits={tuple(splits)!r}: expected a non-empty subset of {SPLITS}")
    if ds.has_noise:
        raise DatasetError(f"{ds.name}: already has injected tag noise (columns flipped, original_tags); "
                           "expected a clean dataset")
    frame, types = ds.frame, ds.entity_types
    eligible = frame["split"].isin(list(splits)).to_numpy()
    candidates = [(row, start, end, kind) for row, spans in enumerate(ds.sentence_mentions())
                  if eligible[row] for start, end, kind in spans]
    n_flip = round(fraction * len(candidates))
    if n_flip and len(types) < 2:
        raise DatasetError(f"{ds.name}: a single entity type {types}: no other type to flip a mention to; "
                           "expected at least 2 entity types")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(candidates), size=n_flip, replace=False))
    shifts = rng.integers(1, max(len(types), 2), size=n_flip)  # + 1..K-1 (mod K): every other type, equally
    ids = {name: i for i, name in enumerate(ds.tag_names)}
    original = [list(map(int, tags)) for tags in frame["tags"]]
    tags = [list(t) for t in original]
    flipped = []
    for c, shift in zip(chosen, shifts):
        row, start, end, kind = candidates[c]
        new = types[(types.index(kind) + int(shift)) % len(types)]
        _write_mention(tags[row], start, end, new, ids)
        flipped.append((row, start, end, new))
    n_moves = round(boundary_fraction * n_flip)
    moved = 0
    for k in rng.permutation(n_flip):
        if moved == n_moves:
            break
        row, start, end, new = flipped[k]
        moves = _boundary_moves(tags[row], original[row], start, end, ids["O"])
        if moves:
            new_start, new_end = moves[rng.integers(len(moves))]
            lo, hi = min(start, new_start), max(end, new_end)
            tags[row][lo:hi] = [ids["O"]] * (hi - lo)
            _write_mention(tags[row], new_start, new_end, new, ids)
            moved += 1
    if moved < n_moves:
        raise DatasetError(f"boundary_fraction={boundary_fraction}: only {moved} of the {n_flip} flipped mentions "
                           f"can have a boundary moved, fewer than {n_moves}; expected a lower boundary_fraction")
    out = frame.copy()
    out["tags"] = tags
    out["flipped"] = [[t != o for t, o in zip(new_tags, old)] for new_tags, old in zip(tags, original)]
    out["original_tags"] = original
    step = (f"inject_mention_noise(fraction={fraction}, seed={seed}, splits={tuple(splits)!r}, "
            f"boundary_fraction={boundary_fraction})")
    return ds.with_frame(out, step)


def _write_mention(tags: list[int], start: int, end: int, kind: str, ids: Mapping[str, int]) -> None:
    """Tag words ``start:end`` as one ``kind`` mention (B- then I-), in place."""
    for name in (f"B-{kind}", f"I-{kind}"):
        if name not in ids:
            raise DatasetError(f"tag {name!r} is not among the tag names {list(ids)}; expected B- and I- tags of "
                               "every entity type")
    tags[start:end] = [ids[f"B-{kind}"]] + [ids[f"I-{kind}"]] * (end - start - 1)


def _boundary_moves(tags: list[int], original: list[int], start: int, end: int, outside: int
                    ) -> list[tuple[int, int]]:
    """The spans a mention ``start:end`` may move to by one boundary and one word, keeping every other word: grow
    into an ``O`` word noise has not touched, or shrink a mention of two words or more."""
    def free(i: int) -> bool:
        return 0 <= i < len(tags) and tags[i] == outside and original[i] == outside

    moves = [(start - 1, end)] if free(start - 1) else []
    moves += [(start, end + 1)] if free(end) else []
    moves += [(start + 1, end), (start, end - 1)] if end - start >= 2 else []
    return moves
