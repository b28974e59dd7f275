"""Server start-up for ``panel serve apps/``: import the UI stack and compile kernels before any page is asked for.

Bokeh runs ``on_server_loaded`` once per process at start, so the first visitor does not wait for imports,
numba compilation or the default run's columns (they land in the shared per-process cache).
"""

import logging

log = logging.getLogger("t3vis.apps")
READY = "t3vis explorer ready"


def on_server_loaded(server_context):
    from bokeh.document import Document

    from t3vis.ui.explorer import Explorer
    from t3vis.ui.runs import app_runs_dir, default_run
    from t3vis.ui.warmup import warm_up

    warm_up()
    root = app_runs_dir()
    try:
        # one throwaway page over the default run: loads its columns into the shared cache and exercises every
        # view's first render (plotting backend, models) so the first visitor gets a warm server
        if default_run(root) is not None:
            Explorer(runs_dir=root).__panel__().get_root(Document())
    except Exception:  # a bad run must not stop the server; the page explains it
        log.exception("warming up on the default run failed")
    finally:
        print(f"{READY} (runs directory {root})", flush=True)
