"""Synthetic runs with realistic structure, written without a model, to test and benchmark at 1M-10M examples.

Examples fall in clusters per label (projections tighten across checkpoints, like fine-tuning does), a share of
labels is flipped (the data map puts those at low confidence), and dynamics mix easy, ambiguous and hard examples.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import schema
from .writer import RunWriter

LABELS = ["business", "entertainment", "politics", "sport", "tech"]
_WORDS = {
    "business": "market shares profit bank economy growth firm sales deal investors".split(),
    "entertainment": "film music star award show band album actor festival chart".split(),
    "politics": "minister election party government vote labour tory policy campaign bill".split(),
    "sport": "match team win cup player coach season goal league injury".split(),
    "tech": "software phone users internet digital computer mobile network games online".split(),
}
#: Above this many examples, hidden states are not synthesised (they would take tens of GB).
MAX_HIDDEN_ROWS = 1_000_000


def synth_run(path, n: int, *, seed: int = 0, checkpoints: int = 4, num_layers: int = 6, num_heads: int = 12,
              hidden_size: int = 16, flip_fraction: float = 0.05, attention_size: int = 32,
              overwrite: bool = False, name: str | None = None) -> RunWriter:
    """Write a complete synthetic run of ``n`` examples at ``path``."""
    rng = np.random.default_rng(seed)
    k = len(LABELS)
    true = rng.integers(0, k, n)
    split = np.where(rng.random(n) < 0.9, "train", "validation")
    flipped = (split == "train") & (rng.random(n) < flip_fraction)
    label = np.where(flipped, (true + rng.integers(1, k, n)) % k, true)
    # difficulty: 0 easy, 1 ambiguous, 2 hard; flipped examples behave as "hard" against their (wrong) gold label
    difficulty = rng.choice(3, n, p=[0.7, 0.2, 0.1])
    length = np.clip(rng.lognormal(5.5, 0.5, n), 20, 512).astype(np.int32)
    frame = pd.DataFrame({
        "text": _texts(rng, true, n),
        "label": label.astype(np.int16),
        "split": split,
        "flipped": flipped,
        "original_label": true.astype(np.int16),
        "n_words": length,
    })
    writer = RunWriter.create(
        path, examples=frame, label_names=LABELS, overwrite=overwrite, name=name or f"synthetic-{n}",
        model={"name_or_path": "synthetic", "model_type": "bert", "num_layers": num_layers, "num_heads": num_heads,
               "hidden_size": hidden_size, "num_labels": k, "max_length": 512},
        dataset={"name": "synthetic", "source": f"t3vis synth --n {n} --seed {seed}", "n": n},
        extra_attrs={"synthetic": True})

    # training dynamics: gold-label probability rises with epochs, at a rate set by difficulty
    epochs = checkpoints - 1
    base = np.select([difficulty == 0, difficulty == 1], [0.9, 0.55], 0.25)
    base = np.where(flipped, 0.08, base)
    extra = np.random.default_rng([seed, 1])  # margins and in-training values; leaves the other draws as they were
    for e in range(1, epochs + 1):
        t = e / epochs
        p = np.clip(base * (0.5 + 0.5 * t) + rng.normal(0, 0.05 + 0.1 * (difficulty == 1), n), 1e-3, 1 - 1e-3)
        pred = np.where(rng.random(n) < p, label, (label + rng.integers(1, k, n)) % k)
        train_p = np.clip(p * 0.9 + extra.normal(0, 0.1, n), 1e-3, 1 - 1e-3)
        train_p[split != "train"] = np.nan  # in-training values exist only for rows trained on
        writer.write_epoch(e, gold_prob=p.astype(np.float32), pred=pred, loss=-np.log(p).astype(np.float32),
                           margin=_margin(p, extra), train_gold_prob=train_p, train_margin=_margin(train_p, extra))

    centers = rng.normal(0, 6, (k, 2))
    for c in range(checkpoints):
        ckpt = f"epoch-{c}"
        writer.add_checkpoint(ckpt, step=c * 100, epoch=c, weights=None, synthetic=True)
        spread = 4.0 - 3.0 * c / max(1, checkpoints - 1)  # clusters tighten with training
        # examples sit near their true class, flipped ones too (that's what makes them findable)
        xy = centers[true] + rng.normal(0, spread, (n, 2))
        pca = xy @ np.array([[0.8, -0.6], [0.6, 0.8]]) * 1.5 + rng.normal(0, 1.0, (n, 2))
        unit = schema.checkpoint_path(ckpt)
        logits = rng.normal(0, 1, (n, k)).astype(np.float32)
        logits[np.arange(n), label] += 4 * base * c / max(1, checkpoints - 1)
        prob = np.exp(logits - logits.max(1, keepdims=True))
        prob /= prob.sum(1, keepdims=True)
        gold = prob[np.arange(n), label]
        writer.write_array(f"{unit}/logits", logits, chunk_rows=schema.COLUMN_CHUNK_ROWS)
        writer.write_array(f"{unit}/gold_prob", gold.astype(np.float32), chunk_rows=schema.COLUMN_CHUNK_ROWS)
        writer.write_array(f"{unit}/loss", (-np.log(gold)).astype(np.float32), chunk_rows=schema.COLUMN_CHUNK_ROWS)
        writer.write_array(f"{unit}/pred", logits.argmax(1).astype(np.int16), chunk_rows=schema.COLUMN_CHUNK_ROWS)
        writer.write_array(f"{unit}/length", length, chunk_rows=schema.COLUMN_CHUNK_ROWS)
        for layer in (num_layers // 2, num_layers):
            scale = layer / num_layers
            writer.write_array(f"{unit}/projection/umap/{schema.layer_key(layer)}",
                               (xy * scale + rng.normal(0, 1 - scale + 0.2, (n, 2))).astype(np.float32),
                               attrs={"method": "umap", "layer": layer, "synthetic": True},
                               chunk_rows=schema.COLUMN_CHUNK_ROWS)
            writer.write_array(f"{unit}/projection/pca/{schema.layer_key(layer)}", pca.astype(np.float32),
                               attrs={"method": "pca", "layer": layer, "synthetic": True},
                               chunk_rows=schema.COLUMN_CHUNK_ROWS)
        raw = np.abs(rng.gamma(1.0 + c * 0.3, 1.0, (num_layers, num_heads))).astype(np.float32)
        writer.write_array(f"{unit}/head_importance_raw", raw)
        writer.write_array(f"{unit}/head_importance", raw / np.linalg.norm(raw, axis=1, keepdims=True))
        writer.write_array(f"{unit}/attention", _attention(rng, num_layers, num_heads, attention_size))
        if n <= MAX_HIDDEN_ROWS:
            for pooling in schema.POOLINGS:
                h = np.concatenate([xy, rng.normal(0, 1, (n, hidden_size - 2))], axis=1)
                hidden = np.stack([h * (1 + i * 0.1) for i in range(num_layers + 1)]).astype(np.float16)
                writer.write_array(f"{unit}/hidden_{pooling}", hidden, chunk_rows=schema.CHUNK_ROWS)
            writer.mark_checkpoint_complete(ckpt)
    writer.update_attrs(complete=True)
    return writer


def _margin(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """p(gold) - max p(other), with the largest other class taking 40-100 % of the remaining mass."""
    return (p - (1 - p) * rng.uniform(0.4, 1.0, len(p))).astype(np.float32)


def _texts(rng: np.random.Generator, classes: np.ndarray, n: int) -> np.ndarray:
    """Short topic-flavoured word strings, vectorised (a Python loop over 10M rows takes minutes)."""
    vocab = np.array([w for lab in LABELS for w in _WORDS[lab]], dtype=np.dtypes.StringDType())
    per = len(_WORDS[LABELS[0]])
    out = np.full(n, "", dtype=np.dtypes.StringDType())
    for i in range(8):
        on_topic = rng.random(n) < 0.7
        cls = np.where(on_topic, classes, rng.integers(0, len(LABELS), n))
        word = vocab[cls * per + rng.integers(0, per, n)]
        out = np.strings.add(out, word) if i == 0 else np.strings.add(np.strings.add(out, " "), word)
    return out


def _attention(rng: np.random.Generator, layers: int, heads: int, m: int) -> np.ndarray:
    """Mean-attention patterns of the kinds heads show: diagonal, previous token, [CLS], [SEP], broad."""
    eye = np.eye(m)
    kinds = [eye, np.eye(m, k=-1) + np.eye(m) * 0.1, np.tile(np.eye(m)[0], (m, 1)),
             np.tile(np.eye(m)[-1], (m, 1)), np.ones((m, m))]
    out = np.empty((layers, heads, m, m), np.float32)
    for l in range(layers):
        for h in range(heads):
            a = kinds[rng.integers(len(kinds))] + rng.random((m, m)) * 0.2
            out[l, h] = a / a.sum(1, keepdims=True)
    return out
