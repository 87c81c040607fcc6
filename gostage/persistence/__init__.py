"""Durable runs: where run records, action records and checkpoints are kept.

::

    from gostage import RunStatus
    from gostage.persistence import ActionRecord, Checkpoint, RunRecord, SQLiteRunStore

    with SQLiteRunStore("gostage.db") as runs:
        runs.create_run(RunRecord("run-1", "etl", RunStatus.RUNNING, None, now, now))
        runs.record_action("run-1", ActionRecord(...), Checkpoint(...))   # one transaction
        runs.set_status("run-1", RunStatus.COMPLETED)
        runs.list_runs(status="completed", limit=20)

:class:`SQLiteRunStore` keeps them in one SQLite file that threads and processes share;
:class:`MemoryRunStore` keeps them in this process, for tests. Both implement
:class:`RunStore`. Errors: :class:`PersistenceError` (the file is not a gostage run
database, is newer than this gostage, or SQLite failed), :class:`RunNotFoundError` (also a
``KeyError``) and :class:`RunStateError`; whatever raised left nothing changed.
"""

from __future__ import annotations

from ._base import FINISHED_STATUSES, RunStore
from ._errors import PersistenceError, RunNotFoundError, RunStateError
from ._memory import MemoryRunStore
from ._records import ACTION_STATUSES, ActionRecord, Checkpoint, RunRecord
from ._sqlite import SCHEMA_VERSION, SQLiteRunStore

__all__ = [
    "ACTION_STATUSES",
    "FINISHED_STATUSES",
    "SCHEMA_VERSION",
    "ActionRecord",
    "Checkpoint",
    "MemoryRunStore",
    "PersistenceError",
    "RunNotFoundError",
    "RunRecord",
    "RunStateError",
    "RunStore",
    "SQLiteRunStore",
]
