"""Model serving: one shared model per checkpoint, per-call pruning that never leaks between threads, batching.

References are independent of the server: plain forward passes under ``head_gates`` (itself checked against
zeroing value weights in test_models.py), a finite-difference derivative for head importance, and
``F.cross_entropy`` for losses.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t3vis.analysis.saliency import saliency
from t3vis.errors import ModelError, T3VisError
from t3vis import serving
from t3vis.models import gates_from_pruned, head_gates, load_checkpoint
from t3vis.serving import ModelServer, get_server, prediction_change, server_for_checkpoint, workers
from t3vis.store import Run, RunWriter
from tests.fixtures import make_tiny_run, tiny_texts

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("serving"), n=24, checkpoints=1)


@pytest.fixture(scope="module")
def weights(run_path):
    return Run(str(run_path)).checkpoint("epoch-0").weights_path


@pytest.fixture(scope="module")
def server(weights):
    return get_server(weights)


@pytest.fixture(scope="module")
def reference(weights):
    """A second, independent copy of the model: what the server's answers are checked against."""
    model, tokenizer = load_checkpoint(weights)
    return model, tokenizer


def direct_logits(reference, text, pruned=(), max_length=64):
    model, tokenizer = reference
    enc = tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
    gates = gates_from_pruned(pruned, 2, 4) if pruned else None
    with torch.no_grad(), head_gates(model, gates):
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[0].numpy()


TEXT = "the market shares and profit for the bank and the firm in sales growth today"


def test_pruning_a_head_matches_zeroing_its_gate_directly(server, reference):
    encoding = server.encode(TEXT)
    for pruned in [(), ((1, 2),), ((0, 0), (1, 3))]:
        got = serving.submit(server.forward, encoding, pruned).result()
        np.testing.assert_allclose(got.logits, direct_logits(reference, TEXT, pruned), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.probs, torch.softmax(torch.tensor(got.logits), -1).numpy(), rtol=1e-6)
    plain = server.forward(encoding).logits
    assert np.abs(plain - server.forward(encoding, ((1, 2),)).logits).max() > 1e-3  # the head matters
    assert server.forward(encoding).attentions.shape == (2, 4, len(encoding), len(encoding))


def test_concurrent_sessions_each_see_their_own_pruning(server, reference):
    """Two 'sessions' hammer the one shared model at once with different pruned heads; no result leaks."""
    encoding = server.encode(TEXT)
    sessions = {"a": ((0, 1),), "b": ((1, 0), (1, 3))}
    expected = {name: direct_logits(reference, TEXT, pruned) for name, pruned in sessions.items()}
    barrier = threading.Barrier(2)

    def session(name):
        barrier.wait()
        futures = [serving.submit(server.forward, encoding, sessions[name], attentions=False) for _ in range(30)]
        return [f.result().logits for f in futures]

    with ThreadPoolExecutor(2) as threads:
        results = dict(zip(sessions, threads.map(session, sessions)))
    for name, logits in results.items():
        for got in logits:
            np.testing.assert_allclose(got, expected[name], rtol=1e-5, atol=1e-6)
    assert np.abs(expected["a"] - expected["b"]).max() > 1e-3


def test_server_is_loaded_once_and_shared(weights, server):
    with ThreadPoolExecutor(4) as threads:
        servers = list(threads.map(lambda _: get_server(weights), range(8)))
    assert all(s is server for s in servers)
    assert serving.served().count(str(server.name)) == 1
    assert server.model.training is False
    assert not any(p.requires_grad for p in server.model.parameters())
    # the batch twin (SDPA attention) runs on the very same weight tensors: no second copy of the weights
    pairs = list(zip(server.model.state_dict().values(), server.batch_model.state_dict().values()))
    assert pairs and all(a.data_ptr() == b.data_ptr() for a, b in pairs)
    assert (server.model.config._attn_implementation, server.batch_model.config._attn_implementation) == ("eager",
                                                                                                         "sdpa")


def test_missing_weights_give_a_clear_message(tmp_path, run_path):
    with pytest.raises(ModelError, match="no model weights recorded"):
        get_server(None, what="checkpoint 'epoch-0'")
    with pytest.raises(ModelError, match=r"weights of checkpoint 'x' are missing: expected a directory .*gone"):
        get_server(tmp_path / "gone", what="checkpoint 'x'")
    checkpoint = Run(str(run_path)).checkpoint("epoch-0")
    assert server_for_checkpoint(checkpoint).name == get_server(checkpoint.weights_path).name


def _threads_seen_by_a_new_thread() -> int:
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return seen[0]


def test_workers_run_torch_single_threaded():
    before = torch.get_num_threads()
    new_thread_default = _threads_seen_by_a_new_thread()  # other code in this process may have changed it
    workers.pool().shutdown()
    workers._POOL = None  # a fresh pool, so its initializer runs in this test
    assert serving.submit(torch.get_num_threads).result() == 1
    assert torch.get_num_threads() == before
    # the workers' setting does not leak to threads started afterwards
    assert _threads_seen_by_a_new_thread() == new_thread_default


