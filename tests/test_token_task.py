"""Token classification end to end on tiny random-init BERT taggers: training capture per word, extraction per
word, head importance on the tagging loss, and checkpoints that reload as token classifiers. Every number is
checked against a direct, unbatched recomputation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig

from t3vis.errors import TrainingError
from t3vis.models import save_model
from t3vis.models.loading import load_checkpoint
from t3vis.store import Run, validate
from t3vis.tasks import get_task
from t3vis.tasks.token_classification import sentence_offsets, unit_frame, word_contexts
from t3vis.training.config import TrainConfig
from t3vis.training.words import WordDynamicsRecorder, entity_scores
from tests.fixtures import (  # noqa: F401 (one_thread: autouse)
    NER_TAGS,
    TINY_CONFIG,
    one_thread,
    record_tiny_ner_run,
    tiny_tagged,
    tiny_tokenizer,
    vocabulary,
)

TAGS = NER_TAGS
MAX_LENGTH = 32
tagged = tiny_tagged


def direct_word_logits(model, tokenizer, words: list[str]) -> np.ndarray:
    """One sentence alone, no batching: the logits at each word's first sub-token."""
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        logits = model(**enc).logits[0].float().numpy()
    ids = enc.word_ids(0)
    first = [ids.index(w) for w in range(len(words))]
    return logits[first]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A tiny tagger recorded at its initial state and after one epoch of plain SGD steps."""
    tmp = tmp_path_factory.mktemp("ner")
    data = tagged()
    recorder, model, tokenizer, metrics = record_tiny_ner_run(tmp / "run", data, max_length=MAX_LENGTH)
    return {"run": Run(tmp / "run"), "model": model, "tokenizer": tokenizer, "data": data, "metrics": metrics,
            "recorder": recorder}


def test_a_token_run_has_one_row_per_word_in_sentence_order(recorded):
    run, data = recorded["run"], recorded["data"]
    assert run.task == "token_classification" and get_task(run.task).unit == "word"
    assert run.n_examples == data.n_words and run.label_names == TAGS
    words = [w for sentence in data.frame["tokens"] for w in sentence]
    assert list(run.column("text")) == words
    offsets = sentence_offsets(run.column("sentence"))
    for s, sentence in enumerate(data.frame["tokens"]):
        assert list(run.column("text")[offsets[s]:offsets[s + 1]]) == list(sentence)
        assert list(run.column("position")[offsets[s]:offsets[s + 1]]) == list(range(len(sentence)))
    gold = [t for tags in data.frame["tags"] for t in tags]
    np.testing.assert_array_equal(run.column("label"), gold)
    assert not validate(run.loc.url)


def test_per_word_dynamics_equal_a_direct_recomputation(recorded):
    """Epoch 0 (the initial weights) and epoch 1 against each sentence run alone through the saved checkpoint."""
    run, tokenizer, data = recorded["run"], recorded["tokenizer"], recorded["data"]
    dynamics = run.dynamics()
    gold = run.column("label").astype(np.int64)
    model, _ = load_checkpoint(run.checkpoint("epoch-1").weights_path)
    logits = np.concatenate([direct_word_logits(model, tokenizer, list(w)) for w in data.frame["tokens"]])
    log_probs = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64), -1).numpy()
    rows = np.arange(len(gold))
    np.testing.assert_allclose(dynamics.gold_prob[-1], np.exp(log_probs[rows, gold]), atol=1e-5)
    np.testing.assert_allclose(dynamics.loss[-1], -log_probs[rows, gold], atol=1e-4)
    np.testing.assert_array_equal(dynamics.pred[-1], logits.argmax(1))
    # the given tag among the entity tags: a softmax over every tag but O, by a loop (NaN for words tagged O)
    for row in range(0, len(gold), 7):
        if TAGS[gold[row]] == "O":
            assert np.isnan(dynamics.typed_gold_prob[-1, row])
            continue
        entity = [t for t in range(len(TAGS)) if TAGS[t] != "O"]
        z = np.exp(logits[row, entity].astype(np.float64) - logits[row, entity].max())
        assert dynamics.typed_gold_prob[-1, row] == pytest.approx(z[entity.index(gold[row])] / z.sum(), abs=1e-5)


def test_per_word_type_dynamics_equal_a_direct_recomputation(recorded):
    """type_prob and neighbour_type_prob of epoch 1 from each sentence run alone through the checkpoint: the type's
    B- and I- probabilities summed, and the type's share among the 50 nearest entity words by brute force."""
    from t3vis.tasks.token_classification import TYPE_NEIGHBOURS, tag_types

    run, tokenizer, data = recorded["run"], recorded["tokenizer"], recorded["data"]
    dynamics = run.dynamics()
    gold = run.column("label").astype(np.int64)
    model, _ = load_checkpoint(run.checkpoint("epoch-1").weights_path)
    sentences = [list(w) for w in data.frame["tokens"]]
    logits = np.concatenate([direct_word_logits(model, tokenizer, w) for w in sentences]).astype(np.float64)
    features = np.concatenate([direct_word_features(model, tokenizer, w) for w in sentences])
    kinds = tag_types(TAGS)
    entity = np.flatnonzero(gold != TAGS.index("O"))
    for row in entity:
        z = np.exp(logits[row, 1:] - logits[row, 1:].max())
        same = [t - 1 for t in range(1, len(TAGS)) if kinds[t] == kinds[gold[row]]]
        assert dynamics.type_prob[-1, row] == pytest.approx(z[same].sum() / z.sum(), abs=1e-5)
    assert np.isnan(dynamics.type_prob[-1][gold == TAGS.index("O")]).all()
    names = sorted(set(kinds) - {""})
    types = np.array([names.index(kinds[t]) for t in gold[entity]])
    want, gap = brute_force_neighbour_share(features[entity], types, len(names), min(TYPE_NEIGHBOURS, len(entity) - 1))
    clear = gap > 1e-4  # batched and unbatched features differ in the last bits: skip words at a near tie
    assert clear.mean() > 0.8
    np.testing.assert_allclose(dynamics.neighbour_type_prob[-1, entity][clear], want[clear], atol=1e-6)
    assert np.isnan(dynamics.neighbour_type_prob[-1][gold == TAGS.index("O")]).all()


