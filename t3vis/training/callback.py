"""``T3VisCallback``: record a Hugging Face ``Trainer`` run into a t3vis run store with one added line::

    trainer = Trainer(model=model, args=args, train_dataset=train_tokenized, processing_class=tokenizer,
                      callbacks=[T3VisCallback("runs/my-run", examples=df)])   # df: text, label[, split]
    trainer.train()

The callback measures the examples you give it (not the Trainer's shuffled dataloader), so every row keeps its
place in the run whatever the Trainer's sampler, collator or column removal does. See ``recorder`` for what is
measured and when.
"""

from __future__ import annotations

from typing import Any, Sequence

from transformers import TrainerCallback

from .recorder import DynamicsRecorder


class T3VisCallback(TrainerCallback):
    """Records, per epoch, each example's gold-label probability, prediction, loss and margin (eval mode, at
    epoch end) and a safetensors checkpoint; ``epoch-0`` is the model before training.

    ``examples``: a ``TextDataset``, a pandas DataFrame or a ``datasets.Dataset`` with a text and a label column
    (and optionally ``split``: ``train``/``validation``; rows without one count as ``train``). Tokenized with
    the Trainer's ``processing_class`` unless ``tokenizer`` is given, truncated at ``max_length`` (default:
    the model's limit, at most 512): use the length you train with. A NaN/inf loss stops training with a
    ``TrainingError``; the checkpoints written so far stay in the run. In distributed training only the main
    process records.
    """

    def __init__(self, run_dir, examples, *, label_names: Sequence[str] | None = None, text_column: str = "text",
                 label_column: str = "label", tokenizer=None, max_length: int | None = None, batch_size: int = 64,
                 bf16: bool | None = None, overwrite: bool = False, name: str | None = None):
        self.tokenizer = tokenizer
        self.recorder = DynamicsRecorder(run_dir, examples, label_names=label_names, text_column=text_column,
                                         label_column=label_column, max_length=max_length, batch_size=batch_size,
                                         bf16=bf16, overwrite=overwrite, name=name)
        self._last_epoch = 0

    @property
    def run_path(self) -> str:
        return self.recorder.path

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs: Any):
        if state.is_world_process_zero:
            self.recorder.training_args = _training_args(args)
            self.recorder.start(model, self.tokenizer or processing_class, step=state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs: Any):
        if state.is_world_process_zero:
            self.recorder.check_finite(model, step=state.global_step)

    def on_epoch_end(self, args, state, control, model=None, **kwargs: Any):
        if not state.is_world_process_zero:
            return
        # state.epoch is epoch + 1 at the end of an epoch; a run cut short by max_steps ends mid-epoch.
        epoch = max(self._last_epoch + 1, int(round(state.epoch or 0)))
        self.recorder.on_epoch_end(model, epoch=epoch, step=state.global_step)
        self._last_epoch = epoch

    def on_train_end(self, args, state, control, **kwargs: Any):
        if state.is_world_process_zero:
            self.recorder.finish()


def _training_args(args) -> dict[str, Any]:
    """The Trainer settings worth keeping with the run (JSON-safe)."""
    keys = ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "weight_decay", "warmup_steps",
            "seed", "bf16", "fp16", "gradient_accumulation_steps", "max_steps")
    return {"trainer": {k: getattr(args, k) for k in keys if isinstance(getattr(args, k, None), (int, float, bool))}}
