"""The :class:`RunStore` interface and the rules every store applies the same way."""

from __future__ import annotations

import abc
import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import PersistenceError, RunStateError
from ._records import ActionRecord, Checkpoint, RunRecord, to_run_status

if TYPE_CHECKING:
    from datetime import timedelta
    from types import TracebackType

    from gostage._runner import RunStatus

__all__ = ["FINISHED_STATUSES", "RunStore"]

_S = TypeVar("_S", bound="RunStore")

FINISHED_STATUSES: tuple[str, ...] = ("completed", "failed", "cancelled")
"""The statuses :meth:`RunStore.purge_runs` deletes by default (``RunStatus`` values)."""

# A run in one of these statuses never changes status again.
_TERMINAL = frozenset({"completed", "cancelled"})


class RunStore(abc.ABC):
    """Where durable runs are kept: run records, action records and checkpoints.

    Implementations: :class:`~gostage.persistence.SQLiteRunStore` (a file, shared by
    processes) and :class:`~gostage.persistence.MemoryRunStore` (this process only, for
    tests). Both are thread-safe, hand out copies of the JSON documents they keep, and
    leave nothing changed when an operation raises.

    Status changes follow two rules (:class:`RunStateError` otherwise): a ``completed``
    or ``cancelled`` run never changes status again, and no run goes back to ``pending``.
    Use the store as a context manager, or call :meth:`close`.
    """

    @abc.abstractmethod
    def create_run(self, record: RunRecord) -> None:
        """Store a new run as given (its ``created_at`` / ``updated_at`` included).

        :raises PersistenceError: a run with this id exists already, or a document in the
            record cannot be stored as JSON.
        """

    @abc.abstractmethod
    def set_status(
        self,
        run_id: str,
        status: RunStatus | str,
        *,
        error: str | None = None,
        owner_pid: int | None = None,
        owner_started: float | None = None,
        suspend_reason: str | None = None,
        suspend_data: dict[str, Any] | None = None,
        expect: RunStatus | str | Iterable[RunStatus | str] | None = None,
    ) -> RunRecord:
        """Change the run's status and return the new record; ``updated_at`` becomes now.

        ``error``, the owner fields and the suspend fields are set to exactly what is
        given: leaving one out clears it. The suspend fields may be given only with
        status ``SUSPENDED``. With ``expect`` (a status or several) the change happens
        only if the run's current status is one of them -- an atomic compare-and-set, so
        of two processes resuming the same run only one wins.

        :raises RunNotFoundError: no such run.
        :raises RunStateError: the current status is not in ``expect``, the run is
            ``completed`` or ``cancelled``, or ``status`` is ``pending`` and the run is not.
        :raises ValueError: suspend fields given with another status than ``SUSPENDED``.
        """

    @abc.abstractmethod
    def record_action(
        self, run_id: str, action: ActionRecord, checkpoint: Checkpoint | None
    ) -> None:
        """In one transaction: add *action*, replace the run's checkpoint (if given) and
        set the run's ``updated_at`` to now.

        :raises RunNotFoundError: no such run.
        :raises PersistenceError: the run already has an action record with this ``seq``,
            or the checkpoint cannot be stored as JSON.
        :raises ValueError: ``action.run_id`` is not *run_id*.
        """

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord:
        """Return the run's record. :raises RunNotFoundError: no such run."""

    @abc.abstractmethod
    def get_checkpoint(self, run_id: str) -> Checkpoint | None:
        """Return the run's latest checkpoint, or ``None`` if it has none yet.

        :raises RunNotFoundError: no such run.
        """

    @abc.abstractmethod
    def list_actions(self, run_id: str) -> list[ActionRecord]:
        """Return the run's action records in ``seq`` order.

        :raises RunNotFoundError: no such run.
        """

    @abc.abstractmethod
    def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow_id: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Return runs newest first (``created_at`` descending, then ``run_id`` descending).

        ``status`` and ``workflow_id`` filter; ``limit`` (``None``: no limit) and
        ``offset`` page through the result.

        :raises ValueError: an unknown status, or a negative ``limit`` / ``offset``.
        """

    @abc.abstractmethod
    def delete_run(self, run_id: str) -> bool:
        """Delete the run with its action records and checkpoint; ``False`` if there was none."""

    @abc.abstractmethod
    def purge_runs(
        self,
        older_than: float | timedelta,
        *,
        statuses: Iterable[RunStatus | str] = FINISHED_STATUSES,
    ) -> int:
        """Delete the runs last updated more than *older_than* ago; return how many.

        *older_than* is seconds or a ``timedelta``; a run goes if its ``updated_at`` is
        before ``now - older_than`` and its status is in *statuses* -- by default the
        finished ones (completed, failed, cancelled), so a running, suspended or pending
        run is never purged unless asked for. Action records and checkpoints go with
        their runs, all in one transaction.

        :raises ValueError: *older_than* is negative or not a number, or an unknown status.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources. Idempotent; any other call afterwards raises
        :class:`PersistenceError`."""

    def __enter__(self: _S) -> _S:
        """Return the store itself; leaving the ``with`` block closes it."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store (see :meth:`close`)."""
        self.close()


