"""``t3vis crossfit RUN``: K-fold cross-fitted class probabilities for out-of-sample mislabel detection.

The rows are split into K stratified folds; for each fold a fresh copy of the run's starting model (checkpoint
``epoch-0``: the pre-trained body and the initial head) is fine-tuned on the other K-1 folds with the project's
loop (``demo.fine_tune``) and predicts the held-out fold. Every row is thus predicted by a model that never trained
on it; ``t3vis.analysis.crossfit`` scores the labels against those probabilities with cleanlab. The probabilities
go into the run (``crossfit/probs``, ``crossfit/fold``) in one atomic write at the end; an interrupted cross-fit
leaves the run as it was.

Cost: K trainings, each on (K-1)/K of the rows, i.e. about K-1 times one training on all of them.

A separate command rather than ``t3vis train --cross-fit K``: it works on any run that has an ``epoch-0`` checkpoint
(from ``t3vis train``, ``t3vis demo`` or the Trainer callback), can be added after a user has looked at the data
map, reads the texts, labels, tokenization length and training settings from the run so they match, and leaves
the main training and its recorder alone.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, fields, replace
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import ModelError, RunExistsError, TrainingError
from .config import ROWS
from .demo import Progress, TrainConfig, fine_tune, quiet, saved_label_names
from ..models.inference import fast_bf16, model_device, pad_token_id, predict_logits, tokenize
from ..tasks import unit_outputs
from .recorder import parameters_finite


# ------------------------------------------------------------------------------------------------ folds
def stratified_folds(labels: np.ndarray, folds: int, seed: int = 0,
                     label_names: Sequence[str] | None = None) -> np.ndarray:
    """The fold (0..folds-1) of each row: class proportions equal across folds within one row, fixed by ``seed``.

    Every class needs at least ``folds`` rows, so that each fold's model trains on every class.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels, np.int64)
    if int(folds) < 2:
        raise TrainingError(f"folds={folds!r}: expected at least 2 (K models, each trained on K-1 folds)")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) and counts.min() < folds:
        rare = int(classes[counts.argmin()])
        name = label_names[rare] if label_names is not None else rare
        raise TrainingError(f"label {name!r} has only {counts.min()} row(s) to cross-fit; folds={folds} needs at "
                            f"least {folds} per label (use fewer folds)")
    fold = np.empty(len(labels), np.int16)
    splitter = StratifiedKFold(n_splits=int(folds), shuffle=True, random_state=int(seed))
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold[held_out] = k
    return fold


