"""Head view and instance view without a browser: the pure rendering functions, and the views driven through the
session state exactly as widgets and clicks drive them (async callbacks run to completion without a server)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil

import numpy as np
import panel as pn
import pytest
import torch
from PIL import Image
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from t3vis.models import gates_from_pruned, head_gates, load_checkpoint
from t3vis.serving import ModelServer, NewestOnly, get_server, session_model
from t3vis.store import Run, RunWriter
from t3vis.ui.heads import (
    HeadView,
    grid_html,
    importance_html,
    pattern_png,
    patterns_html,
    pool_attention,
    pruned_json,
)
from t3vis.ui.instance import InstanceView
from t3vis.ui.tokens import (
    ATTENTION,
    CLASSES_SHOWN,
    NEGATIVE,
    POSITIVE,
    attention_from,
    classes_html,
    diverging_colours,
    shown_classes,
    token_units,
    tokens_html,
    unit_sums,
)
from t3vis.ui.state import ExplorerState
from tests.fixtures import make_tiny_run, tiny_model, tiny_tokenizer

torch.set_num_threads(1)
L, H = 2, 4


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    """A tiny run whose checkpoint has stored head importance and aggregate attention, plus one over-long text."""
    run = make_tiny_run(tmp_path_factory.mktemp("views"), n=20, checkpoints=1)
    writer = RunWriter(str(run))
    rng = np.random.default_rng(0)
    writer.write_array("checkpoints/epoch-0/head_importance", rng.random((L, H)).astype(np.float32))
    attention = rng.random((L, H, 40, 40)).astype(np.float32)
    writer.write_array("checkpoints/epoch-0/attention", attention / attention.sum(-1, keepdims=True))
    # a stored prediction the instance view uses as a first guess of the class to explain: wrong on purpose
    writer.write_array("checkpoints/epoch-0/pred", np.full(20, 2, dtype=np.int16))
    return run


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """A run whose example 1 is longer than the model's 64 positions."""
    import pandas as pd

    from t3vis.models import model_info, save_model

    root = tmp_path_factory.mktemp("long")
    model, tokenizer = tiny_model(2), tiny_tokenizer(root / "tok")
    texts = ["the market and the bank", " ".join(["market profit"] * 60) + " final"]
    frame = pd.DataFrame({"text": texts, "label": [0, 1], "split": ["train", "validation"]})
    writer = RunWriter.create(root / "run", examples=frame, label_names=["business", "sport"],
                              model=model_info(model, tokenizer), dataset={"name": "long", "n": 2})
    save_model(model, tokenizer, root / "run" / writer.weights_dir("epoch-0"))
    writer.add_checkpoint("epoch-0", step=0, epoch=0, weights=writer.weights_dir("epoch-0"))
    return root / "run"


def views(run_path, **head_params):
    state = ExplorerState(str(run_path))
    return state, InstanceView(state=state), HeadView(state=state, **head_params)


