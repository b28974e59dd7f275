"""End to end on real data: fine-tune the bundled MiniLM on BBC News (one epoch, the demo's own code), then check
that the model learned the task and that every saliency method is faithful on it (a deletion test).

Slow (about two minutes on two cores): this is the one test that trains a real model.
"""

import numpy as np
import pytest
import torch

from t3vis.analysis.saliency import METHODS, deletion_curve, saliency
from t3vis.models import load_checkpoint
from t3vis.store import Run, validate
from t3vis.training.demo import train_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    path = train_demo(tmp_path_factory.mktemp("runs") / "demo", epochs=1)
    return Run(path)


def test_demo_run_learns_bbc_news(demo_run):
    assert validate(demo_run.loc.url) == []
    assert demo_run.checkpoints == ["epoch-0", "epoch-1"]
    d = demo_run.dynamics()
    labels = demo_run.column("label")
    split = demo_run.column("split")  # 0 train, 1 validation
    val = split == 1
    accuracy = (d.pred[-1][val] == labels[val]).mean()
    assert accuracy >= 0.85, accuracy
    flipped = demo_run.column("flipped")
    # flipped labels are the least confident: a flipped example sits far below the clean median
    assert np.median(d.gold_prob[-1][flipped]) < np.median(d.gold_prob[-1][~flipped & ~val]) - 0.3


def test_deletion_top_tokens_hurt_more_than_random(demo_run):
    """Removing each method's top-10% tokens drops the predicted-class probability more than removing random ones."""
    torch.manual_seed(0)
    model, tokenizer = load_checkpoint(demo_run.checkpoint("epoch-1").weights_path)
    rows = np.flatnonzero(demo_run.column("split") == 1)[:24]
    texts = [str(t) for t in demo_run.text(rows)]
    enc = tokenizer(texts, truncation=True, max_length=96, padding=True, return_tensors="pt",
                    return_special_tokens_mask=True)
    ids, mask, special = enc["input_ids"], enc["attention_mask"], enc["special_tokens_mask"].bool()
    with torch.no_grad():
        predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)

    def drop(relevance):
        curve = deletion_curve(model, ids, mask, relevance, fractions=(0.0, 0.1), protected=special)
        return float((curve[:, 0] - curve[:, 1]).mean())

    rng = np.random.default_rng(0)
    random_drop = np.mean([drop(torch.as_tensor(rng.random(ids.shape), dtype=torch.float32)) for _ in range(3)])
    drops = {}
    for method in METHODS:
        options = {"steps": 16} if method == "integrated_gradients" else {}
        relevance = saliency(model, ids, mask, predicted, method=method, **options)
        drops[method] = drop(relevance)
    for method, value in drops.items():
        assert value > random_drop + 0.02, (drops, random_drop)