def direct_word_features(model, tokenizer, words: list[str]) -> np.ndarray:
    """One sentence alone: the last hidden state (what the tagging head reads) at each word's first sub-token."""
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[-1][0].float().numpy()
    ids = enc.word_ids(0)
    return hidden[[ids.index(w) for w in range(len(words))]]


def brute_force_neighbour_share(features: np.ndarray, types: np.ndarray, n_types: int, k: int):
    """``neighbour_type_prob`` by sorting every pair's cosine similarity (of the centred features); also each word's
    gap between its k-th and (k+1)-th nearest (where a near tie could make two exact computations pick different
    neighbours)."""
    centred = features.astype(np.float64) - features.astype(np.float64).mean(0)
    unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")
    same = (types[order[:, :k]] == types[:, None]).sum(1)
    ranked = np.take_along_axis(sims, order, 1)
    gap = ranked[:, k - 1] - ranked[:, k] if k < len(types) - 1 else np.full(len(types), np.inf)
    return (same + 1) / (k + n_types), gap


def test_type_prob_sums_the_given_types_b_and_i_tags_among_the_entity_tags():
    from t3vis.tasks.token_classification import tag_types, type_prob

    names = ["O", "B-a", "I-a", "B-b", "I-b", "misc"]
    assert tag_types(names) == ["", "a", "a", "b", "b", "misc"]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, len(names))) * 3
    labels = rng.integers(0, len(names), 40)
    got = type_prob(logits, labels, 0, names)
    for row in range(40):
        if labels[row] == 0:
            assert np.isnan(got[row])
            continue
        z = np.exp(logits[row, 1:] - logits[row, 1:].max())  # every tag but O
        kind = tag_types(names)[labels[row]]
        same = [t - 1 for t in range(1, len(names)) if tag_types(names)[t] == kind]
        assert got[row] == pytest.approx(z[same].sum() / z.sum(), abs=1e-6)


def test_neighbour_type_prob_equals_a_brute_force_nearest_neighbour_count():
    from t3vis.tasks.token_classification import neighbour_type_prob

    rng = np.random.default_rng(1)
    features = rng.normal(size=(300, 16)).astype(np.float32) * rng.uniform(0.5, 3, (300, 1))  # norms differ
    types = rng.integers(0, 4, 300)
    for k in (1, 10, 50):
        want, gap = brute_force_neighbour_share(features, types, 4, k)
        got = neighbour_type_prob(features, types, 4, k=k, block=37)  # several blocks, one ragged
        assert (gap > 1e-5).all()  # random features: no near ties to blur the comparison
        np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(neighbour_type_prob(features[:5], types[:5], 4, k=50),
                               brute_force_neighbour_share(features[:5], types[:5], 4, 4)[0], atol=1e-6)
    assert np.isnan(neighbour_type_prob(features[:1], types[:1], 4)).all()


def test_type_confidence_scores_entity_words_by_type_and_o_words_by_entity_probability():
    from t3vis.analysis.datamaps import mislabel_score

    typed = np.array([[0.9, np.nan, 0.2], [0.3, np.nan, 0.6]])
    gold = np.array([[0.1, 0.8, 0.5], [0.2, 0.7, 0.05]])
    got = mislabel_score({"typed_gold_prob": typed, "gold_prob": gold}, "type_confidence")
    np.testing.assert_allclose(got, [1 - 0.3, 1 - 0.7, 1 - 0.6], atol=1e-6)  # the last epoch's


