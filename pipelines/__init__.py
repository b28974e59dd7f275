"""Dask pipelines that fill a run store from its checkpoints: extract, importance, project.

Run them from the command line (``t3vis pipeline RUN``, ``t3vis extract RUN`` ...; ``--scheduler tcp://HOST:PORT``
for an existing cluster) or from Python::

    from pipelines import run_pipeline
    run_pipeline("runs/my-run")                              # LocalCluster sized to the machine
    run_pipeline("runs/my-run", scheduler="tcp://10.0.0.5:8786")

Workers import ``t3vis`` and ``pipelines``; they must see the store (a shared path or an fsspec URL).
"""

from .cluster import dask_client
from .extract import run_extract
from .importance import run_importance
from .project import run_project
from .run import STEPS, run_pipeline, run_steps

__all__ = ["STEPS", "dask_client", "run_extract", "run_importance", "run_pipeline", "run_project", "run_steps"]
