"""The columns a run's views need, loaded once per process and shared read-only by every session.

A session holds only masks and its own page of rows; the arrays here (tens to hundreds of MB at 10M examples)
exist once per process. Every cached array is made read-only, so a view that tried to modify one would fail
loudly instead of corrupting the other sessions. Text is never loaded whole: pages read the chunks they need.

Imports no panel/bokeh: benchmarks and tests use it directly.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..analysis.datamaps import (
    MISLABEL_COLUMN,
    available_scores,
    column_description,
    preference_for,
    run_columns,
    run_score_names,
)
from ..analysis.sentences import SENTENCE_COLUMNS, Sentences, sentence_level
from ..errors import StoreError
from ..store import Run

CATEGORICAL, CONTINUOUS = "categorical", "continuous"
#: Where an attribute's values come from: per example, per checkpoint, derived from training dynamics, or (a token
#: run's) the word's sentence.
EXAMPLES, CHECKPOINT, DYNAMICS, SENTENCES = "examples", "checkpoint", "dynamics", "sentences"
#: Per-checkpoint arrays shown as attributes, with their display names.
CHECKPOINT_ATTRIBUTES = {"pred": "prediction", "loss": "loss", "gold_prob": "gold-label probability",
                         "length": "length (tokens)"}
#: Derived from ``run.dynamics()`` (and the task's row inputs) by ``datamaps.run_columns`` (then every available
#: ``<name>_score``); the names are the export's columns and the table's headers.
DYNAMICS_ATTRIBUTES = {"prediction": "prediction (last epoch)", "confidence": "confidence",
                       "variability": "variability", "correctness": "correctness", MISLABEL_COLUMN: "mislabel score"}
#: Where an attribute's values come from, said in its description (tooltips, legends).
SOURCE_NOTES = {DYNAMICS: "Source: the recorded training dynamics.",
                CHECKPOINT: "Source: the pipeline's extraction of the chosen checkpoint.",
                SENTENCES: "Every word holds its sentence's value (source: the recorded training dynamics)."}
FLAG_CATEGORIES = ("no", "yes")
#: Table text is cut to this many characters (the instance view shows the whole text).
TEXT_PREVIEW_CHARS = 160
#: Decoded text chunks kept per process (bytes, roughly). Override with $T3VIS_TEXT_CACHE_MB.
TEXT_CACHE_BYTES = int(float(os.environ.get("T3VIS_TEXT_CACHE_MB", "256")) * 2**20)


@dataclass(frozen=True)
class Attribute:
    """A per-example value a view can colour by, filter on or show in the table."""

    name: str
    label: str
    kind: str  # CATEGORICAL or CONTINUOUS
    source: str  # EXAMPLES, CHECKPOINT or DYNAMICS
    categories: tuple[str, ...] | None = None
    #: What it is and where it comes from, as plain text (header tooltips, colour legends); may be empty.
    description: str = ""


#: The data maps' titles and axis labels: of the rows, and of a token run's sentences (``analysis.sentences``).
DATAMAPS = {"datamap": ("Data map", ("variability", "confidence")),
            "sentence_map": ("Data map of sentences (each at its weakest word)",
                             ("sentence variability", "sentence confidence"))}


@dataclass(frozen=True)
class PlotSpec:
    """What one scatter plot shows: a projection of a checkpoint's layer, or the data map."""

    kind: str  # "projection" or "datamap"
    checkpoint: str | None = None
    method: str | None = None
    layer: int | None = None

    @classmethod
    def datamap(cls, unit: str = "words") -> "PlotSpec":
        """The data map of the run's rows, or (``unit="sentences"``, a token run) of its sentences."""
        return cls("sentence_map" if unit == "sentences" else "datamap")

    @property
    def is_datamap(self) -> bool:
        return self.kind in ("datamap", "sentence_map")

    @property
    def title(self) -> str:
        if self.is_datamap:
            return DATAMAPS[self.kind][0]
        return f"{self.method.upper()} of layer {self.layer} · {self.checkpoint}"

    @property
    def axis_labels(self) -> tuple[str, str]:
        if self.is_datamap:
            return DATAMAPS[self.kind][1]
        return f"{self.method} 1", f"{self.method} 2"


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class RunData:
    """Shared, lazily filled, read-only columns of one run (get it with ``run_data``; never mutate)."""

    def __init__(self, run: Run):
        self.run = run
        self.n = run.n_examples
        self.label_names = tuple(run.label_names)
        self._lock = threading.RLock()
        self._values: dict[tuple, np.ndarray] = {}
        self._categoricals: dict[tuple, pd.Categorical] = {}
        self._xy: dict[PlotSpec, tuple[np.ndarray, np.ndarray]] = {}
        self._ranges: dict[tuple, tuple[float, float]] = {}
        self._text = run.rows("text", TEXT_CACHE_BYTES)
        #: other string columns (a word's ``context``): shown in the table, read per page like ``text``
        self._strings = {c: run.rows(c, TEXT_CACHE_BYTES // 4) for c in run.columns
                         if c != "text" and run.column_attrs(c).get("kind") == "string"}
        self.text_columns = tuple(self._strings)
        self.checkpoints = tuple(run.checkpoints)
        # what each checkpoint holds, read once (opening checkpoint groups costs milliseconds each time)
        self._arrays = {c: frozenset(run.checkpoint(c).arrays) for c in self.checkpoints}
        self._projections = {c: tuple(run.checkpoint(c).projections()) for c in self.checkpoints}
        self.has_dynamics = bool(run.epochs())
        #: a token run: its rows are words, which ``sentences`` groups (the explorer's "sentences" unit)
        self.has_sentences = run.task == "token_classification"
        self._sentences: Sentences | None = None
        self.attributes = self._catalogue()

    def __repr__(self) -> str:
        return f"RunData({self.run.loc.url!r}, n={self.n})"

    # ------------------------------------------------------------------ catalogue
    def _catalogue(self) -> dict[str, Attribute]:
        out: dict[str, Attribute] = {}
        first = [c for c in ("label", "split") if c in self.run.columns]
        for col in first + [c for c in self.run.columns if c not in first]:
            attrs = self.run.column_attrs(col)
            kind = attrs.get("kind")
            if kind in ("id", "text", "string"):  # strings are read per page (``rows``), not coloured or filtered
                continue
            if kind == "flag":
                out[col] = Attribute(col, col.replace("_", " "), CATEGORICAL, EXAMPLES, FLAG_CATEGORIES)
            elif attrs.get("categories") is not None:
                out[col] = Attribute(col, col.replace("_", " "), CATEGORICAL, EXAMPLES, tuple(attrs["categories"]))
            else:
                out[col] = Attribute(col, col.replace("_", " "), CONTINUOUS, EXAMPLES)
        arrays = set().union(*self._arrays.values()) if self._arrays else set()
        for key, label in CHECKPOINT_ATTRIBUTES.items():
            if key in arrays and key not in out:
                cats = self.label_names if key == "pred" else None
                out[key] = Attribute(key, label, CATEGORICAL if cats else CONTINUOUS, CHECKPOINT, cats,
                                     f"{key}: {label} at the chosen checkpoint. {SOURCE_NOTES[CHECKPOINT]}")
        if self.has_dynamics:
            recorded = run_score_names(self.run)
            scores = {score.column: score.column.replace("_", " ") for score in available_scores(recorded)}
            labels = {**DYNAMICS_ATTRIBUTES, **scores}
            for key, label in labels.items():
                cats = self.label_names if key == "prediction" else None
                out[key] = Attribute(key, label, CATEGORICAL if cats else CONTINUOUS, DYNAMICS, cats,
                                     f"{column_description(key, recorded, preference_for(self.run))} "
                                     f"{SOURCE_NOTES[DYNAMICS]}")
        if self.has_sentences:
            for key, definition in SENTENCE_COLUMNS.items():
                if self.has_dynamics or key == "sentence_words":
                    out[key] = Attribute(key, key.replace("_", " "), CONTINUOUS, SENTENCES,
                                         description=f"{key}: {definition} {SOURCE_NOTES[SENTENCES]}")
        return out

    def attribute(self, name: str) -> Attribute:
        try:
            return self.attributes[name]
        except KeyError:
            raise StoreError(f"{self.run.loc.url}: no attribute '{name}' (have {sorted(self.attributes)})") from None

    # ------------------------------------------------------------------ values
    def values(self, name: str, checkpoint: str | None = None) -> np.ndarray:
        """One attribute for every example: category codes for categorical ones, floats/ints otherwise.

        ``checkpoint`` matters only for per-checkpoint attributes (loss, prediction, ...); it defaults to the last
        checkpoint that has the array.
        """
        attr = self.attribute(name)
        key = (name, self._checkpoint_for(attr, checkpoint))
        got = self._values.get(key)
        if got is None:
            with self._lock:
                got = self._values.get(key)
                if got is None:
                    got = self._load(attr, key[1])
                    self._values[key] = got
        return got

    def _checkpoint_for(self, attr: Attribute, checkpoint: str | None) -> str | None:
        if attr.source != CHECKPOINT:
            return None
        having = [c for c in self.checkpoints if attr.name in self._arrays[c]]
        if checkpoint in having:
            return checkpoint
        if not having:
            raise StoreError(f"{self.run.loc.url}: no checkpoint has '{attr.name}' (run `t3vis pipeline`)")
        return having[-1]

    def _load(self, attr: Attribute, checkpoint: str | None) -> np.ndarray:
        if attr.source == EXAMPLES:
            values = self.run.column(attr.name)
            if values.dtype == np.bool_:
                values = values.view(np.int8)
        elif attr.source == CHECKPOINT:
            values = self.run.checkpoint(checkpoint).read(attr.name)
        elif attr.source == SENTENCES:
            self._load_sentences()
            return self._values[(attr.name, None)]
        else:
            self._load_dynamics()
            return self._values[(attr.name, None)]
        if values.shape != (self.n,):
            raise StoreError(f"{self.run.loc.url}: '{attr.name}' has shape {values.shape}, expected ({self.n},)")
        return _readonly(np.ascontiguousarray(values))

    def _load_dynamics(self) -> None:
        """The data map and mislabel scores (the library's ``run_columns``), computed once per run per process."""
        for key, values in run_columns(self.run).items():
            dtype = np.int16 if key == "prediction" else np.float32
            self._values[(key, None)] = _readonly(np.ascontiguousarray(values, dtype=dtype))

    def _load_sentences(self) -> None:
        """A token run's sentences and their per-word columns (``analysis.sentences``), once per run per process."""
        words = {k: self.values(k) for k in ("confidence", MISLABEL_COLUMN)} if self.has_dynamics else None
        sentences, columns = sentence_level(self.run, words)
        if columns is None:
            columns = {"sentence_words": sentences.per_word(sentences.sizes.astype(np.int32))}
        for key, values in columns.items():
            self._values[(key, None)] = _readonly(np.ascontiguousarray(values))
        self._sentences = sentences

    @property
    def sentences(self) -> Sentences:
        """Where a token run's sentences lie among its word rows (``StoreError`` for other runs)."""
        if not self.has_sentences:
            raise StoreError(f"{self.run.loc.url}: a {self.run.task} run has no sentences (its rows are examples)")
        if self._sentences is None:
            with self._lock:
                if self._sentences is None:
                    self._load_sentences()
        return self._sentences

    def categorical(self, name: str, checkpoint: str | None = None) -> pd.Categorical:
        """A categorical attribute as a shared ``pd.Categorical`` (what datashader's ``count_cat`` needs)."""
        attr = self.attribute(name)
        key = (name, self._checkpoint_for(attr, checkpoint))
        got = self._categoricals.get(key)
        if got is None:
            codes = self.values(name, checkpoint)
            k = len(attr.categories)
            codes = codes.astype(np.int8 if k < 127 else np.int32)
            codes[(codes < 0) | (codes >= k)] = -1  # out of range -> missing, not an error in the plot
            got = pd.Categorical.from_codes(codes, categories=list(attr.categories))
            _readonly(got.codes)
            self._categoricals[key] = got
        return got

    def value_range(self, name: str, checkpoint: str | None = None) -> tuple[float, float]:
        """(min, max) over finite values, for sliders and a fixed colour scale."""
        attr = self.attribute(name)
        key = (name, self._checkpoint_for(attr, checkpoint))
        got = self._ranges.get(key)
        if got is None:
            v = self.values(name, checkpoint)
            finite = v[np.isfinite(v)] if v.dtype.kind == "f" else v
            got = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
            self._ranges[key] = got
        return got

    # ------------------------------------------------------------------ coordinates
    def projection_choices(self) -> dict[str, list[tuple[str, int]]]:
        """checkpoint -> available (method, layer) pairs."""
        return {c: list(p) for c, p in self._projections.items()}

    def xy(self, spec: PlotSpec) -> tuple[np.ndarray, np.ndarray]:
        """The plot's coordinates as two contiguous float32 arrays (shared)."""
        got = self._xy.get(spec)
        if got is None:
            with self._lock:
                got = self._xy.get(spec)
                if got is None:
                    got = self._load_xy(spec)
                    self._xy[spec] = got
        return got

    def _load_xy(self, spec: PlotSpec) -> tuple[np.ndarray, np.ndarray]:
        if spec.is_datamap:
            if not self.has_dynamics:
                raise StoreError(f"{self.run.loc.url}: no training dynamics recorded, so no data map "
                                 "(train with the t3vis recorder: `t3vis train` or `t3vis demo`)")
            if spec.kind == "sentence_map":  # every word at its sentence's point
                return self.values("sentence_variability"), self.values("sentence_confidence")
            return self.values("variability"), self.values("confidence")
        if spec.checkpoint not in self.checkpoints:
            raise StoreError(f"{self.run.loc.url}: no checkpoint '{spec.checkpoint}' (have {list(self.checkpoints)})")
        xy = self.run.checkpoint(spec.checkpoint).projection(spec.method, spec.layer)
        if xy.shape != (self.n, 2):
            raise StoreError(f"{self.run.loc.url}: projection {spec.method}/layer {spec.layer} of "
                             f"'{spec.checkpoint}' has shape {xy.shape}, expected ({self.n}, 2)")
        return (_readonly(np.ascontiguousarray(xy[:, 0], dtype=np.float32)),
                _readonly(np.ascontiguousarray(xy[:, 1], dtype=np.float32)))

    def xy_extent(self, spec: PlotSpec) -> tuple[tuple[float, float], tuple[float, float]]:
        """((xmin, xmax), (ymin, ymax)) over finite coordinates, padded a little (the plots' initial view)."""
        key = ("xy", spec)
        got = self._ranges.get(key)
        if got is None:
            out = []
            for v in self.xy(spec):
                lo, hi = (float(np.nanmin(v)), float(np.nanmax(v))) if len(v) else (0.0, 1.0)
                if not np.isfinite(lo) or not np.isfinite(hi):
                    lo, hi = 0.0, 1.0
                pad = (hi - lo) * 0.02 or 0.5
                out.append((lo - pad, hi + pad))
            got = self._ranges[key] = tuple(out)
        return got

    def frame(self, spec: PlotSpec, color: str | None, checkpoint: str | None = None) -> pd.DataFrame:
        """x, y and the colour column as a DataFrame that shares memory with the cache (no copy)."""
        x, y = self.xy(spec)
        data = {"x": x, "y": y}
        if color:
            attr = self.attribute(color)
            data[color] = self.categorical(color, checkpoint) if attr.kind == CATEGORICAL else \
                self.values(color, checkpoint)
        return pd.DataFrame(data, copy=False)

    # ------------------------------------------------------------------ rows
    def text(self, rows: np.ndarray) -> np.ndarray:
        """The texts of ``rows`` (an object array), decoding only their chunks; recent chunks are kept."""
        return self._text(np.asarray(rows, dtype=np.int64)).astype(object)

    def rows(self, rows: np.ndarray, columns: Sequence[str], checkpoint: str | None = None,
             text_chars: int | None = TEXT_PREVIEW_CHARS) -> pd.DataFrame:
        """A small page of rows: ``row`` (the example index), then ``columns`` (``text`` read on demand)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = {}
        for col in columns:
            if col == "text" or col in self._strings:
                text = self.text(rows) if col == "text" else self._strings[col](rows).astype(object)
                out[col] = [_preview(t, text_chars) for t in text] if text_chars else list(text)
                continue
            attr = self.attribute(col)
            if attr.kind == CATEGORICAL:
                out[col] = self.categorical(col, checkpoint).take(rows) if len(rows) else \
                    pd.Categorical([], categories=list(attr.categories))
            else:
                out[col] = self.values(col, checkpoint)[rows]
        return pd.DataFrame(out, index=pd.Index(rows, name="row"))


def _preview(text: str, chars: int) -> str:
    text = str(text)
    return text if len(text) <= chars else text[: chars - 1] + "…"


# ---------------------------------------------------------------------- the process-wide cache
_CACHE: "OrderedDict[tuple, RunData]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
#: Runs kept loaded per process (each holds its columns; a session keeps its own run alive regardless).
CACHE_RUNS = 2


def run_data(run: "Run | str | os.PathLike") -> RunData:
    """The shared ``RunData`` of ``run`` for this process (created on first use)."""
    if not isinstance(run, Run):
        run = Run(os.fspath(run))
    key = run.stamp()
    with _CACHE_LOCK:
        got = _CACHE.get(key)
        if got is not None:
            _CACHE.move_to_end(key)
            return got
    got = RunData(run)
    with _CACHE_LOCK:
        got = _CACHE.setdefault(key, got)
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_RUNS:
            _CACHE.popitem(last=False)
    return got


def clear_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()
