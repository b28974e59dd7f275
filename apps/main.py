"""The t3vis explorer, as served by ``panel serve apps/`` (one Explorer per browser session).

Runs directory: ``panel serve apps/ --args --runs-dir DIR``, else ``$T3VIS_RUNS_DIR``, else ``./runs``.
Open a given run with ``http://HOST:5006/apps?run=NAME`` (a name inside the runs directory, nothing else).
"""

import panel as pn

from t3vis.ui.explorer import Explorer
from t3vis.ui.runs import app_runs_dir
from t3vis.ui.warmup import warm_up

warm_up()  # once per process: compiles datashader and brush kernels before the first plot needs them


def requested_run() -> str | None:
    args = pn.state.session_args or {}
    value = args.get("run", [b""])[0]
    return (value.decode() if isinstance(value, bytes) else str(value)) or None


Explorer(runs_dir=app_runs_dir(), run_name=requested_run()).servable(title="t3vis explorer")
