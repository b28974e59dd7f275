"""The ``t3vis`` command. Each subcommand is a small function; user errors exit 2 with one clear line."""

from __future__ import annotations

import argparse
import json
import sys

from . import argtypes
from .errors import T3VisError


def cmd_validate(args) -> int:
    from .store import validate

    report = validate(args.run, deep=not args.quick)
    scope = "quick: chunks listed, not read" if args.quick else "deep: every chunk read and its checksum verified"
    out = sys.stderr if report else sys.stdout
    print(f"{args.run}: {len(report)} problem(s)" if report else f"{args.run}: valid ({scope})", file=out)
    for p in report:
        print(f"  {p}", file=out)
    for note in report.notes:
        print(f"  note: {note}", file=out)
    return 1 if report else 0


def _epoch_line(metrics: dict) -> str:
    """``train accuracy 0.912, loss 0.310; validation accuracy ...`` from one epoch's recorded metrics (token runs:
    word accuracy, loss and entity F1)."""
    parts = []
    for split in ("train", "validation"):
        values = [(name, metrics.get(f"{split}_{key}")) for key, name in
                  (("accuracy", "accuracy"), ("loss", "loss"), ("entity_f1", "entity F1"))]
        shown = [f"{name} {value:.3f}" for name, value in values if value is not None]
        if shown:
            parts.append(f"{split} " + ", ".join(shown))
    return "; ".join(parts) or "no metrics"


