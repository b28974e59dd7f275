"""Re-predicting a selection with a session's pruned heads: what changes, per example or, in a token run, per word.

The computing half of the instance view's "Re-predict" button: which rows (a sample beyond ``MAX_REPREDICT``), the
unpruned side from the checkpoint's extracted logits where it has them (one forward pass instead of two), and the
change as ``tokens.selection_summary`` shows it.
"""

from __future__ import annotations

import numpy as np

from ..serving import acall, prediction_change
from .tokens import tag_change

#: Most examples the "re-predict selection" button runs (a larger selection is sampled, and says so).
MAX_REPREDICT = 5_000


def selection_sample(rows: np.ndarray, limit: int = MAX_REPREDICT) -> tuple[np.ndarray, int | None]:
    """``rows``, or a fixed random sample of ``limit`` of them (sorted) and how many there were."""
    if len(rows) <= limit:
        return rows, None
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(rows, limit, replace=False)), len(rows)


async def repredict(state, model, server, rows: np.ndarray, pruned, progress) -> dict:
    """The change the ``pruned`` heads make to ``rows`` of the session (``state``, its ``session_model``), predicted
    by ``server``; ``progress(done, total)`` as batches finish."""
    changed = _words if model.per_word else _examples
    return await changed(state, model, server, rows, pruned, progress)


async def _examples(state, model, server, rows: np.ndarray, pruned, progress) -> dict:
    """Examples: the unpruned side from the checkpoint's extracted logits where it has them."""
    checkpoint = model.checkpoint()
    texts, stored = await acall(lambda: ([str(t) for t in state.data.text(rows)], checkpoint.logits(rows)))
    labels = np.asarray(state.data.values("label"))[rows] if "label" in state.data.attributes else None
    before, after = await server.apredict_pruning(texts, labels, pruned, stored_logits=stored,
                                                  max_length=state.run.max_length, progress=progress)
    change = prediction_change(before, after)
    if labels is not None and len(labels):
        change["accuracy_before"] = float((before.pred == labels).mean())
        change["accuracy_after"] = float((after.pred == labels).mean())
    change["baseline"] = "fresh" if stored is None else "extracted"
    return change


async def _words(state, model, server, rows: np.ndarray, pruned, progress) -> dict:
    """Words: their sentences; the unpruned side from the checkpoint's extracted per-word logits where it has them,
    else predicted afresh like the pruned side (batched, bf16 where fast)."""
    checkpoint = model.checkpoint()
    sentences, words, gold = await acall(model.sentences_of, rows)
    stored = await acall(checkpoint.logits, np.concatenate(sentences)) if sentences else None
    n = len(sentences)
    steps = n if stored is not None else 2 * n

    def report(offset):
        return lambda done, _: progress(offset + done, steps)

    if stored is not None:
        before = np.split(stored, np.cumsum([len(s) for s in sentences])[:-1])
    else:
        before = await server.apredict_words(words, (), max_length=state.run.max_length, progress=report(0))
    after = await server.apredict_words(words, pruned, max_length=state.run.max_length, progress=report(steps - n))
    change = await acall(tag_change, gold, before, after, [np.isin(s, rows) for s in sentences],
                         list(state.run.label_names))
    change["baseline"] = "fresh" if stored is None else "extracted"
    return change
