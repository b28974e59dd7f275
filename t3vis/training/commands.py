"""The ``t3vis demo``, ``t3vis train`` and ``t3vis crossfit`` subcommands: ``register(subparsers)`` adds the first
two to the CLI, ``register_crossfit`` the third."""

from __future__ import annotations

import argparse
import time

from .. import argtypes
from .config import NER_CONFIG, TrainConfig


class ProgressBar:
    """A tqdm bar over the whole job (0-100 %) with the current stage and an ETA; a ``Progress`` callable."""

    def __init__(self, description: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=100, desc=description, unit="%", dynamic_ncols=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")
        self.done = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        target = 100.0 * min(1.0, max(fraction, 0.0))
        if target > self.done:
            self.bar.update(target - self.done)
            self.done = target
        self.bar.set_postfix_str(stage, refresh=True)

    def close(self) -> None:
        self.bar.close()


def _run_with_bar(description: str, job) -> tuple[object, float]:
    bar = ProgressBar(description)
    started = time.perf_counter()
    try:
        return job(bar), time.perf_counter() - started
    finally:
        bar.close()


def _report(path, seconds: float) -> None:
    from ..store import Run

    run = Run(str(path))
    epochs = (run.attrs.get("training") or {}).get("epochs") or []
    last = epochs[-1] if epochs else {}
    summary = "".join(f", validation {what} {last[key]:.3f}" for key, what in (
        ("validation_accuracy", "accuracy"), ("validation_entity_f1", "entity F1")) if last.get(key) is not None)
    unit = "words" if run.task == "token_classification" else "examples"
    print(f"wrote {run.loc.url} in {seconds:.0f} s: {run.n_examples:,} {unit}, {len(epochs)} epoch(s), "
          f"checkpoints {', '.join(run.checkpoints)}{summary}")


def cmd_demo(args) -> int:
    from pipelines.build import build_demo

    from ..paths import demo_run_path

    task = "ner" if args.task == "ner" else None
    path = demo_run_path(args.runs_dir, task=task)
    _, seconds = _run_with_bar("t3vis demo", lambda bar: build_demo(
        path, overwrite=args.overwrite, seed=args.seed, epochs=args.epochs, noise=args.noise, progress=bar,
        pipeline=not args.no_pipeline, task=task))
    _report(path, seconds)
    return 0


def cmd_train(args) -> int:
    from pipelines.build import train_and_extract

    from ..data import (inject_label_noise, inject_mention_noise, load_table, load_tagged, split_sentences,
                        split_train_validation)

    if args.task == "ner":
        dataset = load_tagged(args.data, tokens_column=args.tokens_column, tags_column=args.tags_column,
                              split_column=args.split_column)
        dataset = split_sentences(dataset, args.validation_fraction, seed=args.seed)
        if args.noise > 0:
            dataset = inject_mention_noise(dataset, args.noise, seed=args.seed)
    else:
        dataset = load_table(args.data, text_column=args.text_column, label_column=args.label_column,
                             split_column=args.split_column)
        dataset = split_train_validation(dataset, args.validation_fraction, seed=args.seed)
        if args.noise > 0:
            dataset = inject_label_noise(dataset, args.noise, seed=args.seed)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                         max_length=args.max_length, seed=args.seed, bf16=args.bf16)
    _, seconds = _run_with_bar("t3vis train", lambda bar: train_and_extract(
        args.run, dataset, model_path=args.model, config=config, overwrite=args.overwrite, progress=bar,
        pipeline=not args.no_pipeline, name=args.name))
    _report(args.run, seconds)
    return 0


def _bf16(value: str) -> bool | None:
    choices = {"auto": None, "on": True, "off": False}
    if value not in choices:
        raise argparse.ArgumentTypeError(f"expected one of {list(choices)}")
    return choices[value]


