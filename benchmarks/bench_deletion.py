"""Faithfulness of each saliency method on a trained run: the predicted-class probability drop when the top 10% /
20% tokens by the method are replaced with [PAD], against random tokens (mean over validation examples).

    python benchmarks/bench_deletion.py RUN [--checkpoint epoch-3] [--n 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from t3vis.analysis.saliency import METHODS, deletion_curve, saliency
from t3vis.models import load_checkpoint
from t3vis.store import Run

FRACTIONS = (0.0, 0.1, 0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--checkpoint", default=None, help="default: the last one")
    ap.add_argument("--n", type=int, default=64, help="validation examples")
    args = ap.parse_args()
    run = Run(args.run)
    name = args.checkpoint or run.checkpoints[-1]
    model, tokenizer = load_checkpoint(run.checkpoint(name).weights_path)
    rows = np.flatnonzero(run.column("split") == 1)[: args.n]
    enc = tokenizer([str(t) for t in run.text(rows)], truncation=True, max_length=run.max_length or 128,
                    padding=True, return_tensors="pt", return_special_tokens_mask=True)
    ids, mask, special = enc["input_ids"], enc["attention_mask"], enc["special_tokens_mask"].bool()
    with torch.no_grad():
        predicted = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)

    def drops(relevance) -> np.ndarray:
        curve = deletion_curve(model, ids, mask, relevance, fractions=FRACTIONS, protected=special)
        return (curve[:, :1] - curve[:, 1:]).mean(0).numpy()

    rng = np.random.default_rng(0)
    random = np.mean([drops(torch.as_tensor(rng.random(ids.shape), dtype=torch.float32)) for _ in range(5)], axis=0)
    print(f"run {run.name}, checkpoint {name}, {len(rows)} validation examples, max_length {ids.shape[1]}")
    print(f"{'method':22s} {'drop@10%':>9s} {'drop@20%':>9s} {'seconds':>8s}")
    print(f"{'random tokens':22s} {random[0]:9.3f} {random[1]:9.3f}")
    for method in METHODS:
        t = time.perf_counter()
        relevance = saliency(model, ids, mask, predicted, method=method,
                             **({"steps": 32} if method == "integrated_gradients" else {}))
        seconds = time.perf_counter() - t
        d = drops(relevance)
        print(f"{method:22s} {d[0]:9.3f} {d[1]:9.3f} {seconds:8.1f}")


if __name__ == "__main__":
    main()
