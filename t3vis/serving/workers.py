"""The process-wide pool that runs model calls, and the readers-writer lock that guards a shared model.

Why: model calls never run on the UI event loop, so the page stays responsive. Each worker runs torch with ONE
intra-op thread: on a busy 2-core box one thread per interactive call is faster than two fighting for the cores.
Batched re-prediction gets its parallelism from the pool instead: its batches are spread over the workers.
LRP switches a shared model into conservative-propagation mode for the duration of a call; those calls take the
model exclusively (`SharedLock`), all others share it.

(Named ``workers`` rather than ``pool`` so that ``t3vis.serving.pool`` stays the function.)
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import torch

#: Worker threads for model calls (each runs torch single-threaded).
WORKERS = int(os.environ.get("T3VIS_MODEL_WORKERS", max(1, min(8, os.cpu_count() or 1))))


def _single_threaded_worker() -> None:
    """Pool initializer: torch runs one intra-op thread in this worker.

    ``torch.set_num_threads`` also changes the default that threads started *later* pick up, so the previous
    value is set back from a short-lived helper thread; this worker keeps its one thread.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    restore = threading.Thread(target=torch.set_num_threads, args=(previous,))
    restore.start()
    restore.join()


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """The process-wide pool that runs model calls (created on first use)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(WORKERS, thread_name_prefix="t3vis-model",
                                       initializer=_single_threaded_worker)
        return _POOL


def submit(fn: Callable, /, *args, **kwargs) -> Future:
    """Run ``fn(*args, **kwargs)`` on a model worker thread."""
    return pool().submit(fn, *args, **kwargs)


async def acall(fn: Callable, /, *args, **kwargs):
    """Await ``fn(*args, **kwargs)`` run on a model worker thread (the event loop stays free meanwhile)."""
    return await asyncio.wrap_future(submit(fn, *args, **kwargs))


class SharedLock:
    """Many holders in shared mode or one in exclusive mode; a waiting exclusive holder goes first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextmanager
    def exclusive(self):
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

