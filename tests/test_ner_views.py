"""The instance view and re-prediction on a token-classification (NER) run, without a browser: the server's word-level
forward pass, saliency and batched sentence prediction against a direct computation on an independent copy of the
checkpoint, and the view driven through the session state as clicks drive it."""

from __future__ import annotations

import asyncio
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import torch
from seqeval.metrics import f1_score
from transformers import AutoModelForTokenClassification, BertConfig, BertTokenizerFast
from ui_fixtures import PAYLOADS

from t3vis.analysis.saliency import TokenTarget, gradient_x_input
from t3vis.errors import T3VisError
from t3vis.models import gates_from_pruned, head_gates, load_checkpoint
from t3vis.serving import Forward, ModelServer, get_server, session_model
from t3vis.store import Run
from t3vis.ui.heads import HeadView
from t3vis.ui.instance import InstanceView
from t3vis.ui.state import ExplorerState
from t3vis.ui.tokens import selection_summary, tag_change, tags_html, token_units, unit_sums, word_tags
from tests.fixtures import NER_TAGS, make_tiny_ner_run, one_thread  # noqa: F401 (one_thread: autouse)

L, H = 2, 4


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    """A complete tiny NER run (recorded tagger, real pipelines): about a minute."""
    return make_tiny_ner_run(tmp_path_factory.mktemp("ner-views"))


@pytest.fixture(scope="module")
def reference(ner_run):
    """An independent float32 copy of the run's last checkpoint and its tokenizer."""
    run = Run(str(ner_run))
    return load_checkpoint(run.checkpoint(run.checkpoints[-1]).weights_path, dtype=torch.float32)


