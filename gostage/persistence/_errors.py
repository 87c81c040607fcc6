"""The errors of :mod:`gostage.persistence`.

Hierarchy (under :class:`gostage.GostageError`)::

    PersistenceError            the run database cannot be used: not a gostage run database,
    │                           corrupt, written by a newer gostage, closed, or an I/O failure
    ├── RunNotFoundError        no run with this id (also a KeyError)
    └── RunStateError           the run's status does not allow the change asked for

None of them leaves a change behind: the operation that raised was rolled back.
"""

from __future__ import annotations

from gostage._exceptions import GostageError

__all__ = ["PersistenceError", "RunNotFoundError", "RunStateError"]


class PersistenceError(GostageError):
    """The run store refused or failed an operation; nothing was changed.

    Raised for a file that is not a gostage run database (not SQLite, corrupt, or another
    application's database), a database written by a newer gostage, a closed store, a
    value that cannot be stored as JSON, a duplicate run id, and any SQLite or I/O failure
    (the original exception is ``__cause__``). ``path`` is the database file, if any.
    """

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class RunNotFoundError(PersistenceError, KeyError):
    """No run with this id is stored. ``run_id`` is the id asked for."""

    def __init__(
        self, run_id: str, *, where: str = "the run store", path: str | None = None
    ) -> None:
        super().__init__(
            f"no run with id {run_id!r} in {where}; list the stored runs with "
            "list_runs() (or `gostage runs`) to find its id",
            path=path,
        )
        self.run_id = run_id

    # KeyError.__str__ shows repr(args[0]); we want the sentence as written.
    def __str__(self) -> str:
        return str(self.args[0])


class RunStateError(PersistenceError):
    """The run's current status does not allow the change asked for.

    For example: a completed or cancelled run cannot change status again, a run cannot go
    back to pending, or ``set_status(..., expect=...)`` found another status (a second
    process got there first). ``run_id`` and ``status`` (the current status) say which.
    """

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        status: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.run_id = run_id
        self.status = status
