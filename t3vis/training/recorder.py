"""Record training dynamics and checkpoints into a run store, from any training loop.

What is measured, and when, two ways:

- At the end of every epoch the model is run in eval mode, without gradients, over every example of the run (train
  *and* validation rows), exactly as the pipelines' extraction runs a checkpoint (``predict_logits``: the same
  batching, right padding, and weights cast to the same dtype), so the dynamics of epoch k equal what ``t3vis
  extract`` gives for checkpoint ``epoch-k``. Per example: the probability of the gold label, the prediction, the
  loss and the margin p(gold) - max p(other). The data map (confidence, variability, correctness) uses these.
- During training, the logits the training forward passes already compute (``record_batch``; no extra pass):
  per example, p(gold) and the margin each time it is trained on, before its update, averaged per epoch
  (``train_gold_prob``, ``train_margin``; NaN for rows not trained on). This is what AUM (Pleiss et al. 2020)
  and Data Maps (Swayamdipta et al. 2020) record; it sees a wrong label before the model memorises it, which an
  end-of-epoch measurement cannot once the label is fitted within the first epoch.

Validation rows are recorded as held-out reference points; data maps and mislabel scores use the training split.

Checkpoints: ``epoch-0`` is the pre-trained state (before the first step), ``epoch-k`` the model after epoch k;
weights are safetensors in ``<run>/weights/<name>/`` (with config and tokenizer), reloadable with
``t3vis.models.load_checkpoint``.

Use it from your own loop::

    recorder = DynamicsRecorder("runs/my-run", dataset)      # a TextDataset, DataFrame or datasets.Dataset
    recorder.start(model, tokenizer)                          # creates the run; saves checkpoint epoch-0
    for epoch in range(1, epochs + 1):
        for rows in batches:                                  # rows: indices into the dataset
            out = model(**inputs_of(rows), labels=...)
            recorder.record_batch(rows, out.logits)           # optional: in-training dynamics
            ...                                               # backward, step
        recorder.on_epoch_end(model, epoch=epoch, step=step)  # dynamics + checkpoint epoch-<epoch>
    recorder.finish()

Labels mean the model's labels: at ``start`` the examples' class ids are aligned with the model's
``config.id2label`` (``t3vis.data.align_labels``): string labels are numbered through its ``label2id``, and data
whose labels the model does not know is refused with an error naming both mappings.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..data.dataset import as_text_dataset
from ..errors import RunExistsError, TrainingError
from ..models.loading import HEADS
from ..models.inference import (  # noqa: F401 (fast_bf16, predict_logits, tokenize: re-exported)
    fast_bf16,
    model_device,
    pad_token_id,
    predict_logits,
    resolve_max_length,
    tokenize,
)
from ..store import RunWriter, schema
from ..store.location import Location
from ..tasks import Task, get_task

#: How the dynamics were measured, recorded in the run's ``training`` attrs.
MEASUREMENT = ("eval mode, no dropout, over all examples (train and validation) at the end of each epoch, batched "
               "and cast like the pipelines' extraction; checkpoint epoch-k holds the weights measured for epoch k. "
               "train_gold_prob/train_margin: from the training forward passes, before each update, mean per epoch")


# ------------------------------------------------------------------------------------------------ precision
def autocast(device: torch.device, enabled: bool):
    """bf16 autocast for training steps (measurement casts the weights instead, see ``predict_logits``)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


# ------------------------------------------------------------------------------------------------ dynamics
def dynamics_from_logits(logits: np.ndarray, labels: np.ndarray, task: Task | None = None) -> dict[str, np.ndarray]:
    """The task's per-unit arrays of one epoch (gold-label probability, prediction, loss, margin) from
    ``logits [n, C]``, by the task's ``outputs`` (margin: p(gold) - max p(other), AUM on probabilities).
    """
    task = task or get_task()
    outputs = task.outputs(logits, labels)
    return {name: outputs[name] for name in task.unit_arrays}


