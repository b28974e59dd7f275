"""Projections: per (method, layer) a chain of Dask tasks over the checkpoints in training order.

Each task projects one checkpoint's pooled hidden states of one layer, starting from (and Procrustes-aligned to)
the previous checkpoint's layout, which the previous task returns (``[n, 2]`` float32: small). Chains for
different layers and methods run in parallel. Every layout is one atomic unit; done units are skipped on rerun
and their stored layout seeds the next checkpoint, so a resumed chain equals an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import time
from dataclasses import dataclass

import numpy as np

from t3vis.errors import StoreError
from t3vis.store import schema

from .cluster import gather, limit_threads
from .common import hidden_inputs, open_run, select_checkpoints, store_errors


@dataclass(frozen=True)
class ProjectTask:
    run: str
    checkpoint: str
    method: str
    layer: int
    pooling: str
    aligned_to: str | None
    aligned: bool = True
    seed: int = 0


def unit_of(checkpoint: str, method: str, layer: int) -> str:
    return schema.checkpoint_path(checkpoint, "projection", method, schema.layer_key(layer))


def project_checkpoint(task: ProjectTask, previous: np.ndarray | None = None) -> np.ndarray:
    """The Dask task: project one checkpoint's layer, align it to ``previous``, write it; returns the layout."""
    from t3vis.analysis.projection import PCA_DIMS, project_next
    from t3vis.store import Run, RunWriter

    limit_threads()
    started = time.perf_counter()
    x = Run(task.run).checkpoint(task.checkpoint).hidden(task.layer, task.pooling)
    layout = project_next(x, task.method, previous, aligned=task.aligned, seed=task.seed)
    attrs = {"method": task.method, "layer": task.layer, "pooling": task.pooling,
             "aligned_to": task.aligned_to if task.aligned else None, "disparity": layout.disparity,
             "displacement": layout.displacement, "seed": task.seed, "n": int(len(x)),
             "pca_dims": None if task.method == "pca" else PCA_DIMS,
             "seconds": round(time.perf_counter() - started, 3)}
    RunWriter(task.run).write_array(unit_of(task.checkpoint, task.method, task.layer), layout.xy, attrs,
                                    chunk_rows=schema.COLUMN_CHUNK_ROWS)
    return layout.xy


def run_project(client, url: str, *, checkpoints: list[str] | None = None, methods: tuple[str, ...] = ("umap",),
                layers: list[int] | None = None, pooling: str | None = None, aligned: bool = True, seed: int = 0,
                progress: "bool | Callable[[str, int, int], None]" = True) -> dict:
    """Project the chosen layers of every checkpoint with each method, aligned along training order."""
    from t3vis.analysis.projection import METHODS

    run, writer = open_run(url)
    names = select_checkpoints(run, checkpoints)
    for method in methods:
        if method not in METHODS:
            raise StoreError(f"projection method {method!r}: expected one of {METHODS}")
    layers, pooling = hidden_inputs(run, names, layers, pooling)
    summary = {"pooling": pooling, "layers": layers, "methods": list(methods), "done": 0, "skipped": 0}
    futures = []
    for method in methods:
        for layer in layers:
            previous, previous_name = None, None
            for name in names:  # one chain; a done unit's stored layout seeds the next task
                unit = unit_of(name, method, layer)
                with store_errors(run.loc.url, "project"):
                    writer.prepare(unit)
                if writer.is_done(unit):
                    previous = run.checkpoint(name).projection(method, layer)
                    summary["skipped"] += 1
                else:
                    task = ProjectTask(run.loc.url, name, method, layer, pooling, previous_name, aligned, seed)
                    previous = client.submit(project_checkpoint, task, previous if aligned else None, pure=False,
                                             key=f"project-{method}-{layer}-{name}-{time.time_ns()}")
                    futures.append(previous)
                previous_name = name
    started = time.perf_counter()
    summary["done"] = len(gather(client, futures, desc="project", progress=progress))
    summary["seconds"] = time.perf_counter() - started
    return summary
