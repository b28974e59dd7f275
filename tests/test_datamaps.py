"""Data maps and mislabel scores against direct, loop-based computations."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from t3vis.analysis.datamaps import data_map, detection_metrics, mislabel_scores, roc_auc


def test_data_map_matches_per_example_loops():
    rng = np.random.default_rng(0)
    epochs, n = 4, 50
    gold_prob = rng.random((epochs, n))
    labels = rng.integers(0, 3, n)
    pred = rng.integers(0, 3, (epochs, n))
    dm = data_map(gold_prob, pred, labels)
    for i in range(n):
        p = [gold_prob[e, i] for e in range(epochs)]
        mean = sum(p) / epochs
        std = (sum((x - mean) ** 2 for x in p) / epochs) ** 0.5  # cartography uses the population std
        correct = sum(pred[e, i] == labels[i] for e in range(epochs)) / epochs
        assert dm.confidence[i] == pytest.approx(mean, abs=1e-6)
        assert dm.variability[i] == pytest.approx(std, abs=1e-6)
        assert dm.correctness[i] == pytest.approx(correct, abs=1e-6)
    regions = dm.region()
    assert set(regions) <= {"easy", "ambiguous", "hard"}
    easy = (dm.confidence >= 0.75) & (dm.variability < 0.2)
    assert (regions[easy] == "easy").all()


def test_mislabel_scores_and_detection_metrics():
    rng = np.random.default_rng(1)
    n = 400
    flipped = rng.random(n) < 0.1
    gold_prob = np.clip(np.where(flipped, 0.1, 0.8)[None] + rng.normal(0, 0.15, (3, n)), 0, 1)
    scores = mislabel_scores(gold_prob)
    np.testing.assert_allclose(scores, 1 - gold_prob.mean(0), atol=1e-6)
    m = detection_metrics(scores, flipped, fractions=(0.1,))
    k = int(round(0.1 * n))
    top = np.argsort(-scores)[:k]
    assert m["precision@0.1"] == pytest.approx(flipped[top].mean())
    assert m["recall@0.1"] == pytest.approx(flipped[top].sum() / flipped.sum())
    assert m["roc_auc"] == pytest.approx(roc_auc_score(flipped, scores))
    margin = rng.normal(size=(3, n))
    np.testing.assert_allclose(mislabel_scores(gold_prob, margin=margin, method="aum"), -margin.mean(0), atol=1e-6)
    with pytest.raises(ValueError, match="margin"):
        mislabel_scores(gold_prob, method="aum")


def test_roc_auc_ties_and_degenerate():
    assert roc_auc(np.array([1.0, 1.0]), np.array([True, False])) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([1.0, 2.0]), np.array([True, True])))
