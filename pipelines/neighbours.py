"""Neighbour index: per (checkpoint, layer) one Dask task builds the cosine kNN graph of the layer's pooled hidden
states (``t3vis.analysis.neighbours``) and writes it as one atomic unit, ``checkpoints/<name>/neighbours/layer_<k>``
(``ids [n, K]`` int32, ``sims [n, K]`` float16: plain arrays, nothing pickled).

A unit is staged and committed whole (``RunWriter.write_group``): a killed task leaves only staging, which the
rerun replaces; a committed unit is skipped. By default the layers the projections use, with their pooling.
"""

from __future__ import annotations

from collections.abc import Callable

import time
from dataclasses import dataclass

from t3vis.store import schema

from .cluster import gather, limit_threads
from .common import hidden_inputs, open_run, select_checkpoints, store_errors


@dataclass(frozen=True)
class NeighboursTask:
    run: str
    checkpoint: str
    layer: int
    pooling: str
    k: int


def unit_of(checkpoint: str, layer: int) -> str:
    return schema.checkpoint_path(checkpoint, schema.NEIGHBOURS_GROUP, schema.layer_key(layer))


def build_neighbours(task: NeighboursTask) -> dict:
    """The Dask task: build one layer's kNN graph and commit it."""
    from t3vis.analysis.neighbours import build_graph
    from t3vis.store import Run, RunWriter

    limit_threads()
    started = time.perf_counter()
    x = Run(task.run).checkpoint(task.checkpoint).hidden(task.layer, task.pooling)
    ids, sims, attrs = build_graph(x, task.k)
    attrs.update(layer=task.layer, pooling=task.pooling, n=int(len(x)),
                 seconds=round(time.perf_counter() - started, 3))
    RunWriter(task.run).write_group(unit_of(task.checkpoint, task.layer), {"ids": ids, "sims": sims}, attrs)
    return attrs


def run_neighbours(client, url: str, *, checkpoints: list[str] | None = None, layers: list[int] | None = None,
                   pooling: str | None = None, k: int | None = None,
                   progress: "bool | Callable[[str, int, int], None]" = True) -> dict:
    """Build the kNN graph of the chosen layers (default: as ``project``) of every checkpoint not yet done."""
    from t3vis.analysis.neighbours import K

    run, writer = open_run(url)
    names = select_checkpoints(run, checkpoints)
    layers, pooling = hidden_inputs(run, names, layers, pooling)
    summary = {"pooling": pooling, "layers": layers, "methods": ["kNN graph"], "done": 0, "skipped": 0}
    futures = []
    for name in names:
        for layer in layers:
            unit = unit_of(name, layer)
            with store_errors(run.loc.url, "neighbours"):
                writer.prepare(unit)
            if writer.is_done(unit):
                summary["skipped"] += 1
                continue
            task = NeighboursTask(run.loc.url, name, layer, pooling, k or K)
            futures.append(client.submit(build_neighbours, task, pure=False,
                                         key=f"neighbours-{layer}-{name}-{time.time_ns()}"))
    started = time.perf_counter()
    summary["done"] = len(gather(client, futures, desc="neighbours", progress=progress))
    summary["seconds"] = time.perf_counter() - started
    return summary
