"""Reading a run store lazily: a column, a layer or a page of rows reads only those chunks.

Everything is read through ``integrity.CheckedStore`` and ``rows.read`` / ``rows.RowReader``: a missing or corrupt
chunk, or unreadable metadata, is a ``StoreError`` naming the array (and the chunk), never fill values or a bare
codec error. Run facts that more than one layer needs (the truncation, a checkpoint's weights and extracted logits)
are answered here, once.
"""

from __future__ import annotations

import os
import posixpath
from contextlib import contextmanager
from functools import cached_property
from typing import Any, Sequence

import numpy as np
import pandas as pd
import zarr

from ..errors import SchemaVersionError, StoreError, T3VisError
from . import knn, schema
from .integrity import CheckedStore
from .location import Location
from .records import CrossFit, Dynamics
from .rows import RowReader, read
from .search import TextSearch
from .weights import checked_weights


@contextmanager
def _metadata(where: str, members: bool = False):
    """An unreadable ``zarr.json`` of node ``where`` (or of one of its ``members``, when listing) becomes a
    StoreError; a KeyError (no such node) passes."""
    try:
        yield
    except (KeyError, T3VisError):
        raise
    except Exception as exc:
        what = f"{where}: the metadata of a member" if members else f"{where}/zarr.json"
        raise StoreError(f"{what} cannot be read ({type(exc).__name__}: {exc}); "
                         "`t3vis validate RUN` names every damaged file") from None


def _listdir(path: str) -> list[str]:
    try:
        return sorted(p for p in os.listdir(path) if not p.startswith("."))
    except OSError:
        return []