def test_type_consensus_is_one_minus_the_geometric_mean_of_the_tagger_and_the_neighbours():
    from t3vis.analysis.datamaps import mislabel_score

    typed = np.array([[0.9, np.nan, 0.2], [0.36, np.nan, 0.5]])
    near = np.array([[0.5, np.nan, 0.1], [0.25, np.nan, 0.02]])
    gold = np.array([[0.1, 0.8, 0.5], [0.2, 0.7, 0.05]])
    got = mislabel_score({"type_prob": typed, "neighbour_type_prob": near, "gold_prob": gold}, "type_consensus")
    np.testing.assert_allclose(got, [1 - 0.3, 1 - 0.7, 1 - 0.1], atol=1e-6)  # sqrt(.36 * .25), O word, sqrt(.5 * .02)


def test_mention_ids_are_the_spans_seqeval_reads_sentence_by_sentence():
    """Against ``data.tagging.mentions`` run on each sentence alone: B starts a mention, I continues one of its own
    type and otherwise starts one, and no mention crosses a sentence boundary."""
    from t3vis.data.tagging import mentions
    from t3vis.tasks.token_classification import mention_ids

    rng = np.random.default_rng(3)
    names = ["O", "B-loc", "I-loc", "B-per", "I-per"]
    sentence = np.sort(rng.integers(0, 60, 600))
    labels = rng.choice(len(names), 600, p=[0.4, 0.15, 0.15, 0.15, 0.15])
    labels[np.flatnonzero(np.diff(sentence)) + 1] = names.index("I-loc")  # an I opening a sentence after an I-loc
    want, next_id = np.full(600, -1), 0
    for s in np.unique(sentence):
        rows = np.flatnonzero(sentence == s)
        for start, end, _ in mentions([names[t] for t in labels[rows]]):
            want[rows[start:end]] = next_id
            next_id += 1
    np.testing.assert_array_equal(mention_ids(labels, sentence, names), want)


def test_surface_type_prob_is_the_smoothed_share_of_the_words_other_occurrences_given_its_type():
    from t3vis.tasks.token_classification import surface_type_prob

    names = ["O", "B-loc", "I-loc", "B-per", "I-per"]
    rng = np.random.default_rng(4)
    words = rng.choice(["Paris", "paris", "Obama", "Jordan", "the", "Lyon"], 400)
    labels = rng.integers(0, len(names), 400)
    got = surface_type_prob(words, labels, names)
    kinds = [n.split("-")[-1] for n in names]
    for i in range(400):
        if labels[i] == 0:
            assert np.isnan(got[i])
            continue
        others = [j for j in range(400) if j != i and labels[j] != 0 and words[j].lower() == words[i].lower()]
        same = sum(kinds[labels[j]] == kinds[labels[i]] for j in others)
        assert got[i] == pytest.approx((same + 0.5) / (len(others) + 1), abs=1e-6)
    assert surface_type_prob(["Lyon"], [1], names)[0] == pytest.approx(0.5)  # seen once: no evidence either way


def test_mention_consensus_pools_the_three_experts_over_each_mention():
    from t3vis.analysis.datamaps import mislabel_score

    typed = np.array([[0.1, 0.1, 0.1, np.nan, 0.9], [0.8, 0.5, 0.27, np.nan, 0.64]])  # the last epoch counts
    near = np.array([[0.1] * 5, [0.5, 0.2, 1.0, np.nan, 0.5]])
    surface = np.array([0.2, 0.8, 1.0, np.nan, np.nan])  # the last word: no logits (cut off), left out of its mention
    mention = np.array([0, 0, 1, -1, 1])
    gold = np.array([[0.5] * 5, [0.3, 0.4, 0.9, 0.6, np.nan]])
    got = mislabel_score({"type_prob": typed, "neighbour_type_prob": near, "surface_type_prob": surface,
                          "mention": mention, "gold_prob": gold}, "mention_consensus")
    first = np.mean([np.cbrt(0.8 * 0.5 * 0.2), np.cbrt(0.5 * 0.2 * 0.8)])  # two words, one mention
    np.testing.assert_allclose(got[:4], [1 - first, 1 - first, 1 - np.cbrt(0.27), 1 - 0.6], atol=1e-6)
    assert np.isnan(got[4])


def test_in_training_dynamics_cover_the_training_words_only(recorded):
    run = recorded["run"]
    train_p = run.dynamics().train_gold_prob[-1]
    split = np.asarray(run.categories("split"))[run.column("split")]
    assert np.isfinite(train_p[split == "train"]).all() and np.isnan(train_p[split == "validation"]).all()
    assert ((train_p[split == "train"] > 0) & (train_p[split == "train"] < 1)).all()