def test_encode_truncates_long_text_and_keeps_offsets(server):
    short = server.encode(TEXT)
    assert not short.truncated and short.tokens[0] == "[CLS]" and short.tokens[-1] == "[SEP]"
    for token, offset, special in zip(short.tokens, short.offsets, short.special):
        if not special:
            assert TEXT[offset[0]:offset[1]] == token  # lower-case vocabulary, lower-case text
    long_text = " ".join(["market"] * 100)
    long = server.encode(long_text)
    assert long.truncated and len(long) == server.max_length == 64
    assert server.encode(long_text, max_length=16).truncated and len(server.encode(long_text, max_length=16)) == 16
    exact = " ".join(["market"] * 62)  # 62 words + [CLS] + [SEP] = 64 tokens: fits
    assert not server.encode(exact).truncated


def test_encode_clips_a_huge_text_before_tokenising_with_the_same_result(server):
    """A text far past what max_length tokens can use is cut in characters first: same tokens, still truncated."""
    huge = TEXT + " market" * 1_000_000  # 7 MB
    clipped, whole = server.encode(huge), server.encode(TEXT + " market" * 100)  # under the cap: not cut
    assert clipped.tokens == whole.tokens and clipped.offsets == whole.offsets and clipped.truncated
    assert bool((clipped.input_ids == whole.input_ids).all())


def test_predict_matches_single_forward_passes_and_caches(weights, reference):
    server = ModelServer(*load_checkpoint(weights), name="fp32-batches", batch_autocast=False)
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 20)
    texts = tiny_texts(20, labels, ["business", "sport", "tech"], rng)
    calls = []
    got = server.predict(texts, labels, ((1, 1),), batch_size=6, progress=lambda d, n: calls.append((d, n)))
    expected = np.stack([direct_logits(reference, t, ((1, 1),)) for t in texts])
    np.testing.assert_allclose(got.logits, expected, rtol=1e-4, atol=1e-5)  # padding and batching change nothing
    loss = F.cross_entropy(torch.tensor(expected), torch.tensor(labels), reduction="none").numpy()
    np.testing.assert_allclose(got.loss, loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got.pred, expected.argmax(1))
    assert calls[0] == (0, 20) and calls[-1] == (20, 20) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    calls.clear()
    again = server.predict(texts, labels, [(1, 1)], progress=lambda d, n: calls.append((d, n)))
    assert calls == [(20, 20)]  # all cached: no batch ran
    np.testing.assert_array_equal(again.logits, got.logits)
    unpruned = asyncio.run(server.apredict(texts, labels, ()))
    np.testing.assert_allclose(unpruned.logits, np.stack([direct_logits(reference, t) for t in texts]),
                               rtol=1e-4, atol=1e-5)
    change = prediction_change(unpruned, got)
    assert change["n"] == 20 and change["flipped"] == int((unpruned.pred != got.pred).sum())
    assert change["loss_change"] == pytest.approx(float(loss.mean() - unpruned.loss.mean()), abs=1e-5)


def test_needs_recheck_flags_changed_predictions_and_near_ties():
    stored = np.array([[3.0, 1.0, 0.0],    # clear class 0, pruned agrees: stored value is trusted
                       [3.0, 1.0, 0.0],    # pruned says 1: re-check
                       [3.0, 2.95, 0.0],   # margin 0.05 <= 2 * 3 % of 3: a near tie, re-check
                       [-3.0, -1.0, 0.0]])  # clear class 2 by a margin of 1 (> 0.18): trusted
    got = serving.needs_recheck(stored, np.array([0, 1, 0, 2]))
    np.testing.assert_array_equal(got, [False, True, True, False])


