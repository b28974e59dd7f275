"""Getting a Dask client: an existing scheduler (``tcp://host:port`` or a scheduler file) or a LocalCluster.

Workers run one task per thread and torch with one thread per task (``limit_threads``), so parallelism comes
from workers x threads and never oversubscribes the cores.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from t3vis.errors import PipelineError, T3VisError

if TYPE_CHECKING:
    from distributed import Client

#: Seconds to wait for a scheduler to answer (and for at least one worker to join it).
DEFAULT_TIMEOUT = 20.0


def machine_workers() -> int:
    """Workers for a LocalCluster: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def dask_client(scheduler: str | None = None, *, scheduler_file: str | None = None, n_workers: int | None = None,
                threads_per_worker: int = 1, processes: bool = True, timeout: float = DEFAULT_TIMEOUT,
                dashboard: bool = True, echo: Callable[[str], None] | None = None) -> Iterator["Client"]:
    """A ``distributed.Client``: connected to ``scheduler``/``scheduler_file`` if given, else a new LocalCluster.

    A scheduler that does not answer within ``timeout`` seconds, or has no worker by then, is a PipelineError.
    ``echo`` (default: print to stderr) receives the dashboard link when there is one.
    """
    from distributed import Client, LocalCluster

    echo = echo or (lambda msg: print(msg, file=sys.stderr))
    cluster = None
    if scheduler or scheduler_file:
        client = _connect(scheduler, scheduler_file, timeout)
    else:
        lifeline = {"preload": [f"import signal; from t3vis.processes import die_with_parent; "
                                f"die_with_parent({os.getpid()}, signal.SIGKILL)"]}
        cluster = LocalCluster(n_workers=n_workers or machine_workers(), threads_per_worker=threads_per_worker,
                               processes=processes, dashboard_address=":0",
                               silence_logs=logging.ERROR, **(lifeline if processes else {}))
        client = Client(cluster)
    try:
        if client.dashboard_link and dashboard:
            echo(f"Dask dashboard: {client.dashboard_link}")
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _connect(scheduler: str | None, scheduler_file: str | None, timeout: float):
    from distributed import Client

    where = scheduler or f"the scheduler in {scheduler_file}"
    if scheduler_file and not os.path.isfile(scheduler_file):
        raise PipelineError(f"scheduler file {scheduler_file} does not exist (expected the JSON file that "
                            "`dask scheduler --scheduler-file F` writes)")
    try:
        client = Client(scheduler, scheduler_file=scheduler_file, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise PipelineError(f"Dask scheduler {where} did not answer within {timeout:g} s ({err}); expected a running "
                            "`dask scheduler` at tcp://HOST:PORT, or leave out --scheduler to use a local cluster"
                            ) from None
    except ValueError as err:  # a malformed address
        raise PipelineError(f"Dask scheduler address {scheduler!r}: {err} (expected tcp://HOST:PORT)") from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError):
        client.close()
        raise PipelineError(f"Dask scheduler {where} has no workers (waited {timeout:g} s); start some with "
                            f"`dask worker {scheduler or '--scheduler-file ' + str(scheduler_file)}`") from None
    return client


def check_workers_see(client, url: str, marker: str) -> None:
    """Every worker must see the run store (a shared path or an fsspec URL), or nothing can be written."""
    def sees(path=url, rel=marker):
        from t3vis.store.location import Location

        try:
            return Location.of(path).exists(rel)
        except Exception:  # noqa: BLE001 - any failure means "cannot see it"
            return False

    blind = sorted(addr for addr, ok in client.run(sees).items() if not ok)
    if blind:
        raise PipelineError(f"worker(s) {', '.join(blind)} cannot see the run store {url}: workers need a shared "
                            "path or an fsspec URL they can open")


def limit_threads() -> None:
    """Prepare a worker for torch, at the top of every task (cheap after the first time).

    One torch thread per worker thread. And glibc's malloc thresholds: Dask's nanny starts workers with
    ``MALLOC_TRIM_THRESHOLD_=65536``, which also switches off glibc's adaptive mmap threshold, so every activation
    tensor above 128 KiB is mmap'd, page-faulted and unmapped again: a forward pass ran 40-60% slower in a worker
    than in a plain process (measured, MiniLM bf16). Fixed thresholds (64 MiB mmap, 256 MiB trim) restore the
    plain-process speed; a worker keeps at most that much freed memory, so its RSS stays bounded.
    """
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    _tune_malloc()


@functools.lru_cache(maxsize=None)
def _tune_malloc() -> bool:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to undo
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 64 << 20) and libc.mallopt(m_trim_threshold, 256 << 20))


def gather(client, futures: Iterable, *, desc: str, progress: "bool | Callable[[str, int, int], None]" = True,
           on_result: Callable | None = None, describe: Callable | None = None) -> list:
    """Wait for ``futures`` in completion order with a progress bar; call ``on_result(future, result)`` for each.

    ``progress`` may instead be a callable, told ``(desc, done, total)`` after each task (no bar then): how a
    caller with its own progress display (the page's demo build, ``t3vis demo``) follows a step's tasks.

    A failed task cancels the rest. A ``T3VisError`` from a task is re-raised as is; an ``OSError`` (a full or
    read-only disk, a vanished file) becomes a PipelineError naming the task; anything else is a bug and propagates.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    futures = list(futures)
    results = []
    report = progress if callable(progress) else None
    bar = tqdm(total=len(futures), desc=desc, unit="task", disable=not progress or report is not None or not futures,
               file=sys.stderr)
    try:
        for future in as_completed(futures):
            try:
                result = future.result()
                if on_result is not None:
                    on_result(future, result)
            except T3VisError:
                client.cancel(futures)
                raise
            except OSError as err:
                client.cancel(futures)
                what = describe(future) if describe else future.key
                raise PipelineError(f"{desc}: {what} failed writing/reading the store: {err} (nothing of it was "
                                    "marked done; fix the cause and rerun to resume)") from None
            except BaseException:
                client.cancel(futures)
                raise
            results.append(result)
            bar.update(1)
            if report is not None:
                report(desc, len(results), len(futures))
    finally:
        bar.close()
    return results
