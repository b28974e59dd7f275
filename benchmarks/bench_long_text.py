"""Cost of one huge example: ``t3vis train`` peak RSS and time on 20 BBC rows, with and without one 50 MB text.

A real ``t3vis train`` subprocess (training and recorded dynamics; ``--no-pipeline``) at ``--max-length 32``, with
a tiny random BERT over the bundled MiniLM tokenizer, so tokenisation and the run store dominate as they would
for a large model's data path. Peak RSS is the process's own (``wait4``'s ru_maxrss).

    python benchmarks/bench_long_text.py                  # 50 MB text
    python benchmarks/bench_long_text.py --no-cap         # the same without the cap
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(directory: Path) -> None:
    """A random 2-layer BERT (hidden 32) with MiniLM's tokenizer: real tokenisation, negligible model cost."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    from t3vis.models import default_model_path, save_model

    tokenizer = AutoTokenizer.from_pretrained(default_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=512, num_labels=5)
    save_model(AutoModelForSequenceClassification.from_config(config), tokenizer, directory)


def dataset(path: Path, megabytes: float) -> None:
    import pandas as pd

    from t3vis.data import load_bbc_news

    frame = load_bbc_news().frame
    rows = frame.groupby("label").head(4)[["text", "label"]].reset_index(drop=True)  # 20 rows, 5 topics
    if megabytes:
        prose = " ".join(frame["text"].head(400))
        huge = (prose * (int(megabytes * 2**20) // len(prose) + 1))[:int(megabytes * 2**20)]
        rows = pd.concat([rows, pd.DataFrame({"text": [huge], "label": [rows["label"].iloc[0]]})], ignore_index=True)
    rows.to_csv(path, index=False)


#: ``--no-cap``: the same command with the character cap lifted (what tokenising used to cost).
NO_CAP = ("import sys, t3vis.models.inference as m; m.CHARS_PER_TOKEN = 1 << 40; "
          "from t3vis.cli import main; sys.exit(main())")


def train(data: Path, model: Path, run: Path, cap: bool = True) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one ``t3vis train`` process."""
    started = time.perf_counter()
    python = [sys.executable, "-m", "t3vis.cli"] if cap else [sys.executable, "-c", NO_CAP]
    proc = subprocess.Popen([*python, "train", str(data), "--model", str(model), "--run", str(run),
                             "--max-length", "32", "--epochs", "1", "--no-pipeline", "--overwrite"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"t3vis train failed: {proc.stderr.read().decode()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=50.0)
    parser.add_argument("--no-cap", action="store_true", help="lift the character cap (the cost before it)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny_model(tmp / "model")
        results = {}
        for name, megabytes in (("20 rows", 0.0), (f"20 rows + one {args.megabytes:g} MB text", args.megabytes)):
            data = tmp / f"{megabytes:g}.csv"
            dataset(data, megabytes)
            results[name] = train(data, tmp / "model", tmp / f"run-{megabytes:g}", cap=not args.no_cap)
            print(f"{name}: peak RSS {results[name][0]:,.0f} MB, {results[name][1]:.1f} s", flush=True)
        (base_rss, base_s), (huge_rss, huge_s) = results.values()
        print(f"ratio: RSS x{huge_rss / base_rss:.2f}, time x{huge_s / base_s:.2f}")


if __name__ == "__main__":
    main()