def cmd_info(args) -> int:
    from .store import Run

    run = Run(args.run)
    info = {
        "name": run.name,
        "path": run.loc.url,
        "schema_version": run.attrs["schema_version"],
        "task": run.task,
        "examples": run.n_examples,
        "labels": run.label_names,
        "model": run.model,
        "dataset": run.attrs.get("dataset"),
        "epochs_recorded": run.epochs(),
        "epoch_metrics": (run.attrs.get("training") or {}).get("epochs", []),
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
    unit = "words" if info["task"] == "token_classification" else "examples"  # a token run's rows are words
    print(f"  task: {info['task']}   {unit}: {info['examples']:,}   labels: {', '.join(info['labels'])}")
    m = info["model"]
    print(f"  model: {m['name_or_path']} ({m['model_type']}, {m['num_layers']} layers x {m['num_heads']} heads, "
          f"hidden {m['hidden_size']})")
    print(f"  epochs recorded: {info['epochs_recorded'] or 'none'}")
    for metrics in info["epoch_metrics"]:
        print(f"    epoch {metrics.get('epoch', '?')}: " + _epoch_line(metrics))
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


def cmd_serve(args) -> int:
    from .serve import run, serve_command

    run(serve_command(address=args.address, port=args.port, runs_dir=args.runs_dir, origins=args.origins,
                      basic_auth=args.basic_auth, cookie_secret=args.cookie_secret, num_threads=args.num_threads,
                      show=args.show, extra=args.panel_args))
    return 0  # not reached: the server replaced this process


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2); subcommands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="t3vis", description="Visual analytics for fine-tuning Transformers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a run store for damage and against the schema",
                       description="Check a run store: every zarr.json parses, every chunk is stored, every chunk "
                       "matches its checksum and decodes (skipped with --quick), and the layout matches the schema. "
                       "Print every problem with its path (array and chunk). Exit 1 if any.")
    p.add_argument("run", type=argtypes.existing_path, help="run directory or fsspec URL")
    depth = p.add_mutually_exclusive_group()
    depth.add_argument("--deep", action="store_true", help="read every chunk and verify its checksum (the default; "
                       "reads the whole store: ~2 s for `t3vis synth --n 200000`, 424 MB)")
    depth.add_argument("--quick", action="store_true", help="list chunks without reading them (~0.2 s for the same "
                       "run): finds missing chunks and bad metadata, not altered bytes")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("info", help="summarise a run: examples, model, accuracy and loss per epoch, checkpoints",
                       description="Summarise a run: its task, examples and labels, the model, the accuracy and mean "
                       "loss of each training epoch per split (as recorded when training ended each epoch), and "
                       "each checkpoint with its arrays and projections.")
    p.add_argument("run", type=argtypes.existing_path, help="run directory or fsspec URL")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("synth", help="write a synthetic run (no model) for scale tests",
                       description="Write a run of N synthetic examples with realistic structure (clusters, labels, "
                       "flipped labels, dynamics, checkpoints, projections, head importance) without running a model.")
    p.add_argument("run", type=argtypes.output_dir, help="run directory to write")
    p.add_argument("--n", type=argtypes.positive_int, default=100_000, help="number of examples (default 100000)")
    p.add_argument("--seed", type=argtypes.non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--checkpoints", type=argtypes.positive_int, default=4,
                   help="checkpoints epoch-0, epoch-1, ... to write (default 4)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("serve", help="serve the explorer (on this machine only unless --address says otherwise)",
                       description="Serve the explorer (`panel serve apps/`) at http://127.0.0.1:PORT/apps, reachable "
                       "from this machine only. To serve a team, give a non-loopback --address together with a login "
                       "(--basic-auth, or an OAuth provider after --) and --allow-websocket-origin.")
    p.add_argument("--runs-dir", type=argtypes.runs_dir, default=None,
                   help="directory holding one subdirectory per run (default $T3VIS_RUNS_DIR or ./runs)")
    p.add_argument("--port", type=argtypes.port, default=5006, help="port (default 5006; 0: any free port)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface, "
                   "needs a login)")
    p.add_argument("--basic-auth", metavar="FILE_OR_PASSWORD", default=None,
                   help="require a login: a JSON file of {\"user\": \"password\"} (or one shared password, "
                   "which `ps` would show to other users of this machine)")
    p.add_argument("--cookie-secret", default=None,
                   help="secret that signs login cookies (default with a login: a new random one per start)")
    p.add_argument("--allow-websocket-origin", action="append", dest="origins", metavar="HOST[:PORT]",
                   help="name users' browsers reach the server by (repeat; default on loopback: localhost and "
                   "127.0.0.1; on a team address: ADDRESS:PORT)")
    p.add_argument("--num-threads", type=argtypes.positive_int, default=None,
                   help="threads that build pages, so one slow page does not hold up the others (default: "
                   "pages are built one at a time)")
    p.add_argument("--show", action="store_true", help="open the page in a browser")
    p.add_argument("panel_args", nargs=argparse.REMAINDER, metavar="-- PANEL_OPTIONS",
                   help="more `panel serve` options, e.g. -- --oauth-provider github --oauth-key ID --oauth-secret S")
    p.set_defaults(func=cmd_serve)

    # training (demo, train) and the Dask pipelines (extract, importance, project, pipeline) register themselves;
    # their modules import heavy libraries only inside the command functions.
    from pipelines.commands import register as register_pipelines

    from .analysis.commands import register as register_export
    from .training.commands import register as register_training, register_crossfit

    register_training(sub)
    register_crossfit(sub)
    register_pipelines(sub)
    register_export(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except T3VisError as exc:
        print(f"t3vis: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the disk, not the code: a read-only or full disk, a vanished file, a refused connection
        print(f"t3vis: error: {describe_os_error(exc, args.command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("t3vis: interrupted (finished units are kept; rerun to resume)", file=sys.stderr)
        return 130


def describe_os_error(exc: OSError, command: str) -> str:
    """One line: what failed (on which file, when the error says), in which command, and what to do."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    what = exc.strerror or str(exc) or type(exc).__name__
    return (f"{where + ': ' if where else ''}{what} ({type(exc).__name__}) in `t3vis {command}`; fix the disk, "
            "permissions or path and rerun")


if __name__ == "__main__":
    sys.exit(main())