# ------------------------------------------------------------------------------------------------ the K trainings
class _FoldData:
    """What ``fine_tune`` reads from its recorder, for one fold: the rows (held-out ones marked ``validation``, so
    it never trains on them) and an end-of-epoch hook that predicts the held-out rows. Nothing is written."""

    def __init__(self, token_ids, labels: np.ndarray, held_out: np.ndarray, tokenizer, bf16: bool, name: str):
        self.token_ids, self.labels, self.tokenizer, self.bf16, self.path = token_ids, labels, tokenizer, bf16, name
        self.split = np.where(held_out, "validation", "train")
        self.held_out = np.flatnonzero(held_out)
        self.history: list[dict] = []
        self.logits: np.ndarray | None = None

    @property
    def input_split(self) -> np.ndarray:
        """Every row is one model input (``fine_tune`` trains on the ``train`` ones)."""
        return self.split

    def batch_labels(self, rows: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(self.labels[np.asarray(rows, np.int64)])

    def check_finite(self, model: torch.nn.Module, *, step: int, loss: float | None = None) -> None:
        if (loss is not None and not np.isfinite(loss)) or not parameters_finite(model):
            raise TrainingError(f"{self.path}: step {step}: the training loss or weights are NaN/inf (training "
                                "diverged); nothing was written. Try a lower --learning-rate.")

    def on_epoch_end(self, model: torch.nn.Module, *, epoch: int, step: int, on_batch=None) -> dict:
        logits = predict_logits(model, [self.token_ids[r] for r in self.held_out], pad_id=pad_token_id(self.tokenizer),
                                padding_side=getattr(self.tokenizer, "padding_side", "right"), bf16=self.bf16,
                                on_batch=on_batch)
        if not np.isfinite(logits).all():
            raise TrainingError(f"{self.path}: epoch {epoch}: the model's outputs are NaN/inf; nothing was written")
        self.logits = logits
        metrics = {"epoch": epoch, "step": step,
                   "validation_accuracy": float((logits.argmax(1) == self.labels[self.held_out]).mean())}
        self.history.append(metrics)
        return metrics


def _held_out_words(stage: str) -> str:
    """``fine_tune``'s end-of-epoch stages, named for what the fold's hook does: predict the held-out fold."""
    return (stage.replace("recording dynamics", "predicting the held-out fold")
            .replace(": accuracy", ": held-out accuracy"))


def cross_fit_probs(token_ids: Sequence[Sequence[int]], labels: np.ndarray, fold: np.ndarray, *,
                    model_for_fold: Callable[[int], torch.nn.Module], tokenizer, config: TrainConfig,
                    progress: Progress = quiet, name: str = "crossfit") -> np.ndarray:
    """Class probabilities ``[n, C]``: row i from the model of fold ``fold[i]``, fine-tuned on every other fold.

    ``model_for_fold(k)`` returns a fresh model to fine-tune for fold k (the same starting state for every k).
    """
    labels, fold = np.asarray(labels, np.int64), np.asarray(fold)
    folds = int(fold.max()) + 1
    probs: np.ndarray | None = None
    for k in range(folds):
        progress(f"fold {k + 1}/{folds}: starting", k / folds)
        model = model_for_fold(k)
        bf16 = fast_bf16(model_device(model)) if config.bf16 is None else bool(config.bf16)
        data = _FoldData(token_ids, labels, fold == k, tokenizer, bf16, f"{name} fold {k + 1}/{folds}")
        torch.manual_seed(config.seed)  # dropout: the same draws for a seed, whatever ran before
        fine_tune(model, data, config, progress=lambda stage, f, k=k: progress(
            f"fold {k + 1}/{folds}: {_held_out_words(stage)}", (k + min(f, 1.0)) / folds))
        fold_probs = unit_outputs(data.logits, None)["probs"]
        if probs is None:
            probs = np.full((len(labels), fold_probs.shape[1]), np.nan, np.float32)
        probs[data.held_out] = fold_probs
        del model
    progress("cross-fit done", 1.0)
    return probs


# ------------------------------------------------------------------------------------------------ on a run
def _config_for(run, **overrides) -> TrainConfig:
    """The run's recorded training settings (``t3vis train``/``demo``), else the defaults; ``overrides`` that are
    not None win; ``max_length`` is always the run's, so inputs are truncated as the run measured them."""
    recorded = ((run.attrs.get("training") or {}).get("config")) or {}
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in recorded.items() if k in known})
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    return replace(config, max_length=run.max_length or config.max_length).check()


def _train_rows(run) -> np.ndarray:
    categories = run.categories("split") or []
    if "train" not in categories:
        return np.empty(0, np.int64)
    return np.flatnonzero(run.column("split") == categories.index("train"))


def selected_rows(run, rows: str = "train") -> np.ndarray:
    """Row indices to cross-fit: the ``train`` split, or ``all`` rows."""
    if rows not in ROWS:
        raise TrainingError(f"rows={rows!r}: expected one of {list(ROWS)}")
    if rows == "all":
        return np.arange(run.n_examples)
    selected = _train_rows(run)
    if not len(selected):
        raise TrainingError(f"{run.loc.url}: no 'train' rows to cross-fit (use --rows all)")
    return selected


