"""Errors a user can act on.

Every error that comes from bad input (a path, a file, a column, a model) is a ``T3VisError``: the CLI prints
its message and exits non-zero without a traceback, and the app shows it in the page. Anything else is a bug.
"""


class T3VisError(Exception):
    """Base class for user-facing errors: the message names the path/field and what was expected."""


class StoreError(T3VisError):
    """A run store is missing, corrupt, or does not match the schema."""


class SchemaVersionError(StoreError):
    """A run store was written with a schema version this t3vis cannot read."""


class RunExistsError(StoreError):
    """A run directory already holds a (different) run and ``overwrite`` was not given."""


class DatasetError(T3VisError):
    """A dataset file or column is missing or holds values of the wrong kind."""


class ModelError(T3VisError):
    """A model directory cannot be loaded as a sequence-classification model, or does not match the run."""


class TrainingError(T3VisError):
    """Training cannot go on (for example the loss became NaN/inf)."""


class PipelineError(T3VisError):
    """A preprocessing pipeline cannot run (unreachable scheduler, missing checkpoint, unwritable store)."""


class QueryError(T3VisError):
    """A search query is empty or is not a valid pattern."""