# --- rules shared by the implementations ------------------------------------------


def dumps(value: dict[str, Any] | None, what: str, run_id: str) -> str | None:
    """Encode a JSON document for storage (``None`` stays ``None``).

    :raises TypeError: *value* is not a dict.
    :raises PersistenceError: it holds something JSON cannot represent.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"{what} of run {run_id!r} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise PersistenceError(
            f"{what} of run {run_id!r} cannot be stored as JSON ({exc}); keep it to dicts with "
            "str keys, lists, str, finite numbers, bools and None"
        ) from exc


def loads(text: str | None) -> Any:
    """Decode a stored JSON document: a fresh object on every call."""
    return None if text is None else json.loads(text)


def status_set(spec: RunStatus | str | Iterable[RunStatus | str]) -> frozenset[RunStatus]:
    """Return one status, or several, as a set of ``RunStatus`` members."""
    if isinstance(spec, str):
        return frozenset({to_run_status(spec)})
    return frozenset(to_run_status(s) for s in spec)


def check_transition(
    run_id: str,
    current: RunStatus,
    new: RunStatus,
    expect: RunStatus | str | Iterable[RunStatus | str] | None,
    path: str | None = None,
) -> None:
    """Raise :class:`RunStateError` if the run may not go from *current* to *new*."""
    if expect is not None:
        wanted = status_set(expect)
        if current not in wanted:
            names = " or ".join(sorted(s.value for s in wanted))
            raise RunStateError(
                f"run {run_id!r} is {current.value}, not {names}; it was not changed "
                "(another process may have changed it first: read it again with get_run)",
                run_id=run_id,
                status=current.value,
                path=path,
            )
    if current.value in _TERMINAL:
        raise RunStateError(
            f"run {run_id!r} is {current.value} and cannot become {new.value}; "
            f"a {current.value} run is final: start a new run instead",
            run_id=run_id,
            status=current.value,
            path=path,
        )
    if new.value == "pending" and current.value != "pending":
        raise RunStateError(
            f"run {run_id!r} is {current.value} and cannot go back to pending",
            run_id=run_id,
            status=current.value,
            path=path,
        )


def check_suspend_args(
    status: RunStatus, suspend_reason: str | None, suspend_data: dict[str, Any] | None
) -> None:
    """Refuse suspend fields with a status other than ``SUSPENDED``."""
    if status.value != "suspended" and (suspend_reason is not None or suspend_data is not None):
        raise ValueError(
            f"suspend_reason and suspend_data go only with status 'suspended', not {status.value!r}"
        )


def check_action(run_id: str, action: ActionRecord) -> None:
    """Refuse an action record of another run."""
    if not isinstance(action, ActionRecord):
        raise TypeError(f"expected an ActionRecord, got {type(action).__name__}")
    if action.run_id != run_id:
        raise ValueError(f"action record of run {action.run_id!r} given for run {run_id!r}")


def check_page(limit: int | None, offset: int) -> None:
    """Refuse a negative ``limit`` or ``offset``."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit!r}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset!r}")


def older_than_seconds(older_than: float | timedelta) -> float:
    """Return *older_than* (seconds or a ``timedelta``) in seconds, checked."""
    if isinstance(older_than, bool):
        raise ValueError(f"older_than must be seconds or a timedelta, got {older_than!r}")
    if isinstance(older_than, (int, float)):
        seconds = float(older_than)
    elif hasattr(older_than, "total_seconds"):  # a timedelta; datetime is not imported here
        seconds = float(older_than.total_seconds())
    else:
        raise ValueError(f"older_than must be seconds or a timedelta, got {older_than!r}")
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"older_than must be >= 0, got {older_than!r}")
    return seconds


def check_record(record: RunRecord) -> None:
    """Refuse anything but a :class:`RunRecord`."""
    if not isinstance(record, RunRecord):
        raise TypeError(f"expected a RunRecord, got {type(record).__name__}")


def check_checkpoint(checkpoint: Checkpoint | None) -> None:
    """Refuse anything but a :class:`Checkpoint` or ``None``."""
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"expected a Checkpoint or None, got {type(checkpoint).__name__}")