def _starting_model(run, model_path, config: TrainConfig):
    """``(model, tokenizer)``: ``model_path`` with a fresh head seeded by ``config.seed``, else the run's
    ``epoch-0`` checkpoint (the state the run's own fine-tuning started from)."""
    from ..models import load_checkpoint, load_model

    if model_path is not None:
        saved = saved_label_names(model_path)
        if saved is not None and list(saved) != run.label_names:
            raise ModelError(f"{model_path}: a classifier for {saved}, but the run's labels are {run.label_names}; "
                             "expected a base model or a classifier with the run's labels in the same order")
        torch.manual_seed(config.seed)
        return load_model(model_path, label_names=run.label_names, attn_implementation="sdpa")
    weights = run.checkpoint("epoch-0").weights_path if "epoch-0" in run.checkpoints else None
    if weights is None:
        raise ModelError(f"{run.loc.url}: no checkpoint 'epoch-0' with weights to start each fold from; pass "
                         "--model DIR (the pre-trained model the run was fine-tuned from)")
    return load_checkpoint(weights, attn_implementation="sdpa")


def cost_note(run, n_rows: int, folds: int, epochs: int) -> str:
    """What a cross-fit costs, with a time estimate scaled from the run's own recorded training time (if any)."""
    per_fold = n_rows - n_rows // folds
    note = (f"{folds} folds = {folds} trainings of {epochs} epoch(s), each on ~{per_fold:,} of {n_rows:,} rows "
            f"(~{(folds - 1):g}x one training on all {n_rows:,})")
    history = (run.attrs.get("training") or {}).get("epochs") or []
    seconds = history[-1].get("seconds") if history else None
    trained = len(_train_rows(run))
    if seconds and trained:
        ratio = folds * epochs * per_fold / (len(history) * trained)
        estimate = seconds * ratio
        shown = f"{estimate / 60:.0f} min" if estimate >= 90 else f"{estimate:.0f} s"
        note += (f"; about {ratio:.1f}x this run's own training ({seconds:.0f} s for {len(history)} epoch(s) on "
                 f"{trained:,} rows), so ~{shown} on the same machine")
    else:
        note += "; the progress bar's ETA holds from the first steps"
    return note


def cross_fit_run(path, *, folds: int = 5, seed: int = 0, rows: str = "train", model_path=None,
                  epochs: int | None = None, batch_size: int | None = None, learning_rate: float | None = None,
                  bf16: bool | None = None, overwrite: bool = False, progress: Progress | None = None,
                  echo: Callable[[str], None] | None = None) -> dict:
    """Cross-fit ``rows`` of the run at ``path`` in ``folds`` folds and store the probabilities; returns the attrs
    written. An existing cross-fit is only replaced with ``overwrite``; checks run before any training."""
    from ..store import Run, RunWriter

    run = Run(str(path))
    held = run.crossfit_attrs()
    if held is not None and not overwrite:
        raise RunExistsError(f"{run.loc.url}: already holds a cross-fit ({held.get('folds')} folds, seed "
                             f"{held.get('seed')}); pass --overwrite to replace it")
    config = _config_for(run, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                         bf16=bf16)
    selected = selected_rows(run, rows)
    labels = run.column("label", selected).astype(np.int64)
    fold = stratified_folds(labels, folds, seed, run.label_names)
    (echo or (lambda message: None))(f"cross-fit: {cost_note(run, len(selected), folds, config.epochs)}")
    progress = progress or quiet
    progress("loading model", 0.0)
    base, tokenizer = _starting_model(run, model_path, config)
    token_ids = tokenize(tokenizer, run.column("text", selected).tolist(), config.max_length)
    started = time.perf_counter()
    probs = cross_fit_probs(token_ids, labels, fold, model_for_fold=lambda k: copy.deepcopy(base),
                            tokenizer=tokenizer, config=config, progress=progress, name=run.loc.url)
    all_probs = np.full((run.n_examples, len(run.label_names)), np.nan, np.float32)
    all_fold = np.full(run.n_examples, -1, np.int16)
    all_probs[selected], all_fold[selected] = probs, fold
    attrs = {"folds": int(folds), "seed": int(seed), "rows": rows, "n_rows": int(len(selected)),
             "model": str(model_path) if model_path is not None else "checkpoint epoch-0",
             "config": asdict(config), "seconds": round(time.perf_counter() - started, 1),
             "held_out_accuracy": float((probs.argmax(1) == labels).mean()),
             "scoring": "t3vis.analysis.crossfit: cleanlab self_confidence label quality, find_label_issues"}
    RunWriter(run.loc).write_crossfit(all_probs, all_fold, attrs)
    return attrs
