"""The ``t3vis export`` subcommand: ``register(subparsers)`` adds it to the CLI (the work is in ``export.py``)."""

from __future__ import annotations

from .. import argtypes


def cmd_export(args) -> int:
    from ..store import Run
    from .datamaps import MISLABEL_COLUMN
    from .export import export

    table = export(Run(args.run), args.what, args.out, overwrite=args.overwrite)
    print(f"wrote {args.out}: {len(table):,} rows. {table.attrs[MISLABEL_COLUMN]}")
    return 0


def register(subparsers) -> None:
    """Add ``export`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "export", help="write a run's data map and mislabel scores to CSV or Parquet",
        description="Write one row per example: row, split, text, label, prediction, confidence, variability, "
        "correctness, mislabel_score (higher = more likely mislabeled), the other named <name>_score columns, and "
        "flipped / original_label when the run injected label noise. The format follows the file's extension "
        "(.csv, .parquet).")
    p.add_argument("run", type=argtypes.existing_path, help="run directory or fsspec URL")
    p.add_argument("--what", default="datamap",
                   help="datamap: one row per example (per word for a token run), the default; sentences: a token "
                   "run's sentences with their least confident word and count of suspect words")
    p.add_argument("--out", required=True, help="output file (.csv or .parquet)")
    p.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    p.set_defaults(func=cmd_export)