class Run:
    """A read-only view of one run. Cheap to open; nothing is read until asked for."""

    def __init__(self, path: "str | Location", **storage_options):
        self.loc = Location.of(path, **storage_options)
        if not self.loc.exists():
            raise StoreError(f"{self.loc.url}: run directory does not exist")
        if not self.loc.exists(schema.ROOT_METADATA):
            raise StoreError(f"{self.loc.url}: not a t3vis run (expected {schema.STORE_DIR}/zarr.json)")
        self.where = self.loc.url_of(schema.STORE_DIR)
        try:
            store = CheckedStore(self.loc.zarr_store(schema.STORE_DIR), where=self.where)
            self.root = zarr.open_group(store=store, mode="r", zarr_format=3)
            attrs = dict(self.root.attrs)
        except Exception as exc:  # corrupt metadata
            raise StoreError(f"{self.loc.url}/{schema.STORE_DIR}: cannot be read as a Zarr v3 group ({exc})") from exc
        version = attrs.get("schema_version")
        if version not in schema.READABLE_VERSIONS:
            advice = ("upgrade t3vis" if isinstance(version, int) and version > schema.SCHEMA_VERSION
                      else "re-create the run with this version of t3vis")
            raise SchemaVersionError(
                f"{self.loc.url}: schema_version is {version!r}, this t3vis reads versions "
                f"{', '.join(map(str, schema.READABLE_VERSIONS))} ({advice})")
        self.attrs = attrs

    def _meta(self, path: str, members: bool = False):
        return _metadata(f"{self.where}/{path}", members)

    def __repr__(self) -> str:
        return f"Run({self.loc.url!r}, n={self.n_examples}, checkpoints={self.checkpoints})"

    def stamp(self) -> tuple:
        """The run's path plus modification times of its groups, so that a cache of a run's contents sees a run
        rewritten or extended (new epochs, checkpoints, projections); the path alone for a remote run."""
        key: list = [self.loc.url]
        if self.loc.is_local:
            store = self.loc.path(schema.STORE_DIR)
            parts = ["zarr.json", "dynamics", "checkpoints", "examples"]
            parts += [os.path.join("checkpoints", c, "projection", m) for c in self.checkpoints
                      for m in _listdir(os.path.join(store, "checkpoints", c, "projection"))]
            for part in parts:
                try:
                    key.append(os.stat(os.path.join(store, part)).st_mtime_ns)
                except OSError:
                    key.append(None)
        return tuple(key)

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return self.attrs["name"]

    @property
    def label_names(self) -> list[str]:
        return list(self.attrs["label_names"])

    @property
    def task(self) -> str:
        """The task the run was recorded for (``schema.TASKS``; ``t3vis.tasks.task_of`` gives its ``Task``)."""
        return str(self.attrs.get("task", schema.DEFAULT_TASK))

    @property
    def n_examples(self) -> int:
        return int(self.attrs["n_examples"])

    @property
    def model(self) -> dict:
        return dict(self.attrs["model"])

    @property
    def num_layers(self) -> int:
        return int(self.model["num_layers"])

    @property
    def num_heads(self) -> int:
        return int(self.model["num_heads"])

    @property
    def max_length(self) -> int | None:
        """The truncation (tokens) the run was trained and is analysed with: ``attrs.training.max_length`` (the
        recorder's), else ``model.max_length``; None when neither is recorded."""
        training = self.attrs.get("training") or {}
        value = training.get("max_length") or self.model.get("max_length")
        return int(value) if value else None

    @property
    def checked(self) -> bool:
        """Whether every array of the run has checksums and all its chunks (schema version 2 on)."""
        return self.attrs["schema_version"] >= 2

    # ------------------------------------------------------------------ examples
    @cached_property
    def columns(self) -> list[str]:
        with self._meta("examples", members=True):
            return sorted(self.root["examples"].array_keys())

    def column_attrs(self, name: str) -> dict:
        return dict(self._column_array(name).attrs)

    def _column_array(self, name: str) -> zarr.Array:
        try:
            with self._meta(f"examples/{name}"):
                return self.root[f"examples/{name}"]
        except KeyError:
            raise StoreError(f"{self.loc.url}: no example column '{name}' (have {self.columns})") from None

    def column(self, name: str, rows: "slice | np.ndarray | None" = None) -> np.ndarray:
        """One column (raw values: category codes for categorical columns)."""
        return RowReader(self._column_array(name))(rows)

    def rows(self, name: str, cache_bytes: int) -> RowReader:
        """A reader of column ``name`` that keeps recently read chunks (up to ``cache_bytes``): for callers that
        come back for nearby rows (table pages of text, pipeline tasks sharing a chunk)."""
        return RowReader(self._column_array(name), cache_bytes)

    def categories(self, name: str) -> list[str] | None:
        return self.column_attrs(name).get("categories")

    def examples(self, rows: "slice | np.ndarray | None" = None, columns: Sequence[str] | None = None,
                 decode: bool = True) -> pd.DataFrame:
        """A DataFrame of the given rows/columns; category codes decoded to labels when ``decode``."""
        columns = list(columns) if columns is not None else self.columns
        data = {}
        for col in columns:
            values = self.column(col, rows)
            cats = self.categories(col)
            if decode and cats is not None:
                values = pd.Categorical.from_codes(values.astype(np.int64), categories=cats)
            data[col] = values
        return pd.DataFrame(data)

    def text(self, rows: "slice | np.ndarray | int") -> "str | np.ndarray":
        if isinstance(rows, (int, np.integer)):
            return str(read(self._column_array("text"), int(rows)))
        return self.column("text", rows)

    def search(self, query: str, *, regex: bool = False, case: bool = False, phrase: bool = False) -> np.ndarray:
        """Sorted row ids (int64) of the examples whose text matches ``query``: plain words (all, whole words), a
        ``"quoted phrase"``, or with ``regex`` an RE2 pattern; case-insensitive unless ``case`` (``search.py``; a
        ``search.Query`` from ``search.parse`` is taken as it is).
        An empty query or invalid pattern is a ``QueryError``; the text read stays cached for the next query."""
        return self._text_search.search(query, regex=regex, case=case, phrase=phrase)

    @cached_property
    def _text_search(self) -> TextSearch:
        return TextSearch(RowReader(self._column_array("text")))

    # ------------------------------------------------------------------ dynamics
    def epochs(self) -> list[int]:
        with self._meta("dynamics", members=True):
            return sorted(int(k) for k in self.root["dynamics"].group_keys())

    def dynamics_arrays(self) -> list[str]:
        """Names of the dynamics arrays every recorded epoch has (metadata only; none before the first epoch)."""
        epochs = self.epochs()
        g = self.root["dynamics"]
        with self._meta("dynamics", members=True):
            names = [set(g[str(e)].array_keys()) for e in epochs]
        return sorted(set.intersection(*names)) if names else []

    def dynamics(self) -> Dynamics | None:
        """Stack every recorded epoch; ``None`` when none has been recorded."""
        epochs = self.epochs()
        if not epochs:
            return None
        g = self.root["dynamics"]
        with self._meta("dynamics", members=True):
            stack = {key: np.stack([read(g[f"{e}/{key}"]) for e in epochs]) for key in schema.DYNAMICS_ARRAYS}
            for key in schema.OPTIONAL_DYNAMICS_ARRAYS:  # only when every epoch has it
                if all(key in g[str(e)] for e in epochs):
                    stack[key] = np.stack([read(g[f"{e}/{key}"]) for e in epochs])
        return Dynamics(epochs=np.asarray(epochs), **stack)

    def crossfit(self) -> CrossFit | None:
        """The cross-fitted probabilities, or ``None`` before ``t3vis crossfit``."""
        attrs = self.crossfit_attrs()
        if attrs is None:
            return None
        g = self.root[schema.CROSSFIT_GROUP]
        return CrossFit(probs=read(g["probs"]), fold=read(g["fold"]), attrs=attrs)

    def crossfit_attrs(self) -> dict | None:
        """How the cross-fit was made (folds, seed, ...), or ``None`` before ``t3vis crossfit``; reads no arrays."""
        if schema.CROSSFIT_GROUP not in self.root:
            return None
        return dict(self.root[schema.CROSSFIT_GROUP].attrs)

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoints(self) -> list[str]:
        """Checkpoint names ordered by training step."""
        with self._meta("checkpoints", members=True):
            g = self.root["checkpoints"]
            return sorted(g.group_keys(), key=lambda k: (g[k].attrs.get("step", 0), k))

    def checkpoint(self, name: str) -> "Checkpoint":
        if name not in self.checkpoints:
            raise StoreError(f"{self.loc.url}: no checkpoint '{name}' (have {self.checkpoints})")
        return Checkpoint(self, name)


