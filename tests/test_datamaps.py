"""Data maps, the named mislabel scores and the export, against direct loop-based computations; the one score is
the same number in the library, the explorer's table and ``t3vis export``."""

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from t3vis.analysis import datamaps
from t3vis.analysis.datamaps import (MISLABEL_COLUMN, SCORES, MislabelScore, data_map, datamap_columns,
                                     default_score, detection_metrics, register_score, roc_auc, run_data_map,
                                     score_inputs)
from t3vis.analysis.export import datamap_frame, export
from t3vis.cli import main
from t3vis.store import Run, RunWriter
from t3vis.store.synth import synth_run


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


class Dyn:
    """A stand-in for ``store.Dynamics`` with random arrays; in-training values NaN where a row was not seen."""

    def __init__(self, epochs=3, n=40, seed=0, train=True):
        rng = np.random.default_rng(seed)
        self.gold_prob = rng.random((epochs, n))
        self.pred = rng.integers(0, 3, (epochs, n))
        self.loss = -np.log(self.gold_prob)
        self.margin = rng.uniform(-1, 1, (epochs, n))
        if train:
            self.train_gold_prob = rng.random((epochs, n))
            self.train_margin = rng.uniform(-1, 1, (epochs, n))
            self.train_gold_prob[:, :5] = self.train_margin[:, :5] = np.nan  # validation rows: never trained on
            self.train_gold_prob[0, 5] = self.train_margin[0, 5] = np.nan  # not seen in epoch 1


def test_every_score_matches_its_definition_computed_by_hand():
    dyn, labels = Dyn(), np.zeros(40, int)
    cols = datamap_columns(dyn, labels)

    def mean(values):
        seen = [float(v) for v in values if not math.isnan(v)]
        return statistics.fmean(seen) if seen else math.nan

    for i in range(40):
        expect = {"train_aum_score": -mean(dyn.train_margin[:, i]),
                  "train_confidence_score": 1 - mean(dyn.train_gold_prob[:, i]),
                  "aum_score": -mean(dyn.margin[:, i]), "confidence_score": 1 - mean(dyn.gold_prob[:, i]),
                  "loss_score": mean(dyn.loss[:, i])}
        for column, value in expect.items():
            if math.isnan(value):
                assert math.isnan(cols[column][i]), (column, i)
            else:
                assert cols[column][i] == pytest.approx(value, abs=1e-6), (column, i)
    assert np.isnan(cols["train_aum_score"][:5]).all() and not np.isnan(cols["train_aum_score"][5:]).any()
    # aum_ensemble: the mean of the two AUMs' percentile ranks (ties at their mean rank) among rows that have both
    both = [i for i in range(40) if not math.isnan(cols["train_aum_score"][i] + cols["aum_score"][i])]

    def percentile(column, i):
        values = [float(cols[column][j]) for j in both]
        below = sum(v < float(cols[column][i]) for v in values)
        equal = sum(v == float(cols[column][i]) for v in values)
        return (below + (equal + 1) / 2) / len(values)

    for i in range(40):
        if i in both:
            expect = (percentile("train_aum_score", i) + percentile("aum_score", i)) / 2
            assert cols["aum_ensemble_score"][i] == pytest.approx(expect, abs=1e-6), i
        else:
            assert math.isnan(cols["aum_ensemble_score"][i]), i
    # the one score is the default, bit for bit; every score states its range and direction
    assert datamaps.DEFAULT_SCORE == "aum_ensemble"
    np.testing.assert_array_equal(cols[MISLABEL_COLUMN], cols["aum_ensemble_score"])
    for score in SCORES.values():
        assert "higher = more likely mislabeled" in score.description and "Range" in score.description
        if score.column not in cols:  # a task's own score (type_confidence: token runs), tested with its task
            assert any(need not in score_inputs(dyn) for need in score.needs)
            continue
        finite = cols[score.column][np.isfinite(cols[score.column])]
        assert finite.min() >= score.low and finite.max() <= score.high


