"""Export a run's data map and mislabel scores, one row per example, as CSV or Parquet (by the file's extension);
``t3vis export RUN --what datamap --out FILE`` (``commands.py``) calls ``export``.

Columns: row, [id when it is not the row number], split, text, label, prediction, confidence, variability,
correctness, mislabel_score, every other available ``<name>_score``, and ``flipped``/``original_label`` when the
run injected noise. Names are the explorer table's headers; values come from one source, the recorded dynamics
(``datamaps.datamap_columns``), so they equal ``run_data_map`` and the table exactly. Imports no panel/bokeh.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import StoreError, T3VisError
from .datamaps import MISLABEL_COLUMN, column_description, preference_for, run_columns, run_score_names
from .sentences import sentence_level

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
WHAT = ("datamap", "sentences")
#: Share of a token run's training entity words whose mislabel score counts as suspect in ``sentence_frame``.
SUSPECT_SHARE = 0.10
#: Example columns exported before the dynamics columns, then after them (when the run has them).
LEADING, TRAILING = ("split", "text", "label"), ("flipped", "original_label")
#: A token run's rows are words: which sentence, where in it, and the word in its sentence.
WORD_LEADING = ("split", "sentence", "position", "text", "context", "label")


class ExportError(T3VisError):
    """An export cannot be written (unknown format, existing file, run without dynamics)."""


def datamap_frame(run) -> pd.DataFrame:
    """One row per example (a token run: per word; all splits), label names decoded; ``attrs['mislabel_score']``
    defines the score."""
    columns = run_columns(run)
    if columns is None:
        raise StoreError(f"{run.loc.url}: no training dynamics recorded, so no data map to export (record the run "
                         "with `t3vis train`, `t3vis demo` or the T3VisCallback)")
    names = run.label_names
    out = {"row": np.arange(run.n_examples)}
    ids = run.column("id")
    if not np.array_equal(ids, out["row"]):
        out["id"] = ids
    leading = WORD_LEADING if run.task == "token_classification" else LEADING
    frame = run.examples(columns=[c for c in leading + TRAILING if c in run.columns])
    out.update({c: frame[c] for c in leading if c in frame})
    out["prediction"] = pd.Categorical.from_codes(columns.pop("prediction").astype(np.int64), categories=names)
    out.update(columns)
    out.update({c: frame[c] for c in TRAILING if c in frame})
    table = pd.DataFrame(out)
    for col in ("split", "label", "prediction", "original_label"):  # names, not category codes, in every format
        if col in table:
            table[col] = table[col].astype(str)
    table.attrs[MISLABEL_COLUMN] = column_description(MISLABEL_COLUMN, run_score_names(run), preference_for(run))
    return table


def sentence_frame(run) -> pd.DataFrame:
    """A token run's sentences, one row each, with what its words say (the example level of a word run): the
    sentence, ``n_words``, ``n_entity_words`` (given tag not ``O``), ``least_confident_word`` and its
    ``least_confidence``, ``suspect_words`` (words whose ``mislabel_score`` is in the top ``SUSPECT_SHARE`` of the
    training split's entity words), ``max_mislabel_score``, with noise ``flipped_words``, and the sentence data
    map (``analysis.sentences``: ``sentence_confidence``, ``_variability``, ``_correctness``, ``_wrong_tags``).
    Sorted as stored."""
    if run.task != "token_classification":
        raise ExportError(f"--what sentences: {run.name} is a {run.task} run; sentences exist in token-classification "
                          "runs (use --what datamap)")
    words = datamap_frame(run)
    words["entity"] = words["label"] != "O"
    train_entities = words.loc[(words["split"] == "train") & words["entity"], MISLABEL_COLUMN]
    threshold = train_entities.quantile(1 - SUSPECT_SHARE) if len(train_entities) else np.inf
    words["suspect"] = words["entity"] & (words[MISLABEL_COLUMN] >= threshold)
    # the sentence level from the scores just read (groups in row order = sentences sorted): one weakest word each
    sentences, level = sentence_level(run, {k: words[k].to_numpy() for k in ("confidence", MISLABEL_COLUMN)})
    grouped = words.groupby("sentence", sort=True)
    least = words.loc[sentences.weakest].set_index("sentence")
    out = pd.DataFrame({
        "split": grouped["split"].first(),
        "text": grouped["text"].agg(lambda w: " ".join(map(str, w))),
        "n_words": grouped.size(),
        "n_entity_words": grouped["entity"].sum(),
        "least_confident_word": least["text"],
        "least_confidence": least["confidence"],
        "suspect_words": grouped["suspect"].sum(),
        "max_mislabel_score": grouped[MISLABEL_COLUMN].max(),
    })
    if "flipped" in words:
        out["flipped_words"] = grouped["flipped"].sum()
    first = sentences.starts[:-1]  # the sentence data map, as the explorer's sentence unit shows it
    for col in ("sentence_confidence", "sentence_variability", "sentence_correctness", "sentence_wrong_tags"):
        out[col] = level[col][first]
    out = out.reset_index()
    out.attrs[MISLABEL_COLUMN] = words.attrs[MISLABEL_COLUMN]
    return out


def export(run, what: str, out: "str | os.PathLike", *, overwrite: bool = False) -> pd.DataFrame:
    """Write ``what`` of ``run`` to ``out`` (format by extension) and return the table written. Atomic: a
    temporary file is renamed into place, so an interrupted export leaves no half-written file; an existing file
    is only replaced with ``overwrite``."""
    out = Path(out)
    fmt = FORMATS.get(out.suffix.lower())
    if what not in WHAT:
        raise ExportError(f"--what {what!r}: expected one of {list(WHAT)}")
    if fmt is None:
        raise ExportError(f"{out}: unknown format {out.suffix!r}; expected a file ending in one of {sorted(FORMATS)}")
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: already exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent}: no such directory; expected an existing directory for the output file")
    table = sentence_frame(run) if what == "sentences" else datamap_frame(run)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if fmt == "csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return table
