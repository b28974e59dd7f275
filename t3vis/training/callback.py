"""``T3VisCallback``: record a Hugging Face ``Trainer`` run into a t3vis run store with one added line::

    trainer = Trainer(model=model, args=args, train_dataset=train_tokenized, processing_class=tokenizer,
                      callbacks=[T3VisCallback("runs/my-run", examples=df)])   # df: text, label[, split]
    trainer.train()

The callback measures the examples you give it (not the Trainer's shuffled dataloader), so every row keeps its
place in the run whatever the Trainer's sampler, collator or column removal does. See ``recorder`` for what is
measured and when.

A token classifier (``AutoModelForTokenClassification``) is recorded per word when ``examples`` is a
``TaggedDataset`` (``t3vis.data.load_conll``/``load_tagged``): tokenize its sentences as you train
(``tokenizer(tokens, is_split_into_words=True, truncation=True, max_length=...)``) and label each word's first
sub-token, the standard alignment; ``WordDynamicsRecorder`` says what is measured.

In-training dynamics need no change to your dataset: a forward hook on the model sees each training batch's
``input_ids`` and logits (after the forward, before the update) and recognises the examples by their token ids
(padding stripped). Tokenize the examples as you train (``max_length=``); a batch whose inputs are not among the
examples is skipped, and an epoch that recognised few training rows says so with a warning.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from transformers import TrainerCallback

from ..data.tagging import TaggedDataset
from .recorder import DynamicsRecorder
from .words import WordDynamicsRecorder

#: Below this share of training rows recognised in an epoch's batches, the callback warns.
MIN_SEEN_SHARE = 0.9


class T3VisCallback(TrainerCallback):
    """Records, per epoch, each example's gold-label probability, prediction, loss and margin (eval mode, at
    epoch end), the mean p(gold) and margin of its training forward passes, and a safetensors checkpoint;
    ``epoch-0`` is the model before training.

    ``examples``: a ``TextDataset``, a pandas DataFrame or a ``datasets.Dataset`` with a text and a label column
    (and optionally ``split``: ``train``/``validation``; rows without one count as ``train``), or for a token
    classifier a ``TaggedDataset`` (recorded per word). Labels are class names or integer ids (``label_names=``
    names ids: ``label_names[i]`` is id i); names are numbered through the model's ``config.label2id``, and labels
    the model does not know stop training with an error. Tokenized with the Trainer's ``processing_class`` unless
    ``tokenizer`` is given, truncated at ``max_length`` (default: the model's limit, at most 512): use the length
    you train with. A NaN/inf loss stops training with a ``TrainingError``; the checkpoints written so far stay in
    the run. In distributed training only the main process records. ``extract=True`` (sequence classification) also
    writes each checkpoint's hidden states from the pass that measures it, so ``t3vis pipeline`` skips extraction.
    """

    def __init__(self, run_dir, examples, *, label_names: Sequence[str] | None = None, text_column: str = "text",
                 label_column: str = "label", tokenizer=None, max_length: int | None = None, batch_size: int = 64,
                 bf16: bool | None = None, overwrite: bool = False, name: str | None = None, extract: bool = False):
        self.tokenizer = tokenizer
        recorder = WordDynamicsRecorder if isinstance(examples, TaggedDataset) else DynamicsRecorder
        self.recorder = recorder(run_dir, examples, label_names=label_names, text_column=text_column,
                                         label_column=label_column, max_length=max_length, batch_size=batch_size,
                                         bf16=bf16, overwrite=overwrite, name=name, extract=extract)
        self._last_epoch = 0
        self._rows: dict[tuple[int, ...], list[int]] | None = None
        self._hook = None

    @property
    def run_path(self) -> str:
        return self.recorder.path

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs: Any):
        if state.is_world_process_zero:
            self.recorder.training_args = _training_args(args)
            self.recorder.start(model, self.tokenizer or processing_class, step=state.global_step)
            self._rows = rows_by_tokens(self.recorder.token_ids)
            self._hook = model.register_forward_hook(self._on_forward, with_kwargs=True)

    def _on_forward(self, module, args, kwargs, output) -> None:
        """A training forward pass: hand its logits, per recognised example, to the recorder."""
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        logits = getattr(output, "logits", None)
        if not (module.training and torch.is_grad_enabled()) or input_ids is None or logits is None:
            return
        mask = kwargs.get("attention_mask")
        rows, picks = match_rows(self._rows, input_ids, mask)
        if rows:
            self.recorder.record_batch(rows, logits.detach()[picks])

    def on_step_end(self, args, state, control, model=None, **kwargs: Any):
        if state.is_world_process_zero:
            self.recorder.check_finite(model, step=state.global_step)

    def on_epoch_end(self, args, state, control, model=None, **kwargs: Any):
        if not state.is_world_process_zero:
            return
        # state.epoch is epoch + 1 at the end of an epoch; a run cut short by max_steps ends mid-epoch.
        epoch = max(self._last_epoch + 1, int(round(state.epoch or 0)))
        metrics = self.recorder.on_epoch_end(model, epoch=epoch, step=state.global_step)
        self._last_epoch = epoch
        train = int(((self.recorder.split == "train") & self.recorder.measured).sum())  # (words: those read)
        if train and metrics["train_rows_seen_in_training"] < MIN_SEEN_SHARE * train:
            warnings.warn(f"{self.run_path}: epoch {epoch}: only {metrics['train_rows_seen_in_training']} of {train} "
                          "training examples were recognised in the Trainer's batches, so the in-training dynamics "
                          "miss the others; tokenize the examples as you train (max_length=, the same tokenizer)",
                          stacklevel=2)

    def on_train_end(self, args, state, control, **kwargs: Any):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if state.is_world_process_zero:
            self.recorder.finish()


def rows_by_tokens(token_ids: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """token ids -> the example rows with exactly those ids (identical inputs share one entry)."""
    rows: dict[tuple[int, ...], list[int]] = {}
    for row, ids in enumerate(token_ids):
        rows.setdefault(tuple(ids), []).append(row)
    return rows


def match_rows(rows: dict[tuple[int, ...], list[int]], input_ids: torch.Tensor,
               attention_mask: torch.Tensor | None) -> tuple[list[int], list[int]]:
    """(example rows, batch positions) for the batch's sequences found in ``rows``, padding removed by the mask.

    A sequence shared by several examples (duplicates) counts for each of them: their inputs are identical.
    """
    ids = input_ids.detach().cpu().numpy()
    keep = attention_mask.detach().cpu().numpy().astype(bool) if attention_mask is not None else None
    found, picks = [], []
    for i in range(len(ids)):
        for row in rows.get(tuple((ids[i][keep[i]] if keep is not None else ids[i]).tolist()), ()):
            found.append(row)
            picks.append(i)
    return found, picks


def _training_args(args) -> dict[str, Any]:
    """The Trainer settings worth keeping with the run (JSON-safe)."""
    keys = ("learning_rate", "num_train_epochs", "per_device_train_batch_size", "weight_decay", "warmup_steps",
            "seed", "bf16", "fp16", "gradient_accumulation_steps", "max_steps")
    return {"trainer": {k: getattr(args, k) for k in keys if isinstance(getattr(args, k, None), (int, float, bool))}}