def test_runs_without_in_training_dynamics_fall_back_and_say_which_score():
    dyn = Dyn(train=False)
    cols = datamap_columns(dyn, np.zeros(40, int))
    assert "train_aum_score" not in cols and "aum_ensemble_score" not in cols
    np.testing.assert_array_equal(cols[MISLABEL_COLUMN], cols["aum_score"])
    assert default_score({"gold_prob": 1}).name == "confidence"
    with pytest.raises(ValueError, match="no mislabel score"):
        default_score({})


def test_a_new_score_joins_under_its_own_name(monkeypatch):
    monkeypatch.setattr(datamaps, "SCORES", dict(SCORES))
    register_score(MislabelScore("crossfit", "1 - the out-of-sample probability of the given label.", 0.0, 1.0,
                                 ("gold_prob",), lambda gold_prob: 1 - gold_prob[-1]))
    cols = datamap_columns(Dyn(), np.zeros(40, int))
    np.testing.assert_allclose(cols["crossfit_score"], 1 - Dyn().gold_prob[-1], rtol=1e-6)
    np.testing.assert_array_equal(cols[MISLABEL_COLUMN], cols["aum_ensemble_score"])  # the default is unchanged


def test_detection_metrics():
    rng = np.random.default_rng(1)
    n = 400
    flipped = rng.random(n) < 0.1
    scores = np.where(flipped, 0.9, 0.2) + rng.normal(0, 0.2, n)
    m = detection_metrics(scores, flipped, fractions=(0.1,))
    k = int(round(0.1 * n))
    top = np.argsort(-scores)[:k]
    assert m["precision@0.1"] == pytest.approx(flipped[top].mean())
    assert m["recall@0.1"] == pytest.approx(flipped[top].sum() / flipped.sum())
    assert m["roc_auc"] == pytest.approx(roc_auc_score(flipped, scores))


def test_roc_auc_ties_and_degenerate():
    assert roc_auc(np.array([1.0, 1.0]), np.array([True, False])) == pytest.approx(0.5)
    assert np.isnan(roc_auc(np.array([1.0, 2.0]), np.array([True, True])))


# ------------------------------------------------------------------------------------------------ one score everywhere
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "run"
    synth_run(path, 3000, checkpoints=3, num_layers=2, num_heads=2, hidden_size=4, seed=2)
    return Run(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_writes_one_row_per_example_with_the_library_scores(run, tmp_path, suffix):
    out = tmp_path / f"datamap{suffix}"
    assert main(["export", run.loc.url, "--what", "datamap", "--out", str(out)]) == 0
    table = pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out)
    assert list(table.columns[:9]) == ["row", "split", "text", "label", "prediction", "confidence", "variability",
                                       "correctness", MISLABEL_COLUMN]
    assert list(table.columns[-2:]) == ["flipped", "original_label"]
    assert len(table) == run.n_examples and table["row"].tolist() == list(range(run.n_examples))
    frame = run.examples()
    assert table["text"].tolist() == frame["text"].astype(str).tolist()
    assert table["label"].tolist() == frame["label"].astype(str).tolist()
    assert table["flipped"].tolist() == frame["flipped"].tolist()
    library = run_data_map(run, split=None)
    for column in library.columns:
        if column == "prediction":
            assert table[column].tolist() == [run.label_names[p] for p in library[column]]
        else:  # the same float32 numbers, NaN where there is none (in-training scores of validation rows)
            np.testing.assert_array_equal(table[column].to_numpy(np.float32), library[column].to_numpy())
    valid = (table["split"] == "validation").to_numpy()
    assert np.isnan(table.loc[valid, MISLABEL_COLUMN]).all() and not np.isnan(table.loc[~valid, MISLABEL_COLUMN]).any()