def test_epoch_metrics_report_entity_f1_equal_to_seqeval(recorded):
    from seqeval.metrics import f1_score

    run, data, metrics = recorded["run"], recorded["data"], recorded["metrics"]
    pred = run.dynamics().pred[-1]
    offsets = sentence_offsets(run.column("sentence"))
    rows = np.flatnonzero(data.frame["split"].to_numpy() == "validation")
    gold = [[TAGS[t] for t in data.frame["tags"][r]] for r in rows]
    predicted = [[TAGS[t] for t in pred[offsets[r]:offsets[r + 1]]] for r in rows]
    assert metrics["validation_entity_f1"] == pytest.approx(f1_score(gold, predicted))
    assert {"validation_accuracy", "train_entity_f1"} <= set(metrics)
    assert entity_scores([["B-sport", "I-sport", "O"]], [["B-sport", "I-sport", "O"]])["entity_f1"] == 1.0
    assert entity_scores([["B-sport", "I-sport", "O"]], [["B-sport", "O", "O"]])["entity_f1"] == 0.0


def test_checkpoints_reload_as_token_classifiers_with_identical_logits(recorded):
    run, model, tokenizer = recorded["run"], recorded["model"], recorded["tokenizer"]
    loaded, _ = load_checkpoint(run.checkpoint("epoch-1").weights_path)
    assert type(loaded).__name__ == "BertForTokenClassification"
    enc = tokenizer(["the", "match", "today"], is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**enc).logits, model(**enc).logits)


def test_extraction_per_word_equals_the_recorder_and_pools_each_words_sub_tokens(recorded):
    """``extract_words`` (what the pipelines run) against the recorded dynamics (one path) and, for the hidden
    states, against a direct forward: first sub-token and mean over the word's sub-tokens."""
    from t3vis.analysis.extraction import extract_words

    run, tokenizer, data = recorded["run"], recorded["tokenizer"], recorded["data"]
    model, _ = load_checkpoint(run.checkpoint("epoch-1").weights_path)
    sentences, tags = list(map(list, data.frame["tokens"])), list(data.frame["tags"])
    out = extract_words(model, tokenizer, sentences, tags, batch_size=5, max_length=MAX_LENGTH)
    dynamics = run.dynamics()
    np.testing.assert_allclose(out["gold_prob"], dynamics.gold_prob[-1], atol=1e-5)
    np.testing.assert_array_equal(out["pred"], dynamics.pred[-1])
    assert out["hidden_cls"].shape == (3, data.n_words, TINY_CONFIG["hidden_size"])
    unit = 0
    for words in sentences[:6]:
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc, output_hidden_states=True).hidden_states
        ids = enc.word_ids(0)
        for w in range(len(words)):
            tokens = [t for t, i in enumerate(ids) if i == w]
            for layer in (0, 2):
                h = hidden[layer][0].numpy()
                np.testing.assert_allclose(out["hidden_cls"][layer, unit], h[tokens[0]], atol=2e-2, rtol=1e-2)
                np.testing.assert_allclose(out["hidden_mean"][layer, unit], h[tokens].mean(0), atol=2e-2, rtol=1e-2)
            unit += 1


def test_head_importance_on_the_tagging_loss_equals_autograd_through_the_gates(recorded):
    """|d loss / d gate| from ``word_head_importance`` against a finite difference of the summed tag loss."""
    from t3vis.analysis.importance import word_head_importance
    from t3vis.data.subwords import align_words
    from t3vis.models.gates import head_gates
    from t3vis.models.inference import pad_ids

    model, tokenizer, data = recorded["model"].double(), recorded["tokenizer"], recorded["data"]
    sentences, tags = list(map(list, data.frame["tokens"]))[:8], list(data.frame["tags"])[:8]
    result = word_head_importance(model, tokenizer, sentences, tags, batch_size=8, max_length=MAX_LENGTH,
                                  attention_size=0)
    alignment = align_words(tokenizer, sentences, tags, MAX_LENGTH)
    ids, mask = pad_ids(alignment.input_ids, tokenizer.pad_token_id)
    labels = torch.full(ids.shape, -100)
    for i, row in enumerate(alignment.labels):
        labels[i, :len(row)] = torch.as_tensor(row)

    def loss(gates):
        with torch.no_grad(), head_gates(model, gates):
            logits = model(input_ids=ids, attention_mask=mask).logits
        return F.cross_entropy(logits.reshape(-1, len(TAGS)), labels.reshape(-1), reduction="sum").item()

    eps = 1e-5
    for layer, head in [(0, 1), (1, 3)]:
        up, down = torch.ones(2, 4, dtype=torch.float64), torch.ones(2, 4, dtype=torch.float64)
        up[layer, head] += eps
        down[layer, head] -= eps
        numeric = abs(loss(up) - loss(down)) / (2 * eps) / len(sentences)
        assert result.raw[layer, head] == pytest.approx(numeric, rel=1e-4)
    model.float()