@pytest.fixture(scope="module")
def piece_tagger():
    """A tagger whose vocabulary splits words into pieces (play ##ing, game ##s) and reads at most 8 sub-tokens."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "game", "##s", "well", "."]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True,
                                  model_max_length=8)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=8, num_labels=3, initializer_range=0.5)
    model = AutoModelForTokenClassification.from_config(config, attn_implementation="eager").eval()
    return model, tokenizer


def direct_word_logits(model, tokenizer, words, pruned=(), max_length=512):
    """One sentence alone through ``model`` with ``pruned`` heads gated directly: the logits at each word's first
    sub-token; the words that do not fit whole in ``max_length`` sub-tokens are left out (NaN)."""
    kept = len(words)
    while len(tokenizer(words[:kept], is_split_into_words=True)["input_ids"]) > max_length:
        kept -= 1
    enc = tokenizer(words[:kept], is_split_into_words=True, return_tensors="pt")
    num_layers, num_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    gates = gates_from_pruned(pruned, num_layers, num_heads) if pruned else None
    with torch.no_grad(), head_gates(model, gates):
        logits = model(**enc).logits[0].float().numpy()
    ids = enc.word_ids(0)
    out = np.full((len(words), logits.shape[-1]), np.nan, np.float32)
    out[:kept] = logits[[ids.index(w) for w in range(kept)]]
    return out


def sentence_of(run: Run, row: int) -> np.ndarray:
    sentence = run.column("sentence")
    return np.flatnonzero(sentence == sentence[row])


class Strip(HTMLParser):
    """The tag strip as a browser reads it: per word block its classes, data attributes and visible parts."""

    def __init__(self, markup: str):
        super().__init__(convert_charrefs=True)
        self.blocks, self._part = [], None
        self.feed(markup)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "tagw" in attrs.get("class", "").split():
            self.blocks.append({**attrs, "w": "", "gold": "", "pred": ""})
        elif self.blocks and attrs.get("class") in ("w", "gold", "pred"):
            self._part = attrs["class"]

    def handle_endtag(self, tag):
        self._part = None

    def handle_data(self, data):
        if self._part:
            self.blocks[-1][self._part] += data


# ---------------------------------------------------------------------------------------------------- server
def test_forward_per_word_equals_a_direct_forward_at_first_sub_tokens(piece_tagger, ner_run, reference):
    model, tokenizer = piece_tagger
    server = ModelServer(model, tokenizer)
    assert server.per_word
    words = ["Playing", "games", "well", "."]  # 7 sub-tokens with [CLS]/[SEP]: all fit in 8
    encoding = server.encode_words(words)
    assert encoding.first_token == (1, 3, 5, 6) and not encoding.truncated
    assert [u.text for u in token_units(encoding)] == ["[CLS]", "Playing", "games", "well", ".", "[SEP]"]
    forward = server.forward(encoding)
    np.testing.assert_allclose(forward.logits, direct_word_logits(model, tokenizer, words), rtol=1e-5, atol=1e-6)
    assert forward.probs.shape == (4, 3) and forward.attentions.shape[:2] == (2, 2)
    np.testing.assert_allclose(forward.word(1).probs, torch.softmax(torch.tensor(forward.logits[1]), -1).numpy(),
                               rtol=1e-5)
    # past 8 sub-tokens whole words are dropped: their rows are NaN, the words read keep their logits
    long = server.encode_words(words + ["playing"])
    assert long.truncated and long.first_token[-1] == -1
    cut = server.forward(long)
    assert np.isnan(cut.logits[-1]).all() and not np.isnan(cut.logits[:-1]).any()
    np.testing.assert_allclose(cut.logits[:-1], forward.logits, rtol=1e-5, atol=1e-6)

    # the run's own checkpoint, through the registry the app uses
    run = Run(str(ner_run))
    served = get_server(run.checkpoint(run.checkpoints[-1]).weights_path)
    words = [str(w) for w in run.column("text")[sentence_of(run, 30)]]
    np.testing.assert_allclose(served.forward(served.encode_words(words, run.max_length)).logits,
                               direct_word_logits(*reference, words), rtol=1e-5, atol=1e-5)


def test_saliency_for_a_word_is_gradient_x_input_of_its_token_target(piece_tagger):
    model, tokenizer = piece_tagger
    server = ModelServer(model, tokenizer)
    words = ["Playing", "games", "well", "."]
    encoding = server.encode_words(words)
    shown = {}
    for w, target in ((0, 2), (1, 0)):
        got = server.saliency(encoding, target, word=w)
        expected = gradient_x_input(TokenTarget(model, [encoding.first_token[w]]), encoding.input_ids,
                                    encoding.attention_mask, torch.tensor([target]))[0].detach().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
        shown[w] = got
    assert not np.allclose(shown[0], shown[1])  # each word is explained for itself
    with pytest.raises(T3VisError, match="word 4: not read by the model"):
        server.saliency(server.encode_words(words + ["playing"]), 0, word=4)


def test_batched_sentence_prediction_equals_gating_directly(piece_tagger):
    """`apredict_words` with and without pruned heads, batched and padded, against each sentence alone with the
    gates set directly; float32 is exact, the bf16 batches stay within rounding."""
    model, tokenizer = piece_tagger
    sentences = [["Playing", "games", "well", "."], ["game"], ["well", "well", "playing", "games", "."],
                 ["games", "well"]]
    pruned = ((0, 1), (1, 0))
    exact = ModelServer(model, tokenizer, batch_autocast=False)
    for heads in ((), pruned):
        got = asyncio.run(exact.apredict_words(sentences, heads, batch_size=3))
        for words, logits in zip(sentences, got):
            expected = direct_word_logits(model, tokenizer, words, heads, max_length=8)
            np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    assert np.isnan(got[2][-1]).all()  # sentence 3 is past 8 sub-tokens: its last word is not read
    fast = ModelServer(model, tokenizer, batch_autocast=True)
    got = asyncio.run(fast.apredict_words(sentences, pruned))
    for words, logits in zip(sentences, got):
        expected = direct_word_logits(model, tokenizer, words, pruned, max_length=8)
        np.testing.assert_allclose(logits, expected, atol=0.05 * np.nanmax(np.abs(expected)))
    with pytest.raises(T3VisError, match="empty"):
        asyncio.run(exact.apredict_words([["game"], []]))


# ---------------------------------------------------------------------------------------------------- pure parts
def test_tag_strip_marks_mismatches_the_selected_word_and_words_not_read():
    words = ["Ada", PAYLOADS[0], "in", "Paris"]
    markup = tags_html(words, ["B-person", "O", "O", PAYLOADS[4]], ["B-person", "B-geo", "O", None],
                       [0.9, 0.6, 0.8, float("nan")], selected=1)
    blocks = Strip(markup).blocks
    assert [b["w"] for b in blocks] == words  # the payload word is text, not an image tag
    assert [b["class"] for b in blocks] == ["tagw", "tagw wrong focus", "tagw", "tagw unread"]
    assert [b["data-click"] for b in blocks] == [f"word:{w}" for w in range(4)]
    assert [b["pred"] for b in blocks] == ["B-person", "B-geo", "O", "—"] and blocks[3]["gold"] == PAYLOADS[4]
    assert "60.0%" in blocks[1]["title"] and "not read" in blocks[3]["title"]
    assert "<img" not in markup.replace("&lt;img", "")


def test_tag_change_counts_selected_words_and_scores_whole_sentences_with_seqeval():
    names = ["O", "B-x", "I-x"]

    def logits(tags):
        out = np.full((len(tags), 3), -5.0, np.float32)
        for w, t in enumerate(tags):
            if t < 0:
                out[w] = np.nan
            else:
                out[w, t] = 5.0
        return out

    gold = [np.array([1, 2, 0]), np.array([0, 1])]
    before = [logits([1, 2, 0]), logits([0, 1])]
    after = [logits([1, 0, 0]), logits([1, -1])]  # a word cut off counts as "O"
    selected = [np.array([False, True, True]), np.array([True, True])]
    change = tag_change(gold, before, after, selected, names)
    assert word_tags(after[1]).tolist() == [1, -1]
    assert change["n"] == 4 and change["sentences"] == 2
    assert change["flipped"] == 3  # words 1 of sentence 0, 0 and 1 of sentence 1
    assert change["accuracy_before"] == 1.0 and change["accuracy_after"] == 0.25
    gold_names = [["B-x", "I-x", "O"], ["O", "B-x"]]
    assert change["entity_f1_before"] == pytest.approx(f1_score(gold_names, gold_names))
    assert change["entity_f1_after"] == pytest.approx(f1_score(gold_names, [["B-x", "O", "O"], ["B-x", "O"]]))
    text = selection_summary(change)
    assert text.startswith("**4** words in 2 sentences") and "tags changed: **3** (75.0%)" in text
    assert "entity F1 of the sentences 1.000 → 0.000" in text and "word accuracy 100.0% → 25.0%" in text


def test_forward_word_is_that_words_row():
    forward = Forward(np.arange(6, dtype=np.float32).reshape(3, 2), np.full((3, 2), 0.5, np.float32), None)
    assert forward.word(None) is forward
    assert forward.word(2).logits.tolist() == [4.0, 5.0] and forward.word(2).probs.shape == (2,)


# ---------------------------------------------------------------------------------------------------- the view
def test_a_word_row_shows_its_sentence_with_gold_and_predicted_tags(ner_run, reference):
    state = ExplorerState(str(ner_run))
    instance = InstanceView(state=state)
    run = Run(str(ner_run))
    rows = sentence_of(run, 40)
    row = int(rows[3])
    state.example = row
    words = [str(w) for w in run.column("text")[rows]]
    logits = direct_word_logits(*reference, words)
    gold = [NER_TAGS[t] for t in run.column("label")[rows]]
    pred = [NER_TAGS[t] for t in logits.argmax(1)]
    assert instance._tags.visible and not instance._message.visible
    blocks = Strip(instance._tags.html).blocks
    assert [b["w"] for b in blocks] == words
    assert [b["gold"] for b in blocks] == gold and [b["pred"] for b in blocks] == pred
    assert ["wrong" in b["class"] for b in blocks] == [g != p for g, p in zip(gold, pred)]
    assert [b["class"].endswith("focus") for b in blocks] == [w == 3 for w in range(len(words))]
    header = instance._header.object
    assert f"**«{words[3]}»** · sentence {run.column('sentence')[row]}, word 3" in header
    assert f"gold **{gold[3]}**".replace("-", "\\-") in header
    assert f"predicted **{pred[3]}**".replace("-", "\\-") in header
    # the class bars are that word's tag probabilities; saliency explains its predicted tag
    shown = [float(p) / 100 for p in re.findall(r'class="p">([0-9.]+)%', instance._classes.html)]
    np.testing.assert_allclose(shown, torch.softmax(torch.tensor(logits[3]), -1).numpy(), atol=6e-4)
    assert instance._shown.target == int(logits[3].argmax())
    server = get_server(run.checkpoint(state.checkpoint).weights_path)
    encoding = server.encode_words(words, run.max_length)
    expected = unit_sums(server.saliency(encoding, int(logits[3].argmax()), word=3), token_units(encoding))
    values = [float(v) for v in re.findall(r'title="[^"]*: saliency ([-+0-9.e]+)"', instance._tokens.html)]
    np.testing.assert_allclose(values, expected, rtol=1e-3, atol=1e-6)

    # a click on another word in the strip selects that word's row, which explains that word's own tag
    instance._on_click("word:1")
    assert state.example == int(rows[1]) and instance._shown.word == 1
    assert f"**«{words[1]}»**" in instance._header.object
    assert [b["class"].endswith("focus") for b in Strip(instance._tags.html).blocks] == \
        [w == 1 for w in range(len(words))]
    assert instance._shown.target == int(logits[1].argmax())
    expected = unit_sums(server.saliency(encoding, int(logits[1].argmax()), word=1), token_units(encoding))
    values = [float(v) for v in re.findall(r'title="[^"]*: saliency ([-+0-9.e]+)"', instance._tokens.html)]
    np.testing.assert_allclose(values, expected, rtol=1e-3, atol=1e-6)
    # a click on a tag explains that tag for the word
    instance._on_click("cls:3")
    assert instance._shown.target == 3 and "for the tag **B\\-sport** of **" in instance._legend.object
    # both words share one encoding and forward pass of their sentence
    model = session_model(state)
    assert len([k for k in model._memo if k[0] == "forward"]) == 1


@pytest.mark.parametrize("baseline", ["extracted", "fresh"])
def test_pruning_through_the_view_equals_gating_directly(ner_run, reference, baseline, tmp_path):
    """The unpruned side comes from the checkpoint's extracted logits, or, in a copy of the run without them, from
    a fresh forward: both equal a direct forward of each sentence."""
    if baseline == "fresh":
        shutil.copytree(ner_run, tmp_path / "run")
        ner_run = tmp_path / "run"
        shutil.rmtree(ner_run / "store.zarr" / "checkpoints" / Run(str(ner_run)).checkpoints[-1] / "logits")
    state = ExplorerState(str(ner_run))
    instance, heads = InstanceView(state=state), HeadView(state=state)
    run = Run(str(ner_run))
    # the tiny checkpoint is near its initial state: compare against float32 batches, exactly
    get_server(run.checkpoint(state.checkpoint).weights_path).batch_autocast = False
    sentence = run.column("sentence")
    state.selection = np.isin(sentence, [2, 3, 5, 9, 17])  # (the view's default filter keeps entity words)
    rows = state.rows()
    assert len(rows) and set(sentence[rows]) <= {2, 3, 5, 9, 17}
    pruned = ((0, 0), (0, 3))
    for layer, head in pruned:
        heads.click(f"prune:{layer},{head}")
    assert state.pruned_heads == pruned and f"{len(rows)} words" in instance._repredict.label
    change = asyncio.run(instance.repredict_selection())

    spans = [np.flatnonzero(sentence == s) for s in np.unique(sentence[rows])]
    labels = run.column("label").astype(np.int64)
    model, tokenizer = reference
    gold, before, after = [], [], []
    for span in spans:
        words = [str(w) for w in run.column("text")[span]]
        gold.append([NER_TAGS[t] for t in labels[span]])
        before.append(direct_word_logits(model, tokenizer, words, max_length=run.max_length).argmax(1))
        after.append(direct_word_logits(model, tokenizer, words, pruned, max_length=run.max_length).argmax(1))
    picked = [np.isin(span, rows) for span in spans]
    flipped = sum(int((b != a)[p].sum()) for b, a, p in zip(before, after, picked))
    assert 0 < flipped < len(rows)  # these heads change some tags, so the count below is a real check
    assert change["n"] == len(rows) and change["sentences"] == len(spans) and change["flipped"] == flipped
    right = [np.array([NER_TAGS[t] for t in tags]) == np.array(g) for tags, g in zip(after, gold)]
    assert change["accuracy_after"] == pytest.approx(np.concatenate([r[p] for r, p in zip(right, picked)]).mean())
    for side, tags in (("before", before), ("after", after)):
        assert change[f"entity_f1_{side}"] == pytest.approx(
            f1_score(gold, [[NER_TAGS[t] for t in sentence_tags] for sentence_tags in tags]))
    assert instance._selection.visible and f"**{len(rows)}** words in {len(spans)} sentences" in \
        instance._selection.object and f"tags changed: **{flipped}**" in instance._selection.object
    assert change["pruned"] == [list(h) for h in pruned] and change["baseline"] == baseline


# ---------------------------------------------------------------------------------------------------- the unit
def test_the_sentence_unit_lists_the_sentences_of_the_masked_words_at_their_weakest_word(ner_run):
    from bokeh.document import Document

    from t3vis.analysis.datamaps import run_columns
    from t3vis.ui.explorer import Explorer

    run = Run(str(ner_run))
    sentence, text = run.column("sentence"), [str(w) for w in run.column("text")]
    confidence = run_columns(run)["confidence"]
    explorer = Explorer(str(ner_run))
    explorer.__panel__().server_doc(Document())
    state, table = explorer.state, explorer.table
    state.selection = np.isin(sentence, [1, 4, 6, 8])
    words = state.rows()  # the selected entity words (the default filter)
    assert len(words) and set(sentence[words]) <= {1, 4, 6, 8}
    state.unit = "sentences"

    # a row per sentence holding a masked word, at its least confident word (a loop over the rows)
    holding = sorted(set(sentence[words]))
    weakest = [int(np.flatnonzero(sentence == s)[np.argmin(confidence[sentence == s])]) for s in holding]
    assert list(state.unit_rows()) == weakest
    frame = table.table.value
    assert list(frame.index) == weakest
    assert list(frame.columns[:3]) == ["sentence_text", "sentence_words", "sentence_wrong_tags"]
    for row, shown in zip(weakest, frame["sentence_text"]):
        span = np.flatnonzero(sentence == sentence[row])
        assert shown == " ".join(f"«{text[r]}»" if r == row else text[r] for r in span)
    assert list(frame["word"]) == [text[r] for r in weakest]
    assert list(frame["sentence_words"]) == [int((sentence == s).sum()) for s in holding]
    assert f"in **{len(holding)}** of {len(np.unique(sentence))} sentences" in explorer.counts.object
    assert f"sentences 1–{len(holding)} of {len(holding)}" in table._info.object
    # the CSV holds the same rows under the same headers as the table
    csv = pd.read_csv(table.csv(), index_col="row")
    assert list(csv.columns) == list(frame.columns) and list(csv.index) == weakest
    # a click on a row opens its sentence at the weakest word
    table._on_click(type("Click", (), {"row": 1, "column": "sentence_text"})())
    assert state.example == weakest[1]

    # the data map shows the sentences; a box over it selects whole sentences
    plot = explorer.projection.plots["datamap"]
    assert plot.spec.kind == "sentence_map" and len(plot._front_rows()) == len(holding)
    x, y = plot.x, plot.y
    everyone = state.data.sentences.points(None)
    assert len(everyone) == len(np.unique(sentence))
    state.clear_selection()
    g = state.data.sentences.group
    inside = everyone[(y[everyone] <= np.median(y[everyone]))]
    plot.box.event(bounds=(float(x.min()) - 1, float(y.min()) - 1, float(x.max()) + 1,
                           float(np.median(y[everyone]))))
    chosen = set(g[inside])
    assert 0 < len(chosen) < len(everyone)
    assert set(np.flatnonzero(state.selection)) == set(np.flatnonzero(np.isin(g, list(chosen))))
    # every word of a sentence sits at its sentence's point
    for s in holding[:3]:
        span = np.flatnonzero(sentence == s)
        assert len(set(zip(x[span], y[span]))) == 1

    state.unit = "words"
    assert "context" in table.table.value.columns and plot is not explorer.projection.plots["datamap"]
    assert explorer.projection.plots["datamap"].spec.kind == "datamap"
