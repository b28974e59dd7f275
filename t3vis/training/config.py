"""Fine-tuning settings, apart from the loop so the CLI can show their defaults without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TrainingError


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning settings; the defaults are the demo's (MiniLM-L6 on BBC News, see benchmarks/RESULTS.md).

    ``max_length`` 96: a BBC article's title and lead paragraph decide its topic; 128 tokens reached the same
    accuracy and flip recall at ~1.3x the training time.
    """

    epochs: int = 3
    batch_size: int = 16
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 96
    seed: int = 0
    #: bf16 autocast for training and measurement; None: only where the hardware is fast at it.
    bf16: bool | None = None

    def check(self) -> "TrainConfig":
        for key in ("epochs", "batch_size", "max_length"):
            if int(getattr(self, key)) < 1:
                raise TrainingError(f"{key}={getattr(self, key)!r}: expected a positive integer")
        if not self.learning_rate > 0:
            raise TrainingError(f"learning_rate={self.learning_rate!r}: expected a positive number")
        return self


#: Which rows ``t3vis crossfit`` cross-fits: the training split (where mislabels are searched, as for the data map)
#: or all.
ROWS = ("train", "all")


#: The NER demo's settings (``t3vis demo --task ner``): tweets are short (96 sub-tokens keep every word of the
#: corpus) and a fresh tagging head on 1,900 tweets needs more epochs than the topic classifier does.
NER_CONFIG = TrainConfig(epochs=6, batch_size=16, learning_rate=1e-4, max_length=96)
