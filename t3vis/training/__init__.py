"""Training capture: a ``Trainer`` callback and a loop recorder that write training dynamics and checkpoints into
a run store, and the demo / ``t3vis train`` fine-tuning loop (``pipelines.build`` runs the pipelines after it).

The Trainer callback imports ``transformers.TrainerCallback``; it is loaded on first use.
"""

from .recorder import MEASUREMENT, DynamicsRecorder, dynamics_from_logits, fast_bf16, predict_logits

__all__ = ["MEASUREMENT", "DynamicsRecorder", "T3VisCallback", "TrainConfig", "dynamics_from_logits",
           "fast_bf16", "predict_logits", "train_demo", "train_run"]


def __getattr__(name):
    if name == "T3VisCallback":
        from .callback import T3VisCallback

        return T3VisCallback
    if name in ("TrainConfig", "train_demo", "train_run"):
        from . import demo

        return getattr(demo, name)
    raise AttributeError(name)
