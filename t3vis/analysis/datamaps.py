"""Data maps (Swayamdipta et al. 2020) and mislabel scores from per-epoch training dynamics.

Definitions follow allenai/cartography: confidence is the mean gold-label probability across epochs,
variability its (population) standard deviation, correctness the fraction of epochs predicted right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MISLABEL_METHODS = ("confidence", "aum", "loss")


@dataclass(frozen=True)
class DataMap:
    confidence: np.ndarray
    variability: np.ndarray
    correctness: np.ndarray

    def region(self, easy: float = 0.75, hard: float = 0.25, ambiguous_variability: float = 0.2) -> np.ndarray:
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


def mislabel_scores(gold_prob: np.ndarray, *, margin: np.ndarray | None = None, loss: np.ndarray | None = None,
                    method: str = "confidence") -> np.ndarray:
    """Higher = more likely mislabeled.

    ``confidence``: 1 - mean gold-label probability (the data map's low-confidence corner);
    ``aum``: minus the area under the margin (Pleiss et al. 2020), margin = p(gold) - max p(other), averaged;
    ``loss``: mean training loss.
    """
    if method == "confidence":
        return (1.0 - np.asarray(gold_prob, np.float64).mean(0)).astype(np.float32)
    if method == "aum":
        if margin is None:
            raise ValueError("method='aum' needs the recorded margins (dynamics.margin)")
        return (-np.asarray(margin, np.float64).mean(0)).astype(np.float32)
    if method == "loss":
        if loss is None:
            raise ValueError("method='loss' needs the recorded losses")
        return np.asarray(loss, np.float64).mean(0).astype(np.float32)
    raise ValueError(f"method {method!r}: expected one of {MISLABEL_METHODS}")


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


def run_data_map(run, split: str | None = "train"):
    """The data map of a run's recorded dynamics as a DataFrame indexed by example row, or None before any epoch.

    Columns: confidence, variability, correctness (cartography's definitions), ``mislabel_score`` (low
    confidence: higher = more likely mislabeled) and ``aum_score`` when margins were recorded. ``split`` keeps
    the rows of one split (default ``train``, where mislabels are searched); None keeps every row.
    """
    import pandas as pd

    dynamics = run.dynamics()
    if dynamics is None:
        return None
    labels = run.column("label")
    rows = np.arange(run.n_examples)
    if split is not None:
        categories = run.categories("split") or []
        if split not in categories:
            raise ValueError(f"split {split!r}: expected one of {categories}")
        rows = np.flatnonzero(run.column("split") == categories.index(split))
    dm = data_map(dynamics.gold_prob[:, rows], dynamics.pred[:, rows], labels[rows])
    out = pd.DataFrame({"confidence": dm.confidence, "variability": dm.variability, "correctness": dm.correctness,
                        "mislabel_score": mislabel_scores(dynamics.gold_prob[:, rows])}, index=rows)
    if dynamics.margin is not None:
        out["aum_score"] = mislabel_scores(dynamics.gold_prob[:, rows], margin=dynamics.margin[:, rows],
                                           method="aum")
    out.index.name = "row"
    return out