def test_train_run_fine_tunes_a_tagger_from_a_base_model_directory(tmp_path):
    """The demo's loop on a TaggedDataset: a new token-classification head, per-word dynamics every epoch."""
    from t3vis.training.demo import train_run
    from transformers import AutoModel

    base = tmp_path / "base"
    torch.manual_seed(0)
    encoder = AutoModel.from_config(BertConfig(vocab_size=len(vocabulary()), **TINY_CONFIG))
    save_model(encoder, tiny_tokenizer(tmp_path / "tok"), base)
    path = train_run(tmp_path / "run", tagged(60, seed=1), model_path=base,
                     config=TrainConfig(epochs=2, batch_size=8, learning_rate=1e-3, seed=0, max_length=MAX_LENGTH,
                                        bf16=False))
    run = Run(path)
    assert run.task == "token_classification" and run.label_names == TAGS
    assert len(run.dynamics().gold_prob) == 2 and run.checkpoints == ["epoch-0", "epoch-1", "epoch-2"]
    epochs = run.attrs["training"]["epochs"]
    assert all("validation_entity_f1" in e for e in epochs)
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]  # it learns


def test_token_runs_are_extracted_by_the_pipelines_not_the_recorder(tmp_path):
    with pytest.raises(TrainingError, match="extract=True is for sequence classification"):
        WordDynamicsRecorder(tmp_path / "run", tagged(5), extract=True)


def test_unit_frame_and_contexts():
    data = tagged(5)
    units = unit_frame(data)
    assert list(units.columns[:6]) == ["text", "label", "split", "sentence", "position", "context"]
    assert len(units) == data.n_words
    contexts = word_contexts([["a", "b", "c"]], width=1)
    assert contexts == ["«a» b …", "a «b» c", "… b «c»"]
    with pytest.raises(ValueError, match="sorted"):
        sentence_offsets(np.array([0, 1, 0]))


def test_validate_knows_the_word_layout(tmp_path):
    from t3vis.store import RunWriter

    model = {"name_or_path": "x", "model_type": "bert", "num_layers": 1, "num_heads": 2, "hidden_size": 4}
    units = unit_frame(tagged(6))

    def problems(frame, name):
        RunWriter.create(tmp_path / name, examples=frame, label_names=TAGS, model=model, dataset={},
                         task="token_classification")
        return [str(p) for p in validate(str(tmp_path / name))]

    assert problems(units, "ok") == []
    swapped = units.copy()
    swapped.loc[[1, 2], "position"] = swapped.loc[[2, 1], "position"].to_numpy()
    assert any("examples/position" in p and "row 1" in p for p in problems(swapped, "positions"))
    backwards = units.iloc[::-1].reset_index(drop=True)
    assert any("examples/sentence" in p and "sentence order" in p for p in problems(backwards, "order"))
    assert any("examples/sentence" in p and "missing" in p for p in problems(units.drop(columns="sentence"), "none"))


def test_the_pipelines_fill_a_token_run_per_word(recorded, tmp_path):
    """Extraction (chunks that cut sentences in half), importance on the tagging loss and projections, on a real
    LocalCluster of worker processes: the stored per-word arrays equal ``extract_words`` over whole sentences."""
    import shutil

    from pipelines.run import run_pipeline
    from t3vis.analysis.extraction import extract_words
    from t3vis.models.inference import cached_checkpoint

    url = str(tmp_path / "run")
    shutil.copytree(recorded["run"].loc.url, url)
    run_pipeline(url, n_workers=1, dashboard=False, progress=False, echo=lambda message: None,
                 extract={"chunk_rows": 50, "dtype": "float32"}, importance={"dtype": "float32", "sample": 64},
                 neighbours={"k": 5})
    run, data = Run(url), recorded["data"]
    assert run.checkpoint("epoch-1").complete and not validate(url)
    loaded = cached_checkpoint(run.checkpoint("epoch-1").weights_path, dtype="float32", device="cpu")
    out = extract_words(loaded.model, loaded.tokenizer, list(map(list, data.frame["tokens"])),
                        list(data.frame["tags"]), max_length=MAX_LENGTH)
    stored = run.root["checkpoints/epoch-1"]
    np.testing.assert_allclose(stored["gold_prob"][:], out["gold_prob"], atol=1e-5)
    np.testing.assert_array_equal(stored["pred"][:], out["pred"])
    np.testing.assert_allclose(stored["hidden_mean"][2], out["hidden_mean"][2], atol=1e-2)
    importance = stored["head_importance_raw"][:]
    assert importance.shape == (2, 4) and np.isfinite(importance).all() and (importance > 0).any()
    assert stored["projection/umap/layer_2"].shape == (data.n_words, 2)