def _common(p: argparse.ArgumentParser, defaults: TrainConfig, noise: float, epochs_help: str | None = None) -> None:
    p.add_argument("--epochs", type=argtypes.positive_int, default=None if epochs_help else defaults.epochs,
                   help=epochs_help or f"default {defaults.epochs}")
    p.add_argument("--noise", type=argtypes.fraction, default=noise,
                   help=f"fraction of training labels (ner: entity mentions) to flip to another class (type), to "
                   f"score mislabel detection (default {noise})")
    p.add_argument("--seed", type=argtypes.non_negative_int, default=defaults.seed,
                   help="seed for split, noise, head init, order")
    p.add_argument("--overwrite", action="store_true", help="replace a run that already exists there")
    p.add_argument("--no-pipeline", action="store_true",
                   help="only train (run `t3vis pipeline` later for hidden states, importance, projections)")


def register(subparsers) -> None:
    """Add ``demo`` and ``train`` to the CLI's subparsers."""
    defaults = TrainConfig()
    p = subparsers.add_parser(
        "demo", help="fine-tune MiniLM on BBC News with 5%% label noise and write the demo run",
        description="Fine-tune the bundled all-MiniLM-L6-v2 on BBC News (2,225 articles, 5 topics; 80/20 split) "
        "with 5% of the training labels flipped, recording training dynamics and a checkpoint per epoch, then "
        "run the pipelines. Writes <runs-dir>/bbc-news-minilm.")
    p.add_argument("--runs-dir", type=argtypes.output_dir, default=None,
                   help="runs directory (default $T3VIS_RUNS_DIR or ./runs)")
    p.add_argument("--task", choices=("classification", "ner"), default="classification",
                   help="classification: BBC News topics (default); ner: the bundled Twitter NER corpus (2,394 "
                   "tweets, 10 entity types, 5%% of training mentions flipped), written to <runs-dir>/"
                   "twitter-ner-minilm; its pipelines fill the last layer of every third checkpoint")
    _common(p, defaults, noise=0.05, epochs_help=f"default {defaults.epochs} (ner: {NER_CONFIG.epochs})")
    p.set_defaults(func=cmd_demo)

    p = subparsers.add_parser(
        "train", help="fine-tune a model directory on a dataset file and write a run",
        description="Fine-tune a local Hugging Face model directory on a labelled text file (CSV, TSV, JSONL, "
        "JSON, Parquet, or a datasets save_to_disk directory), or with --task ner a BIO-tagged corpus (CoNLL or "
        "token/tag records), recording training dynamics and a checkpoint per epoch into RUN, then run the "
        "pipelines. Without a split column, 20% of the rows (sentences for ner) are held out.")
    p.add_argument("data", type=argtypes.existing_path, help="dataset file or directory")
    p.add_argument("--model", type=argtypes.existing_dir, required=True,
                   help="model directory (config.json, safetensors, tokenizer)")
    p.add_argument("--run", type=argtypes.output_dir, required=True, help="run directory to write")
    p.add_argument("--name", default=None, help="run name (default: the directory name)")
    p.add_argument("--task", choices=("classification", "ner"), default="classification",
                   help="classification: a label per text (default); ner: a BIO tag per word, from a CoNLL file "
                   "(token and tag columns) or JSONL/Parquet/datasets records with tokens and tags lists")
    p.add_argument("--text-column", default="text", help="classification: the text column (default text)")
    p.add_argument("--label-column", default="label", help="classification: the label column (default label)")
    p.add_argument("--tokens-column", default="tokens", help="ner records: the list of words (default tokens)")
    p.add_argument("--tags-column", default=None,
                   help="ner records: the list of tags (default tags, else ner_tags)")
    p.add_argument("--split-column", default=None, help="column of train/validation names (default: 'split' "
                   "if present)")
    p.add_argument("--validation-fraction", type=argtypes.open_fraction, default=0.2,
                   help="held-out share when the data has no validation rows (default 0.2)")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=defaults.batch_size,
                   help=f"inputs per training step (default {defaults.batch_size})")
    p.add_argument("--learning-rate", type=argtypes.positive_float, default=defaults.learning_rate,
                   help=f"AdamW peak learning rate, linear warmup and decay (default {defaults.learning_rate:g})")
    p.add_argument("--max-length", type=argtypes.token_count, default=defaults.max_length,
                   help=f"tokens per input (truncation; default {defaults.max_length}; ner: whole words are kept)")
    p.add_argument("--bf16", type=_bf16, default=None, metavar="{auto,on,off}",
                   help="bf16 autocast (default auto: where the hardware is fast at it)")
    _common(p, defaults, noise=0.0)
    p.set_defaults(func=cmd_train)


