"""Selection summary: the top words of a selection, 256 examples attributed with grad x input on the model server.
all-MiniLM-L6-v2 (6 x 12 heads) with a fresh 5-class head on BBC News articles truncated to 128 tokens.

    python benchmarks/bench_summary.py [--n 1000] [--length 128]

Target (issue 15): selection summary for 256 examples <= 15 s on 2 cores, with progress. Timed through the view
(``SelectionSummary.explain``, as the button runs it: seeded sample, texts, stored predictions, batches in the pool
with progress, word aggregation) with the checkpoint already loaded; then the same with float32 batches and with
a fresh prediction pass (no stored ``pred``) for comparison, and the counts + histograms refresh of a brush.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from t3vis import serving
from t3vis.analysis.summary import sample_rows, top_words
from t3vis.models.inference import fast_bf16
from t3vis.store import Run, RunWriter
from t3vis.ui.state import ExplorerState
from t3vis.ui.summary import METHOD, SelectionSummary, example_words

from bench_instance import make_run  # noqa: E402  (BBC articles, a fresh MiniLM classifier as the checkpoint)


def store_predictions(run: Path, server, texts, labels, length: int) -> None:
    """The checkpoint's ``pred`` and ``loss``, as extraction stores them (what the counts and histograms read)."""
    out = server.predict(texts, labels, max_length=length)
    writer = RunWriter(str(run))
    writer.write_array("checkpoints/ckpt/pred", out.pred.astype(np.int16))
    writer.write_array("checkpoints/ckpt/loss", out.loss.astype(np.float32))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="examples in the run (all selected; 256 are sampled)")
    ap.add_argument("--length", type=int, default=128, help="tokens per example (the run's max_length)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; pool workers {serving.WORKERS}; "
          f"bf16 batches {fast_bf16()}; method {METHOD}")
    tmp = Path(tempfile.mkdtemp(prefix="t3vis-bench-summary-"))
    try:
        run = make_run(tmp, args.n, args.length)
        reader = Run(str(run))
        load_t, server = timed(lambda: serving.server_for_checkpoint(reader.checkpoint("ckpt")))
        print(f"checkpoint load {load_t:.1f} s (not counted)")
        texts = [str(t) for t in reader.column("text")]
        store_predictions(run, server, texts, reader.column("label"), args.length)
        state = ExplorerState(str(run))
        view = SelectionSummary(state=state)
        assert asyncio.run(view.model.server()) is server  # the view uses the loaded checkpoint
        brush = np.random.default_rng(1).random(args.n) < 0.5
        refresh_t, _ = timed(lambda: setattr(state, "selection", brush))
        state.clear_selection()
        total_t, words = timed(lambda: asyncio.run(view.explain()))
        run_info = view.last_run
        print(f"summary of {run_info['done']} examples (stored predictions, bf16 batches where fast): "
              f"{total_t:.1f} s [target <= 15 s], {len(run_info['progress'])} progress updates; "
              f"counts + histograms after a brush {1000 * refresh_t:.0f} ms")
        print("top words:", ", ".join(f"{w.word} {w.mean:+.3g}" for w in words[:10]))

        rows = sample_rows(np.arange(args.n))
        sample = [texts[i] for i in rows]
        fresh_t, fresh = timed(lambda: server.saliency_many(sample, None, METHOD, max_length=args.length))
        print(f"the same with a fresh prediction pass (no stored pred): {fresh_t:.1f} s")
        fp32 = serving.ModelServer.load(reader.checkpoint("ckpt").weights_path, batch_autocast=False)
        fp32_t, exact = timed(lambda: fp32.saliency_many(sample, None, METHOD, max_length=args.length))
        a = np.concatenate([s for _, s in fresh])
        b = np.concatenate([s for _, s in exact])
        same = len({w.word for w in top_words(example_words(*r) for r in fresh)}
                   & {w.word for w in top_words(example_words(*r) for r in exact)})
        print(f"float32 batches: {fp32_t:.1f} s; bf16 vs float32 relevance r = {np.corrcoef(a, b)[0, 1]:.4f}, "
              f"top-20 words in common {same}/20")
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
