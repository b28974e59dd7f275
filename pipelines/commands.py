"""CLI subcommands ``extract``, ``importance``, ``project``, ``neighbours`` and ``pipeline``; ``register(subparsers)``
adds them."""

from __future__ import annotations

import argparse
import json

from t3vis import argtypes
from t3vis.store import schema

from .cluster import DEFAULT_TIMEOUT


def _cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=argtypes.existing_path, help="run directory or fsspec URL (workers must see it too)")
    g = p.add_argument_group("cluster")
    g.add_argument("--scheduler", type=argtypes.scheduler_address, metavar="tcp://HOST:PORT",
                   help="connect to an existing Dask scheduler (default: start a LocalCluster sized to this machine)")
    g.add_argument("--scheduler-file", type=argtypes.existing_file, metavar="FILE",
                   help="connect to the scheduler described by FILE (as written by `dask scheduler "
                   "--scheduler-file FILE`)")
    g.add_argument("--workers", type=argtypes.positive_int, help="LocalCluster workers (default: one per core)")
    g.add_argument("--threads-per-worker", type=argtypes.positive_int, default=1,
                   help="LocalCluster threads per worker (default 1; torch uses one thread per worker thread)")
    g.add_argument("--timeout", type=argtypes.positive_float, default=DEFAULT_TIMEOUT,
                   help=f"seconds to wait for a scheduler and its workers (default {DEFAULT_TIMEOUT:g})")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--checkpoint", action="append", dest="checkpoints", metavar="NAME",
                   help="only this checkpoint (repeat for several; default: all)")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="compute dtype (default auto: bf16 where the CPU/GPU does it fast, else fp32)")
    g.add_argument("--device", type=argtypes.torch_device, help="torch device (default: cuda if available, else cpu)")
    g.add_argument("--max-length", type=argtypes.token_count,
                   help="truncate texts to this many tokens (default: as in training)")


def _extract_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("extract")
    g.add_argument("--batch-size", type=argtypes.positive_int, default=64,
                   help="examples per forward pass (default 64)")
    g.add_argument("--chunk-rows", type=argtypes.positive_int, default=schema.CHUNK_ROWS,
                   help=f"rows per task and per Zarr chunk (default {schema.CHUNK_ROWS})")


def _importance_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("importance")
    g.add_argument("--sample", type=argtypes.positive_int, default=512,
                   help="validation examples for head importance (default 512)")
    g.add_argument("--attention-size", type=argtypes.positive_int, default=64,
                   help="positions m of the stored mean attention matrices (default 64)")
    g.add_argument("--importance-batch-size", type=argtypes.positive_int, default=32,
                   help="examples per backward pass (default 32)")


def _project_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("project")
    g.add_argument("--method", action="append", dest="methods", choices=["umap", "tsne", "pca"],
                   help="projection method (repeat for several; default umap)")
    g.add_argument("--layer", action="append", type=argtypes.non_negative_int, dest="layers",
                   help="layer to project (repeat; default: the middle and the last layer)")
    g.add_argument("--pooling", choices=list(schema.POOLINGS),
                   help="hidden-state pooling (default: cls for encoders, mean for decoders)")
    g.add_argument("--independent", action="store_true",
                   help="do not align checkpoints (each projected from scratch; for comparison only)")
    g.add_argument("--seed", type=argtypes.non_negative_int, default=0,
                   help="random seed of UMAP / t-SNE (default 0; PCA needs none)")


def _neighbours_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("neighbours")
    g.add_argument("--neighbours-k", type=argtypes.positive_int, default=None,
                   help="neighbours stored per example (default 32)")


def _neighbour_layer_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("layers")
    g.add_argument("--layer", action="append", type=argtypes.non_negative_int, dest="layers",
                   help="layer to index (repeat; default: the layers `project` uses, the middle and the last)")
    g.add_argument("--pooling", choices=list(schema.POOLINGS),
                   help="hidden-state pooling (default: as `project`: cls for encoders, mean for decoders)")


def _options(args, step: str) -> dict:
    if step == "extract":
        return {"dtype": args.dtype, "device": args.device, "max_length": args.max_length,
                "batch_size": args.batch_size, "chunk_rows": args.chunk_rows}
    if step == "importance":
        return {"dtype": args.dtype, "device": args.device, "max_length": args.max_length, "sample": args.sample,
                "attention_size": args.attention_size, "batch_size": args.importance_batch_size}
    if step == "neighbours":
        return {"layers": args.layers, "pooling": args.pooling, "k": args.neighbours_k}
    return {"methods": tuple(args.methods or ("umap",)), "layers": args.layers, "pooling": args.pooling,
            "aligned": not args.independent, "seed": args.seed}


def _check_local_device(args) -> None:
    """A LocalCluster runs here: a --device this machine lacks is an error now, not in every worker later."""
    if args.scheduler or args.scheduler_file or not getattr(args, "device", None):
        return
    import torch

    from t3vis.errors import PipelineError

    kind = torch.device(args.device).type
    available = getattr(getattr(torch, kind, None), "is_available", lambda: False)
    if kind != "cpu" and not available():
        raise PipelineError(f"--device {args.device}: this machine has no {kind} device for the local cluster "
                            "(leave out --device, or use --scheduler with workers that have one)")


def _run(args, steps: tuple[str, ...]) -> int:
    from .run import run_pipeline

    _check_local_device(args)
    options = {step: _options(args, step) for step in steps}
    summary = run_pipeline(args.run, steps, scheduler=args.scheduler, scheduler_file=args.scheduler_file,
                           n_workers=args.workers, threads_per_worker=args.threads_per_worker,
                           timeout=args.timeout, progress=not args.no_progress, checkpoints=args.checkpoints,
                           **options)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(f"{args.run}: {', '.join(steps)} done in {summary['seconds']:.1f} s")
    return 0


def register(subparsers) -> None:
    """Add the pipeline subcommands to an ``argparse`` subparsers object (``t3vis`` and ``python -m pipelines``)."""
    specs = [
        ("extract", ("extract",), "pooled hidden states, logits, loss, predictions for every checkpoint",
         [_model_args, _extract_args]),
        ("importance", ("importance",), "head importance (Michel et al. 2019) and mean attention per head",
         [_model_args, _importance_args]),
        ("project", ("project",), "2-D projections (UMAP/t-SNE/PCA) aligned across checkpoints", [_project_args]),
        ("neighbours", ("neighbours",), "cosine kNN graph of the projected layers' hidden states (similar examples)",
         [_neighbour_layer_args, _neighbours_args]),
        ("pipeline", ("extract", "importance", "project", "neighbours"),
         "all steps: extract, importance, project, neighbours",
         [_model_args, _extract_args, _importance_args, _project_args, _neighbours_args]),
    ]
    for name, steps, help_text, groups in specs:
        p = subparsers.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ". "
                                  "Runs on a LocalCluster or an existing Dask scheduler; finished units are skipped, "
                                  "so rerunning resumes a killed run.")
        _cluster_args(p)
        for add in groups:
            add(p)
        p.set_defaults(func=lambda args, steps=steps: _run(args, steps))