class Checkpoint:
    """One checkpoint's arrays. Only arrays that were completely written are visible."""

    def __init__(self, run: Run, name: str):
        self.run = run
        self.name = name
        self.path = schema.checkpoint_path(name)
        with run._meta(self.path):
            self.group: zarr.Group = run.root[self.path]
        self.attrs = dict(self.group.attrs)

    def __repr__(self) -> str:
        return f"Checkpoint({self.name!r}, step={self.step}, arrays={self.arrays})"

    @property
    def step(self) -> int:
        return int(self.attrs.get("step", 0))

    @property
    def epoch(self) -> float:
        return float(self.attrs.get("epoch", 0))

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete", False))

    @property
    def weights_path(self) -> str | None:
        """Full path/URL of the weights directory (safetensors + config + tokenizer), if recorded."""
        rel = self.attrs.get("weights")
        return self.run.loc.url_of(rel) if rel else None

    def weights(self) -> str:
        """The weights directory, checked to exist: a ModelError naming the checkpoint, the run and the path if it
        is missing, or saying that none was recorded."""
        return checked_weights(self.weights_path, f"checkpoint '{self.name}' of run '{self.run.name}'")

    @property
    def arrays(self) -> list[str]:
        with self.run._meta(self.path, members=True):
            return sorted(self.group.array_keys())

    def has(self, name: str) -> bool:
        with self.run._meta(f"{self.path}/{name}"):
            return name in self.group

    def array(self, name: str) -> zarr.Array:
        """The lazy zarr array ``name`` (index it to read)."""
        try:
            with self.run._meta(f"{self.path}/{name}"):
                return self.group[name]
        except KeyError:
            raise StoreError(f"checkpoint '{self.name}': '{name}' has not been written yet "
                             f"(have {self.arrays}; run `t3vis pipeline`)") from None

    def read(self, name: str, rows: "slice | np.ndarray | None" = None) -> np.ndarray:
        """Array ``name``, whole or the given rows (first axis; only their chunks are read)."""
        return RowReader(self.array(name))(rows)

    def logits(self, rows: "slice | np.ndarray | None" = None, max_length: int | None = None) -> np.ndarray | None:
        """The extracted logits of ``rows`` (``[len(rows), C]``), or None unless the pipeline extracted them at
        ``max_length`` tokens (default: the run's, ``Run.max_length``): differently truncated inputs differ."""
        recorded = (self.attrs.get("extract") or {}).get("max_length")
        wanted = int(max_length) if max_length else self.run.max_length
        if not self.has("logits") or (int(recorded) if recorded else None) != wanted:
            return None
        return self.read("logits", rows)

    def hidden(self, layer: int, pooling: str = "cls", rows: "slice | np.ndarray | None" = None) -> np.ndarray:
        """Pooled hidden states of one layer ([n, d]); reads that layer's chunks only."""
        if pooling not in schema.POOLINGS:
            raise StoreError(f"pooling '{pooling}': expected one of {schema.POOLINGS}")
        arr = self.array(f"hidden_{pooling}")
        if not 0 <= layer < arr.shape[0]:
            raise StoreError(f"layer {layer}: expected 0..{arr.shape[0] - 1} (0 is the embedding output)")
        if rows is None:
            return read(arr, layer)
        if isinstance(rows, slice):
            return read(arr, (layer, rows))
        return read(arr, (layer, np.asarray(rows), slice(None)))

    # projections ------------------------------------------------------------------
    def projections(self) -> list[tuple[str, int]]:
        """(method, layer) pairs available."""
        with self.run._meta(f"{self.path}/projection", members=True):
            if "projection" not in self.group:
                return []
            g = self.group["projection"]
            return sorted((m, schema.parse_layer_key(k)) for m in g.group_keys() for k in g[m].array_keys())

    def projection(self, method: str, layer: int) -> np.ndarray:
        return read(self._projection(method, layer))

    def projection_attrs(self, method: str, layer: int) -> dict[str, Any]:
        return dict(self._projection(method, layer).attrs)

    def _projection(self, method: str, layer: int) -> zarr.Array:
        key = posixpath.join("projection", method, schema.layer_key(layer))
        with self.run._meta(f"{self.path}/{key}"):
            if key in self.group:
                return self.group[key]
        raise StoreError(f"checkpoint '{self.name}': no {method} projection of layer {layer} "
                         f"(have {self.projections()}; run `t3vis project`)")

    # neighbours -------------------------------------------------------------------
    def neighbours_attrs(self, layer: int) -> dict | None:
        """How the stored kNN graph of ``layer`` was built (pooling, method, k, ...), or None when there is none."""
        return None if (group := self.neighbours_group(layer)) is None else dict(group.attrs)

    def neighbours(self, query: "int | np.ndarray", k: int = 20, layer: int | None = None,
                   pooling: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` examples most cosine-similar to ``query`` (a row, itself left out, or a vector: ``centroid``) in
        ``layer`` (default: the last): (row ids, similarities), best first; the stored graph or exact (``knn.py``)."""
        return knn.neighbours(self, query, k, layer, pooling)

    def centroid(self, rows: np.ndarray, layer: int | None = None, pooling: str | None = None) -> np.ndarray:
        """The mean direction of ``rows`` in ``layer`` (their unit vectors' mean): the query "examples like these"."""
        return knn.centroid(self, rows, layer, pooling)

    def neighbours_group(self, layer: int) -> "zarr.Group | None":
        """The stored kNN graph of ``layer`` (arrays ``ids``, ``sims``), or None."""
        key = posixpath.join(schema.NEIGHBOURS_GROUP, schema.layer_key(layer))
        with self.run._meta(f"{self.path}/{key}"):
            return self.group[key] if key in self.group else None
