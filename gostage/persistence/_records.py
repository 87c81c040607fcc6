"""What a run store keeps: :class:`RunRecord`, :class:`ActionRecord`, :class:`Checkpoint`.

The JSON documents these records carry (``definition``, ``suspend_data``, ``plan``,
``store``) are opaque to the store: it writes them with ``json.dumps`` and hands back what
``json.loads`` gives, a fresh copy on every read (so tuples come back as lists and non-str
dict keys as str, exactly as JSON has them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gostage._runner import RunStatus

__all__ = ["ACTION_STATUSES", "ActionRecord", "Checkpoint", "RunRecord", "to_run_status"]

ACTION_STATUSES = frozenset({"completed", "failed", "skipped"})
"""The values of :attr:`ActionRecord.status`."""


def to_run_status(value: object) -> RunStatus:
    """Return *value* as a :class:`~gostage.RunStatus` (a member or its lowercase value).

    :raises ValueError: *value* is no run status; the message lists the valid ones.
    """
    # Imported here, not at module level: the Runner may import gostage.persistence while
    # gostage._runner is still being initialised.
    from gostage._runner import RunStatus

    if isinstance(value, RunStatus):
        return value
    try:
        return RunStatus(value)
    except ValueError:
        valid = ", ".join(repr(s.value) for s in RunStatus)
        raise ValueError(f"{value!r} is not a run status; use one of {valid}") from None


def _check_id(kind: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} must be a non-empty string, got {value!r}")


@dataclass(frozen=True)
class RunRecord:
    """One stored run: who it is, where it is, and who runs it.

    ``status`` may be given as a :class:`~gostage.RunStatus` or its lowercase value; the
    record always holds the enum member. Times are epoch seconds (``time.time()``).
    ``definition`` is the JSON document of the workflow definition the run was built from;
    ``owner_pid`` / ``owner_started`` identify the process running it (pid and its
    ``psutil`` create time), so a run whose owner is gone can be told from a live one;
    ``suspend_reason`` / ``suspend_data`` are set while the run is suspended.
    """

    run_id: str
    workflow_id: str
    status: RunStatus
    error: str | None
    created_at: float
    updated_at: float
    definition: dict[str, Any] | None = None
    owner_pid: int | None = None
    owner_started: float | None = None
    suspend_reason: str | None = None
    suspend_data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_id("run_id", self.run_id)
        _check_id("workflow_id", self.workflow_id)
        object.__setattr__(self, "status", to_run_status(self.status))


@dataclass(frozen=True)
class Checkpoint:
    """Where a run can continue from, saved with each completed action.

    ``stage_index`` / ``action_index`` locate the last completed action in the run plan;
    ``plan`` is the run plan (dynamic additions and toggles included) and ``store`` the
    workflow store as :meth:`gostage.Store.export_state` wrote it. Both are JSON documents.
    """

    stage_index: int
    action_index: int
    plan: dict[str, Any]
    store: dict[str, Any]


@dataclass(frozen=True)
class ActionRecord:
    """One finished action of a run.

    ``seq`` numbers a run's action records 1, 2, 3... in the order they finished (unique
    per run); ``status`` is ``"completed"``, ``"failed"`` or ``"skipped"``; ``error`` is the
    failure's message; ``finished_at`` is epoch seconds.
    """

    run_id: str
    seq: int
    stage_id: str
    action_index: int
    action_name: str
    status: str
    error: str | None
    finished_at: float

    def __post_init__(self) -> None:
        _check_id("run_id", self.run_id)
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 1:
            raise ValueError(f"seq must be an int >= 1, got {self.seq!r}")
        if self.status not in ACTION_STATUSES:
            valid = ", ".join(map(repr, sorted(ACTION_STATUSES)))
            raise ValueError(f"{self.status!r} is not an action status; use one of {valid}")
