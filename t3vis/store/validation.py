"""Check a run store for damage and against the schema, and say exactly what is wrong, path by path.

In order: every ``zarr.json`` below the store parses as Zarr v3 metadata (a bad file is named; nothing below it is
read); every chunk of every array's chunk grid is stored; with ``deep``, every chunk matches its checksum and
decodes; then, if the metadata is sound, the schema (attributes, shapes, dtypes, label and category codes, weights).
Never raises: an exception in the checks is itself reported.

Long file: it is one checklist, every check beside the layout rule it enforces (``schema.py``), read top to bottom.
"""

from __future__ import annotations

import itertools
import json
import os
import posixpath
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.core.metadata.v3 import ArrayV3Metadata

from ..errors import StoreError
from . import schema
from .integrity import METADATA, ChunkError, is_checked
from .location import Location

#: Chunk keys named per problem before the rest are counted.
SHOW_CHUNKS = 5
#: Decoded bytes a deep check reads at once.
DEEP_READ_BYTES = 64 << 20
UNCHECKED_RUN = ("schema version 1: chunks carry no checksums and chunks equal to the fill value were not stored, so "
                 "a missing chunk cannot be told from an empty one and an altered chunk may decode; arrays written "
                 "since (they end in crc32c) are checked. Re-create the run with this t3vis to check all of it")


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class Report(list):
    """The problems found (a list of ``Problem``; empty when the run is valid), and ``notes``: what could not be
    checked (arrays of a schema 1 run), which do not make a run invalid."""

    def __init__(self, problems=(), notes=()):
        super().__init__(problems)
        self.notes: list[str] = list(notes)


def validate(path: "str | Location", *, deep: bool = False, **storage_options) -> Report:
    """Every problem found in the run at ``path`` (empty when valid). Never raises.

    Quick (the default) checks metadata, that every chunk is stored, and the schema; ``deep`` also reads every
    chunk, verifying its checksum and decoding it (``t3vis validate`` measures both in its help).
    """
    from .reader import Run

    report = Report()
    try:
        loc = Location.of(path, **storage_options)
        try:
            run = Run(loc)
        except StoreError as exc:
            return Report([Problem(loc.url, str(exc).removeprefix(f"{loc.url}: "))])
        if not run.checked:
            report.notes.append(UNCHECKED_RUN)
        arrays = _check_metadata(loc, report)
        metadata_sound = not report
        _check_chunks(loc, run, arrays, deep, report)
        if metadata_sound:
            report.extend(_check_schema(run, loc))
        else:
            report.notes.append("schema checks skipped until the metadata above is repaired")
    except Exception as exc:  # noqa: BLE001 - a validator that dies helps nobody: say where it stopped
        report.append(Problem(str(getattr(path, "url", path)), f"validation stopped: {type(exc).__name__}: {exc}"))
    return report


def _check_metadata(loc: Location, report: Report) -> dict[str, tuple[dict, ArrayV3Metadata]]:
    """Parse every node's ``zarr.json`` (walking groups, never chunk directories): array path -> metadata."""
    arrays, todo = {}, [""]
    while todo:
        path = todo.pop()
        where = posixpath.join(schema.STORE_DIR, path).rstrip("/")
        try:
            meta = json.loads(loc.fs.cat_file(loc.path(schema.STORE_DIR, path, METADATA)))
            if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
                raise ValueError("expected a JSON object with zarr_format 3")
            kind = meta.get("node_type")
            if kind == "array":
                arrays[path] = (meta, ArrayV3Metadata.from_dict(meta))
            elif kind != "group":
                raise ValueError(f"node_type {kind!r}, expected 'array' or 'group'")
        except FileNotFoundError:
            report.append(Problem(where, f"directory without {METADATA}: invisible to readers (metadata deleted?)"))
            continue
        except Exception as exc:  # noqa: BLE001 - truncated, not JSON, or not valid Zarr metadata
            report.append(Problem(f"{where}/{METADATA}", f"unreadable ({type(exc).__name__}: {exc})"))
            continue
        if kind == "group":
            entries = loc.fs.ls(loc.path(schema.STORE_DIR, path), detail=True)
            todo += sorted((posixpath.join(path, posixpath.basename(e["name"].rstrip("/")))
                            for e in entries if e["type"] == "directory"), reverse=True)
    return arrays


