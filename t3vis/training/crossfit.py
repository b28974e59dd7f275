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
from ..models.inference import fast_bf16, model_device, pad_token_id, predict_logits, tokenize, unit_offsets
from ..tasks import get_task, unit_outputs
from ..tasks.token_classification import sentence_spans, tag_types
from .recorder import parameters_finite
from .words import padded_labels


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


def sentence_folds(strata: Sequence, folds: int, seed: int = 0) -> np.ndarray:
    """The fold of each sentence of a token run, given each one's stratum (its rarest entity type, "" for none).

    Strata one after the other, each in a seeded random order, are dealt round-robin: folds differ in size by at
    most one sentence and every stratum is spread over them as evenly as its size allows (a type with fewer
    sentences than folds simply misses some folds; words, not sentences, carry the labels).
    """
    if int(folds) < 2:
        raise TrainingError(f"folds={folds!r}: expected at least 2 (K models, each trained on K-1 folds)")
    if len(strata) < folds:
        raise TrainingError(f"only {len(strata)} sentence(s) to cross-fit; folds={folds} needs at least {folds}")
    codes = np.unique(np.asarray(strata, dtype=object).astype(str), return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(codes == c)) for c in range(int(codes.max()) + 1)])
    fold = np.empty(len(codes), np.int16)
    fold[order] = np.arange(len(order)) % int(folds)
    return fold


def rarest_types(tags: Sequence[np.ndarray], label_names: Sequence[str]) -> list[str]:
    """Each sentence's rarest entity type among ``tags`` (its words' tag ids; types counted over all the
    sentences' words, BIO prefixes dropped), "" for a sentence without one: what ``sentence_folds`` stratifies."""
    types = np.array(tag_types(label_names), dtype=object)
    words = types[np.concatenate(tags)] if len(tags) else np.array([], object)
    kinds, counts = np.unique(words[words != ""].astype(str), return_counts=True)
    total = dict(zip(kinds, counts))
    return [min((t for t in set(types[np.asarray(s)]) if t), key=lambda t: (total[t], t), default="") for s in tags]


# ------------------------------------------------------------------------------------------------ the K trainings
class _FoldData:
    """What ``fine_tune`` reads from its recorder, for one fold: the rows (held-out ones marked ``validation``, so
    it never trains on them) and an end-of-epoch hook that predicts the held-out rows. Nothing is written."""

    def __init__(self, token_ids, labels: np.ndarray, held_out: np.ndarray, tokenizer, bf16: bool, name: str):
        self.token_ids, self.labels, self.tokenizer, self.bf16, self.path = token_ids, labels, tokenizer, bf16, name
        self.split = np.where(held_out, "validation", "train")
        self.held_out = np.flatnonzero(held_out)
        #: the output rows the held-out inputs give (here the inputs themselves), and which of them the model reads
        self.units = self.held_out
        self.readable = np.ones(len(self.units), bool)
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

    def predict(self, model: torch.nn.Module, on_batch=None) -> np.ndarray:
        """Logits ``[len(units), C]`` of the held-out inputs."""
        return predict_logits(model, [self.token_ids[r] for r in self.held_out], pad_id=pad_token_id(self.tokenizer),
                              padding_side=getattr(self.tokenizer, "padding_side", "right"), bf16=self.bf16,
                              on_batch=on_batch, positions=self.positions())

    def positions(self):
        return None

    def on_epoch_end(self, model: torch.nn.Module, *, epoch: int, step: int, on_batch=None) -> dict:
        logits = self.predict(model, on_batch)
        if not np.isfinite(logits[self.readable]).all():
            raise TrainingError(f"{self.path}: epoch {epoch}: the model's outputs are NaN/inf; nothing was written")
        self.logits = logits
        read = self.readable
        metrics = {"epoch": epoch, "step": step, "validation_accuracy":
                   float((logits[read].argmax(1) == self.labels[self.units][read]).mean()) if read.any() else 0.0}
        self.history.append(metrics)
        return metrics


class _TaggedFoldData(_FoldData):
    """A token run's fold: the inputs are sentences, trained on their sub-token tags (``align_words``), and the
    output rows are the held-out sentences' words, read at their first sub-tokens (NaN for a word cut off)."""

    def __init__(self, alignment, word_labels: np.ndarray, held_out: np.ndarray, tokenizer, bf16: bool, name: str):
        super().__init__(alignment.input_ids, word_labels, held_out, tokenizer, bf16, name)
        self.alignment = alignment
        offsets = unit_offsets(alignment.first_token)
        self.units = np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in self.held_out]).astype(np.int64)
        self.readable = np.concatenate([np.asarray(alignment.first_token[r]) >= 0 for r in self.held_out])

    def batch_labels(self, rows: np.ndarray) -> torch.Tensor:
        return padded_labels([self.alignment.labels[r] for r in rows], self.tokenizer)

    def positions(self):
        return [self.alignment.first_token[r] for r in self.held_out]


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
    return _cross_fit(lambda k, bf16: _FoldData(token_ids, labels, fold == k, tokenizer, bf16,
                                                f"{name} fold {k + 1}/{int(fold.max()) + 1}"),
                      int(fold.max()) + 1, len(labels), model_for_fold, config, progress)