def test_stored_logits_stand_in_for_the_unpruned_pass(weights, reference):
    server = ModelServer(*load_checkpoint(weights), name="stored-baseline", batch_autocast=False)
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 20)
    texts = tiny_texts(20, labels, ["business", "sport", "tech"], rng)
    exact_before = np.stack([direct_logits(reference, t) for t in texts])
    # two heads whose pruning changes some prediction here (no single head does in this confident tiny model)
    pruned, exact_after = next((pair, after) for pair in itertools.combinations([(0, h) for h in range(4)]
                                                                                + [(1, h) for h in range(4)], 2)
                               for after in [np.stack([direct_logits(reference, t, pair) for t in texts])]
                               if (after.argmax(1) != exact_before.argmax(1)).any())
    after_pred = exact_after.argmax(1)
    flip = int(np.flatnonzero(exact_before.argmax(1) != after_pred)[0])
    # stored logits: the true ones scaled (same predictions, other losses, so their use shows), except that
    # "rounding" turned the flipped example into a near tie on the pruned model's side (so the stored prediction
    # wrongly agrees with it), and row `other` has a wrong stored prediction that disagrees with the pruned one
    stored = 2 * exact_before
    top = stored[flip].max()
    stored[flip, after_pred[flip]] = top + 1e-3
    other = (flip + 1) % 20
    stored[other, (after_pred[other] + 1) % 3] = stored[other].max() + 5
    calls = []
    before, after = asyncio.run(server.apredict_pruning(texts, labels, pruned, stored_logits=stored,
                                                        progress=lambda d, n: calls.append((d, n))))
    np.testing.assert_allclose(after.logits, exact_after, rtol=1e-4, atol=1e-5)
    rechecked = serving.needs_recheck(stored, after.pred)
    assert rechecked[[flip, other]].all() and not rechecked.all()
    np.testing.assert_array_equal(before.logits[~rechecked], stored[~rechecked])
    np.testing.assert_allclose(before.logits[rechecked], exact_before[rechecked], rtol=1e-4, atol=1e-5)
    assert prediction_change(before, after)["flipped"] == int((exact_before.argmax(1) != after_pred).sum())
    assert calls[-1] == (20, 20)  # one pass over the selection, not two

    # without stored logits both passes run, and progress counts both
    calls.clear()
    before, _ = asyncio.run(server.apredict_pruning(texts, labels, pruned, progress=lambda d, n: calls.append((d, n))))
    np.testing.assert_allclose(before.logits, exact_before, rtol=1e-4, atol=1e-5)
    assert calls[-1] == (40, 40)
    with pytest.raises(T3VisError, match="stored logits"):
        asyncio.run(server.apredict_pruning(texts, labels, pruned, stored_logits=stored[:3]))


def test_extracted_logits_only_at_the_same_truncation(tmp_path):
    run_path = make_tiny_run(tmp_path, n=10, checkpoints=1)
    checkpoint = Run(str(run_path)).checkpoint("epoch-0")
    assert checkpoint.logits([1, 2], 64) is None  # nothing extracted yet
    logits = np.arange(30, dtype=np.float32).reshape(10, 3)
    writer = RunWriter(str(run_path))
    writer.write_array("checkpoints/epoch-0/logits", logits)
    writer.root["checkpoints/epoch-0"].attrs.update({"extract": {"max_length": 64}})
    checkpoint = Run(str(run_path)).checkpoint("epoch-0")
    np.testing.assert_array_equal(checkpoint.logits([7, 2], 64), logits[[7, 2]])
    assert checkpoint.logits([7, 2], 32) is None


def test_bf16_batches_stay_close_to_fp32(weights, server):
    fast = ModelServer(*load_checkpoint(weights), name="bf16-batches", batch_autocast=True)
    texts = [TEXT, "the team win the cup match", "phone users and the internet"]
    exact = ModelServer(*load_checkpoint(weights), batch_autocast=False).predict(texts).logits
    np.testing.assert_allclose(fast.predict(texts).logits, exact, atol=0.1)


def test_saliency_and_importance_use_the_sessions_gates(server, reference):
    model, tokenizer = reference
    encoding = server.encode(TEXT)
    pruned = ((0, 2),)
    got = server.saliency(encoding, 1, "grad_x_input", pruned)
    with head_gates(model, gates_from_pruned(pruned, 2, 4)):
        expected = saliency(model, encoding.input_ids, encoding.attention_mask, 1)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert np.abs(got - server.saliency(encoding, 1)).max() > 1e-4

    # head importance |d loss / d gate| against a central finite difference of the loss in one gate
    label, raw = 2, server.head_importance(encoding, 2, normalize=False)

    def loss_at(gates):
        with torch.no_grad(), head_gates(model, gates):
            logits = model(input_ids=encoding.input_ids, attention_mask=encoding.attention_mask).logits
        return F.cross_entropy(logits.double(), torch.tensor([label])).item()

    eps = 1e-3
    for layer, head in [(0, 1), (1, 3)]:
        up, down = torch.ones(2, 4), torch.ones(2, 4)
        up[layer, head] += eps
        down[layer, head] -= eps
        assert raw[layer, head] == pytest.approx(abs(loss_at(up) - loss_at(down)) / (2 * eps), rel=1e-2, abs=1e-5)
    normalized = server.head_importance(encoding, 2)
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1.0, rtol=1e-5)


def test_lrp_calls_do_not_disturb_concurrent_forwards(server, reference):
    """LRP switches the shared model's attention while it runs; other calls wait for it, and stay exact."""
    encoding = server.encode(TEXT)
    expected = direct_logits(reference, TEXT, ((1, 1),))
    jobs = []
    for _ in range(6):
        jobs.append(serving.submit(server.saliency, encoding, 0, "lrp"))
        jobs.append(serving.submit(server.forward, encoding, ((1, 1),), attentions=True))
    for job in jobs:
        result = job.result()
        if not isinstance(result, np.ndarray):
            np.testing.assert_allclose(result.logits, expected, rtol=1e-5, atol=1e-6)
    assert server.model.config._attn_implementation == "eager"


def test_run_max_length_prefers_the_training_length(run_path):
    assert Run(str(run_path)).max_length == 64
