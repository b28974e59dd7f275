"""K-fold cross-fitting and its cleanlab scores: stratified folds, no row predicted by a model that trained on it,
scores equal to cleanlab's, and ``t3vis crossfit`` end to end on a run written by ``t3vis train``.

Everything trains tiny random-init BERTs (tests/fixtures.py) through the project's real fine-tuning loop.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from scipy.special import softmax

from t3vis.analysis.crossfit import cross_fit_scores, run_cross_fit
from t3vis.cli import main
from t3vis.errors import ModelError, StoreError, TrainingError
from t3vis.models import save_model
from t3vis.store import Run, RunWriter, validate
from t3vis.training import TrainConfig
from t3vis.training.crossfit import cross_fit_probs, cross_fit_run, stratified_folds
from t3vis.training.recorder import predict_logits, tokenize

from tests.fixtures import TOPICS, make_tiny_run, one_thread, tiny_model, tiny_texts, tiny_tokenizer  # noqa: F401 (autouse)

LABELS = list(TOPICS)[:3]
MAX_LENGTH = 48


def unique_examples(n: int, seed: int = 0) -> pd.DataFrame:
    """Topic texts with distinct token sequences, so an input seen by a model identifies its row."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(LABELS), 3 * n)
    frame = pd.DataFrame({"text": tiny_texts(3 * n, labels, LABELS, rng), "label": labels})
    return frame.drop_duplicates("text").head(n).reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ folds
def test_stratified_folds_partition_the_rows_with_equal_class_shares():
    labels = np.repeat([0, 1, 2], [50, 31, 17])
    fold = stratified_folds(labels, 4, seed=3)
    assert fold.shape == labels.shape and set(fold.tolist()) == {0, 1, 2, 3}  # each row in exactly one fold
    for label in range(3):
        per_fold = np.bincount(fold[labels == label], minlength=4)
        assert per_fold.max() - per_fold.min() <= 1, per_fold  # stratified: within one row of equal
    assert np.array_equal(fold, stratified_folds(labels, 4, seed=3))
    assert not np.array_equal(fold, stratified_folds(labels, 4, seed=4))
    with pytest.raises(TrainingError, match="folds=1: expected at least 2"):
        stratified_folds(labels, 1)
    with pytest.raises(TrainingError, match="label 'tech' has only 17 row.*folds=20 needs at least 20"):
        stratified_folds(labels, 20, label_names=["business", "sport", "tech"])


# ------------------------------------------------------------------------------------------------ no leakage
class Spy:
    """Fresh tiny models that record which rows they were fed in training mode and which they predicted."""

    def __init__(self, rows_of: dict[tuple[int, ...], int]):
        self.rows_of = rows_of
        self.trained: dict[int, set[int]] = {}
        self.predicted: dict[int, set[int]] = {}
        self.models: dict[int, torch.nn.Module] = {}
        self.hooks = []

    def __call__(self, k: int) -> torch.nn.Module:
        model = tiny_model(len(LABELS), seed=0, attn_implementation="sdpa")
        self.trained[k], self.predicted[k], self.models[k] = set(), set(), model

        def record(module, args, kwargs):
            ids, mask = kwargs["input_ids"], kwargs["attention_mask"].bool()
            seen = {self.rows_of[tuple(row[m].tolist())] for row, m in zip(ids, mask)}
            (self.trained if module.training else self.predicted)[k].update(seen)

        self.hooks.append(model.register_forward_pre_hook(record, with_kwargs=True))
        return model

    def stop(self) -> None:
        for hook in self.hooks:
            hook.remove()