def cross_fit_word_probs(alignment, word_labels: np.ndarray, sentence_fold: np.ndarray, *,
                         model_for_fold: Callable[[int], torch.nn.Module], tokenizer, config: TrainConfig,
                         progress: Progress = quiet, name: str = "crossfit") -> np.ndarray:
    """Tag probabilities ``[words, C]`` of a token classifier: each sentence's words from the model of its fold
    ``sentence_fold[s]``, fine-tuned on the other folds' sentences (``alignment``: ``align_words`` of them, with
    tags); NaN for a word the truncation cut off."""
    word_labels, sentence_fold = np.asarray(word_labels, np.int64), np.asarray(sentence_fold)
    folds = int(sentence_fold.max()) + 1
    return _cross_fit(lambda k, bf16: _TaggedFoldData(alignment, word_labels, sentence_fold == k, tokenizer, bf16,
                                                      f"{name} fold {k + 1}/{folds}"),
                      folds, len(word_labels), model_for_fold, config, progress)


def _cross_fit(fold_data: Callable[[int, bool], _FoldData], folds: int, n: int,
               model_for_fold: Callable[[int], torch.nn.Module], config: TrainConfig, progress: Progress
               ) -> np.ndarray:
    """The K trainings: fold k's model is fine-tuned on ``fold_data(k, bf16)``'s training inputs and predicts its
    held-out units, which fill their rows of the ``[n, C]`` probabilities."""
    probs: np.ndarray | None = None
    for k in range(folds):
        progress(f"fold {k + 1}/{folds}: starting", k / folds)
        model = model_for_fold(k)
        bf16 = fast_bf16(model_device(model)) if config.bf16 is None else bool(config.bf16)
        data = fold_data(k, bf16)
        torch.manual_seed(config.seed)  # dropout: the same draws for a seed, whatever ran before
        fine_tune(model, data, config, progress=lambda stage, f, k=k: progress(
            f"fold {k + 1}/{folds}: {_held_out_words(stage)}", (k + min(f, 1.0)) / folds))
        fold_probs = unit_outputs(data.logits, None)["probs"]
        if probs is None:
            probs = np.full((n, fold_probs.shape[1]), np.nan, np.float32)
        probs[data.units] = fold_probs
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
    from ..models import load_checkpoint

    if model_path is not None:
        task = get_task(run.task)
        saved = saved_label_names(model_path, task.head)
        if saved is not None and list(saved) != run.label_names:
            raise ModelError(f"{model_path}: a classifier for {saved}, but the run's labels are {run.label_names}; "
                             "expected a base model or a classifier with the run's labels in the same order")
        torch.manual_seed(config.seed)
        return task.load_model(model_path, label_names=run.label_names, attn_implementation="sdpa")
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
    tagging = run.task == "token_classification"
    if tagging:  # folds of whole sentences (a split holds whole sentences, so these are the selected words)
        spans = sentence_spans(run.column("sentence"), selected)
        selected = np.concatenate(spans) if spans else selected[:0]
        labels = run.column("label", selected).astype(np.int64)
        sizes = [len(s) for s in spans]
        bounds = list(zip(np.cumsum([0, *sizes])[:-1], np.cumsum(sizes)))  # each sentence's words in ``selected``
        tags = [labels[a:b] for a, b in bounds]
        sentence_fold = sentence_folds(rarest_types(tags, run.label_names), folds, seed)
        fold = np.repeat(sentence_fold, sizes).astype(np.int16)
    else:
        labels = run.column("label", selected).astype(np.int64)
        fold = stratified_folds(labels, folds, seed, run.label_names)
    (echo or (lambda message: None))(f"cross-fit: {cost_note(run, len(selected), folds, config.epochs)}")
    progress = progress or quiet
    progress("loading model", 0.0)
    base, tokenizer = _starting_model(run, model_path, config)
    started = time.perf_counter()
    fresh = lambda k: copy.deepcopy(base)  # noqa: E731
    if tagging:
        from ..data.subwords import align_words

        words = [str(w) for w in run.column("text", selected)]
        sentences = [words[a:b] for a, b in bounds]
        alignment = align_words(tokenizer, sentences, [list(t) for t in tags], config.max_length)
        probs = cross_fit_word_probs(alignment, labels, sentence_fold, model_for_fold=fresh, tokenizer=tokenizer,
                                     config=config, progress=progress, name=run.loc.url)
        fold = np.where(np.isfinite(probs).all(1), fold, -1).astype(np.int16)  # a word cut off has no prediction
    else:
        token_ids = tokenize(tokenizer, run.column("text", selected).tolist(), config.max_length)
        probs = cross_fit_probs(token_ids, labels, fold, model_for_fold=fresh, tokenizer=tokenizer, config=config,
                                progress=progress, name=run.loc.url)
    read = fold >= 0
    all_probs = np.full((run.n_examples, len(run.label_names)), np.nan, np.float32)
    all_fold = np.full(run.n_examples, -1, np.int16)
    all_probs[selected], all_fold[selected] = probs, fold
    attrs = {"folds": int(folds), "seed": int(seed), "rows": rows, "n_rows": int(read.sum()),
             "model": str(model_path) if model_path is not None else "checkpoint epoch-0",
             "config": asdict(config), "seconds": round(time.perf_counter() - started, 1),
             "held_out_accuracy": float((probs[read].argmax(1) == labels[read]).mean()),
             "scoring": "t3vis.analysis.crossfit: cleanlab self_confidence label quality, find_label_issues"}
    if tagging:
        attrs["unit"] = "word: folds of whole sentences, stratified by each sentence's rarest entity type"
    RunWriter(run.loc).write_crossfit(all_probs, all_fold, attrs)
    return attrs
