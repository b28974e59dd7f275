"""The ``t3vis`` command. Each subcommand is a small function; user errors exit 2 with one clear line."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import T3VisError


def cmd_validate(args) -> int:
    from .store import validate

    problems = validate(args.run)
    if problems:
        print(f"{args.run}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"{args.run}: valid")
    return 0


def cmd_info(args) -> int:
    from .store import Run

    run = Run(args.run)
    info = {
        "name": run.name,
        "path": run.loc.url,
        "schema_version": run.attrs["schema_version"],
        "examples": run.n_examples,
        "labels": run.label_names,
        "model": run.model,
        "dataset": run.attrs.get("dataset"),
        "epochs_recorded": run.epochs(),
        "checkpoints": {},
    }
    for name in run.checkpoints:
        ck = run.checkpoint(name)
        info["checkpoints"][name] = {"step": ck.step, "epoch": ck.epoch, "complete": ck.complete,
                                     "arrays": ck.arrays, "projections": [f"{m}/{l}" for m, l in ck.projections()]}
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"{info['name']}  ({info['path']}, schema v{info['schema_version']})")
    print(f"  examples: {info['examples']:,}   labels: {', '.join(info['labels'])}")
    m = info["model"]
    print(f"  model: {m['name_or_path']} ({m['model_type']}, {m['num_layers']} layers x {m['num_heads']} heads, "
          f"hidden {m['hidden_size']})")
    print(f"  epochs recorded: {info['epochs_recorded'] or 'none'}")
    for name, ck in info["checkpoints"].items():
        status = "complete" if ck["complete"] else "incomplete"
        print(f"  checkpoint {name}: step {ck['step']}, epoch {ck['epoch']:g}, {status}; "
              f"{len(ck['arrays'])} arrays; projections: {', '.join(ck['projections']) or 'none'}")
    return 0


def cmd_synth(args) -> int:
    from .store.synth import synth_run

    synth_run(args.run, args.n, seed=args.seed, checkpoints=args.checkpoints, overwrite=args.overwrite)
    print(f"wrote synthetic run with {args.n:,} examples to {args.run}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t3vis", description="Visual analytics for fine-tuning Transformers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a run store against the schema", description="Check a run store "
                       "against the schema; print every problem with its path. Exit 1 if any.")
    p.add_argument("run", help="run directory or fsspec URL")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("info", help="summarise a run", description="Summarise a run: examples, model, checkpoints.")
    p.add_argument("run", help="run directory or fsspec URL")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("synth", help="write a synthetic run (no model) for scale tests",
                       description="Write a run of N synthetic examples with realistic structure (clusters, labels, "
                       "flipped labels, dynamics, checkpoints, projections, head importance) without running a model.")
    p.add_argument("run", help="run directory to write")
    p.add_argument("--n", type=int, default=100_000, help="number of examples (default 100000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoints", type=int, default=4)
    p.add_argument("--overwrite", action="store_true", help="replace an existing run")
    p.set_defaults(func=cmd_synth)

    # training (demo, train) and the Dask pipelines (extract, importance, project, pipeline) register themselves;
    # their modules import heavy libraries only inside the command functions.
    from pipelines.commands import register as register_pipelines

    from .training.commands import register as register_training

    register_training(sub)
    register_pipelines(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except T3VisError as exc:
        print(f"t3vis: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("t3vis: interrupted (finished units are kept; rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
