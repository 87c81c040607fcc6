""":class:`MemoryRunStore`: a run store in this process's memory, for tests and one-off runs."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._base import (
    FINISHED_STATUSES,
    RunStore,
    check_action,
    check_checkpoint,
    check_page,
    check_record,
    check_suspend_args,
    check_transition,
    dumps,
    loads,
    older_than_seconds,
    status_set,
)
from ._errors import PersistenceError, RunNotFoundError
from ._records import ActionRecord, Checkpoint, RunRecord, to_run_status

if TYPE_CHECKING:
    from datetime import timedelta

    from gostage._runner import RunStatus

__all__ = ["MemoryRunStore"]

_WHERE = "this MemoryRunStore"


@dataclass
class _Run:
    # The record with its two documents taken out; they are kept as JSON text, so every
    # read decodes a fresh copy and the documents behave exactly as in SQLiteRunStore.
    record: RunRecord
    definition: str | None
    suspend_data: str | None
    actions: dict[int, ActionRecord] = field(default_factory=dict)
    checkpoint: tuple[int, int, str, str] | None = None

    def to_record(self) -> RunRecord:
        return dataclasses.replace(
            self.record, definition=loads(self.definition), suspend_data=loads(self.suspend_data)
        )


class MemoryRunStore(RunStore):
    """A :class:`RunStore` kept in a dict: nothing outlives the process.

    Thread-safe (one lock). The JSON documents are kept as JSON text, so what comes back
    is a fresh copy, equal to what :class:`SQLiteRunStore` would give back.

    :param clock: returns "now" in epoch seconds for ``updated_at`` and
        :meth:`purge_runs` (default ``time.time``); tests pass a fake one.
    """

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self._clock: Callable[[], float] = clock if clock is not None else time.time
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._runs)} runs"
        return f"<MemoryRunStore {state}>"

    def _check_open(self) -> None:
        if self._closed:
            raise PersistenceError("this MemoryRunStore is closed; create a new store")

    def _get(self, run_id: str) -> _Run:
        self._check_open()
        run = self._runs.get(run_id)
        if run is None:
            raise RunNotFoundError(run_id, where=_WHERE)
        return run

    def create_run(self, record: RunRecord) -> None:
        """Store a new run as given. See :meth:`RunStore.create_run`."""
        check_record(record)
        run = _Run(
            record=dataclasses.replace(record, definition=None, suspend_data=None),
            definition=dumps(record.definition, "definition", record.run_id),
            suspend_data=dumps(record.suspend_data, "suspend_data", record.run_id),
        )
        with self._lock:
            self._check_open()
            if record.run_id in self._runs:
                raise PersistenceError(
                    f"a run with id {record.run_id!r} already exists in {_WHERE}; "
                    "give each run a new id"
                )
            self._runs[record.run_id] = run

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
        """Change the run's status. See :meth:`RunStore.set_status`."""
        new = to_run_status(status)
        check_suspend_args(new, suspend_reason, suspend_data)
        encoded = dumps(suspend_data, "suspend_data", run_id)
        with self._lock:
            run = self._get(run_id)
            check_transition(run_id, run.record.status, new, expect)
            run.record = dataclasses.replace(
                run.record,
                status=new,
                error=error,
                updated_at=self._clock(),
                owner_pid=owner_pid,
                owner_started=owner_started,
                suspend_reason=suspend_reason,
            )
            run.suspend_data = encoded
            return run.to_record()

    def record_action(
        self, run_id: str, action: ActionRecord, checkpoint: Checkpoint | None
    ) -> None:
        """Add an action record and checkpoint. See :meth:`RunStore.record_action`."""
        check_action(run_id, action)
        check_checkpoint(checkpoint)
        saved = None
        if checkpoint is not None:
            plan = dumps(checkpoint.plan, "checkpoint plan", run_id)
            store = dumps(checkpoint.store, "checkpoint store", run_id)
            assert plan is not None and store is not None
            saved = (checkpoint.stage_index, checkpoint.action_index, plan, store)
        with self._lock:
            run = self._get(run_id)
            if action.seq in run.actions:
                raise PersistenceError(
                    f"run {run_id!r} already has an action record with seq {action.seq}; "
                    "number a run's action records 1, 2, 3... without repeats"
                )
            run.actions[action.seq] = action  # frozen, holds no documents: no copy needed
            if saved is not None:
                run.checkpoint = saved
            run.record = dataclasses.replace(run.record, updated_at=self._clock())

    def get_run(self, run_id: str) -> RunRecord:
        """Return the run's record. See :meth:`RunStore.get_run`."""
        with self._lock:
            return self._get(run_id).to_record()

    def get_checkpoint(self, run_id: str) -> Checkpoint | None:
        """Return the run's latest checkpoint. See :meth:`RunStore.get_checkpoint`."""
        with self._lock:
            saved = self._get(run_id).checkpoint
        if saved is None:
            return None
        stage_index, action_index, plan, store = saved
        return Checkpoint(stage_index, action_index, loads(plan), loads(store))

    def list_actions(self, run_id: str) -> list[ActionRecord]:
        """Return the run's action records by seq. See :meth:`RunStore.list_actions`."""
        with self._lock:
            actions = self._get(run_id).actions
            return [actions[seq] for seq in sorted(actions)]

    def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow_id: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Return runs newest first. See :meth:`RunStore.list_runs`."""
        wanted = None if status is None else to_run_status(status)
        check_page(limit, offset)
        with self._lock:
            self._check_open()
            runs = [
                run
                for run in self._runs.values()
                if (wanted is None or run.record.status is wanted)
                and (workflow_id is None or run.record.workflow_id == workflow_id)
            ]
            runs.sort(key=lambda r: (r.record.created_at, r.record.run_id), reverse=True)
            end = None if limit is None else offset + limit
            return [run.to_record() for run in runs[offset:end]]

    def delete_run(self, run_id: str) -> bool:
        """Delete the run. See :meth:`RunStore.delete_run`."""
        with self._lock:
            self._check_open()
            return self._runs.pop(run_id, None) is not None

    def purge_runs(
        self,
        older_than: float | timedelta,
        *,
        statuses: Iterable[RunStatus | str] = FINISHED_STATUSES,
    ) -> int:
        """Delete old runs in the given statuses. See :meth:`RunStore.purge_runs`."""
        seconds = older_than_seconds(older_than)
        wanted = status_set(statuses)
        with self._lock:
            self._check_open()
            cutoff = self._clock() - seconds
            doomed = [
                run_id
                for run_id, run in self._runs.items()
                if run.record.updated_at < cutoff and run.record.status in wanted
            ]
            for run_id in doomed:
                del self._runs[run_id]
            return len(doomed)

    def close(self) -> None:
        """Drop every run; later calls raise :class:`PersistenceError`."""
        with self._lock:
            self._closed = True
            self._runs.clear()
