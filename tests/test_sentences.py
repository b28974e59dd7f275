"""The sentence level of a token run (``analysis.sentences``) against loops over each sentence's words."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from t3vis.analysis.sentences import sentence_columns, sentence_dynamics, sentence_groups


def random_words(seed: int = 0, sentences: int = 40, epochs: int = 4, tags: int = 5):
    """Words of sentences with gaps in their ids, some NaN probabilities (words cut off by the model)."""
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(sentences * 3, sentences, replace=False))
    sentence = np.repeat(ids, rng.integers(1, 9, sentences))
    n = len(sentence)
    gold_prob = rng.random((epochs, n))
    gold_prob[:, rng.random(n) < 0.1] = np.nan
    labels = rng.integers(0, tags, n)
    pred = np.where(rng.random((epochs, n)) < 0.8, labels, rng.integers(0, tags, (epochs, n)))
    mislabel = rng.random(n).astype(np.float32)
    mislabel[rng.random(n) < 0.1] = np.nan
    return sentence, gold_prob, pred, labels, mislabel


def words_of(sentence: np.ndarray) -> list[np.ndarray]:
    return [np.flatnonzero(sentence == s) for s in np.unique(sentence)]


def test_groups_and_weakest_word_equal_a_loop():
    sentence, gold_prob, *_ = random_words()
    confidence = gold_prob[0]
    found = sentence_groups(sentence, confidence)
    spans = words_of(sentence)
    assert found.count == len(spans)
    for g, rows in enumerate(spans):
        assert list(found.starts[g:g + 2]) == [rows[0], rows[-1] + 1]
        assert (found.group[rows] == g).all()
        c = confidence[rows]
        expected = rows[0] if np.isnan(c).all() else rows[np.nanargmin(c)]  # NaN never the weakest
        assert found.weakest[g] == expected
    chosen = np.array([3, 0, 7, 7, 12])
    rows = np.sort(np.concatenate([spans[g][:1] for g in chosen]))
    assert list(found.holding(rows)) == sorted(set(chosen))
    assert list(found.rows_of([0, 7])) == list(spans[0]) + list(spans[7])


def test_unsorted_rows_are_refused():
    with pytest.raises(ValueError, match="not sorted by sentence"):
        sentence_groups(np.array([0, 2, 1]))


def test_sentence_data_map_follows_the_weakest_word_at_each_epoch():
    sentence, gold_prob, pred, labels, _ = random_words(1)
    found = sentence_dynamics(sentence_groups(sentence), gold_prob, pred, labels)
    for g, rows in enumerate(words_of(sentence)):
        per_epoch = []
        for e in range(gold_prob.shape[0]):
            known = [p for p in gold_prob[e, rows] if not np.isnan(p)]
            per_epoch.append(min(known) if known else np.nan)
        per_epoch = np.array(per_epoch)
        if np.isnan(per_epoch).all():
            assert np.isnan(found["confidence"][g])
        else:
            assert found["confidence"][g] == pytest.approx(np.nanmean(per_epoch), abs=1e-6)
            assert found["variability"][g] == pytest.approx(np.nanstd(per_epoch), abs=1e-6)
        all_right = [all(pred[e, r] == labels[r] for r in rows) for e in range(gold_prob.shape[0])]
        assert found["correctness"][g] == pytest.approx(np.mean(all_right))


def test_sentence_columns_hold_each_sentences_value_at_every_word():
    sentence, gold_prob, pred, labels, mislabel = random_words(2)
    sentences = sentence_groups(sentence, gold_prob.mean(0))
    columns = sentence_columns(sentences, SimpleNamespace(gold_prob=gold_prob, pred=pred), labels, mislabel)
    assert all(len(v) == len(sentence) for v in columns.values())
    for rows in words_of(sentence):
        wrong = sum(int(pred[-1, r] != labels[r]) for r in rows)
        assert set(columns["sentence_wrong_tags"][rows]) == {wrong}
        assert set(columns["sentence_words"][rows]) == {len(rows)}
        scores = [s for s in mislabel[rows] if not np.isnan(s)]
        got = columns["sentence_mislabel_score"][rows]
        if scores:
            assert set(got) == {max(scores)}
        else:
            assert np.isnan(got).all()