def _check_chunks(loc: Location, run, arrays: dict[str, tuple[dict, ArrayV3Metadata]], deep: bool,
                  report: Report) -> None:
    """Every chunk of every array's grid is stored; with ``deep`` each also matches its checksum and decodes."""
    store = run.root.store.verifying()
    for path, (meta, md) in sorted(arrays.items()):
        where = posixpath.join(schema.STORE_DIR, path)
        try:
            _check_array_chunks(loc, store, path, meta, md, deep, run.checked, report)
        except Exception as exc:  # noqa: BLE001 - one array's failure must not hide the others
            report.append(Problem(where, f"chunks cannot be checked ({type(exc).__name__}: {exc})"))


def _check_array_chunks(loc: Location, store, path: str, meta: dict, md: ArrayV3Metadata, deep: bool,
                        run_checked: bool, report: Report) -> None:
    """One array: a problem per kind of damage (a note for a schema 1 array's missing chunks: maybe empty)."""
    where = posixpath.join(schema.STORE_DIR, path)
    checked = is_checked(meta)
    if run_checked and not checked:
        report.append(Problem(where, "no crc32c codec at the end of its codec chain (a schema 2 run checksums "
                                     "every array): damage to it cannot be detected"))
    expected = _chunk_grid(md)
    stored = _stored_chunks(loc, path)
    missing = [k for k in expected if k not in stored]
    if missing:
        what = f"chunk {_some(missing)} missing ({len(missing)} of {len(expected)} chunks)"
        if checked:
            report.append(Problem(where, f"{what}: every chunk was written, so the run is damaged"))
        else:
            report.notes.append(f"{where}: {what}: read as the fill value {md.fill_value}; an unchecked array "
                                "did not store chunks equal to it, so this may be intact")
    if deep:
        arr = zarr.open_array(store=store, path=path, mode="r", zarr_format=3)
        bad = _undecodable(arr, {k: c for k, c in expected.items() if k in stored})
        if bad:
            report.append(Problem(where, f"{_some([f'chunk {k} {why}' for k, why in bad], sep='; ')} "
                                         f"({len(bad)} of {len(expected)} chunks)"))