def epoch_metrics(dynamics: Mapping[str, np.ndarray], labels: np.ndarray, split: np.ndarray) -> dict[str, float]:
    """Accuracy and mean loss per split, from one epoch's dynamics."""
    out: dict[str, float] = {}
    correct = np.asarray(dynamics["pred"]) == np.asarray(labels)
    for name in schema.SPLITS:
        rows = np.asarray(split) == name
        if rows.any():
            out[f"{name}_accuracy"] = float(correct[rows].mean())
            out[f"{name}_loss"] = float(np.asarray(dynamics["loss"])[rows].mean())
    return out


def parameters_finite(model: torch.nn.Module) -> bool:
    """A cheap divergence check: whether the last parameter tensor (the task head) is finite.

    One NaN/inf loss turns every weight NaN at the next optimizer step, the head included.
    """
    last = None
    for last in model.parameters():
        pass
    return last is None or bool(torch.isfinite(last.detach()).all())


# ------------------------------------------------------------------------------------------------ saving
def save_weights(loc: Location, rel: str, model: torch.nn.Module, tokenizer) -> None:
    """Save model + tokenizer (safetensors) to ``rel`` below the run, atomically (staged, then renamed)."""
    from ..models import save_model

    if loc.is_local:
        save_model(model, tokenizer, loc.path(rel))
        return
    with tempfile.TemporaryDirectory() as tmp:  # remote run: save locally, upload, then rename into place
        save_model(model, tokenizer, os.path.join(tmp, "w"))
        loc.rm(rel + ".tmp")
        loc.fs.put(os.path.join(tmp, "w"), loc.path(rel + ".tmp"), recursive=True)
        loc.rm(rel)
        loc.mv(rel + ".tmp", rel)


class TrainingPasses:
    """In-training dynamics of one epoch: sums of p(gold) and margin per row over its training forward passes."""

    def __init__(self, n: int):
        self.count = np.zeros(n, np.int64)
        self.gold_prob = np.zeros(n, np.float64)
        self.margin = np.zeros(n, np.float64)

    def add(self, rows: np.ndarray, dynamics: Mapping[str, np.ndarray]) -> None:
        np.add.at(self.count, rows, 1)
        np.add.at(self.gold_prob, rows, dynamics["gold_prob"])
        np.add.at(self.margin, rows, dynamics["margin"])

    def means(self) -> dict[str, np.ndarray]:
        """``train_gold_prob`` and ``train_margin``: per-row means, NaN where a row was never seen."""
        seen = self.count > 0
        out = {}
        for key, total in (("train_gold_prob", self.gold_prob), ("train_margin", self.margin)):
            mean = np.full(len(total), np.nan, np.float32)
            mean[seen] = total[seen] / self.count[seen]
            out[key] = mean
        return out


