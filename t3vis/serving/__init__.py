"""Models for the app: one shared copy of each checkpoint per process, each session's pruning its own.

- `workers`: the thread pool model calls run in (one torch thread each) and the readers-writer lock.
- `results`: what a call returns (`Encoding`, `Forward`, `BatchPrediction`) and `prediction_change`.
- `server`: `ModelServer`, one loaded checkpoint; every call names the heads it prunes.
- `registry`: the process-wide LRU of servers (`get_server`, `server_for_checkpoint`) and the run facts they need.
- `session`: `SessionModel`, the model side of one explorer session (memoised futures), and `NewestOnly`.

Core package: imports neither panel nor bokeh.
"""

from .registry import (
    SERVED_MODELS,
    clear_servers,
    get_server,
    served,
    server_for_checkpoint,
)
from .results import (
    STORED_LOGIT_ERROR,
    BatchPrediction,
    Encoding,
    Forward,
    Pruned,
    batch_prediction,
    needs_recheck,
    normalize_pruned,
    prediction_change,
)
from .server import PREDICTION_CACHE_SIZE, ModelServer
from .session import NewestOnly, SessionModel, session_model
from .workers import WORKERS, SharedLock, acall, pool, submit

__all__ = [
    "PREDICTION_CACHE_SIZE",
    "SERVED_MODELS",
    "STORED_LOGIT_ERROR",
    "WORKERS",
    "BatchPrediction",
    "Encoding",
    "Forward",
    "ModelServer",
    "NewestOnly",
    "Pruned",
    "SessionModel",
    "SharedLock",
    "acall",
    "batch_prediction",
    "clear_servers",
    "get_server",
    "needs_recheck",
    "normalize_pruned",
    "pool",
    "prediction_change",
    "served",
    "server_for_checkpoint",
    "session_model",
    "submit",
]