def _chunk_grid(md: ArrayV3Metadata) -> dict[str, tuple[int, ...]]:
    """key -> coordinates of every chunk of the array's regular grid, in order (of a sharded array: every shard)."""
    grid = [-(-s // c) for s, c in zip(md.shape, md.chunk_grid.chunk_shape)]
    return {md.encode_chunk_key(coords): coords for coords in itertools.product(*map(range, grid))}


def _stored_chunks(loc: Location, path: str) -> set[str]:
    """Keys of the chunks stored for array ``path`` (os.walk where local: ~10x faster than fsspec's find)."""
    base = loc.path(schema.STORE_DIR, path)
    top = posixpath.join(base, "c")
    if loc.is_local:
        if os.path.isfile(top):  # a 0-d array's one chunk
            return {"c"}
        return {posixpath.relpath(posixpath.join(d, f), base) for d, _, files in os.walk(top) for f in files}
    return {f.removeprefix(base).lstrip("/") for f in loc.fs.find(top)} if loc.fs.exists(top) else set()


def _undecodable(arr: zarr.Array, chunks: dict[str, tuple[int, ...]]) -> list[tuple[str, str]]:
    """(chunk key, why) for each chunk that fails its checksum (read through a verifying store) or its codecs.

    Reads runs of neighbouring chunks at once (one chunk at a time costs ~1 ms each in zarr's overhead), and a
    failing run again chunk by chunk to name every bad one.
    """
    bad = []
    for run in _runs(arr, chunks):
        try:
            arr.get_block_selection(_block_span(run))
            continue
        except Exception:  # noqa: BLE001 - find which chunk(s)
            pass
        for key, coords in run:
            try:
                arr.get_block_selection(coords)
            except ChunkError as exc:
                bad.append((key, exc.reason))
            except Exception as exc:  # noqa: BLE001 - the codecs refused it
                bad.append((key, f"does not decode ({type(exc).__name__}: {exc})"))
    return bad


def _runs(arr: zarr.Array, chunks: dict[str, tuple[int, ...]], budget: int = DEEP_READ_BYTES):
    """Chunks grouped into runs of consecutive ones along the grid's last axis with more than one chunk."""
    grid = arr.cdata_shape
    axis = max([i for i, g in enumerate(grid) if g > 1], default=0)
    per_run = max(1, budget // max(1, int(np.prod(arr.chunks)) * arr.dtype.itemsize))
    run: list[tuple[str, tuple[int, ...]]] = []
    for key, coords in chunks.items():
        if run:
            last = run[-1][1]
            same_line = coords[:axis] + coords[axis + 1:] == last[:axis] + last[axis + 1:]
            if len(run) >= per_run or not same_line or coords[axis] != last[axis] + 1:
                yield run
                run = []
        run.append((key, coords))
    if run:
        yield run


def _block_span(run: list[tuple[str, tuple[int, ...]]]) -> tuple[slice, ...]:
    first, last = run[0][1], run[-1][1]
    return tuple(slice(a, b + 1) for a, b in zip(first, last))


def _some(items: list[str], sep: str = ", ") -> str:
    shown = sep.join(items[:SHOW_CHUNKS])
    return shown + (f"{sep}and {len(items) - SHOW_CHUNKS} more" if len(items) > SHOW_CHUNKS else "")


def _check_schema(run, loc: Location) -> list[Problem]:
    """Attributes, columns, dynamics, checkpoints and projections against the layout in ``schema``."""
    problems: list[Problem] = []
    add = lambda where, msg: problems.append(Problem(f"{schema.STORE_DIR}/{where}", msg))  # noqa: E731

    attrs = run.attrs
    for key in schema.REQUIRED_ROOT_ATTRS:
        if key not in attrs:
            add("zarr.json", f"missing root attribute '{key}'")
    if problems:
        return problems
    model = attrs["model"]
    for key in schema.REQUIRED_MODEL_ATTRS:
        if key not in model:
            add("zarr.json", f"model attribute '{key}' missing")
    if attrs.get("task", schema.DEFAULT_TASK) not in schema.TASKS:
        add("zarr.json", f"task {attrs['task']!r} is not one this version knows ({', '.join(schema.TASKS)})")
    labels = attrs["label_names"]
    if not isinstance(labels, list) or len(labels) < 2:
        add("zarr.json", f"label_names must be a list of at least 2 names, got {labels!r}")
    if problems:
        return problems
    n = int(attrs["n_examples"])
    sizes = {"n": n, "L": int(model["num_layers"]), "H": int(model["num_heads"]),
             "D": int(model["hidden_size"]), "C": len(labels)}

    # examples ----------------------------------------------------------------------
    if "examples" not in run.root:
        add("examples", "group missing")
        return problems
    ex = run.root["examples"]
    for col in schema.REQUIRED_COLUMNS:
        if col not in ex:
            add(f"examples/{col}", "required column missing")
    for col in ex.array_keys():
        arr = ex[col]
        if arr.shape != (n,):
            add(f"examples/{col}", f"shape {arr.shape}, expected ({n},) (n_examples)")
            continue
        cats = arr.attrs.get("categories")
        if cats is not None and n:
            codes = _intact(arr)
            if codes is not None and (codes.min() < 0 or codes.max() >= len(cats)):
                add(f"examples/{col}", f"category codes outside 0..{len(cats) - 1}")
    for col in schema.TASK_COLUMNS.get(attrs.get("task", schema.DEFAULT_TASK), ()):
        if col not in ex:
            add(f"examples/{col}", f"required column of a {attrs['task']} run missing")
    if attrs.get("task") == "token_classification" and {"sentence", "position"} <= set(ex.array_keys()) and n:
        _check_words(ex, n, add)
    lab = _intact(ex["label"]) if "label" in ex and ex["label"].shape == (n,) and n else None
    if lab is not None:
        if lab.dtype.kind not in "iu":
            add("examples/label", f"dtype {lab.dtype}, expected an integer index into label_names")
        elif lab.min() < 0 or lab.max() >= len(labels):
            add("examples/label", f"values outside 0..{len(labels) - 1} (label_names has {len(labels)})")

    # dynamics ----------------------------------------------------------------------
    if "dynamics" in run.root:
        dyn = run.root["dynamics"]
        for epoch in dyn.group_keys():
            for key, dtype in {**schema.DYNAMICS_ARRAYS, **schema.OPTIONAL_DYNAMICS_ARRAYS}.items():
                where = f"dynamics/{epoch}/{key}"
                if key not in dyn[epoch]:
                    if key in schema.DYNAMICS_ARRAYS:
                        add(where, "missing")
                    continue
                arr = dyn[epoch][key]
                if arr.shape != (n,):
                    add(where, f"shape {arr.shape}, expected ({n},)")
                if np.dtype(arr.dtype).kind != np.dtype(dtype).kind:
                    add(where, f"dtype {arr.dtype}, expected {np.dtype(dtype)}")

    # cross-fit (optional) ----------------------------------------------------------
    if schema.CROSSFIT_GROUP in run.root:
        try:
            _check_crossfit(run.root[schema.CROSSFIT_GROUP], n, sizes["C"], add)
        except StoreError:  # a damaged chunk, reported by the chunk check
            pass

    # checkpoints -------------------------------------------------------------------
    for name in run.checkpoints:
        g = run.root[schema.checkpoint_path(name)]
        for key in ("step", "epoch"):
            if key not in g.attrs:
                add(schema.checkpoint_path(name, "zarr.json"), f"missing attribute '{key}'")
        for arr_name in g.array_keys():
            spec = schema.CHECKPOINT_ARRAYS.get(arr_name)
            if spec is None:
                continue
            template, kind = spec
            arr = g[arr_name]
            expected = schema.expected_shape(template, sizes)
            if len(arr.shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, arr.shape)):
                shown = tuple("m" if e is None else e for e in expected)
                add(schema.checkpoint_path(name, arr_name), f"shape {arr.shape}, expected {shown}")
            if np.dtype(arr.dtype).kind not in (kind if kind != "i" else "iu"):
                add(schema.checkpoint_path(name, arr_name), f"dtype {arr.dtype}, expected kind '{kind}'")
        if "projection" in g:
            for method in g["projection"].group_keys():
                for key in g[f"projection/{method}"].array_keys():
                    arr = g[f"projection/{method}/{key}"]
                    if arr.shape != (n, 2):
                        add(schema.checkpoint_path(name, "projection", method, key),
                            f"shape {arr.shape}, expected ({n}, 2)")
        if schema.NEIGHBOURS_GROUP in g:
            _check_neighbours(g[schema.NEIGHBOURS_GROUP], schema.checkpoint_path(name, schema.NEIGHBOURS_GROUP), sizes,
                              add)
        if g.attrs.get("complete"):
            for arr_name in schema.EXTRACTED_ARRAYS:
                if arr_name not in g:
                    add(schema.checkpoint_path(name), f"marked complete but '{arr_name}' is missing")
        weights = g.attrs.get("weights")
        if weights and not loc.exists(weights):
            problems.append(Problem(f"{weights}", f"weights of checkpoint '{name}' missing"))
    return problems


def _check_words(ex, n: int, add) -> None:
    """A token run's rows are words, sentences in order and words in order: sentence ids never go down and each
    sentence's positions count 0, 1, 2, ..."""
    sentence, position = _intact(ex["sentence"]), _intact(ex["position"])
    if sentence is None or position is None or sentence.shape != (n,) or position.shape != (n,):
        return
    step = np.diff(sentence.astype(np.int64))
    if (step < 0).any():
        add("examples/sentence", f"not in sentence order at row {int(np.flatnonzero(step < 0)[0]) + 1}")
        return
    starts = np.concatenate([[True], step != 0])
    expected = np.arange(n) - np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    wrong = np.flatnonzero(position != expected)
    if len(wrong):
        add("examples/position", f"row {int(wrong[0])}: position {int(position[wrong[0]])}, expected "
                                  f"{int(expected[wrong[0]])} (words in order within their sentence)")


def _check_neighbours(g, where: str, sizes: dict, add) -> None:
    """Each layer's kNN graph: ``ids``/``sims`` of one shape ``[n, K]``, their dtypes, ids naming rows."""
    n = sizes["n"]
    for key in g.group_keys():
        if not key.startswith("layer_") or not key[6:].isdigit() or int(key[6:]) > sizes["L"]:
            add(f"{where}/{key}", f"expected layer_<k> with k in 0..{sizes['L']}")
            continue
        arrays = g[key]
        shapes = set()
        for name, dtype in schema.NEIGHBOURS_ARRAYS.items():
            if name not in arrays:
                add(f"{where}/{key}/{name}", "missing")
                continue
            arr = arrays[name]
            shapes.add(arr.shape)
            if len(arr.shape) != 2 or arr.shape[0] != n:
                add(f"{where}/{key}/{name}", f"shape {arr.shape}, expected ({n}, K)")
            if np.dtype(arr.dtype) != np.dtype(dtype):
                add(f"{where}/{key}/{name}", f"dtype {arr.dtype}, expected {np.dtype(dtype)}")
        if len(shapes) > 1:
            add(f"{where}/{key}", f"ids and sims differ in shape ({sorted(shapes)})")
        elif "ids" in arrays and arrays["ids"].size and np.dtype(arrays["ids"].dtype).kind in "iu":
            ids = _intact(arrays["ids"])
            if ids is not None and (ids.min() < 0 or ids.max() >= n):
                add(f"{where}/{key}/ids", f"row ids outside 0..{n - 1}")


def _check_crossfit(g, n: int, classes: int, add) -> None:
    """Shapes and dtypes; folds in -1..K-1; probabilities that sum to 1 exactly on the cross-fitted rows (a lost
    chunk reads back as zeros, a row never cross-fitted as NaN)."""
    where = schema.CROSSFIT_GROUP
    shapes = {"probs": (n, classes), "fold": (n,)}
    broken = False
    for key, dtype in schema.CROSSFIT_ARRAYS.items():
        if key not in g:
            add(f"{where}/{key}", "missing")
        elif g[key].shape != shapes[key]:
            add(f"{where}/{key}", f"shape {g[key].shape}, expected {shapes[key]}")
        elif np.dtype(g[key].dtype).kind != np.dtype(dtype).kind:
            add(f"{where}/{key}", f"dtype {g[key].dtype}, expected {np.dtype(dtype)}")
        else:
            continue
        broken = True
    if broken:
        return
    folds = int(g.attrs.get("folds", 0))
    for start in range(0, n, schema.COLUMN_CHUNK_ROWS):
        rows = slice(start, min(n, start + schema.COLUMN_CHUNK_ROWS))
        fold, probs = g["fold"][rows], g["probs"][rows].astype(np.float64)
        if fold.size and (fold.min() < -1 or fold.max() >= folds):
            add(f"{where}/fold", f"values outside -1..{folds - 1} (attrs folds={folds})")
            return
        fitted = fold >= 0
        if not np.allclose(probs[fitted].sum(axis=1), 1.0, atol=1e-3) or not np.isnan(probs[~fitted]).all():
            add(f"{where}/probs", f"rows {start}..{rows.stop - 1}: expected probabilities summing to 1 on "
                "cross-fitted rows and NaN elsewhere")
            return


def _intact(arr: zarr.Array) -> np.ndarray | None:
    """All of ``arr``, or None when one of its chunks is damaged (the chunk check reports that)."""
    from .reader import read

    try:
        return read(arr)
    except StoreError:
        return None


def validate_or_raise(path: "str | Location", **storage_options) -> None:
    problems = validate(path, **storage_options)
    if problems:
        raise StoreError("invalid run store:\n" + "\n".join(f"  {p}" for p in problems))