def reference_logits(run_path, text, pruned=()):
    """Logits from an independent copy of the checkpoint, gates set directly."""
    model, tokenizer = load_checkpoint(Run(str(run_path)).checkpoint("epoch-0").weights_path)
    enc = tokenizer([text], truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad(), head_gates(model, gates_from_pruned(pruned, L, H) if pruned else None):
        return model(**enc).logits[0].numpy()


# ---------------------------------------------------------------------------------------------------- tokens
@pytest.fixture(scope="module")
def piece_server():
    """A server whose vocabulary splits words into pieces (play ##ing, game ##s)."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "play", "##ing", "game", "##s", "well", "."]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=2)
    return ModelServer(BertForSequenceClassification(config).eval(), tokenizer)


def test_token_units_merge_word_pieces_and_keep_the_texts_gaps(piece_server):
    encoding = piece_server.encode("Playing games\nwell.")
    assert encoding.tokens == ("[CLS]", "play", "##ing", "game", "##s", "well", ".", "[SEP]")
    pieces = token_units(encoding, merge_words=False)
    assert [u.text for u in pieces] == ["[CLS]", "Play", "ing", "game", "s", "well", ".", "[SEP]"]
    assert [u.gap for u in pieces] == ["", " ", "", " ", "", "\n", "", " "]
    words = token_units(encoding, merge_words=True)
    assert [(u.text, u.start, u.stop) for u in words] == [
        ("[CLS]", 0, 1), ("Playing", 1, 3), ("games", 3, 5), ("well", 5, 6), (".", 6, 7), ("[SEP]", 7, 8)]
    assert [u.special for u in words] == [True, False, False, False, False, True]
    values = np.arange(8, dtype=float) - 3
    merged = unit_sums(values, words)
    np.testing.assert_allclose(merged, [-3, -2 + -1, 0 + 1, 2, 3, 4])
    assert merged.sum() == pytest.approx(values.sum())  # merging redistributes nothing
    markup = tokens_html(words, merged, diverging_colours(merged), focus=1)
    assert markup.count('data-click="tok:') == 6 and "<br>" in markup and 'class="tok focus" data-click="tok:1"' in markup


def test_attention_from_a_word_is_a_distribution_over_the_shown_words(piece_server):
    encoding = piece_server.encode("Playing games well.")
    words = token_units(encoding)
    rng = np.random.default_rng(1)
    attention = rng.random((len(encoding), len(encoding)))
    attention /= attention.sum(1, keepdims=True)
    got = attention_from(attention, words[1], words)  # "Playing" = tokens 1 and 2
    brute = [sum((attention[1, j] + attention[2, j]) / 2 for j in range(w.start, w.stop)) for w in words]
    np.testing.assert_allclose(got, brute)
    assert got.sum() == pytest.approx(1.0)


def test_colours_are_signed_and_scaled():
    colours = diverging_colours(np.array([0.0, 2.0, -2.0, 1.0]))
    assert colours[0][0] == "#ffffff"
    assert colours[1][0] == "#%02x%02x%02x" % POSITIVE and colours[2][0] == "#%02x%02x%02x" % NEGATIVE
    assert colours[1][1] == "#fff" and colours[3][1] == "#000"  # readable ink on dark / light backgrounds
    markup = classes_html(["a", "b"], np.array([0.25, 0.75]), gold=0, target=1, baseline=np.array([0.5, 0.5]))
    assert 'class="cls gold" data-click="cls:0"' in markup and 'class="cls target" data-click="cls:1"' in markup
    assert "+25.0%" in markup and "width:75.0%" in markup


def test_many_classes_show_the_most_probable_with_gold_and_target_and_a_box_for_the_rest():
    """A tagger's 21 tags: the 6 most probable, the gold and the explained tag, in label order, then "+N more"
    (clickable: ``cls:all``) with the rest's probability; every class when asked, with a "fewer" box."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(21))
    names = [f"tag{c}" for c in range(21)]
    gold, target = int(np.argmin(probs)), int(np.argsort(probs)[1])  # two of the least probable
    top = set(np.argsort(-probs)[:CLASSES_SHOWN].tolist())
    shown = shown_classes(probs, gold=gold, target=target)
    assert shown == sorted(top | {gold, target}) and len(shown) == CLASSES_SHOWN + 2
    markup = classes_html(names, probs, gold=gold, target=target)
    drawn = [int(c) for c in re.findall(r'data-click="cls:(\d+)"', markup)]
    assert drawn == shown
    rest = probs[[c for c in range(21) if c not in shown]].sum()
    assert 'data-click="cls:all"' in markup and f"+{21 - len(shown)} more" in markup and f"{rest:.1%}" in markup
    everything = classes_html(names, probs, gold=gold, target=target, limit=None)
    assert [int(c) for c in re.findall(r'data-click="cls:(\d+)"', everything)] == list(range(21))
    assert 'data-click="cls:few"' in everything and "cls:all" not in everything
    few = classes_html(names[:5], probs[:5] / probs[:5].sum(), gold=0, target=1)  # a few classes: all, no box
    assert len(re.findall(r'data-click="cls:\d+"', few)) == 5 and "more" not in few


# ---------------------------------------------------------------------------------------------------- grid
def test_pool_attention_matches_brute_force_block_means():
    rng = np.random.default_rng(0)
    attention = rng.random((2, 3, 70, 70)).astype(np.float32)
    pooled = pool_attention(attention, 32)
    edges = np.linspace(0, 70, 33).round().astype(int)
    brute = np.array([[attention[..., edges[i]:edges[i + 1], edges[j]:edges[j + 1]].mean((-1, -2))
                       for j in range(32)] for i in range(32)]).transpose(2, 3, 0, 1)
    np.testing.assert_allclose(pooled, brute, rtol=1e-5)
    small = rng.random((1, 1, 20, 20))
    np.testing.assert_array_equal(pool_attention(small, 32), small.astype(np.float32))


def test_pattern_png_decodes_to_the_matrix():
    matrix = np.zeros((5, 7))
    matrix[2, 3] = 4.0
    image = Image.open(io.BytesIO(__import__("base64").b64decode(pattern_png(matrix).split(",", 1)[1])))
    pixels = np.asarray(image)
    assert pixels.shape == (5, 7, 3)
    assert tuple(pixels[2, 3]) == ATTENTION and tuple(pixels[0, 0]) == (255, 255, 255)


def test_grid_marks_pruned_and_selected_heads():
    values = np.arange(8, dtype=float).reshape(2, 4)
    markup = importance_html(values, pruned=[(1, 2)], selected=(0, 3))
    assert markup.count('data-click="head:') == 8 and markup.count('data-click="prune:') == 8
    assert re.search(r'class="cell pruned" data-click="head:1,2"', markup)
    assert re.search(r'class="cell selected" data-click="head:0,3"', markup)
    assert ">7.00<" in markup and "rgb(255,255,255)" in markup  # the largest value saturated, 0 white
    pattern = patterns_html(np.random.default_rng(0).random((2, 4, 6, 6)))
    assert pattern.count("data:image/png;base64,") == 8
    assert grid_html(1, 1, lambda l, h: ("", "x", "t")).count("L0·H0: t") == 1


# ---------------------------------------------------------------------------------------------------- views
def test_only_the_newest_of_overlapping_refreshes_counts():
    spinner = pn.indicators.LoadingSpinner(value=False, visible=False)
    newest = NewestOnly(spinner)
    # the newer refresh ends first: the spinner stops then, and the older one ending later changes nothing
    older = newest.start()
    with newest.running(older):
        newer = newest.start()
        with newest.running(newer):
            assert spinner.value and spinner.visible
        assert not spinner.value
        assert newest.is_current(newer) and not newest.is_current(older)
    assert not spinner.value
    # the older one ends first: the spinner keeps turning for the newer one
    older = newest.start()
    first = newest.running(older)
    first.__enter__()
    newer = newest.start()
    second = newest.running(newer)
    second.__enter__()
    first.__exit__(None, None, None)
    assert spinner.value
    second.__exit__(None, None, None)
    assert not spinner.value


def test_selecting_an_example_shows_prediction_and_saliency(run_path):
    state, instance, _ = views(run_path)
    state.example = 4
    run = Run(str(run_path))
    text, label = run.text(4), int(run.column("label")[4])
    logits = reference_logits(run_path, text)
    shown = instance._shown
    np.testing.assert_allclose(shown.forward.logits, logits, rtol=1e-5, atol=1e-6)
    pred = int(logits.argmax())
    assert pred != 2  # so the stored guess (2) was wrong and the view recomputed saliency for the real class
    assert shown.target == pred and shown.label == label
    assert f"gold **{run.label_names[label]}**" in instance._header.object
    assert f"predicted **{run.label_names[pred]}**" in instance._header.object
    # token titles carry the saliency the server computes for the predicted class, summed per word
    server = get_server(run.checkpoint("epoch-0").weights_path)
    encoding = server.encode(text)
    expected = unit_sums(server.saliency(encoding, pred), token_units(encoding))
    shown_values = [float(v) for v in re.findall(r'title="[^"]*: saliency ([-+0-9.e]+)"', instance._tokens.html)]
    np.testing.assert_allclose(shown_values, expected, rtol=1e-3, atol=1e-6)
    assert not instance._notice.visible and not instance._message.visible

    instance._on_click("cls:2")  # explain another class
    assert state.target_class == 2 and instance._shown.target == 2
    assert "for class **" + run.label_names[2] in instance._legend.object
    state.example = 5  # a new example starts from its own prediction again
    assert state.target_class is None and instance._shown.example == 5
    assert instance._shown.target == int(reference_logits(run_path, run.text(5)).argmax())


def test_pruning_via_the_views_equals_zeroing_the_gate(run_path):
    state, instance, heads = views(run_path, scale="instance")
    state.example = 5
    heads.click("prune:1,2")
    assert state.pruned_heads == ((1, 2),)
    text = Run(str(run_path)).text(5)
    np.testing.assert_allclose(instance._shown.forward.logits, reference_logits(run_path, text, ((1, 2),)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(instance._shown.baseline.logits, reference_logits(run_path, text),
                               rtol=1e-5, atol=1e-6)
    assert instance._pruning.visible and "1 head pruned" in instance._pruning.object
    assert 'class="cell pruned" data-click="head:1,2"' in heads._grid.html
    heads.click("prune:0,0")
    assert pruned_json(state.pruned_heads) == "[[0, 0], [1, 2]]"
    assert json.loads(heads._export_file().read()) == [[0, 0], [1, 2]]
    assert heads._export.filename == f"t3vis-{state.run.name}-{state.checkpoint}-pruned-heads.json"
    heads.click("prune:1,2")  # undo one
    assert state.pruned_heads == ((0, 0),)
    heads.restore_all()
    assert state.pruned_heads == () and not instance._pruning.visible


def test_two_sessions_with_different_pruning_at_the_same_time(run_path):
    """Two sessions refresh concurrently on the one shared model; each sees its own pruned heads."""
    (state_a, view_a, _), (state_b, view_b, _) = views(run_path), views(run_path)
    text = Run(str(run_path)).text(6)
    state_a.param.update(example=6, pruned_heads=((0, 1),))
    state_b.param.update(example=6, pruned_heads=((1, 0), (1, 3)))
    assert session_model(state_a) is not session_model(state_b)

    async def both():
        await asyncio.gather(*(view.refresh() for view in (view_a, view_b) for _ in range(3)))

    asyncio.run(both())
    np.testing.assert_allclose(view_a._shown.forward.logits, reference_logits(run_path, text, ((0, 1),)), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(view_b._shown.forward.logits,
                               reference_logits(run_path, text, ((1, 0), (1, 3))), rtol=1e-5, atol=1e-6)


def test_head_selection_and_token_click_show_that_heads_attention(run_path):
    state, instance, heads = views(run_path, scale="instance", mode="pattern")
    state.example = 7
    instance._on_click("tok:2")
    assert "Select a head" in instance._legend.object  # no head yet: a hint, still saliency
    heads.click("head:1,3")
    assert state.head == (1, 3) and 'class="cell selected" data-click="head:1,3"' in heads._grid.html
    assert instance.focus == 2
    assert "Attention of" in instance._legend.object and "L1·H3" in instance._legend.object
    forward = instance._shown.forward
    units = token_units(instance._shown.encoding)
    expected = attention_from(forward.attentions[1, 3], units[2], units)
    shown = [float(v) for v in re.findall(r'title="[^"]*: attention ([-+0-9.e]+)"', instance._tokens.html)]
    np.testing.assert_allclose(shown, expected, rtol=1e-3, atol=1e-6)
    instance._on_click("tok:2")  # again: back to saliency
    assert instance.focus is None and "Saliency" in instance._legend.object
    heads.click("head:1,3")
    assert state.head is None


def test_head_view_scales_and_modes(run_path):
    state, _, heads = views(run_path)
    stored = Run(str(run_path)).checkpoint("epoch-0")
    mode, values = heads._values
    assert mode == "importance"
    np.testing.assert_array_equal(values, stored.read("head_importance"))
    heads.mode = "pattern"
    np.testing.assert_allclose(heads._values[1], pool_attention(stored.read("attention")))
    assert heads._grid.html.count("data:image/png") == L * H
    heads.scale = "instance"
    assert "Select an example" in heads._message.object and heads._message.visible
    state.example = 2
    assert not heads._message.visible
    forward = asyncio.run(session_model(state).forward(2))
    np.testing.assert_allclose(heads._values[1], forward.attentions)  # short text: thumbnails are the matrices
    heads.mode = "importance"
    server = get_server(stored.weights_path)
    expected = server.head_importance(server.encode(Run(str(run_path)).text(2)), int(stored.run.column("label")[2]))
    np.testing.assert_allclose(heads._values[1], expected, rtol=1e-5)


def test_repredict_selection_reports_the_change(run_path):
    state, instance, heads = views(run_path)
    selection = np.zeros(state.n_total, bool)
    selection[[1, 3, 5, 7, 9, 11]] = True
    state.selection = selection
    heads.click("prune:0,2")
    assert not instance._repredict.disabled and "6 examples" in instance._repredict.label
    change = asyncio.run(instance.repredict_selection())
    run = Run(str(run_path))
    rows = np.flatnonzero(selection)
    labels = run.column("label")[rows]
    before = np.stack([reference_logits(run_path, run.text(int(i))) for i in rows])
    after = np.stack([reference_logits(run_path, run.text(int(i)), ((0, 2),)) for i in rows])
    assert change["n"] == 6 and change["flipped"] == int((before.argmax(1) != after.argmax(1)).sum())

    def mean_loss(logits):
        return torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels).long()).item()

    assert change["loss_change"] == pytest.approx(mean_loss(after) - mean_loss(before), abs=2e-2)  # bf16 batches
    assert "**6** examples" in instance._selection.object
    assert change["baseline"] == "fresh"  # nothing extracted in this run: both passes ran


def test_repredict_result_shows_under_its_button_until_the_pruning_changes(run_path):
    state, instance, heads = views(run_path)
    parts = instance._layout.objects
    assert not instance._selection.visible  # no callout before anything was re-predicted
    heads.click("prune:1,1")
    asyncio.run(instance.repredict_selection())
    assert instance._selection.visible and instance._selection.object.startswith("**Selection re-predicted** with 1")
    # the callout follows its button and progress bar, above the example (whose tokens can fill the panel)
    assert parts.index(instance._selection) == parts.index(instance._repredict) + 2 < parts.index(instance._header)
    heads.click("prune:1,1")  # restored: the result no longer applies
    assert not instance._selection.visible and instance._selection.object == ""


def test_repredict_takes_the_unpruned_side_from_the_extracted_logits(tmp_path):
    run_path = make_tiny_run(tmp_path, n=12, checkpoints=1)
    run = Run(str(run_path))
    reference = np.stack([reference_logits(run_path, run.text(i)) for i in range(12)])
    # stored at the run's truncation; doubled, so the losses show which baseline was used
    writer = RunWriter(str(run_path))
    writer.write_array("checkpoints/epoch-0/logits", 2 * reference)
    writer.root["checkpoints/epoch-0"].attrs.update({"extract": {"max_length": 64}})
    state, instance, heads = views(run_path)
    heads.click("prune:1,3")
    change = asyncio.run(instance.repredict_selection())
    after = np.stack([reference_logits(run_path, run.text(i), ((1, 3),)) for i in range(12)])
    flipped = reference.argmax(1) != after.argmax(1)
    assert change["n"] == 12 and change["flipped"] == int(flipped.sum())
    before = np.where(flipped[:, None], reference, 2 * reference)  # changed predictions are re-checked afresh
    labels = torch.tensor(run.column("label")).long()
    expected = torch.nn.functional.cross_entropy(torch.tensor(before), labels).item()
    assert change["loss_before"] == pytest.approx(expected, abs=2e-2)
    assert change["baseline"] == "extracted" and "extracted predictions" in instance._selection.object


def test_truncated_example_shows_a_notice(long_run):
    state, instance, _ = views(long_run)
    state.example = 1
    assert instance._notice.visible and "Truncated" in instance._notice.object
    assert "64 tokens" in instance._notice.object and len(instance._shown.encoding) == 64
    state.example = 0
    assert not instance._notice.visible


def test_missing_checkpoint_weights_give_a_message_not_a_traceback(tmp_path):
    run = make_tiny_run(tmp_path, n=8, checkpoints=1)
    shutil.rmtree(run / "weights" / "epoch-0")
    state, instance, heads = views(run, scale="instance")
    state.example = 1
    assert instance._message.visible and "weights of checkpoint 'epoch-0'" in instance._message.object
    assert "missing" in instance._message.object and instance._shown is None
    assert heads._message.visible and "missing" in heads._message.object
    writer = RunWriter(str(run))
    writer.add_checkpoint("synthetic", step=99, epoch=9, weights=None)
    state.checkpoint = "synthetic"
    assert "no model weights recorded" in instance._message.object