def test_no_row_is_predicted_by_a_model_that_trained_on_it(tmp_path):
    frame = unique_examples(90)
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    token_ids = tokenize(tokenizer, frame["text"].tolist(), MAX_LENGTH)
    spy = Spy({tuple(ids): row for row, ids in enumerate(token_ids)})
    assert len(spy.rows_of) == len(frame)
    labels = frame["label"].to_numpy()
    fold = stratified_folds(labels, 3, seed=0)
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=3e-3, max_length=MAX_LENGTH, seed=0, bf16=False)
    stages = []
    probs = cross_fit_probs(token_ids, labels, fold, model_for_fold=spy, tokenizer=tokenizer, config=config,
                            progress=lambda stage, f: stages.append((stage, f)))
    spy.stop()

    everything = set(range(len(frame)))
    for k in range(3):
        held_out = set(np.flatnonzero(fold == k).tolist())
        assert spy.trained[k] == everything - held_out  # trained on every other fold ...
        assert spy.predicted[k] == held_out  # ... and predicted exactly its own
        assert not spy.trained[k] & spy.predicted[k]
    # each row's probabilities are those of its own fold's model (an unbatched forward of that model)
    for row in [0, 1, 2, 45, 89]:
        model = spy.models[int(fold[row])].eval()
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([token_ids[row]])).logits.numpy()
        np.testing.assert_allclose(probs[row], softmax(logits[0].astype(np.float64)), atol=1e-5)
    assert probs.shape == (90, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    fractions = [f for _, f in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(s.startswith("fold 3/3: epoch 2/2: training") for s, _ in stages)


def test_held_out_predictions_of_memorised_noise_labels_are_at_chance(tmp_path):
    """Labels drawn at random carry no signal: models that fit their own training rows must still score chance on
    the rows they did not see. A held-out fold that leaked into training would score as well as the fitted rows."""
    frame = unique_examples(120, seed=1)
    labels = np.random.default_rng(7).integers(0, len(LABELS), len(frame))
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    token_ids = tokenize(tokenizer, frame["text"].tolist(), MAX_LENGTH)
    fold = stratified_folds(labels, 2, seed=0)
    models = {}

    def fresh(k):
        models[k] = tiny_model(len(LABELS), seed=0, attn_implementation="sdpa", hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)
        return models[k]

    config = TrainConfig(epochs=40, batch_size=8, learning_rate=3e-3, warmup_fraction=0.0, max_length=MAX_LENGTH,
                         seed=0, bf16=False)
    probs = cross_fit_probs(token_ids, labels, fold, model_for_fold=fresh, tokenizer=tokenizer, config=config)
    held_out_accuracy = (probs.argmax(1) == labels).mean()
    fitted = []
    for k, model in models.items():
        rows = np.flatnonzero(fold != k)
        logits = predict_logits(model, [token_ids[r] for r in rows], pad_id=0)
        fitted.append((logits.argmax(1) == labels[rows]).mean())
    assert min(fitted) > 0.9, fitted  # the models memorised their training rows ...
    assert held_out_accuracy < 0.5, held_out_accuracy  # ... and know nothing of the others (chance: 1/3)


# ------------------------------------------------------------------------------------------------ scores
def test_scores_are_one_minus_held_out_gold_probability_and_cleanlabs_issues():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 400)
    confident = np.eye(4)[labels] * 6 + rng.normal(0, 1, (400, 4))
    wrong = rng.random(400) < 0.1
    labels_given = np.where(wrong, (labels + 1) % 4, labels)  # 10% of the given labels contradict the model
    probs = softmax(confident, axis=1)
    scores = cross_fit_scores(probs, labels_given)
    expected = 1 - probs[np.arange(400), labels_given]  # self-confidence, computed by hand
    np.testing.assert_allclose(scores.crossfit_score, expected, atol=1e-6)
    np.testing.assert_allclose(scores.crossfit_score, 1 - get_label_quality_scores(labels_given, probs), atol=1e-6)
    assert np.array_equal(scores.crossfit_issue, find_label_issues(labels_given, probs, n_jobs=1))
    assert 0 <= scores.crossfit_score.min() and scores.crossfit_score.max() <= 1
    assert scores.crossfit_issue[wrong].mean() > 0.9 and scores.crossfit_issue[~wrong].mean() < 0.05
    with pytest.raises(ValueError, match="pred_probs: expected shape"):
        cross_fit_scores(probs[:10], labels_given)
    with pytest.raises(ValueError, match="finite"):
        cross_fit_scores(np.where(wrong[:, None], np.nan, probs), labels_given)


# ------------------------------------------------------------------------------------------------ store
def test_store_round_trip_and_validation_of_a_cross_fit(tmp_path):
    run_dir = make_tiny_run(tmp_path, n=40)
    writer = RunWriter(run_dir)
    fold = np.where(np.arange(40) < 30, np.arange(40) % 3, -1)
    probs = np.where((fold >= 0)[:, None], softmax(np.random.default_rng(0).normal(size=(40, 3)), axis=1), np.nan)
    with pytest.raises(StoreError, match=r"crossfit: expected probs \(40, 3\)"):
        writer.write_crossfit(probs[:, :2], fold, {"folds": 3})
    writer.write_crossfit(probs, fold, {"folds": 3, "seed": 0})
    stored = Run(run_dir).crossfit()
    assert np.array_equal(stored.fold, fold) and stored.attrs["folds"] == 3
    np.testing.assert_allclose(stored.probs, probs.astype(np.float32), equal_nan=True)
    assert validate(run_dir) == [] and Run(make_tiny_run(tmp_path, n=10, name="other")).crossfit() is None

    writer.write_group("crossfit", {"probs": np.where(fold[:, None] >= 0, 0.0, np.nan).astype(np.float32),
                                    "fold": fold.astype(np.int16)}, {"folds": 3})  # as if a chunk were lost
    assert [p.path for p in validate(run_dir)] == ["store.zarr/crossfit/probs"]
    writer.write_group("crossfit", {"probs": probs.astype(np.float32), "fold": (fold + 1).astype(np.int16)},
                       {"folds": 3})
    assert "values outside -1..2" in str(validate(run_dir))


# ------------------------------------------------------------------------------------------------ CLI
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run written by `t3vis train` (tiny model, 150 rows with 10% flipped labels, 1 epoch)."""
    tmp = tmp_path_factory.mktemp("crossfit")
    save_model(tiny_model(3), tiny_tokenizer(tmp / "tokenizer"), tmp / "model")
    frame = unique_examples(150)
    frame["label"] = [LABELS[i] for i in frame["label"]]
    frame.to_csv(tmp / "data.csv", index=False)
    argv = ["train", str(tmp / "data.csv"), "--model", str(tmp / "model"), "--run", str(tmp / "run"), "--epochs",
            "1", "--noise", "0.1", "--learning-rate", "3e-3", "--max-length", str(MAX_LENGTH), "--no-pipeline"]
    assert main(argv) == 0
    return tmp / "run"


def test_t3vis_crossfit_end_to_end(trained_run, capsys):
    capsys.readouterr()
    assert main(["crossfit", str(trained_run), "--folds", "2", "--epochs", "1", "--show", "3", "--overwrite"]) == 0
    out, err = capsys.readouterr()
    assert "2 folds = 2 trainings of 1 epoch(s), each on ~60 of 120 rows" in out + err
    assert "this run's own training" in out + err and "on the same machine" in out + err  # the time estimate
    assert "wrote" in out and "held-out accuracy" in out and out.count("crossfit_score") == 3
    assert "against the injected flips: precision@0.05" in out

    run = Run(trained_run)
    stored = run.crossfit()
    train = run.column("split") == run.categories("split").index("train")
    assert np.array_equal(stored.fold >= 0, train) and set(stored.fold[train].tolist()) == {0, 1}
    assert np.isnan(stored.probs[~train]).all() and np.allclose(stored.probs[train].sum(1), 1, atol=1e-5)
    assert stored.attrs["folds"] == 2 and stored.attrs["config"]["max_length"] == MAX_LENGTH
    assert stored.attrs["config"]["learning_rate"] == 3e-3  # the run's own settings
    assert validate(str(trained_run)) == []

    scores = run_cross_fit(run)  # the scores are cleanlab's on the stored probabilities
    rows = np.flatnonzero(train)
    labels = run.column("label", rows)
    assert scores.index.tolist() == rows.tolist()
    np.testing.assert_allclose(scores["crossfit_score"], 1 - get_label_quality_scores(labels, stored.probs[rows]),
                               atol=1e-6)
    assert np.array_equal(scores["crossfit_issue"], find_label_issues(labels, stored.probs[rows], n_jobs=1))

    # an existing cross-fit is kept unless --overwrite; checked before any training
    assert main(["crossfit", str(trained_run), "--folds", "3"]) == 2
    assert "already holds a cross-fit (2 folds, seed 0); pass --overwrite" in capsys.readouterr().err
    assert Run(trained_run).crossfit().attrs == stored.attrs
    argv = ["crossfit", str(trained_run), "--folds", "3", "--epochs", "1", "--seed", "1", "--rows", "all"]
    assert main([*argv, "--overwrite"]) == 0
    again = Run(trained_run).crossfit()
    assert again.attrs["folds"] == 3 and again.attrs["rows"] == "all" and (again.fold >= 0).all()
    assert np.allclose(again.probs.sum(1), 1, atol=1e-5) and validate(str(trained_run)) == []


def test_crossfit_refuses_bad_requests_before_training(tmp_path, trained_run, capsys):
    assert main(["crossfit", str(trained_run), "--folds", "200", "--overwrite"]) == 2
    assert "needs at least 200 per label (use fewer folds)" in capsys.readouterr().err
    from t3vis.store.synth import synth_run

    synth_run(tmp_path / "synth", 60, checkpoints=1)  # no weights to start from
    with pytest.raises(ModelError, match="no checkpoint 'epoch-0' with weights.*--model DIR"):
        cross_fit_run(tmp_path / "synth", folds=2)
    other = tiny_model(3)
    other.config.id2label = dict(enumerate(reversed(LABELS)))
    other.config.label2id = {name: i for i, name in other.config.id2label.items()}
    save_model(other, tiny_tokenizer(tmp_path / "tokenizer"), tmp_path / "reversed")
    with pytest.raises(ModelError, match="run's labels are \\['business', 'sport', 'tech'\\]"):
        cross_fit_run(trained_run, folds=2, model_path=tmp_path / "reversed", overwrite=True)
    # a base model directory works as the starting point instead of epoch-0
    attrs = cross_fit_run(trained_run, folds=2, epochs=1, model_path=trained_run.parent / "model", overwrite=True)
    assert attrs["model"] == str(trained_run.parent / "model") and Run(trained_run).crossfit().attrs == attrs


def test_help_states_the_cost(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["crossfit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0 and "COST: K trainings, each on (K-1)/K of the rows" in out
