"""Data maps (Swayamdipta et al. 2020) and mislabel scores from recorded training dynamics.

Data map: confidence is the mean gold-label probability across epochs, variability its (population) standard
deviation, correctness the fraction of epochs predicted right (allenai/cartography's definitions), from the
eval-mode measurements at the end of each epoch.

Mislabel scores are defined here and nowhere else. Each has a name, a definition and a range, and is oriented
*higher = more suspect*; it appears as the column ``<name>_score``. The column ``mislabel_score`` — in
``run_data_map``, the explorer's table and colour scale, and ``t3vis export`` — is the first available of
``PREFERENCE``, whose head ``DEFAULT_SCORE`` was chosen by measurement (see there). Scores computed elsewhere (e.g.
a cross-fitted one) join with ``register_score`` under their own name.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

#: The column every consumer shows as "the" mislabel score.
MISLABEL_COLUMN = "mislabel_score"


#: The data map's regions (Swayamdipta et al. 2020): easy-to-learn = confidence >= EASY_CONFIDENCE with variability
#: below AMBIGUOUS_VARIABILITY, hard-to-learn = confidence <= HARD_CONFIDENCE with variability below it, ambiguous =
#: the rest. The explorer draws the same thresholds.
EASY_CONFIDENCE, HARD_CONFIDENCE, AMBIGUOUS_VARIABILITY = 0.75, 0.25, 0.2


@dataclass(frozen=True)
class DataMap:
    confidence: np.ndarray
    variability: np.ndarray
    correctness: np.ndarray

    def region(self, easy: float = EASY_CONFIDENCE, hard: float = HARD_CONFIDENCE,
               ambiguous_variability: float = AMBIGUOUS_VARIABILITY) -> np.ndarray:
        """easy-to-learn / ambiguous / hard-to-learn, the three regions of the data map (thresholds adjustable)."""
        out = np.full(self.confidence.shape, "ambiguous", dtype=object)
        out[(self.confidence >= easy) & (self.variability < ambiguous_variability)] = "easy"
        out[(self.confidence <= hard) & (self.variability < ambiguous_variability)] = "hard"
        return out


def data_map(gold_prob: np.ndarray, pred: np.ndarray, labels: np.ndarray) -> DataMap:
    """Data-map coordinates from ``gold_prob``/``pred`` of shape [epochs, n] and gold ``labels`` [n]."""
    gold_prob = np.asarray(gold_prob, dtype=np.float64)
    if gold_prob.ndim != 2:
        raise ValueError(f"gold_prob: expected [epochs, n], got shape {gold_prob.shape}")
    correct = np.asarray(pred) == np.asarray(labels)[None, :]
    return DataMap(confidence=gold_prob.mean(0).astype(np.float32),
                   variability=gold_prob.std(0).astype(np.float32),
                   correctness=correct.mean(0).astype(np.float32))


# ------------------------------------------------------------------------------------------------ scores
@dataclass(frozen=True)
class MislabelScore:
    """A named mislabel score: ``compute(**inputs)`` over the arrays named in ``needs`` gives one value per example
    (NaN where it has no data, e.g. in-training scores of validation rows)."""

    name: str
    definition: str
    low: float
    high: float
    needs: tuple[str, ...]
    compute: Callable[..., np.ndarray]

    @property
    def column(self) -> str:
        return f"{self.name}_score"

    @property
    def description(self) -> str:
        """One line for tooltips, legends and help: what it is, its range, which way is suspect."""
        high = "inf" if np.isinf(self.high) else f"{self.high:g}"
        return f"{self.column}: {self.definition} Range {self.low:g} to {high}; higher = more likely mislabeled."


def _epoch_mean(values: np.ndarray) -> np.ndarray:
    """Mean over epochs (axis 0), skipping NaN (epochs an example was not seen); all-NaN gives NaN."""
    values = np.asarray(values, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=0)


def _percentile_ranks(*scores: np.ndarray) -> list[np.ndarray]:
    """Each score's percentile rank in (0, 1] (ties share their mean rank) among the rows where every score is
    finite; NaN elsewhere. Ranks put scores of different spread on one scale before they are averaged."""
    from scipy.stats import rankdata

    valid = np.logical_and.reduce([np.isfinite(s) for s in scores])
    out = []
    for s in scores:
        ranks = np.full(s.shape, np.nan)
        ranks[valid] = rankdata(s[valid]) / max(1, int(valid.sum()))
        out.append(ranks)
    return out


def _type_confidence(typed_gold_prob: np.ndarray, gold_prob: np.ndarray) -> np.ndarray:
    """1 - the last epoch's agreement with an entity word's type; for words without one (NaN: tagged O), 1 - p(O)."""
    typed, gold = np.asarray(typed_gold_prob, np.float64)[-1], np.asarray(gold_prob, np.float64)[-1]
    return np.where(np.isnan(typed), 1.0 - gold, 1.0 - typed)


def _type_consensus(type_prob: np.ndarray, neighbour_type_prob: np.ndarray, gold_prob: np.ndarray) -> np.ndarray:
    """``_type_confidence`` of the geometric mean of the tagger's and the neighbours' probability of the type."""
    agreement = np.sqrt(np.asarray(type_prob, np.float64)[-1:] * np.asarray(neighbour_type_prob, np.float64)[-1:])
    return _type_confidence(agreement, gold_prob)


def _mention_mean(values: np.ndarray, mention: np.ndarray) -> np.ndarray:
    """Each word's value replaced by the mean over the finite values of its mention (``mention`` ids, -1: none);
    words outside a mention, and words without a value, keep theirs."""
    values, mention = np.asarray(values, np.float64), np.asarray(mention, np.int64)
    pooled = (mention >= 0) & np.isfinite(values)
    n = int(mention.max()) + 1 if len(mention) else 0
    sums = np.bincount(mention[pooled], values[pooled], n)
    counts = np.bincount(mention[pooled], None, n)
    out = values.copy()
    out[pooled] = sums[mention[pooled]] / counts[mention[pooled]]
    return out


def _mention_consensus(type_prob: np.ndarray, neighbour_type_prob: np.ndarray, surface_type_prob: np.ndarray,
                       mention: np.ndarray, gold_prob: np.ndarray) -> np.ndarray:
    """``_type_confidence`` of the geometric mean of three probabilities of the type (the tagger's, the neighbours',
    the corpus's), averaged over each mention."""
    agreement = np.cbrt(np.asarray(type_prob, np.float64)[-1] * np.asarray(neighbour_type_prob, np.float64)[-1]
                        * np.asarray(surface_type_prob, np.float64))
    return _type_confidence(_mention_mean(agreement, mention)[None], gold_prob)


def _aum_ensemble(train_margin: np.ndarray, margin: np.ndarray) -> np.ndarray:
    in_training, at_epoch_end = _percentile_ranks(-_epoch_mean(train_margin), -_epoch_mean(margin))
    return (in_training + at_epoch_end) / 2


SCORES: dict[str, MislabelScore] = {}


def register_score(score: MislabelScore) -> MislabelScore:
    """Add (or replace) a score under ``score.name``; its inputs come from ``score_inputs`` (the recorded
    dynamics) and, for a run, its task's row inputs (``run_columns``)."""
    SCORES[score.name] = score
    return score


register_score(MislabelScore(
    "aum_ensemble", "the mean of two percentile ranks among the training rows: of train_aum (the margin "
    "p(given label) - max p(other label) averaged over the training forward passes, which see a flipped label before "
    "it is memorised) and of aum (the same margin in eval mode at each epoch's end, free of dropout).",
    0.0, 1.0, ("train_margin", "margin"), _aum_ensemble))
register_score(MislabelScore(
    "train_aum", "minus the area under the margin (AUM, Pleiss et al. 2020, on probabilities rather than logits): "
    "the margin p(given label) - max p(other label), averaged over every training forward pass that saw the "
    "example (before its update).",
    -1.0, 1.0, ("train_margin",), lambda train_margin: -_epoch_mean(train_margin)))
register_score(MislabelScore(
    "train_confidence", "1 - the mean probability of the given label over every training forward pass that saw "
    "the example (before its update).", 0.0, 1.0, ("train_gold_prob",),
    lambda train_gold_prob: 1.0 - _epoch_mean(train_gold_prob)))
register_score(MislabelScore(
    "aum", "minus the mean margin p(given label) - max p(other label), measured in eval mode at the end of each "
    "epoch.", -1.0, 1.0, ("margin",), lambda margin: -_epoch_mean(margin)))
register_score(MislabelScore(
    "confidence", "1 - the data map's confidence: 1 - the mean probability of the given label, measured in eval "
    "mode at the end of each epoch.", 0.0, 1.0, ("gold_prob",), lambda gold_prob: 1.0 - _epoch_mean(gold_prob)))
register_score(MislabelScore(
    "type_confidence", "(token runs) 1 - the probability of the given tag among the entity tags only (every tag but "
    "O), in eval mode at the last epoch's end: whether the tagger agrees with an entity word's type, however sure it "
    "is that the word is an entity; for words tagged O, 1 - p(O) (how much it takes the word for an entity).",
    0.0, 1.0, ("typed_gold_prob", "gold_prob"), _type_confidence))
register_score(MislabelScore(
    "type_consensus", "(token runs) 1 - the geometric mean of two probabilities of an entity word's given type, at "
    "the last epoch's end: the tagger's (its B- and I- tags among the entity tags) and its neighbours' (the share of "
    "the word's 50 nearest entity words, by the tagger's last hidden states, given that type, smoothed). A flip the "
    "tagger has memorised still sits among words of its true type. For words tagged O, 1 - p(O).",
    0.0, 1.0, ("type_prob", "neighbour_type_prob", "gold_prob"), _type_consensus))
register_score(MislabelScore(
    "mention_consensus", "(token runs) 1 - the geometric mean of three probabilities of an entity word's given type, "
    "at the last epoch's end, averaged over the words of its given mention: the tagger's and its neighbours' (as in "
    "type_consensus) and the corpus's (the share of the other entity occurrences of the same word given that type, "
    "(same + 1/2) / (others + 1); 1/2 for a word seen once). A mention's type is one decision, so its words share "
    "one score; the same word typed otherwise elsewhere is the classic sign of an annotation error. For words tagged "
    "O, 1 - p(O).",
    0.0, 1.0, ("type_prob", "neighbour_type_prob", "surface_type_prob", "mention", "gold_prob"), _mention_consensus))
register_score(MislabelScore(
    "loss", "the mean cross-entropy loss of the given label, measured in eval mode at the end of each epoch.",
    0.0, np.inf, ("loss",), lambda loss: _epoch_mean(loss)))

#: The measured best (benchmarks/bench_mislabel.py; RESULTS.md "Mislabel detection"). BBC News, MiniLM, 3 seeds per
#: setting; flips found in the top 10% (recall) and average precision (AUPR), means:
#:   hard (1,000 rows, 32 tokens, 10% class-conditional flips): aum_ensemble 0.880 / 0.925, train_aum 0.887 / 0.925,
#:     aum 0.860 / 0.914, loss 0.857 / 0.894;
#:   uniform (1,780 rows, 96 tokens, 5% uniform flips): aum_ensemble 0.989 / 0.967, train_aum 0.993 / 0.953,
#:     aum 0.989 / 0.965, loss 0.989 / 0.964.
#: The training passes see flips before they are memorised (what wins on the hard setting), the eval passes rank the
#: last few flips of an easy corpus better (no dropout): the ensemble of the two is the only score at least as good
#: as the best baseline on both. ``PREFERENCE`` falls back for runs recorded without one of them.
DEFAULT_SCORE = "aum_ensemble"
PREFERENCE = (DEFAULT_SCORE, "train_aum", "aum", "confidence")
#: Per task, where words are the rows, the measured best differs (benchmarks/bench_ner.py; RESULTS.md "Token
#: classification"). Twitter NER, MiniLM tagger, 5% of training mentions flipped, entity words of the training split,
#: six seeds, recall in the top 10% (AUPR): mention_consensus 0.792 / 0.790 / 0.781 / 0.802 / 0.756 / 0.660 (AUPR
#: 0.670 / 0.742 / 0.632 / 0.639 / 0.671 / 0.489), type_consensus 0.812 / 0.800 / 0.760 / 0.723 / 0.778 / 0.596 (AUPR
#: 0.594 / 0.641 / 0.541 / 0.569 / 0.587 / 0.392), type_confidence 0.729 / 0.733 / 0.646 / 0.624 / 0.722 / 0.521, loss
#: 0.583 / 0.590 / 0.510 / 0.485 / 0.522 / 0.394. A tagger at 0.5 entity F1 is unsure whether many correct words of
#: rare types are entities at all (low p(given tag), crowding every plain score's top ranks), but a flipped mention is
#: an entity it types differently (the type's probability among the entity tags), one it has memorised still sits
#: among words of its true type (the neighbours' share; k = 50 chosen on seeds 0 and 1), and a flipped word is often
#: typed otherwise where else it occurs (the corpus's share). mention_consensus was fixed on seeds 0-3 and then
#: beat type_consensus on the held-out seeds 4 and 5 in AUPR (both) and mean recall. Runs recorded before the type
#: arrays existed fall back to type_confidence, then confidence.
TASK_PREFERENCE = {"token_classification": ("mention_consensus", "type_consensus", "type_confidence", "confidence",
                                            "train_confidence", "aum")}


def preference_for(run) -> tuple[str, ...]:
    """The order in which ``run``'s task prefers scores for ``mislabel_score`` (``PREFERENCE`` unless measured
    otherwise for the task)."""
    return TASK_PREFERENCE.get(getattr(run, "task", None), PREFERENCE)


def score_inputs(dynamics: Any) -> dict[str, np.ndarray]:
    """The arrays scores can read from a ``Dynamics`` (``[epochs, n]``; missing ones left out)."""
    keys = {need for score in SCORES.values() for need in score.needs}
    return {k: v for k in sorted(keys) if (v := getattr(dynamics, k, None)) is not None}


def available_scores(inputs) -> list[MislabelScore]:
    """The scores ``inputs`` (arrays by name, or just the names) allow."""
    return [s for s in SCORES.values() if all(k in inputs for k in s.needs)]


def default_score(inputs, preference: tuple[str, ...] = PREFERENCE) -> MislabelScore:
    """The score behind ``mislabel_score`` for ``inputs`` (arrays by name, or just the names): the first of
    ``preference`` (a run's: ``preference_for(run)``) they allow."""
    for name in preference:
        score = SCORES.get(name)
        if score is not None and all(k in inputs for k in score.needs):
            return score
    raise ValueError(f"no mislabel score can be computed from {sorted(inputs)}; expected the recorded dynamics "
                     f"and the task's row inputs ({', '.join(preference)} need {[SCORES[n].needs for n in preference if n in SCORES]})")


def mislabel_score(inputs: dict[str, np.ndarray], name: str | None = None,
                   preference: tuple[str, ...] = PREFERENCE) -> np.ndarray:
    """One score (``name``, default: ``default_score``) for every example, float32, higher = more suspect."""
    score = default_score(inputs, preference) if name is None else SCORES.get(name)
    if score is None:
        raise ValueError(f"mislabel score {name!r}: expected one of {sorted(SCORES)}")
    missing = [k for k in score.needs if k not in inputs]
    if missing:
        raise ValueError(f"mislabel score {name!r} needs {missing}, which this run did not record (nor its task "
                         "give)")
    return np.asarray(score.compute(**{k: inputs[k] for k in score.needs}), np.float32)


#: What the other ``datamap_columns`` mean (the scores describe themselves).
COLUMN_DEFINITIONS = {
    "prediction": "the class predicted by the model after the last epoch (eval mode, at the epoch's end).",
    "confidence": "the mean probability of the given label across epochs (eval mode, at each epoch's end); the "
                  "data map's y axis. Range 0 to 1.",
    "variability": "the standard deviation of that probability across epochs; the data map's x axis. Range 0 to "
                   "0.5.",
    "correctness": "the fraction of epochs whose prediction is the given label. Range 0 to 1.",
}


def column_description(column: str, inputs, preference: tuple[str, ...] = PREFERENCE) -> str:
    """One line saying what a ``datamap_columns`` column is, for ``inputs`` (arrays by name, or the names)."""
    if column == MISLABEL_COLUMN:
        return f"{MISLABEL_COLUMN} = {default_score(inputs, preference).description}"
    for score in SCORES.values():
        if score.column == column:
            return score.description
    return f"{column}: {COLUMN_DEFINITIONS[column]}"


def datamap_columns(dynamics: Any, labels: np.ndarray, preference: tuple[str, ...] = PREFERENCE,
                    row_inputs: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Per-example columns from recorded dynamics, all rows: ``prediction`` (the last epoch's), confidence,
    variability, correctness, ``mislabel_score`` and every available ``<name>_score``. One source: the recorded
    dynamics (eval mode at epoch ends; ``train_*`` from the training forward passes), and for scores that need
    them, ``row_inputs`` (per-row arrays from the run's rows, ``Task.score_inputs``)."""
    dm = data_map(dynamics.gold_prob, dynamics.pred, labels)
    inputs = {**score_inputs(dynamics), **(row_inputs or {})}
    out = {"prediction": np.asarray(dynamics.pred[-1], np.int16), "confidence": dm.confidence,
           "variability": dm.variability, "correctness": dm.correctness,
           MISLABEL_COLUMN: mislabel_score(inputs, preference=preference)}
    for score in available_scores(inputs):
        out[score.column] = mislabel_score(inputs, score.name)
    return out


# ------------------------------------------------------------------------------------------------ evaluation
def detection_metrics(scores: np.ndarray, flipped: np.ndarray, fractions=(0.05, 0.10)) -> dict[str, float]:
    """How well ``scores`` find the ``flipped`` examples: precision/recall among the top fractions, and ROC AUC."""
    scores = np.asarray(scores, np.float64)
    flipped = np.asarray(flipped, bool)
    order = np.argsort(-scores, kind="stable")
    out: dict[str, float] = {"n": int(len(scores)), "n_flipped": int(flipped.sum())}
    for f in fractions:
        k = max(1, int(round(f * len(scores))))
        hits = flipped[order[:k]].sum()
        out[f"precision@{f:g}"] = float(hits / k)
        out[f"recall@{f:g}"] = float(hits / max(1, flipped.sum()))
    out["roc_auc"] = roc_auc(scores, flipped)
    return out


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC via the rank-sum (Mann-Whitney U) identity, ties counted half."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ------------------------------------------------------------------------------------------------ on a run
def split_rows(run, split: str | None) -> np.ndarray:
    """Row indices of ``split`` (all rows for None)."""
    if split is None:
        return np.arange(run.n_examples)
    categories = run.categories("split") or []
    if split not in categories:
        raise ValueError(f"split {split!r}: expected one of {categories}")
    return np.flatnonzero(run.column("split") == categories.index(split))


def run_score_names(run) -> list[str]:
    """The names of every input ``run_columns`` gives the scores (metadata only): what ``default_score`` and
    ``column_description`` need to say which score a run's ``mislabel_score`` is."""
    from ..tasks import task_of

    return run.dynamics_arrays() + list(task_of(run).score_input_names)


def run_columns(run) -> dict[str, np.ndarray] | None:
    """``datamap_columns`` of a run (all rows), or None before any epoch: the one place ``run_data_map``, the
    explorer and ``t3vis export`` get them from; the run's task adds the inputs it reads from the rows."""
    from ..tasks import task_of

    dynamics = run.dynamics()
    if dynamics is None:
        return None
    return datamap_columns(dynamics, run.column("label"), preference_for(run), task_of(run).score_inputs(run))


def run_data_map(run, split: str | None = "train"):
    """The run's data map and mislabel scores (``run_columns``) as a DataFrame indexed by example row, or None
    before any epoch. ``split`` keeps the rows of one split (default ``train``, where mislabels are searched);
    None keeps every row. ``attrs["mislabel_score"]`` says which score the ``mislabel_score`` column is."""
    import pandas as pd

    columns = run_columns(run)
    if columns is None:
        return None
    rows = split_rows(run, split)
    out = pd.DataFrame({k: v[rows] for k, v in columns.items()}, index=pd.Index(rows, name="row"))
    out.attrs[MISLABEL_COLUMN] = column_description(MISLABEL_COLUMN, run_score_names(run), preference_for(run))
    return out
