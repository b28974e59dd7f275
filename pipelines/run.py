"""``run_pipeline``: every step on one cluster (a LocalCluster or an existing scheduler).

Extraction comes first (projections and neighbour graphs read its hidden states); importance, projection and the
neighbour graphs then run at once, so the workers a projection chain leaves idle (its layouts follow one another,
each warm-started from the last) build neighbour graphs meanwhile. Each step skips what is already done, so the same
call resumes a killed run and is a no-op on a finished one.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from t3vis.store import schema

from .cluster import DEFAULT_TIMEOUT, check_workers_see, dask_client
from .extract import run_extract
from .importance import run_importance
from .neighbours import run_neighbours
from .project import run_project

STEPS = ("extract", "importance", "project", "neighbours")


def run_steps(client, url: str, steps=STEPS, *, checkpoints: list[str] | None = None, extract: dict | None = None,
              importance: dict | None = None, project: dict | None = None, neighbours: dict | None = None,
              progress: bool = True, echo: Callable[[str], None] | None = None) -> dict:
    """Run ``steps`` on ``client``; ``extract``/``importance``/``project``/``neighbours`` hold each step's keyword
    options."""
    echo = echo or (lambda msg: print(msg, file=sys.stderr))
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; expected some of {STEPS}")
    check_workers_see(client, url, schema.ROOT_METADATA)
    runners = {"extract": (run_extract, extract), "importance": (run_importance, importance),
               "project": (run_project, project), "neighbours": (run_neighbours, neighbours)}
    started = time.perf_counter()

    def run(step: str) -> dict:
        func, options = runners[step]
        done = func(client, url, checkpoints=checkpoints, progress=progress, **(options or {}))
        echo(f"{step}: {_describe(done)}")
        return done

    summary = {"extract": run("extract")} if "extract" in steps else {}
    after = [step for step in STEPS[1:] if step in steps]
    with ThreadPoolExecutor(max(1, len(after)), thread_name_prefix="t3vis-step") as pool:
        running = {step: pool.submit(run, step) for step in after}  # each waits on its own tasks
    for step, future in running.items():  # all have ended; the first failure (in step order) is raised
        summary[step] = future.result()
    summary["seconds"] = time.perf_counter() - started
    return summary


def run_pipeline(url: str, steps=STEPS, *, scheduler: str | None = None, scheduler_file: str | None = None,
                 n_workers: int | None = None, threads_per_worker: int = 1, processes: bool = True,
                 timeout: float = DEFAULT_TIMEOUT, dashboard: bool = True, **options) -> dict:
    """Connect (or start a LocalCluster sized to the machine), run ``steps`` on the run at ``url``, disconnect."""
    echo = options.get("echo")
    with dask_client(scheduler, scheduler_file=scheduler_file, n_workers=n_workers,
                     threads_per_worker=threads_per_worker, processes=processes, timeout=timeout,
                     dashboard=dashboard, echo=echo) as client:
        return run_steps(client, url, steps, **options)


def _describe(step_summary: dict) -> str:
    parts = []
    if "checkpoints" in step_summary:
        states = step_summary["checkpoints"]
        parts.append(", ".join(f"{k}: {v}" for k, v in states.items()) or "no checkpoints")
    if step_summary.get("rows"):
        rate = step_summary["rows"] / max(step_summary["seconds"], 1e-9)
        parts.append(f"{step_summary['rows']:,} rows in {step_summary['seconds']:.1f} s ({rate:,.0f} rows/s)")
    if "done" in step_summary:
        parts.append(f"{step_summary['done']} layout(s) written, {step_summary['skipped']} already done "
                     f"({'/'.join(step_summary['methods'])}, layers {step_summary['layers']}, "
                     f"{step_summary['pooling']} pooling)")
    return "; ".join(parts)