def test_cli_trains_a_tagger_from_a_conll_file(tmp_path):
    """``t3vis train --task ner``: a CoNLL file (a -DOCSTART- line, a blank separator) and a base model directory
    in, a token run out; a bad tag gets one line naming the file and line, exit 2."""
    import subprocess
    import sys

    from transformers import AutoModel

    torch.manual_seed(0)
    save_model(AutoModel.from_config(BertConfig(vocab_size=len(vocabulary()), **TINY_CONFIG)),
               tiny_tokenizer(tmp_path / "tok"), tmp_path / "base")
    data = tagged(24, seed=2)
    lines = ["-DOCSTART- O", ""]
    for words, tags in zip(data.frame["tokens"], data.frame["tags"]):
        lines += [f"{w}\t{TAGS[t]}" for w, t in zip(words, tags)] + [""]
    (tmp_path / "data.conll").write_text("\n".join(lines))
    def train(data_file, run):
        return subprocess.run([sys.executable, "-m", "t3vis.cli", "train", str(tmp_path / data_file), "--task", "ner",
                               "--model", str(tmp_path / "base"), "--run", str(tmp_path / run), "--epochs", "1",
                               "--max-length", "32", "--no-pipeline", "--noise", "0.1"],
                              capture_output=True, text=True, timeout=300)

    done = train("data.conll", "run")
    assert done.returncode == 0, done.stderr
    run = Run(tmp_path / "run")
    assert run.task == "token_classification" and run.n_examples == data.n_words
    assert "words" in done.stdout and "entity F1" in done.stdout
    assert run.column("flipped").sum() > 0  # 10% of the training mentions flipped
    (tmp_path / "bad.conll").write_text("\n".join(lines[:3] + ["word\tX-person"] + lines[4:]))
    done = train("bad.conll", "run2")
    assert done.returncode == 2 and "bad.conll" in done.stderr and "line 4" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_the_explorer_opens_a_token_run_on_its_entity_words(recorded):
    """Words are the rows; the default filter keeps entity words (``O`` is one click away), and the table shows
    each word in its sentence."""
    from t3vis.ui.state import ExplorerState
    from t3vis.ui.table import DataTable

    run = recorded["run"]
    state = ExplorerState()
    state.open(run)
    tags = np.asarray(TAGS, object)[run.column("label")]
    assert state.filters == {"label": tuple(TAGS[1:])}
    assert state.n_total == run.n_examples and state.n_selected == int((tags != "O").sum())
    table = DataTable(state=state)
    assert table.columns()[:2] == ["text", "context"]
    frame = table.page_frame()
    assert set(frame["label"]) <= set(TAGS[1:]) and all("«" in c for c in frame["context"])
    state.clear_filters()
    assert state.n_selected == run.n_examples or state.filtered is None


def test_export_writes_one_row_per_word_with_its_sentence(recorded, tmp_path):
    from t3vis.analysis.export import export

    run = recorded["run"]
    table = export(run, "datamap", tmp_path / "words.csv")
    assert len(table) == run.n_examples
    assert list(table.columns[:7]) == ["row", "split", "sentence", "position", "text", "context", "label"]
    assert set(table["label"]) <= set(TAGS) and set(table["prediction"]) <= set(TAGS)
    np.testing.assert_array_equal(table["position"], run.column("position"))


def test_sentence_export_aggregates_each_sentences_words(recorded, tmp_path):
    """The example level of a word run: each sentence's least confident word and suspect-word count, against a
    loop over the word table."""
    from t3vis.analysis.export import ExportError, datamap_frame, export

    run, data = recorded["run"], recorded["data"]
    sentences = export(run, "sentences", tmp_path / "sentences.csv")
    words = datamap_frame(run)
    dynamics = run.dynamics()
    assert len(sentences) == len(data) and list(sentences["sentence"]) == list(range(len(data)))
    entity = (words["split"] == "train") & (words["label"] != "O")
    threshold = np.quantile(words.loc[entity, "mislabel_score"], 0.9)
    for s, group in words.groupby("sentence"):
        row = sentences.iloc[s]
        assert row["text"] == " ".join(data.frame["tokens"][s]) and row["n_words"] == len(group)
        assert row["least_confidence"] == pytest.approx(group["confidence"].min())
        assert row["least_confident_word"] == group.loc[group["confidence"].idxmin(), "text"]
        suspect = ((group["label"] != "O") & (group["mislabel_score"] >= threshold)).sum()
        assert row["suspect_words"] == suspect
        # the sentence data map: each epoch's lowest given-tag probability among the words, its mean and spread
        weakest = np.nanmin(dynamics.gold_prob[:, group.index], axis=1)
        assert row["sentence_confidence"] == pytest.approx(weakest.mean(), abs=1e-6)
        assert row["sentence_variability"] == pytest.approx(weakest.std(), abs=1e-6)
        assert row["sentence_wrong_tags"] == (group["prediction"] != group["label"]).sum()
    with pytest.raises(ExportError, match="token-classification"):
        from tests.fixtures import make_tiny_run

        export(Run(make_tiny_run(tmp_path)), "sentences", tmp_path / "x.csv")


