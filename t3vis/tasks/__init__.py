"""What differs by task, behind one seam: ``Task`` says how a task loads its model, what a *unit* of analysis is
(an example, a token), how labels are encoded, how logits become per-unit outputs, which arrays it adds to the
store and what the instance view shows. Everything else (store, pipelines, explorer) asks the run's task.

Sequence classification (a label per text) and token classification (a tag per word); ``TASKS`` lists them. A new task is one module here that
subclasses ``Task`` and registers itself in ``TASKS`` (see ARCHITECTURE.md for the files it then touches).
"""

from __future__ import annotations

from .base import Task, unit_outputs
from .classification import SEQUENCE_CLASSIFICATION, SequenceClassification
from .token_classification import TOKEN_CLASSIFICATION, TokenClassification

#: Every task t3vis knows, by the name stored in a run's attributes (``run.attrs["task"]``).
TASKS: dict[str, Task] = {task.name: task for task in (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION)}

#: The task of a run that does not name one (every run written before tasks existed).
DEFAULT_TASK = SEQUENCE_CLASSIFICATION.name


def get_task(name: str | None = None) -> Task:
    """The task called ``name`` (None: the default); a clear error naming the known tasks otherwise."""
    from ..errors import T3VisError

    try:
        return TASKS[name or DEFAULT_TASK]
    except KeyError:
        raise T3VisError(f"unknown task {name!r}: expected one of {sorted(TASKS)}") from None


def task_of(run) -> Task:
    """The task a run was recorded for (``Run.task``; runs without one are sequence classification)."""
    return get_task(run.task)


__all__ = ["DEFAULT_TASK", "TASKS", "SequenceClassification", "Task", "TokenClassification", "get_task", "task_of",
           "unit_outputs"]
