"""The process-wide registry of loaded checkpoints (run facts, such as where the weights are, come from the store).

Why: a server process holds each checkpoint's weights once (`get_server`, a small LRU keyed by path), read-only and
shared by every session; a checkpoint is loaded once even when many sessions ask for it at the same moment.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

from ..store.weights import checked_weights
from .server import ModelServer

#: Checkpoints kept loaded per server process.
SERVED_MODELS = int(os.environ.get("T3VIS_SERVED_MODELS", "2"))

_SERVERS: OrderedDict[str, ModelServer] = OrderedDict()
_SERVERS_LOCK = threading.Lock()
_LOADING: dict[str, threading.Lock] = {}


def get_server(weights_path, *, what: str | None = None) -> ModelServer:
    """The shared `ModelServer` of a checkpoint directory, loaded on first use (once, even under concurrency).

    Raises `ModelError` with a message for the user when the weights are not recorded or not on disk.
    """
    key = str(Path(checked_weights(weights_path, what or f"checkpoint {weights_path}")).resolve())
    with _SERVERS_LOCK:
        if key in _SERVERS:
            _SERVERS.move_to_end(key)
            return _SERVERS[key]
        loading = _LOADING.setdefault(key, threading.Lock())
    with loading:
        with _SERVERS_LOCK:
            if key in _SERVERS:
                return _SERVERS[key]
        server = ModelServer.load(key)
        with _SERVERS_LOCK:
            _SERVERS[key] = server
            while len(_SERVERS) > SERVED_MODELS:
                _SERVERS.popitem(last=False)
            _LOADING.pop(key, None)
        return server


def server_for_checkpoint(checkpoint) -> ModelServer:
    """The shared server of a run store checkpoint (:class:`t3vis.store.Checkpoint`)."""
    return get_server(checkpoint.weights_path, what=f"checkpoint '{checkpoint.name}' of run '{checkpoint.run.name}'")


def served() -> list[str]:
    """Paths of the checkpoints loaded in this process (for tests and a status line)."""
    with _SERVERS_LOCK:
        return list(_SERVERS)


def clear_servers() -> None:
    with _SERVERS_LOCK:
        _SERVERS.clear()

