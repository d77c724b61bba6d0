"""Tasks as adapters: what a cell of task cls, det or seg builds, feeds, trains on, times apart
and scores, behind one interface (``Task``), so the scenarios call the adapter instead of
branching on the task's name. Adding a task is one module here and one line in ``TASKS``."""
from __future__ import annotations

from bench.errors import BadInput
from bench.tasks.base import Task
from bench.tasks.cls import CLS
from bench.tasks.det import DET
from bench.tasks.seg import SEG

TASKS: dict[str, Task] = {t.name: t for t in (CLS, DET, SEG)}


def task_for(name: str) -> Task:
    """The adapter of task ``name`` (one-line error for an unknown one)."""
    try:
        return TASKS[name]
    except KeyError:
        raise BadInput(f"unknown task {name!r}; choose from {', '.join(TASKS)}") from None


__all__ = ["TASKS", "Task", "task_for"]
