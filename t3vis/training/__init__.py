"""Training capture: a ``Trainer`` callback and a loop recorder that write training dynamics and checkpoints into
a run store, and the demo / ``t3vis train`` fine-tuning loop (``pipelines.build`` runs the pipelines after it).

The Trainer callback imports ``transformers.TrainerCallback``; it is loaded on first use.
"""

from ..lazy import lazy_attributes

#: Public name -> the module that defines it; loaded on first use, so the CLI can register its subcommands without
#: importing torch (``t3vis --help``).
_EXPORTS = {"MEASUREMENT": "recorder", "DynamicsRecorder": "recorder", "dynamics_from_logits": "recorder",
            "fast_bf16": "recorder", "predict_logits": "recorder", "T3VisCallback": "callback",
            "TrainConfig": "config", "train_demo": "demo", "train_run": "demo"}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
