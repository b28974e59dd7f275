"""Out-of-sample mislabel scores: confident learning (``cleanlab``) on cross-fitted class probabilities.

The data-map scores judge each training example by a model that trained on it, so a model that memorises a wrong
label hides it. Cross-fitting (``t3vis crossfit``) predicts every example with a model that never saw it; cleanlab
(Northcutt et al. 2021) then ranks and flags labels that those predictions contradict. This module only scores:
it never trains, and it imports numpy and cleanlab only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: cleanlab's label-quality method: quality = the held-out probability of the given label.
QUALITY_METHOD = "self_confidence"


@dataclass(frozen=True)
class CrossFitScores:
    """``crossfit_score`` = 1 - cleanlab label quality, in [0, 1], higher = more suspect; ``crossfit_issue`` is
    cleanlab's confident-learning issue mask (``filter.find_label_issues``, prune by noise rate)."""

    crossfit_score: np.ndarray
    crossfit_issue: np.ndarray


def cross_fit_scores(pred_probs: np.ndarray, labels: np.ndarray) -> CrossFitScores:
    """Score ``labels [n]`` against out-of-sample ``pred_probs [n, C]`` (rows sum to 1) with cleanlab."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if pred_probs.ndim != 2 or len(pred_probs) != len(labels):
        raise ValueError(f"pred_probs: expected shape [{len(labels)}, classes], got {pred_probs.shape}")
    if not np.isfinite(pred_probs).all():
        raise ValueError("pred_probs: expected finite probabilities (only the cross-fitted rows)")
    quality = get_label_quality_scores(labels, pred_probs, method=QUALITY_METHOD)
    issue = find_label_issues(labels, pred_probs, n_jobs=1)  # results do not depend on n_jobs; no process pool
    return CrossFitScores(crossfit_score=(1.0 - quality).astype(np.float32), crossfit_issue=np.asarray(issue, bool))


def run_cross_fit(run):
    """The run's cross-fit scores as a DataFrame indexed by example row (only the cross-fitted rows), or None
    when ``t3vis crossfit`` has not been run. Columns: crossfit_score, crossfit_issue, crossfit_fold,
    crossfit_pred (the held-out prediction)."""
    import pandas as pd

    stored = run.crossfit()
    if stored is None:
        return None
    rows = np.flatnonzero(stored.fold >= 0)
    probs = stored.probs[rows]
    scores = cross_fit_scores(probs, run.column("label", rows))
    return pd.DataFrame({"crossfit_score": scores.crossfit_score, "crossfit_issue": scores.crossfit_issue,
                         "crossfit_fold": stored.fold[rows], "crossfit_pred": probs.argmax(axis=1).astype(np.int16)},
                        index=pd.Index(rows, name="row"))