def test_a_token_runs_mislabel_score_is_the_one_measured_best_for_words(recorded, tmp_path):
    """Words rank by mention_consensus (bench_ner.py, six seeds), examples keep aum_ensemble: one per task; its
    row inputs come from the run's own rows."""
    from t3vis.analysis.datamaps import DEFAULT_SCORE, run_columns, run_data_map
    from t3vis.tasks.token_classification import mention_ids, surface_type_prob

    run = recorded["run"]
    columns = run_columns(run)
    np.testing.assert_array_equal(columns["mislabel_score"], columns["mention_consensus_score"])
    assert np.isfinite(columns["mention_consensus_score"][run.column("label") != TAGS.index("O")]).any()
    inputs = get_task("token_classification").score_inputs(run)
    labels = run.column("label")
    np.testing.assert_array_equal(inputs["mention"], mention_ids(labels, run.column("sentence"), TAGS))
    np.testing.assert_array_equal(inputs["surface_type_prob"], surface_type_prob(run.column("text"), labels, TAGS))
    said = run_data_map(run).attrs["mislabel_score"]
    assert said.startswith("mislabel_score = mention_consensus_score:")
    from t3vis.store.synth import synth_run

    text_run = synth_run(tmp_path / "synth", 200, checkpoints=2, num_layers=1, num_heads=2).loc.url
    classification = run_columns(Run(text_run))
    np.testing.assert_array_equal(classification["mislabel_score"], classification[f"{DEFAULT_SCORE}_score"])


