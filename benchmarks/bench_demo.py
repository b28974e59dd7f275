"""The training demo end to end: wall time (training, pipelines), validation accuracy, and how well the mislabel
scores find the injected label flips (precision/recall among the lowest-ranked 5% and 10%, ROC AUC).

    python benchmarks/bench_demo.py [--runs-dir DIR] [--epochs 3] [--seed 0] [--no-pipeline] [--json OUT]

Runs ``pipelines.build.build_demo`` exactly as ``t3vis demo`` does (into a temporary directory unless
``--runs-dir`` is given). Targets: validation accuracy >= 0.9, recall of flipped labels within the lowest-confidence
10% >= 0.8, whole demo <= 6 min on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t3vis.analysis.datamaps import detection_metrics, run_data_map  # noqa: E402
from t3vis.store import Run  # noqa: E402


def detection(run: Run) -> dict[str, dict[str, float]]:
    """Each mislabel score (``<name>_score``, and ``mislabel_score``, the default), on the training split, against
    the injected flips."""
    table = run_data_map(run)
    flipped = run.column("flipped")[table.index]
    return {column: detection_metrics(table[column].to_numpy(), flipped)
            for column in table.columns if column.endswith("_score")}


def main(argv: list[str] | None = None) -> dict:
    from t3vis.training.commands import ProgressBar
    from pipelines.build import build_demo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default=None, help="keep the run here (default: a temporary directory)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="t3vis-bench-demo-"))
    stage_start: dict[str, float] = {}
    bar = ProgressBar("demo")

    def progress(stage: str, fraction: float) -> None:
        kind = "pipeline" if stage.startswith("pipeline") else "training"
        stage_start.setdefault(kind, time.perf_counter())
        bar(stage, fraction)

    with open("/proc/loadavg") as f:
        load_before = f.read().split()[0]
    started = time.perf_counter()
    try:
        path = build_demo(runs_dir / "bbc-news-minilm", overwrite=True, seed=args.seed, epochs=args.epochs,
                          progress=progress, pipeline=not args.no_pipeline)
        wall = time.perf_counter() - started
        bar.close()
        run = Run(str(path))
        training = run.attrs["training"]
        result = {
            "wall_s": round(wall, 1),
            "training_s": round((stage_start.get("pipeline", started + wall) - started), 1),
            "pipeline_s": round(started + wall - stage_start["pipeline"], 1) if "pipeline" in stage_start else None,
            "load_average_before": float(load_before),
            "epochs": training["epochs"],
            "validation_accuracy": training["epochs"][-1]["validation_accuracy"],
            "bf16": training["bf16_measurement"],
            "max_length": training["max_length"],
            "checkpoints": run.checkpoints,
            "complete_checkpoints": [c for c in run.checkpoints if run.checkpoint(c).complete],
            "detection": detection(run),
        }
    finally:
        if not args.runs_dir:
            shutil.rmtree(runs_dir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    print()
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def markdown(result: dict) -> str:
    lines = [f"wall time {result['wall_s']:.0f} s (training + dynamics {result['training_s']:.0f} s, pipelines "
             f"{result['pipeline_s'] or 0:.0f} s); final validation accuracy {result['validation_accuracy']:.3f}",
             "", "| mislabel score | precision@5% | recall@5% | precision@10% | recall@10% | ROC AUC |",
             "|---|---|---|---|---|---|"]
    for method, m in result["detection"].items():
        lines.append(f"| {method} | {m['precision@0.05']:.3f} | {m['recall@0.05']:.3f} | {m['precision@0.1']:.3f} "
                     f"| {m['recall@0.1']:.3f} | {m['roc_auc']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
