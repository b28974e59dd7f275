"""Labels mean the model's labels: align a dataset's class ids with a model's ``config.id2label``.

A model's output k means the class its config names ``id2label[k]``. Data that gives class *names* (strings) is
re-numbered through the model's ``label2id``; data that gives integer *ids* keeps them, and its names (from
``label_names=`` or a ``ClassLabel``) must then agree with the model's. Anything else is refused with one error
naming both mappings, because a silent mismatch scores every example against the wrong class.

Imports numpy and pandas only (no transformers): a config is read by duck typing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from ..errors import DatasetError
from .dataset import TextDataset

#: Columns holding class ids (re-numbered together).
LABEL_COLUMNS = ("label", "original_label")


def model_label_names(config: Any) -> list[str] | None:
    """The class names a model config gives its outputs, in id order; ``None`` when they say nothing: missing,
    repeated, or placeholders (``LABEL_0``, ``LABEL_1``, ... or ``"0"``, ``"1"``, ..., what transformers
    writes by default)."""
    id2label = getattr(config, "id2label", None) or {}
    n = int(getattr(config, "num_labels", 0) or len(id2label))
    names = [id2label.get(i, id2label.get(str(i))) for i in range(n)]
    if n < 2 or any(name is None for name in names):
        return None
    names = [str(name) for name in names]
    if len(set(names)) != n or all(name in (f"LABEL_{i}", str(i)) for i, name in enumerate(names)):
        return None
    return names


def _mapping(names: Sequence[str]) -> str:
    return "{" + ", ".join(f"{i}: {name!r}" for i, name in enumerate(names)) + "}"


def _used_names(ds: TextDataset) -> list[str]:
    """The class names that occur in the label columns, in id order."""
    used = set()
    for column in LABEL_COLUMNS:
        if column in ds.frame:
            used |= set(np.unique(ds.frame[column].to_numpy()).tolist())
    return [ds.label_names[i] for i in sorted(used)]


def align_labels(ds: TextDataset, model_names: Sequence[str] | None, *,
                 where: str = "the model's config.id2label") -> TextDataset:
    """``ds`` with class ids that mean what the model's outputs mean (``model_names[k]`` is output k).

    - ``model_names`` None (a model without real class names): ``ds`` unchanged.
    - ids without names of their own (integer labels, names ``"0"``, ``"1"``, ...): the ids are kept and take
      the model's names.
    - ids with names (``label_names=``, a ``ClassLabel``): kept when the names agree with the model's at every
      id, else refused.
    - names (string labels): re-numbered through the model's ``label2id``; a name the model lacks is refused.

    Re-numbering changes ``label`` and ``original_label`` together and records a step; the names become the
    model's (all of them, also classes absent from the data).
    """
    if model_names is None:
        return ds
    model_names = [str(name) for name in model_names]
    names = list(ds.label_names)

    def refuse(why: str) -> DatasetError:
        return DatasetError(f"{ds.name}: the data's labels {_mapping(names)} do not match {where} "
                            f"{_mapping(model_names)}: {why}; expected labels that mean the model's classes: give "
                            "label_names= in the model's id order, or fix the model's config.id2label/label2id")

    if ds.labels_are_ids and all(name.isdigit() for name in names):  # bare ids: keep them, take the model's names
        ids = np.array([int(name) for name in names], np.int64)
        used = ids[np.unique(np.concatenate([ds.frame[c].to_numpy() for c in LABEL_COLUMNS if c in ds.frame]))]
        if used.max() >= len(model_names):
            raise refuse(f"class id {int(used.max())} is outside the model's 0..{len(model_names) - 1}")
        new_id = ids
    elif ds.labels_are_ids:
        differ = [i for i, name in enumerate(names) if name in _used_names(ds)
                  and (i >= len(model_names) or model_names[i] != name)]
        if differ:
            i = differ[0]
            theirs = repr(model_names[i]) if i < len(model_names) else "nothing"
            raise refuse(f"class id {i} is {names[i]!r} in the data but {theirs} in the model")
        new_id = np.arange(len(names))
    else:
        missing = [name for name in _used_names(ds) if name not in model_names]
        if missing:
            raise refuse(f"the model has no class {missing[0]!r}" + (f" (nor {missing[1:]})" if missing[1:] else ""))
        position = {name: i for i, name in enumerate(model_names)}
        new_id = np.array([position.get(name, -1) for name in names], np.int64)
    if names == model_names and np.array_equal(new_id, np.arange(len(names))):
        return ds
    frame = ds.frame.copy()
    for column in LABEL_COLUMNS:
        if column in frame:
            frame[column] = new_id[frame[column].to_numpy()]
    step = f"align_labels({where}: {_mapping(model_names)})"
    return TextDataset(frame, model_names, ds.name, ds.source, ds.steps + (step,), labels_are_ids=True)


#: Columns of a ``TaggedDataset`` frame holding lists of tag ids (re-numbered together).
TAG_COLUMNS = ("tags", "original_tags")


def align_tags(ds, model_names: Sequence[str] | None, *, where: str = "the model's config.id2label"):
    """A ``TaggedDataset`` whose tag ids mean the token classifier's outputs (``model_names[k]`` is output k).

    Tags are names (``B-person``), so they are re-numbered through the model's names; a tag the model lacks is
    refused with both mappings named. ``model_names`` None (a base model, placeholder names): ``ds`` unchanged.
    """
    if model_names is None:
        return ds
    model_names = [str(name) for name in model_names]
    names = list(ds.tag_names)
    used = sorted({int(t) for column in TAG_COLUMNS if column in ds.frame for tags in ds.frame[column] for t in tags})
    missing = [names[i] for i in used if names[i] not in model_names]
    if missing:
        raise DatasetError(f"{ds.name}: the data's tags {_mapping(names)} do not match {where} "
                           f"{_mapping(model_names)}: the model has no tag {missing[0]!r}"
                           + (f" (nor {missing[1:]})" if missing[1:] else "")
                           + "; expected a model trained on these tags, or a base model")
    if names == model_names:
        return ds
    position = {name: i for i, name in enumerate(model_names)}
    new_id = np.array([position.get(name, -1) for name in names], np.int64)
    frame = ds.frame.copy()
    for column in TAG_COLUMNS:
        if column in frame:
            frame[column] = [new_id[np.asarray(tags, np.int64)].tolist() for tags in frame[column]]
    return replace(ds, frame=frame.reset_index(drop=True), tag_names=model_names,
                   steps=ds.steps + (f"align_tags({where}: {_mapping(model_names)})",))
