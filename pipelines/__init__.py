"""Dask pipelines that fill a run store from its checkpoints: extract, importance, project, neighbours.

Run them from the command line (``t3vis pipeline RUN``, ``t3vis extract RUN`` ...; ``--scheduler tcp://HOST:PORT``
for an existing cluster) or from Python::

    from pipelines import run_pipeline
    run_pipeline("runs/my-run")                              # LocalCluster sized to the machine
    run_pipeline("runs/my-run", scheduler="tcp://10.0.0.5:8786")

Workers import ``t3vis`` and ``pipelines``; they must see the store (a shared path or an fsspec URL).
"""

from t3vis.lazy import lazy_attributes

#: Public name -> the module that defines it; loaded on first use (``t3vis --help`` imports ``pipelines.commands``,
#: which must not pull in Dask and torch).
_EXPORTS = {"dask_client": "cluster", "run_extract": "extract", "run_importance": "importance",
            "run_neighbours": "neighbours", "run_project": "project", "STEPS": "run", "run_pipeline": "run",
            "run_steps": "run"}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