# ------------------------------------------------------------------------------------------------ crossfit
def cmd_crossfit(args) -> int:
    import numpy as np

    from ..analysis.crossfit import run_cross_fit
    from ..store import Run
    from .crossfit import cross_fit_run

    attrs, seconds = _run_with_bar(f"t3vis crossfit (K={args.folds})", lambda bar: cross_fit_run(
        args.run, folds=args.folds, seed=args.seed, rows=args.rows, model_path=args.model, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, bf16=args.bf16, overwrite=args.overwrite,
        progress=bar, echo=bar.bar.write))
    run = Run(args.run)
    scores = run_cross_fit(run)
    names = run.label_names
    print(f"wrote {run.loc.url}/crossfit in {seconds:.0f} s: {attrs['folds']} folds over {attrs['n_rows']:,} "
          f"rows, held-out accuracy {attrs['held_out_accuracy']:.3f}; cleanlab flags "
          f"{int(scores['crossfit_issue'].sum()):,} label issue(s)")
    rows, score = scores.index.to_numpy(), scores["crossfit_score"].to_numpy()
    labels, preds = run.column("label", rows), scores["crossfit_pred"].to_numpy()
    words = "context" in run.columns  # a token run's row is a word: say which, in its sentence
    for i in np.argsort(-score, kind="stable")[:args.show]:
        what = f" {str(run.column('context', rows[i:i + 1])[0])!r}" if words else ""
        print(f"  row {rows[i]}{what}: labelled {names[labels[i]]!r}, held-out prediction {names[preds[i]]!r}, "
              f"crossfit_score {score[i]:.3f}")
    if "flipped" in run.columns:
        from ..analysis.datamaps import detection_metrics

        found = detection_metrics(score, run.column("flipped", rows))
        print("  against the injected flips: " + ", ".join(f"{k} {v:.3f}" for k, v in found.items()
                                                           if k not in ("n", "n_flipped")))
    return 0


def register_crossfit(subparsers) -> None:
    """Add ``crossfit`` to the CLI's subparsers."""
    from .config import ROWS

    p = subparsers.add_parser(
        "crossfit", help="out-of-sample mislabel scores: K-fold cross-fit + cleanlab (costs K trainings)",
        description="Split the run's training rows into K stratified folds; for each fold, fine-tune the run's "
        "starting model (checkpoint epoch-0) on the other K-1 folds and predict the held-out fold, so every row is "
        "scored by a model that never trained on it (cleanlab confident learning). COST: K trainings, each on "
        "(K-1)/K of the rows, i.e. about K-1 times the run's own training; the estimate is printed before it starts. "
        "Stores crossfit/probs and crossfit/fold in the run; nothing is written until all K folds are done.")
    p.add_argument("run", type=argtypes.existing_path, help="run directory (written by `t3vis train`, `t3vis demo` or the Trainer callback)")
    p.add_argument("--folds", "-k", type=argtypes.IntRange(2), default=5, help="K: number of folds and trainings (default 5)")
    p.add_argument("--rows", choices=ROWS, default="train", help="rows to cross-fit (default: the train split)")
    p.add_argument("--model", type=argtypes.existing_dir, default=None, help="start each fold from this model directory instead of the run's "
                   "epoch-0 checkpoint (for runs without saved weights)")
    p.add_argument("--epochs", type=argtypes.positive_int, default=None, help="epochs per fold (default: the run's)")
    p.add_argument("--batch-size", type=argtypes.positive_int, default=None, help="default: the run's")
    p.add_argument("--learning-rate", type=argtypes.positive_float, default=None, help="default: the run's")
    p.add_argument("--bf16", type=_bf16, default=None, metavar="{auto,on,off}",
                   help="bf16 autocast (default auto: where the hardware is fast at it)")
    p.add_argument("--seed", type=argtypes.non_negative_int, default=0, help="seed for the folds, head init and batch order")
    p.add_argument("--show", type=argtypes.non_negative_int, default=5, help="print the N most suspect rows (default 5)")
    p.add_argument("--overwrite", action="store_true", help="replace a cross-fit the run already holds")
    p.set_defaults(func=cmd_crossfit)
