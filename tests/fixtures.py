"""Shared test fixtures: a tiny run store whose checkpoints are real (tiny, random) BERT classifiers on disk.

``make_tiny_run(tmp_path)`` writes in about a second a run that the pipelines, the app and the instance view can
use like a real one: examples (topic-flavoured texts of varied length, labels, train/validation split), one epoch
of dynamics, and checkpoints registered with weights (safetensors + config + a locally built WordPiece tokenizer)
under ``weights/<name>/``. Checkpoint ``k`` is checkpoint 0 plus ``k`` small random steps, so consecutive
checkpoints differ a little, as in fine-tuning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import (AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification,
                          BertTokenizerFast)

from t3vis.models import model_info, save_model
from t3vis.store import RunWriter

TOPICS = {
    "business": "market shares profit bank economy growth firm sales deal investors".split(),
    "sport": "match team win cup player coach season goal league injury".split(),
    "tech": "software phone users internet digital computer mobile network games online".split(),
    "politics": "minister election party government vote labour policy campaign bill tory".split(),
    "film": "film music star award show band album actor festival chart".split(),
}
COMMON = "the a of and to in on for with today said new year".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                   max_position_embeddings=64, initializer_range=0.2)


def vocabulary() -> list[str]:
    return SPECIALS + COMMON + [w for words in TOPICS.values() for w in words]


def tiny_tokenizer(directory: "str | Path") -> BertTokenizerFast:
    """A WordPiece tokenizer over ``vocabulary()`` (no hub needed); lower-cases, max length 64."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(vocabulary()) + "\n")
    vocab = {token: i for i, token in enumerate(vocabulary())}
    return BertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=64)


def tiny_model(num_labels: int, *, seed: int = 0, attn_implementation: str = "eager",
               **config) -> BertForSequenceClassification:
    """A random 2-layer, 4-head BERT classifier (hidden 32) over ``vocabulary()``."""
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocabulary()), num_labels=num_labels, **{**TINY_CONFIG, **config})
    return AutoModelForSequenceClassification.from_config(cfg, attn_implementation=attn_implementation).eval()


def tiny_texts(n: int, labels: np.ndarray, label_names: list[str], rng: np.random.Generator) -> list[str]:
    """Texts of 2 to 40 words, mostly from the label's topic (lengths vary, so batching by length matters)."""
    topics = [TOPICS[name] if name in TOPICS else COMMON for name in label_names]
    texts = []
    for i in range(n):
        words = []
        for _ in range(int(rng.integers(2, 41))):
            pool = topics[labels[i]] if rng.random() < 0.6 else COMMON
            words.append(pool[int(rng.integers(len(pool)))])
        texts.append(" ".join(words))
    return texts


def make_tiny_run(tmp_path: "str | Path", n: int = 64, checkpoints: int = 2, *, num_labels: int = 3,
                  seed: int = 0, name: str = "tiny-run", step_size: float = 0.05,
                  validation_fraction: float = 0.25) -> Path:
    """Write a run with ``n`` examples and ``checkpoints`` tiny BERT checkpoints; returns the run directory."""
    run = Path(tmp_path) / name
    rng = np.random.default_rng(seed)
    label_names = list(TOPICS)[:num_labels]
    labels = rng.integers(0, num_labels, n)
    split = np.where(rng.random(n) < validation_fraction, "validation", "train")
    frame = pd.DataFrame({"text": tiny_texts(n, labels, label_names, rng), "label": labels.astype(np.int16),
                          "split": split})
    model = tiny_model(num_labels, seed=seed)
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    tokenizer = tiny_tokenizer(run.parent / f".{name}-tokenizer")
    writer = RunWriter.create(run, examples=frame, label_names=label_names, model=model_info(model, tokenizer),
                              dataset={"name": "tiny", "source": f"tests.fixtures.make_tiny_run(seed={seed})", "n": n},
                              name=name, extra_attrs={"training": {"max_length": 64}})
    writer.write_epoch(1, gold_prob=rng.random(n).astype(np.float32), pred=rng.integers(0, num_labels, n),
                       loss=rng.random(n).astype(np.float32))
    generator = torch.Generator().manual_seed(seed + 1)
    for k in range(checkpoints):
        if k:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=generator) * step_size * p.detach().std().clamp(min=1e-3))
        ckpt = f"epoch-{k}"
        save_model(model, tokenizer, run / writer.weights_dir(ckpt))
        writer.add_checkpoint(ckpt, step=10 * k, epoch=k, weights=writer.weights_dir(ckpt))
    return run


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Torch on one thread for a test module that imports this (training tests are faster and deterministic)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ NER
NER_TYPES = ["business", "sport"]
NER_TAGS = ["O"] + [f"{p}-{t}" for t in NER_TYPES for p in ("B", "I")]


