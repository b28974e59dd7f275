"""Where runs live by default, so the CLI, the app and the demo agree."""

from __future__ import annotations

import os
import re
from pathlib import Path

#: Environment variable that overrides the runs directory.
RUNS_DIR_ENV = "T3VIS_RUNS_DIR"
#: Name of the demo run (MiniLM fine-tuned on BBC News with injected label noise) inside the runs directory.
DEMO_RUN_NAME = "bbc-news-minilm"
NER_DEMO_RUN_NAME = "twitter-ner-minilm"


def runs_dir(override: "str | os.PathLike | None" = None) -> Path:
    """The runs directory: ``override``, else ``$T3VIS_RUNS_DIR``, else ``./runs``."""
    return Path(override or os.environ.get(RUNS_DIR_ENV) or "runs").expanduser().resolve()


def demo_run_path(override: "str | os.PathLike | None" = None, task: str | None = None) -> Path:
    """Where ``t3vis demo`` writes (``task`` "ner": the token-classification demo)."""
    return runs_dir(override) / (NER_DEMO_RUN_NAME if task == "ner" else DEMO_RUN_NAME)


def safe_filename(text: str) -> str:
    """``text`` as a file-name part: letters, digits, dot, dash and underscore; runs of anything else become one
    dash (run and checkpoint names come from users and may hold slashes or markup)."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", str(text)).strip("-.")[:80]


def export_filename(*parts: str) -> str:
    """The name (no extension) of a file the app hands the user: ``t3vis-`` and the safe, non-empty ``parts``
    (run, checkpoint, what it holds) joined by dashes."""
    return "-".join(["t3vis", *filter(None, (safe_filename(p) for p in parts))])