# ------------------------------------------------------------------------------------------------ recorder
class DynamicsRecorder:
    """Writes a run from a training loop: ``start`` before the first step, ``on_epoch_end`` after each epoch.

    ``examples`` (a ``TextDataset``, pandas DataFrame or ``datasets.Dataset`` with text, label and optionally
    split columns) are the rows measured every epoch, in order; they need not be the exact training inputs, but
    should be tokenized the same way (``max_length``). Labels may be class names or integer ids; ``label_names``
    names integer ids (``label_names[i]`` is id i). At ``start`` they are aligned with the model's
    ``config.id2label`` (see the module docstring). ``bf16`` None measures bf16-cast weights where the hardware
    is fast at bf16, as the pipelines do (probabilities then agree with float32 to about 1e-2). An existing run
    at ``run_dir`` is only replaced with ``overwrite=True``. ``extract`` also writes every checkpoint's extracted
    arrays (the pipelines' extract step: pooled hidden states of every layer, logits, ...) from the forward pass
    that measures it, which spares the pipelines a second pass per checkpoint (sequence classification).
    """

    def __init__(self, run_dir, examples, *, label_names: Sequence[str] | None = None, text_column: str = "text",
                 label_column: str = "label", max_length: int | None = None, batch_size: int = 64,
                 bf16: bool | None = None, overwrite: bool = False, name: str | None = None,
                 training_args: Mapping[str, Any] | None = None, task: str | None = None, extract: bool = False):
        self.loc = Location.of(str(run_dir))
        if self.loc.exists(schema.STORE_DIR) and not overwrite:
            raise RunExistsError(f"{self.loc.url}: already holds a run; pass overwrite=True (CLI: --overwrite) "
                                 "to replace it")
        self.task = get_task(task)
        if extract and self.task.unit != "example":
            raise TrainingError(f"{self.loc.url}: extract=True is for sequence classification; the pipelines "
                                f"extract {self.task.label} runs")
        self._adopt(self._as_dataset(examples, label_names=label_names, text_column=text_column,
                                     label_column=label_column))
        #: string labels numbered in sorted order by us, not by the user: only a model's names can confirm them
        self._sorted_names = label_names is None and not getattr(self.dataset, "labels_are_ids", True)
        self.max_length, self.batch_size, self.bf16 = max_length, int(batch_size), bf16
        self.overwrite, self.name, self.extract = overwrite, name, bool(extract)
        self.training_args = dict(training_args or {})
        self.writer: RunWriter | None = None
        self.tokenizer = None
        self.history: list[dict[str, Any]] = []
        self.checkpoints: list[str] = []
        self._token_ids: list[list[int]] | None = None
        #: units the model sees (a word the truncation cut off is not measured: NaN dynamics)
        self.measured = np.ones(len(self.labels), bool)
        self._passes = TrainingPasses(len(self.labels))
        self._started = time.perf_counter()

    @property
    def path(self) -> str:
        return self.loc.url

    @property
    def label_names(self) -> list[str]:
        """What the model's outputs mean, in id order (after ``start``: the model's names)."""
        return list(self.dataset.label_names)

    # -------------------------------------------------------------- what a task changes (see words.py)
    def _as_dataset(self, examples, **columns):
        """The dataset the recorder measures, from what the caller passed."""
        return as_text_dataset(examples, **columns)

    def _adopt(self, dataset) -> None:
        """Take ``dataset``: its units' gold labels and splits."""
        self.dataset = dataset
        self.labels = dataset.frame["label"].to_numpy(np.int64)
        self.split = dataset.frame["split"].to_numpy(str)

    def _units(self, tokenizer) -> tuple[pd.DataFrame, list[str]]:
        """Tokenise the inputs (``self._token_ids``) and return the run's unit table and label names."""
        self._token_ids = tokenize(tokenizer, self.dataset.frame["text"].tolist(), self.max_length)
        examples = self.dataset.frame.copy()
        length_column = "length" if "length" not in examples else "n_tokens"  # never clobber a user's column
        examples[length_column] = np.fromiter(map(len, self._token_ids), np.int32, len(self._token_ids))
        return examples, self.dataset.label_names

    def _align_labels(self, model: torch.nn.Module) -> None:
        """Give the units the model's class ids (the task's ``align_labels``), or say when nobody knows them."""
        from ..data import model_label_names

        names = model_label_names(getattr(model, "config", None))
        if names is None and self._sorted_names:
            warnings.warn(f"{self.path}: the model's config.id2label names no classes, so the string labels got "
                          f"ids in sorted order {dict(enumerate(self.dataset.label_names))}; if you train with "
                          "other ids, pass label_names= in your id order (or set model.config.id2label)",
                          stacklevel=3)
        self._adopt(self.task.align_labels(self.dataset, getattr(model, "config", None)))

    @property
    def n_examples(self) -> int:
        return len(self.labels)

    @property
    def token_ids(self) -> list[list[int]]:
        """Every model input's token ids as measured (after ``start``), in input order (here an input is an
        example; for token classification a sentence)."""
        if self._token_ids is None:
            raise TrainingError("DynamicsRecorder: no token ids before start(model, tokenizer)")
        return self._token_ids

    @property
    def input_split(self) -> np.ndarray:
        """The split of every model input (``token_ids``): what the training loop trains on."""
        return self.split

    def batch_labels(self, rows: np.ndarray) -> torch.Tensor:
        """The ``labels=`` a model takes for the inputs ``rows`` (one class id per example)."""
        return torch.as_tensor(self.labels[np.asarray(rows, np.int64)])

    def measure(self, model: torch.nn.Module, on_batch=None) -> np.ndarray:
        """Logits ``[units, C]`` of every unit in eval mode, batched and cast as the pipelines' extraction."""
        return predict_logits(model, self._token_ids, pad_id=pad_token_id(self.tokenizer),
                              batch_size=self.batch_size, bf16=bool(self.bf16), on_batch=on_batch)

    def measure_checkpoint(self, model: torch.nn.Module, name: str, on_batch=None) -> np.ndarray:
        """``measure``, also staging checkpoint ``name``'s extracted arrays from the same forward pass
        (committed by ``_save_checkpoint``)."""
        from ..analysis.extraction import extract_checkpoint

        return extract_checkpoint(self.writer, name, model, self._token_ids, self.labels,
                                  pad_id=pad_token_id(self.tokenizer), batch_size=self.batch_size,
                                  bf16=bool(self.bf16), task=self.task, on_batch=on_batch)

    def metrics(self, dynamics: Mapping[str, np.ndarray]) -> dict[str, float]:
        """An epoch's metrics per split (accuracy and mean loss)."""
        return epoch_metrics(dynamics, self.labels, self.split)

    # -------------------------------------------------------------- lifecycle
    def start(self, model: torch.nn.Module, tokenizer=None, *, step: int = 0, on_batch=None) -> RunWriter:
        """Create the run (examples, model and dataset attrs) and save the pre-trained state as ``epoch-0``
        (with ``extract``, measured first: ``on_batch(rows)`` after each batch)."""
        from ..models import model_info

        if model is None:
            raise TrainingError("DynamicsRecorder.start: no model given")
        if tokenizer is None:
            raise TrainingError(f"{self.path}: no tokenizer: pass tokenizer= (or processing_class= to the Trainer)")
        self._align_labels(model)
        num_labels = int(getattr(model.config, "num_labels", 0) or 0)
        if num_labels < len(self.label_names):
            raise TrainingError(f"model has {num_labels} output classes but the dataset has "
                                f"{len(self.label_names)} ({self.label_names}); expected a model with "
                                "num_labels matching the dataset")
        kind = type(model).__name__
        other = [h for name, h in HEADS.items() if name != self.task.head and kind.endswith(h.suffix)]
        if other:
            raise TrainingError(f"model {kind} is a {other[0].label}, but a {self.task.label} run needs a "
                                f"{HEADS[self.task.head].label}")
        self.tokenizer = tokenizer
        self._started = time.perf_counter()
        if self.max_length is not None and self.max_length < 2:
            raise TrainingError(f"max_length={self.max_length}: expected at least 2 tokens")
        self.max_length = resolve_max_length(tokenizer, model, self.max_length)
        if self.bf16 is None:
            self.bf16 = fast_bf16(model_device(model))
        examples, label_names = self._units(tokenizer)
        self.writer = RunWriter.create(
            self.loc, examples=examples, label_names=label_names,
            model=model_info(model, tokenizer), dataset=self.dataset.describe(), name=self.name, task=self.task.name,
            overwrite=self.overwrite, extra_attrs={"training": self._training_attrs("running")})
        if self.extract:
            self.measure_checkpoint(model, "epoch-0", on_batch)
        self._save_checkpoint(model, 0, step)
        return self.writer

    def record_batch(self, rows: Sequence[int], logits) -> None:
        """Record a training forward pass: ``logits [len(rows), C]`` (a tensor or array) of dataset ``rows``,
        computed before the update. Costs no forward pass; the epoch's means are written by ``on_epoch_end``."""
        if isinstance(logits, torch.Tensor):
            logits = logits.detach().float().cpu().numpy()
        rows = np.asarray(rows, np.int64)
        if len(rows) != len(logits):
            raise TrainingError(f"record_batch: {len(rows)} rows but logits for {len(logits)}")
        self._passes.add(rows, dynamics_from_logits(logits, self.labels[rows], self.task))

    def on_epoch_end(self, model: torch.nn.Module, *, epoch: int | None = None, step: int = 0,
                     on_batch=None) -> dict[str, float]:
        """Measure every example, write the epoch's dynamics (with the in-training means when ``record_batch``
        was called) and checkpoint ``epoch-<epoch>``; return metrics.

        Raises ``TrainingError`` (keeping the checkpoints written so far) if the model's outputs are NaN/inf.
        """
        if self.writer is None:
            raise TrainingError("DynamicsRecorder.on_epoch_end called before start(model, tokenizer)")
        epoch = len(self.history) + 1 if epoch is None else int(epoch)
        logits = (self.measure_checkpoint(model, f"epoch-{epoch}", on_batch) if self.extract
                  else self.measure(model, on_batch))
        if not np.isfinite(logits[self.measured]).all():
            self.fail(f"epoch {epoch}: the model's outputs are NaN/inf (training diverged)")
        dynamics = {**dynamics_from_logits(logits, self.labels, self.task), **self.epoch_extras(logits)}
        dynamics["pred"][~self.measured] = -1  # NaN logits: no prediction, not class 0
        passes, self._passes = self._passes, TrainingPasses(len(self.labels))
        seen = int((passes.count[(self.split == "train") & self.measured] > 0).sum())
        train = passes.means() if passes.count.any() else {}
        self.writer.write_epoch(epoch, step=int(step), **dynamics, **train)
        self._save_checkpoint(model, epoch, step)
        metrics = {"epoch": epoch, "step": int(step), **self.metrics(dynamics),
                   "train_rows_seen_in_training": seen, "seconds": round(time.perf_counter() - self._started, 1)}
        self.history.append(metrics)
        self.writer.update_attrs(training=self._training_attrs("running"))
        return metrics

    def epoch_extras(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        """Arrays beyond the task's that an epoch's measurement records (``schema.OPTIONAL_DYNAMICS_ARRAYS``)."""
        return {}

    def check_finite(self, model: torch.nn.Module, *, step: int, loss: float | None = None) -> None:
        """Stop (``TrainingError``) as soon as the loss or the weights are NaN/inf; checkpoints so far are kept."""
        if loss is not None and not np.isfinite(loss):
            self.fail(f"step {step}: the training loss is {loss} (training diverged)")
        if not parameters_finite(model):
            self.fail(f"step {step}: the model's weights are NaN/inf (training diverged)")

    def fail(self, reason: str) -> None:
        """Record the failure in the run and raise ``TrainingError`` naming the checkpoints that were kept."""
        message = (f"{reason}; stopped. {self.path} keeps checkpoints {self.checkpoints} and "
                   f"{len(self.history)} epoch(s) of dynamics. Try a lower learning rate, gradient clipping, "
                   "or check the inputs.")
        if self.writer is not None:
            self.writer.update_attrs(training=self._training_attrs("failed", error=message))
        raise TrainingError(message)

    def finish(self) -> None:
        """Mark training as finished in the run's attrs."""
        if self.writer is not None:
            self.writer.update_attrs(training=self._training_attrs("finished"))

    # -------------------------------------------------------------- helpers
    def _save_checkpoint(self, model: torch.nn.Module, epoch: int, step: int) -> None:
        name = f"epoch-{epoch}"
        rel = self.writer.weights_dir(name)
        save_weights(self.loc, rel, model, self.tokenizer)
        self.writer.add_checkpoint(name, step=int(step), epoch=float(epoch), weights=rel)
        if self.extract:
            dtype = "bfloat16" if self.bf16 else str(next(model.parameters()).dtype).replace("torch.", "")
            self.writer.commit_checkpoint(name, extract={"dtype": dtype, "max_length": self.max_length,
                                                         "chunk_rows": schema.CHUNK_ROWS, "in": "training"})
        if name not in self.checkpoints:
            self.checkpoints.append(name)

    def _training_attrs(self, status: str, error: str | None = None) -> dict[str, Any]:
        return {"status": status, "measurement": MEASUREMENT, "max_length": self.max_length,
                "bf16_measurement": bool(self.bf16), "epochs": list(self.history), **self.training_args,
                **({"error": error} if error else {})}