def test_the_trainer_callback_records_a_tagger_per_word(tmp_path):
    """A Hugging Face ``Trainer`` with ``T3VisCallback`` over a ``TaggedDataset``: a word run whose epoch-end
    dynamics equal a direct forward of each checkpoint. One step per epoch (every training sentence in one batch,
    no dropout), so an epoch's in-training pass ran the previous checkpoint's weights: its values must equal that
    checkpoint's, word for word, which holds only if every batch row was matched to its own sentence."""
    from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments

    from t3vis.training import T3VisCallback
    from tests.fixtures import tiny_tagger

    data = tagged(24, seed=3)
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    model = tiny_tagger(0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    train = data.frame[data.frame["split"] == "train"]
    features = []
    for words, tags in zip(train["tokens"], train["tags"]):
        enc = tokenizer(list(words), is_split_into_words=True, truncation=True, max_length=MAX_LENGTH)
        ids, previous, labels = enc.word_ids(), None, []
        for word in ids:  # the standard alignment: a word's tag on its first sub-token
            labels.append(-100 if word is None or word == previous else int(tags[word]))
            previous = word
        features.append({**enc, "labels": labels})
    callback = T3VisCallback(tmp_path / "run", examples=data, max_length=MAX_LENGTH, bf16=False)
    args = TrainingArguments(output_dir=str(tmp_path / "trainer"), num_train_epochs=2, learning_rate=5e-3,
                             per_device_train_batch_size=len(features), use_cpu=True, report_to="none",
                             save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=features, processing_class=tokenizer,
                      data_collator=DataCollatorForTokenClassification(tokenizer), callbacks=[callback])
    with warnings.catch_warnings():  # every training sentence is recognised in the Trainer's batches
        warnings.filterwarnings("error", message=".*were recognised in the Trainer's batches")
        trainer.train()

    run = Run(str(tmp_path / "run"))
    words = sum(len(t) for t in data.frame["tokens"])
    assert run.task == "token_classification" and run.n_examples == words and validate(run.loc.url) == []
    assert run.checkpoints == ["epoch-0", "epoch-1", "epoch-2"] and run.epochs() == [1, 2]
    dynamics, labels, split = run.dynamics(), run.column("label"), np.asarray(run.categories("split"))[
        run.column("split")]
    probs = {}
    for c, name in enumerate(run.checkpoints):
        model_c, tok = load_checkpoint(run.checkpoint(name).weights_path, dtype=torch.float32)
        logits = np.concatenate([direct_word_logits(model_c, tok, list(w)) for w in data.frame["tokens"]])
        p = torch.softmax(torch.tensor(logits, dtype=torch.float64), -1).numpy()
        probs[c] = p[np.arange(words), labels]
    assert np.abs(probs[1] - probs[0]).max() > 1e-2 and np.abs(probs[2] - probs[1]).max() > 1e-2  # (it learns)
    for epoch in (1, 2):
        np.testing.assert_allclose(dynamics.gold_prob[epoch - 1], probs[epoch], atol=1e-5)
        trained = split == "train"
        np.testing.assert_allclose(dynamics.train_gold_prob[epoch - 1][trained], probs[epoch - 1][trained],
                                   atol=1e-5)
        assert np.isnan(dynamics.train_gold_prob[epoch - 1][~trained]).all()
    history = run.attrs["training"]["epochs"]
    assert [e["train_rows_seen_in_training"] for e in history] == [int((split == "train").sum())] * 2
    assert "validation_entity_f1" in history[-1]


# ---------------------------------------------------------------------------------------------------- cross-fitting
def test_sentence_folds_deal_each_stratum_evenly():
    from t3vis.training.crossfit import rarest_types, sentence_folds

    rng = np.random.default_rng(0)
    strata = rng.choice(["", "person", "movie", "tvshow"], 203, p=[0.5, 0.3, 0.15, 0.05])
    fold = sentence_folds(strata, 4, seed=2)
    assert np.ptp(np.bincount(fold, minlength=4)) <= 1
    for stratum in set(strata):
        assert np.ptp(np.bincount(fold[strata == stratum], minlength=4)) <= 1
    assert np.array_equal(fold, sentence_folds(strata, 4, seed=2))
    assert not np.array_equal(fold, sentence_folds(strata, 4, seed=3))
    # the rarest type among a sentence's words (counted over every sentence), "" without an entity
    names = ["O", "B-a", "I-a", "B-b", "I-b"]
    tags = [np.array([1, 2, 2, 0]), np.array([3, 0]), np.array([0, 0]), np.array([1, 3, 4])]
    assert rarest_types(tags, names) == ["a", "b", "", "b"]  # a: 4 words, b: 3


def test_no_word_is_predicted_by_a_model_that_trained_on_its_sentence(tmp_path):
    from t3vis.data.subwords import align_words
    from t3vis.training.crossfit import cross_fit_word_probs, sentence_folds
    from tests.fixtures import tiny_tagger

    data = tagged(30, seed=5)
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    sentences, tags = [list(t) for t in data.frame["tokens"]], [list(t) for t in data.frame["tags"]]
    alignment = align_words(tokenizer, sentences, tags, MAX_LENGTH)
    sentence_of = {tuple(ids): s for s, ids in enumerate(alignment.input_ids)}
    assert len(sentence_of) == len(sentences)
    fold = sentence_folds(["x"] * len(sentences), 3, seed=0)
    trained, predicted, models = {}, {}, {}

    def spy(k):
        models[k] = tiny_tagger(0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        trained[k], predicted[k] = set(), set()

        def record(module, args, kwargs):
            ids, mask = kwargs["input_ids"], kwargs["attention_mask"].bool()
            seen = {sentence_of[tuple(row[m].tolist())] for row, m in zip(ids, mask)}
            (trained if module.training else predicted)[k].update(seen)

        models[k].register_forward_pre_hook(record, with_kwargs=True)
        return models[k]

    labels = np.concatenate([np.asarray(t) for t in tags])
    config = TrainConfig(epochs=2, batch_size=8, learning_rate=3e-3, max_length=MAX_LENGTH, seed=0, bf16=False)
    probs = cross_fit_word_probs(alignment, labels, fold, model_for_fold=spy, tokenizer=tokenizer, config=config)
    everything = set(range(len(sentences)))
    for k in range(3):
        held_out = set(np.flatnonzero(fold == k).tolist())
        assert trained[k] == everything - held_out and predicted[k] == held_out
    # each word's probabilities are its own fold's model's at its first sub-token, sentence alone
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sentences])])
    for s in (0, 7, 29):
        model = models[int(fold[s])].eval()
        expected = torch.softmax(torch.tensor(direct_word_logits(model, tokenizer, sentences[s]), dtype=torch.float64),
                                 -1).numpy()
        np.testing.assert_allclose(probs[offsets[s]:offsets[s + 1]], expected, atol=1e-5)
    assert probs.shape == (len(labels), len(TAGS)) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_crossfit_on_a_token_run_scores_words_in_folds_of_whole_sentences(tmp_path):
    from t3vis.analysis.crossfit import run_cross_fit
    from t3vis.training.crossfit import cross_fit_run

    record_tiny_ner_run(tmp_path / "run", tagged(), max_length=MAX_LENGTH)
    attrs = cross_fit_run(tmp_path / "run", folds=2, epochs=1)
    run = Run(str(tmp_path / "run"))
    stored, sentence = run.crossfit(), run.column("sentence")
    train = np.asarray(run.categories("split"))[run.column("split")] == "train"
    assert (stored.fold[~train] == -1).all() and (stored.fold[train] >= 0).all()
    for s in np.unique(sentence[train]):
        assert len(set(stored.fold[sentence == s])) == 1  # a sentence is held out whole
    assert attrs["n_rows"] == int(train.sum()) and attrs["unit"].startswith("word")
    assert np.allclose(stored.probs[train].sum(1), 1, atol=1e-4) and np.isnan(stored.probs[~train]).all()
    scores = run_cross_fit(run)
    assert list(scores.index) == list(np.flatnonzero(train))
    held_out = stored.probs[scores.index, run.column("label")[scores.index]]
    np.testing.assert_allclose(scores["crossfit_score"], 1 - held_out, atol=1e-5)  # cleanlab's self-confidence


def test_the_ner_demo_fills_the_first_last_and_every_third_checkpoint():
    from pipelines.build import spread_checkpoints

    names = [f"epoch-{i}" for i in range(7)]
    assert spread_checkpoints(names) == ["epoch-0", "epoch-3", "epoch-6"]
    assert spread_checkpoints(names[:6]) == ["epoch-0", "epoch-3", "epoch-5"]  # the last is always there
    assert spread_checkpoints(names, 2) == ["epoch-0", "epoch-2", "epoch-4", "epoch-6"]
    assert spread_checkpoints(names[:1]) == ["epoch-0"] and spread_checkpoints([]) == []
