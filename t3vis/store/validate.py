"""Check a run store against the schema and say exactly what is wrong, path by path."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import StoreError
from . import schema
from .location import Location


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def validate(path: "str | Location", **storage_options) -> list[Problem]:
    """Every problem found in the run at ``path`` (empty when valid). Never raises for a bad store."""
    from .reader import Run

    loc = Location.of(path, **storage_options)
    try:
        run = Run(loc)
    except StoreError as exc:
        return [Problem(loc.url, str(exc).removeprefix(f"{loc.url}: "))]
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
            codes = arr[:]
            if codes.min() < 0 or codes.max() >= len(cats):
                add(f"examples/{col}", f"category codes outside 0..{len(cats) - 1}")
    if "label" in ex and ex["label"].shape == (n,) and n:
        lab = ex["label"][:]
        if lab.dtype.kind not in "iu":
            add("examples/label", f"dtype {lab.dtype}, expected an integer index into label_names")
        elif lab.min() < 0 or lab.max() >= len(labels):
            add("examples/label", f"values outside 0..{len(labels) - 1} (label_names has {len(labels)})")

    # dynamics ----------------------------------------------------------------------
    if "dynamics" in run.root:
        dyn = run.root["dynamics"]
        for epoch in dyn.group_keys():
            for key, dtype in schema.DYNAMICS_ARRAYS.items():
                where = f"dynamics/{epoch}/{key}"
                if key not in dyn[epoch]:
                    add(where, "missing")
                    continue
                arr = dyn[epoch][key]
                if arr.shape != (n,):
                    add(where, f"shape {arr.shape}, expected ({n},)")
                if np.dtype(arr.dtype).kind != np.dtype(dtype).kind:
                    add(where, f"dtype {arr.dtype}, expected {np.dtype(dtype)}")

    # checkpoints -------------------------------------------------------------------
    for name in run.checkpoints:
        g = run.root[f"checkpoints/{name}"]
        for key in ("step", "epoch"):
            if key not in g.attrs:
                add(f"checkpoints/{name}/zarr.json", f"missing attribute '{key}'")
        for arr_name in g.array_keys():
            spec = schema.CHECKPOINT_ARRAYS.get(arr_name)
            if spec is None:
                continue
            template, kind = spec
            arr = g[arr_name]
            expected = schema.expected_shape(template, sizes)
            if len(arr.shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, arr.shape)):
                shown = tuple("m" if e is None else e for e in expected)
                add(f"checkpoints/{name}/{arr_name}", f"shape {arr.shape}, expected {shown}")
            if np.dtype(arr.dtype).kind not in (kind if kind != "i" else "iu"):
                add(f"checkpoints/{name}/{arr_name}", f"dtype {arr.dtype}, expected kind '{kind}'")
        if "projection" in g:
            for method in g["projection"].group_keys():
                for key in g[f"projection/{method}"].array_keys():
                    arr = g[f"projection/{method}/{key}"]
                    if arr.shape != (n, 2):
                        add(f"checkpoints/{name}/projection/{method}/{key}", f"shape {arr.shape}, expected ({n}, 2)")
        if g.attrs.get("complete"):
            for arr_name in schema.EXTRACTED_ARRAYS:
                if arr_name not in g:
                    add(f"checkpoints/{name}", f"marked complete but '{arr_name}' is missing")
        weights = g.attrs.get("weights")
        if weights and not loc.exists(weights):
            problems.append(Problem(f"{weights}", f"weights of checkpoint '{name}' missing"))
    return problems


def validate_or_raise(path: "str | Location", **storage_options) -> None:
    problems = validate(path, **storage_options)
    if problems:
        raise StoreError("invalid run store:\n" + "\n".join(f"  {p}" for p in problems))