def test_the_explorer_table_shows_the_library_score(run):
    from t3vis.ui.data import run_data

    data = run_data(run)
    library = run_data_map(run, split=None)
    for column in ("confidence", "variability", "correctness", MISLABEL_COLUMN, "aum_score", "train_aum_score"):
        np.testing.assert_array_equal(data.values(column), library[column].to_numpy())
    assert data.attributes[MISLABEL_COLUMN].description.startswith("mislabel_score = aum_ensemble_score: ")
    assert "recorded training dynamics" in data.attributes[MISLABEL_COLUMN].description
    np.testing.assert_array_equal(data.values("prediction"), library["prediction"].to_numpy())


def test_export_refuses_bad_requests_and_keeps_existing_files(run, tmp_path, capsys):
    out = tmp_path / "keep.csv"
    out.write_text("precious\n")
    assert main(["export", run.loc.url, "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err and out.read_text() == "precious\n"
    assert main(["export", run.loc.url, "--out", str(out), "--overwrite"]) == 0
    assert len(pd.read_csv(out)) == run.n_examples
    assert main(["export", run.loc.url, "--out", str(tmp_path / "x.xlsx")]) == 2
    assert "unknown format '.xlsx'" in capsys.readouterr().err
    assert main(["export", run.loc.url, "--what", "heads", "--out", str(tmp_path / "x.csv")]) == 2
    assert "expected one of ['datamap', 'sentences']" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists() and not list(tmp_path.glob(".*tmp"))


def test_export_of_a_run_without_dynamics_says_why(tmp_path):
    frame = pd.DataFrame({"text": ["a", "b"], "label": [0, 1], "split": ["train", "train"]})
    RunWriter.create(tmp_path / "r", examples=frame, label_names=["x", "y"], dataset={"name": "d"},
                     model={"name_or_path": "m", "model_type": "bert", "num_layers": 1, "num_heads": 1,
                            "hidden_size": 2})
    with pytest.raises(Exception, match="no training dynamics recorded"):
        datamap_frame(Run(tmp_path / "r"))
    with pytest.raises(Exception, match="no training dynamics"):
        export(Run(tmp_path / "r"), "datamap", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


def test_in_training_arrays_are_optional_checked_and_read_back(tmp_path):
    from t3vis.errors import StoreError
    from t3vis.store import validate

    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 0], "split": ["train", "train", "validation"]})
    w = RunWriter.create(tmp_path / "r", examples=frame, label_names=["x", "y"], dataset={"name": "d"},
                         model={"name_or_path": "m", "model_type": "bert", "num_layers": 1, "num_heads": 1,
                                "hidden_size": 2})
    base = dict(gold_prob=np.full(3, 0.5), pred=np.zeros(3), loss=np.ones(3))
    w.write_epoch(1, **base, train_gold_prob=np.array([0.2, 0.9, np.nan]), train_margin=np.array([-0.6, 0.8, np.nan]))
    w.write_epoch(2, **base, train_gold_prob=np.array([0.4, 0.7, np.nan]), train_margin=np.array([-0.2, 0.4, np.nan]))
    dynamics = Run(tmp_path / "r").dynamics()
    np.testing.assert_allclose(dynamics.train_margin, [[-0.6, 0.8, np.nan], [-0.2, 0.4, np.nan]], rtol=1e-6)
    assert dynamics.margin is None and validate(tmp_path / "r") == []
    assert run_data_map(Run(tmp_path / "r"))[MISLABEL_COLUMN].tolist() == pytest.approx([0.4, -0.6])
    with pytest.raises(StoreError, match="unknown array"):
        w.write_epoch(3, **base, train_loss=np.ones(3))
    arrays = {"gold_prob": np.full(3, 0.5, np.float32), "pred": np.zeros(3, np.int16), "loss": np.ones(3, np.float32),
              "train_margin": np.zeros(2, np.float32)}
    w.write_group("dynamics/3", arrays)  # bypasses write_epoch's checks, as a damaged or foreign writer would
    problems = [str(p) for p in validate(tmp_path / "r")]
    assert problems == ["store.zarr/dynamics/3/train_margin: shape (2,), expected (3,)"]
