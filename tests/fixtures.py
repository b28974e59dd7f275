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
