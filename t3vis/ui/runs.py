"""Which runs the app may open: the subdirectories of one runs directory, and nothing outside it.

The served app takes run *names* (from the picker or ``?run=NAME``), never arbitrary paths, so a page cannot
make the server read files elsewhere. Imports no panel.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import quote

from ..errors import StoreError
from ..paths import DEMO_RUN_NAME, RUNS_DIR_ENV, runs_dir as default_runs_dir
from ..store import schema


def list_runs(runs_dir: "str | os.PathLike") -> list[str]:
    """Names of the run directories (every non-hidden subdirectory, valid or not: the app explains bad ones)."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_run(path: "str | os.PathLike") -> bool:
    return (Path(path) / schema.ROOT_METADATA).is_file()


def default_run(runs_dir: "str | os.PathLike") -> str | None:
    """The run to open first: the demo if present, else the most recently modified run."""
    names = [n for n in list_runs(runs_dir) if is_run(Path(runs_dir) / n)]
    if not names:
        return None
    if DEMO_RUN_NAME in names:
        return DEMO_RUN_NAME
    return max(names, key=lambda n: (Path(runs_dir) / n / schema.STORE_DIR).stat().st_mtime)


def resolve_run(runs_dir: "str | os.PathLike", name: str) -> Path:
    """The path of run ``name`` inside ``runs_dir``; anything that would leave the directory is refused."""
    root = Path(runs_dir).resolve()
    if not name or name in (".", "..") or os.path.isabs(name):
        raise StoreError(f"run {name!r}: expected the name of a run inside {root}")
    path = (root / name).resolve()
    if path == root or not path.is_relative_to(root):
        raise StoreError(f"run {name!r}: refused, it is outside the runs directory {root}")
    return path


def run_query(name: str) -> str:
    """The URL query that opens run ``name`` in a served page (``apps/main.py`` reads ``?run=``), any name intact."""
    return "?run=" + quote(name, safe="")


def app_runs_dir(argv: list[str] | None = None) -> Path:
    """The runs directory for ``panel serve apps/ --args --runs-dir DIR``, else ``$T3VIS_RUNS_DIR``, else ./runs."""
    parser = argparse.ArgumentParser(prog="apps/main.py", add_help=False)
    parser.add_argument("--runs-dir", default=None,
                        help=f"directory holding one subdirectory per run (default: ${RUNS_DIR_ENV} or ./runs)")
    args, _ = parser.parse_known_args(argv)
    return default_runs_dir(args.runs_dir)
