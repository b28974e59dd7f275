"""The run store: one versioned Zarr v3 group per training run (see ``schema`` for the layout)."""

from .location import Location
from .reader import Checkpoint, Dynamics, Run
from .rows import RowReader
from .schema import SCHEMA_VERSION
from .validate import Problem, Report, validate, validate_or_raise
from .writer import RunWriter, iter_chunks

__all__ = ["Checkpoint", "Dynamics", "Location", "Problem", "Report", "RowReader", "Run", "RunWriter",
           "SCHEMA_VERSION", "iter_chunks", "validate", "validate_or_raise"]