def tiny_tagged(n: int = 40, seed: int = 0):
    """A ``TaggedDataset`` of sentences of common words with one- or two-word topic mentions (B-/I- by topic);
    every fourth sentence is validation."""
    from t3vis.data.tagging import TaggedDataset

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        words, tags = [], []
        for _ in range(int(rng.integers(3, 12))):
            if rng.random() < 0.3:
                kind = int(rng.integers(len(NER_TYPES)))
                pool = TOPICS[NER_TYPES[kind]]
                for j in range(int(rng.integers(1, 3))):
                    words.append(pool[int(rng.integers(len(pool)))])
                    tags.append(1 + 2 * kind + (j > 0))
            else:
                words.append(COMMON[int(rng.integers(len(COMMON)))])
                tags.append(0)
        rows.append({"tokens": words, "tags": tags, "split": "validation" if i % 4 == 0 else "train"})
    return TaggedDataset(pd.DataFrame(rows), list(NER_TAGS), "tiny-ner", f"tests.fixtures.tiny_tagged(seed={seed})")


def tiny_tagger(seed: int = 0, **config):
    """A random 2-layer, 4-head BERT token classifier (hidden 32) over ``vocabulary()`` with ``NER_TAGS``."""
    from transformers import AutoModelForTokenClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocabulary()), num_labels=len(NER_TAGS), id2label=dict(enumerate(NER_TAGS)),
                     label2id={t: i for i, t in enumerate(NER_TAGS)}, **{**TINY_CONFIG, **config})
    return AutoModelForTokenClassification.from_config(cfg, attn_implementation="eager").eval()


def record_tiny_ner_run(path: "str | Path", data=None, *, max_length: int = 32, seed: int = 0):
    """Record a tiny tagger on ``data`` (default ``tiny_tagged()``): checkpoint epoch-0, one epoch of plain SGD
    steps (in-training dynamics recorded), epoch-1. Returns ``(recorder, model, tokenizer, metrics)``."""
    from t3vis.models.inference import pad_ids
    from t3vis.training.words import WordDynamicsRecorder

    path = Path(path)
    tokenizer = tiny_tokenizer(path.parent / f".{path.name}-tokenizer")
    model = tiny_tagger(seed, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    data = tiny_tagged() if data is None else data
    recorder = WordDynamicsRecorder(path, data, max_length=max_length, bf16=False, batch_size=7)
    recorder.start(model, tokenizer)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for rows in np.array_split(np.flatnonzero(recorder.input_split == "train"), 4):
        ids, mask = pad_ids([recorder.token_ids[r] for r in rows], tokenizer.pad_token_id)
        out = model(input_ids=ids, attention_mask=mask, labels=recorder.batch_labels(rows))
        recorder.record_batch(rows, out.logits)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    metrics = recorder.on_epoch_end(model, epoch=1, step=4)
    recorder.finish()
    return recorder, model.eval(), tokenizer, metrics


def make_tiny_ner_run(tmp_path: "str | Path", name: str = "tiny-ner", **kwargs) -> Path:
    """A complete tiny token-classification run: ``record_tiny_ner_run``, then the real pipelines (extract,
    importance, PCA and UMAP projections of layers 1-2) on a one-worker LocalCluster. About a minute."""
    from pipelines.run import run_pipeline

    run = Path(tmp_path) / name
    record_tiny_ner_run(run, **kwargs)
    run_pipeline(str(run), steps=("extract", "importance", "project"), n_workers=1, dashboard=False,
                 progress=False, echo=lambda message: None, extract={"dtype": "float32"},
                 importance={"dtype": "float32", "sample": 64}, project={"methods": ("umap", "pca")})
    RunWriter(str(run)).update_attrs(complete=True)
    return run

