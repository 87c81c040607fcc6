"""The run stores of gostage.persistence: one contract, tested on both stores, then SQLite.

The contract tests run against MemoryRunStore and SQLiteRunStore alike (the ``runs``
fixture); the SQLite tests cover the file: reopening, refusing files that are not ours
without touching them, WAL, SQLite errors, and several processes writing one file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from gostage import GostageError, RunStatus
from gostage.persistence import (
    ActionRecord,
    Checkpoint,
    MemoryRunStore,
    PersistenceError,
    RunNotFoundError,
    RunRecord,
    RunStateError,
    RunStore,
    SQLiteRunStore,
)
from gostage.persistence import _sqlite as sqlite_module

REPO = Path(__file__).resolve().parent.parent


class FakeClock:
    """Wall-clock time (epoch seconds) that the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def runs(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> Iterator[RunStore]:
    store: RunStore
    if request.param == "memory":
        store = MemoryRunStore(clock=clock)
    else:
        store = SQLiteRunStore(tmp_path / "runs.db", clock=clock)
    with store:
        yield store


def make_run(
    run_id: str = "r1",
    *,
    workflow_id: str = "wf",
    status: RunStatus | str = RunStatus.RUNNING,
    created_at: float = 100.0,
    updated_at: float | None = None,
    **fields: Any,
) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        workflow_id=workflow_id,
        status=status,  # type: ignore[arg-type]  # a str is accepted and converted
        error=fields.pop("error", None),
        created_at=created_at,
        updated_at=created_at if updated_at is None else updated_at,
        **fields,
    )


def make_action(run_id: str = "r1", seq: int = 1, **fields: Any) -> ActionRecord:
    values: dict[str, Any] = {
        "stage_id": "stage",
        "action_index": seq - 1,
        "action_name": f"a{seq}",
        "status": "completed",
        "error": None,
        "finished_at": 500.0 + seq,
    }
    values.update(fields)
    return ActionRecord(run_id=run_id, seq=seq, **values)


def make_checkpoint(n: int = 0) -> Checkpoint:
    return Checkpoint(
        stage_index=0,
        action_index=n,
        plan={"stages": [{"id": "stage", "actions": ["a1", "a2"], "enabled": True}]},
        store={"format": "gostage.store", "entries": {"k": n, "nested": {"list": [1, 2]}}},
    )


DEFINITION = {"id": "wf", "stages": [{"id": "stage", "actions": [{"id": "a1"}]}]}


# --- records ------------------------------------------------------------------------


def test_records_convert_and_check_their_fields() -> None:
    assert make_run(status="suspended").status is RunStatus.SUSPENDED
    with pytest.raises(ValueError, match="'paused' is not a run status"):
        make_run(status="paused")
    with pytest.raises(ValueError, match="run_id"):
        make_run("")
    with pytest.raises(ValueError, match="seq"):
        make_action(seq=0)
    with pytest.raises(ValueError, match="'done' is not an action status"):
        make_action(status="done")


def test_errors_are_gostage_errors() -> None:
    assert issubclass(PersistenceError, GostageError)
    assert issubclass(RunNotFoundError, PersistenceError)
    assert issubclass(RunNotFoundError, KeyError)
    assert issubclass(RunStateError, PersistenceError)


# --- the contract, on both stores ---------------------------------------------------


def test_create_and_get_round_trip(runs: RunStore) -> None:
    record = make_run(
        definition=DEFINITION,
        owner_pid=1234,
        owner_started=99.5,
        error=None,
    )
    runs.create_run(record)
    got = runs.get_run("r1")
    assert got == record
    assert got.status is RunStatus.RUNNING
    assert runs.get_checkpoint("r1") is None
    assert runs.list_actions("r1") == []


def test_documents_are_copies_both_ways(runs: RunStore) -> None:
    definition: dict[str, Any] = {"id": "wf", "stages": [{"id": "s"}]}
    runs.create_run(make_run(definition=definition))
    definition["stages"].append({"id": "added later"})  # the caller's dict, after storing
    got = runs.get_run("r1")
    assert got.definition == {"id": "wf", "stages": [{"id": "s"}]}
    assert got.definition is not None
    got.definition["stages"].clear()  # the returned dict
    assert runs.get_run("r1").definition == {"id": "wf", "stages": [{"id": "s"}]}

    checkpoint = make_checkpoint()
    runs.record_action("r1", make_action(), checkpoint)
    checkpoint.store["entries"]["k"] = "changed"
    saved = runs.get_checkpoint("r1")
    assert saved == make_checkpoint()
    assert saved is not None
    saved.plan["stages"].clear()
    assert runs.get_checkpoint("r1") == make_checkpoint()

    data = {"ask": ["a", "b"]}
    record = runs.set_status(
        "r1", RunStatus.SUSPENDED, suspend_reason="approval", suspend_data=data
    )
    data["ask"].append("c")
    assert record.suspend_data is not None
    record.suspend_data["ask"].clear()
    assert runs.get_run("r1").suspend_data == {"ask": ["a", "b"]}


def test_documents_come_back_as_json_has_them(runs: RunStore) -> None:
    runs.create_run(make_run(definition={"t": (1, 2), "n": {1: "one"}}))
    assert runs.get_run("r1").definition == {"t": [1, 2], "n": {"1": "one"}}


@pytest.mark.parametrize(
    "bad", [{"x": object()}, {"x": float("nan")}, {"x": {1, 2}}], ids=["object", "nan", "set"]
)
def test_a_document_that_is_not_json_is_refused(runs: RunStore, bad: dict[str, Any]) -> None:
    with pytest.raises(PersistenceError, match="cannot be stored as JSON"):
        runs.create_run(make_run(definition=bad))
    with pytest.raises(RunNotFoundError):
        runs.get_run("r1")
    runs.create_run(make_run())
    with pytest.raises(PersistenceError, match="cannot be stored as JSON"):
        runs.record_action("r1", make_action(), dataclasses.replace(make_checkpoint(), store=bad))
    assert runs.list_actions("r1") == []
    with pytest.raises(TypeError, match="must be a dict"):
        runs.create_run(make_run("r2", definition=["not", "a", "dict"]))


def test_duplicate_run_id_is_refused_and_changes_nothing(runs: RunStore) -> None:
    runs.create_run(make_run(workflow_id="first"))
    with pytest.raises(PersistenceError, match="'r1' already exists"):
        runs.create_run(make_run(workflow_id="second"))
    assert runs.get_run("r1").workflow_id == "first"
    assert len(runs.list_runs()) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.get_run("ghost-7"),
        lambda s: s.get_checkpoint("ghost-7"),
        lambda s: s.list_actions("ghost-7"),
        lambda s: s.set_status("ghost-7", RunStatus.FAILED),
        lambda s: s.record_action("ghost-7", make_action("ghost-7"), make_checkpoint()),
    ],
    ids=["get_run", "get_checkpoint", "list_actions", "set_status", "record_action"],
)
def test_unknown_run_id_raises_run_not_found(runs: RunStore, call: Any) -> None:
    runs.create_run(make_run())
    with pytest.raises(RunNotFoundError) as info:
        call(runs)
    err = info.value
    assert isinstance(err, KeyError)
    assert err.run_id == "ghost-7"
    assert str(err).startswith("no run with id 'ghost-7'")  # the sentence, not its repr
    assert runs.delete_run("ghost-7") is False
    assert [r.run_id for r in runs.list_runs()] == ["r1"]


def test_set_status_sets_fields_as_given(runs: RunStore, clock: FakeClock) -> None:
    runs.create_run(make_run(status="pending"))
    clock.advance(5)
    started = runs.set_status("r1", RunStatus.RUNNING, owner_pid=42, owner_started=7.5)
    assert (started.status, started.owner_pid, started.owner_started) == ("running", 42, 7.5)
    assert started.updated_at == clock.now
    assert started.created_at == 100.0
    assert runs.get_run("r1") == started

    clock.advance(5)
    suspended = runs.set_status(
        "r1", "suspended", suspend_reason="needs approval", suspend_data={"who": "ops"}
    )
    assert suspended.status is RunStatus.SUSPENDED
    assert (suspended.suspend_reason, suspended.suspend_data) == ("needs approval", {"who": "ops"})
    assert (suspended.owner_pid, suspended.owner_started) == (None, None)  # left out: cleared
    assert suspended.updated_at == clock.now

    resumed = runs.set_status("r1", RunStatus.RUNNING, owner_pid=43, owner_started=8.0)
    assert (resumed.suspend_reason, resumed.suspend_data) == (None, None)
    failed = runs.set_status("r1", RunStatus.FAILED, error="boom")
    assert (failed.status, failed.error, failed.owner_pid) == ("failed", "boom", None)
    again = runs.set_status("r1", RunStatus.RUNNING)  # resuming a failed run
    assert again.error is None
    assert runs.get_run("r1") == again


def test_suspend_fields_need_status_suspended(runs: RunStore) -> None:
    runs.create_run(make_run())
    with pytest.raises(ValueError, match="only with status 'suspended'"):
        runs.set_status("r1", RunStatus.FAILED, suspend_reason="why")
    assert runs.get_run("r1").status is RunStatus.RUNNING


@pytest.mark.parametrize("final", [RunStatus.COMPLETED, RunStatus.CANCELLED])
@pytest.mark.parametrize("new", list(RunStatus))
def test_completed_and_cancelled_runs_are_final(
    runs: RunStore, final: RunStatus, new: RunStatus
) -> None:
    runs.create_run(make_run())
    before = runs.set_status("r1", final)
    with pytest.raises(RunStateError, match=f"is {final.value} and cannot become") as info:
        runs.set_status("r1", new, error="x")
    assert info.value.status == final.value
    assert info.value.run_id == "r1"
    assert runs.get_run("r1") == before


def test_no_run_goes_back_to_pending(runs: RunStore) -> None:
    runs.create_run(make_run(status="pending"))
    runs.set_status("r1", RunStatus.PENDING)  # staying pending is fine
    runs.set_status("r1", RunStatus.SUSPENDED)
    with pytest.raises(RunStateError, match="cannot go back to pending"):
        runs.set_status("r1", RunStatus.PENDING)
    assert runs.get_run("r1").status is RunStatus.SUSPENDED


def test_set_status_expect_is_a_compare_and_set(runs: RunStore) -> None:
    runs.create_run(make_run(status="suspended"))
    won = runs.set_status(
        "r1", RunStatus.RUNNING, owner_pid=1, expect=(RunStatus.SUSPENDED, "failed")
    )
    assert won.status is RunStatus.RUNNING
    with pytest.raises(RunStateError, match="is running, not failed or suspended"):
        runs.set_status("r1", RunStatus.RUNNING, owner_pid=2, expect=["suspended", "failed"])
    assert runs.get_run("r1").owner_pid == 1
    assert runs.set_status("r1", "failed", error="abandoned", expect="running").error == "abandoned"


def test_record_action_adds_records_and_replaces_the_checkpoint(
    runs: RunStore, clock: FakeClock
) -> None:
    runs.create_run(make_run())
    clock.advance(1)
    runs.record_action("r1", make_action(seq=1), make_checkpoint(0))
    assert runs.get_run("r1").updated_at == clock.now
    clock.advance(1)
    runs.record_action("r1", make_action(seq=2, status="skipped"), None)  # checkpoint kept
    assert runs.get_checkpoint("r1") == make_checkpoint(0)
    assert runs.get_run("r1").updated_at == clock.now
    runs.record_action("r1", make_action(seq=3, status="failed", error="bad"), make_checkpoint(2))
    assert runs.get_checkpoint("r1") == make_checkpoint(2)
    assert runs.list_actions("r1") == [
        make_action(seq=1),
        make_action(seq=2, status="skipped"),
        make_action(seq=3, status="failed", error="bad"),
    ]


def test_list_actions_is_in_seq_order_whatever_the_insert_order(runs: RunStore) -> None:
    runs.create_run(make_run())
    for seq in (3, 1, 2):
        runs.record_action("r1", make_action(seq=seq), None)
    assert [a.seq for a in runs.list_actions("r1")] == [1, 2, 3]


def test_duplicate_seq_is_refused_and_changes_nothing(runs: RunStore, clock: FakeClock) -> None:
    runs.create_run(make_run())
    runs.record_action("r1", make_action(seq=1), make_checkpoint(0))
    before = runs.get_run("r1")
    clock.advance(10)
    with pytest.raises(PersistenceError, match="already has an action record with seq 1"):
        runs.record_action("r1", make_action(seq=1, action_name="other"), make_checkpoint(5))
    assert runs.list_actions("r1") == [make_action(seq=1)]
    assert runs.get_checkpoint("r1") == make_checkpoint(0)  # not replaced: one transaction
    assert runs.get_run("r1") == before


def test_record_action_of_another_run_is_refused(runs: RunStore) -> None:
    runs.create_run(make_run("r1"))
    runs.create_run(make_run("r2"))
    with pytest.raises(ValueError, match="action record of run 'r2' given for run 'r1'"):
        runs.record_action("r1", make_action("r2"), None)


def test_list_runs_is_newest_first_with_run_id_tiebreak(runs: RunStore) -> None:
    for run_id, created in [("b", 10.0), ("a", 30.0), ("c", 20.0), ("e", 20.0), ("d", 20.0)]:
        runs.create_run(make_run(run_id, created_at=created))
    assert [r.run_id for r in runs.list_runs()] == ["a", "e", "d", "c", "b"]


def test_list_runs_filters_and_pages(runs: RunStore) -> None:
    statuses = ["running", "completed", "failed", "completed", "suspended", "completed"]
    for i, status in enumerate(statuses):
        runs.create_run(
            make_run(f"r{i}", workflow_id="etl" if i % 2 else "report", status=status, created_at=i)
        )

    def ids(records: list[RunRecord]) -> list[str]:
        return [r.run_id for r in records]

    assert ids(runs.list_runs()) == ["r5", "r4", "r3", "r2", "r1", "r0"]
    assert ids(runs.list_runs(status=RunStatus.COMPLETED)) == ["r5", "r3", "r1"]
    assert ids(runs.list_runs(status="completed")) == ["r5", "r3", "r1"]
    assert ids(runs.list_runs(workflow_id="report")) == ["r4", "r2", "r0"]
    assert ids(runs.list_runs(status="completed", workflow_id="etl")) == ["r5", "r3", "r1"]
    assert ids(runs.list_runs(status="completed", workflow_id="report")) == []
    assert ids(runs.list_runs(workflow_id="nope")) == []
    assert ids(runs.list_runs(limit=2)) == ["r5", "r4"]
    assert ids(runs.list_runs(limit=2, offset=2)) == ["r3", "r2"]
    assert ids(runs.list_runs(limit=2, offset=5)) == ["r0"]
    assert ids(runs.list_runs(limit=2, offset=6)) == []
    assert ids(runs.list_runs(limit=0)) == []
    assert ids(runs.list_runs(status="completed", limit=1, offset=1)) == ["r3"]
    assert len(runs.list_runs(limit=None)) == 6
    assert ids(runs.list_runs(limit=None, offset=4)) == ["r1", "r0"]


def test_list_runs_default_limit_is_50(runs: RunStore) -> None:
    for i in range(60):
        runs.create_run(make_run(f"r{i:02}", created_at=i))
    page = runs.list_runs()
    assert len(page) == 50
    assert page[0].run_id == "r59"


def test_list_runs_refuses_bad_arguments(runs: RunStore) -> None:
    with pytest.raises(ValueError, match="'paused' is not a run status"):
        runs.list_runs(status="paused")
    with pytest.raises(ValueError, match="limit"):
        runs.list_runs(limit=-1)
    with pytest.raises(ValueError, match="offset"):
        runs.list_runs(offset=-1)


def test_delete_run_takes_its_actions_and_checkpoint(runs: RunStore) -> None:
    runs.create_run(make_run("r1"))
    runs.create_run(make_run("r2"))
    for run_id in ("r1", "r2"):
        runs.record_action(run_id, make_action(run_id, 1), make_checkpoint())
    assert runs.delete_run("r1") is True
    assert runs.delete_run("r1") is False
    with pytest.raises(RunNotFoundError):
        runs.get_run("r1")
    runs.create_run(make_run("r1"))  # the id is free again, with nothing left over
    assert runs.list_actions("r1") == []
    assert runs.get_checkpoint("r1") is None
    assert runs.list_actions("r2") == [make_action("r2", 1)]  # the other run is untouched
    assert runs.get_checkpoint("r2") == make_checkpoint()


def test_purge_deletes_old_finished_runs_only(runs: RunStore, clock: FakeClock) -> None:
    now = clock.now
    day = 86400.0
    table = [
        ("old-completed", "completed", now - 3 * day),
        ("old-failed", "failed", now - 3 * day),
        ("old-cancelled", "cancelled", now - 3 * day),
        ("old-running", "running", now - 3 * day),
        ("old-suspended", "suspended", now - 3 * day),
        ("old-pending", "pending", now - 3 * day),
        ("new-completed", "completed", now - 1 * day),
        ("edge-completed", "completed", now - 2 * day),  # exactly at the cutoff: kept
    ]
    for run_id, status, updated in table:
        runs.create_run(make_run(run_id, status=status, created_at=updated, updated_at=updated))
    assert runs.purge_runs(timedelta(days=2)) == 3
    left = {r.run_id for r in runs.list_runs(limit=None)}
    assert left == {
        "old-running",
        "old-suspended",
        "old-pending",
        "new-completed",
        "edge-completed",
    }
    assert runs.purge_runs(2 * day) == 0  # seconds work too

    assert runs.purge_runs(2 * day, statuses=[RunStatus.SUSPENDED, "pending"]) == 2
    assert {r.run_id for r in runs.list_runs(limit=None)} == {
        "old-running",
        "new-completed",
        "edge-completed",
    }
    clock.advance(1)
    assert runs.purge_runs(timedelta(days=2), statuses=()) == 0
    assert runs.purge_runs(timedelta(days=2)) == 1  # edge-completed is now past the cutoff
    assert runs.purge_runs(0, statuses=list(RunStatus)) == 2
    assert runs.list_runs() == []


def test_purge_takes_actions_and_checkpoints_along(runs: RunStore, clock: FakeClock) -> None:
    runs.create_run(make_run())
    runs.record_action("r1", make_action(), make_checkpoint())
    runs.set_status("r1", RunStatus.COMPLETED)
    clock.advance(100)
    assert runs.purge_runs(50) == 1
    runs.create_run(make_run())
    assert runs.list_actions("r1") == []
    assert runs.get_checkpoint("r1") is None


def test_updated_at_decides_purge_not_created_at(runs: RunStore, clock: FakeClock) -> None:
    runs.create_run(make_run(created_at=clock.now - 1000))
    runs.set_status("r1", RunStatus.COMPLETED)  # updated now
    assert runs.purge_runs(500) == 0
    clock.advance(501)
    assert runs.purge_runs(500) == 1


@pytest.mark.parametrize("bad", [-1, float("nan"), timedelta(seconds=-1), "10", True])
def test_purge_refuses_bad_ages(runs: RunStore, bad: Any) -> None:
    with pytest.raises(ValueError, match="older_than"):
        runs.purge_runs(bad)


def test_closed_store_refuses_everything(runs: RunStore) -> None:
    runs.create_run(make_run())
    runs.close()
    runs.close()  # idempotent
    calls: list[Callable[[], object]] = [
        lambda: runs.get_run("r1"),
        lambda: runs.create_run(make_run("r2")),
        lambda: runs.list_runs(),
        lambda: runs.delete_run("r1"),
        lambda: runs.purge_runs(0),
        lambda: runs.set_status("r1", "failed"),
    ]
    for call in calls:
        with pytest.raises(PersistenceError, match="closed"):
            call()


def test_context_manager_closes(runs: RunStore) -> None:
    with runs as same:
        assert same is runs
    with pytest.raises(PersistenceError, match="closed"):
        runs.list_runs()


def test_threads_share_one_store(runs: RunStore) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(25):
                run_id = f"t{t}-{i}"
                runs.create_run(make_run(run_id, created_at=i))
                runs.record_action(run_id, make_action(run_id, 1), make_checkpoint(i))
                runs.set_status(run_id, RunStatus.COMPLETED)
                runs.list_runs(limit=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    records = runs.list_runs(limit=None)
    assert len(records) == 150
    assert {r.status for r in records} == {RunStatus.COMPLETED}


# --- both stores agree, on random sequences of operations ---------------------------

_IDS = st.sampled_from(["a", "b", "c"])
_DOCS = st.dictionaries(
    st.text(max_size=3),
    st.none() | st.integers() | st.text(max_size=4) | st.lists(st.integers(), max_size=2),
    max_size=3,
)


def _outcome(call: Any) -> Any:
    try:
        return ("ok", call())
    except (PersistenceError, ValueError) as exc:
        return (type(exc).__name__, str(exc).replace("run database ':memory:'", "X"))


class StoresAgree(RuleBasedStateMachine):
    """MemoryRunStore and SQLiteRunStore give the same answers to the same calls."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.stores: list[RunStore] = [
            MemoryRunStore(clock=self.clock),
            SQLiteRunStore(":memory:", clock=self.clock),
        ]

    def both(self, call: Any) -> None:
        memory, sqlite = (_outcome(lambda s=s: call(s)) for s in self.stores)
        if memory[0] != "ok" or sqlite[0] != "ok":  # same error class; messages differ by place
            assert memory[0] == sqlite[0]
        else:
            assert memory == sqlite

    @rule(run_id=_IDS, status=st.sampled_from(list(RunStatus)), doc=st.none() | _DOCS)
    def create(self, run_id: str, status: RunStatus, doc: dict[str, Any] | None) -> None:
        created = self.clock.now
        self.both(
            lambda s: s.create_run(
                make_run(run_id, status=status, created_at=created, definition=doc)
            )
        )

    @rule(run_id=_IDS, status=st.sampled_from(list(RunStatus)), doc=st.none() | _DOCS)
    def set_status(self, run_id: str, status: RunStatus, doc: dict[str, Any] | None) -> None:
        data = doc if status is RunStatus.SUSPENDED else None
        self.both(lambda s: s.set_status(run_id, status, suspend_data=data, owner_pid=3))

    @rule(run_id=_IDS, seq=st.integers(1, 3), doc=_DOCS, with_checkpoint=st.booleans())
    def record(self, run_id: str, seq: int, doc: dict[str, Any], with_checkpoint: bool) -> None:
        checkpoint = Checkpoint(0, seq, doc, {"s": doc}) if with_checkpoint else None
        self.both(lambda s: s.record_action(run_id, make_action(run_id, seq), checkpoint))

    @rule(run_id=_IDS)
    def read(self, run_id: str) -> None:
        self.both(lambda s: s.get_run(run_id))
        self.both(lambda s: s.get_checkpoint(run_id))
        self.both(lambda s: s.list_actions(run_id))

    @rule(run_id=_IDS)
    def delete(self, run_id: str) -> None:
        self.both(lambda s: s.delete_run(run_id))

    @rule(seconds=st.sampled_from([0, 1, 5]))
    def tick_and_purge(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.both(lambda s: s.purge_runs(2))

    @rule(
        status=st.none() | st.sampled_from(list(RunStatus)),
        limit=st.integers(0, 3),
        offset=st.integers(0, 3),
    )
    def listing(self, status: RunStatus | None, limit: int, offset: int) -> None:
        self.both(lambda s: s.list_runs(status=status, limit=limit, offset=offset))

    def teardown(self) -> None:
        for store in self.stores:
            store.close()


StoresAgree.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_memory_and_sqlite_stores_agree = StoresAgree.TestCase


# --- SQLite: the file ------------------------------------------------------------------


def file_state(directory: Path) -> dict[str, str]:
    """Name -> sha256 of every file in *directory*: what 'unchanged' means here."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def test_sqlite_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with SQLiteRunStore(path) as store:
        store.create_run(make_run(definition=DEFINITION))
        store.record_action("r1", make_action(), make_checkpoint(3))
        before = store.set_status("r1", "suspended", suspend_reason="r", suspend_data={"x": 1})
    with SQLiteRunStore(str(path)) as store:
        assert store.get_run("r1") == before
        assert store.get_checkpoint("r1") == make_checkpoint(3)
        assert store.list_actions("r1") == [make_action()]


def test_sqlite_creates_the_schema_in_a_new_or_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    for name in ("new.db", "empty.db"):
        with SQLiteRunStore(tmp_path / name) as store:
            store.create_run(make_run())
        conn = sqlite3.connect(tmp_path / name)
        try:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            assert tables == {"schema_version", "runs", "actions", "checkpoints"}
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        finally:
            conn.close()


def test_sqlite_uses_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    SQLiteRunStore(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_sqlite_refuses_a_file_that_is_not_sqlite_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    path.write_bytes(os.urandom(8192))
    before = file_state(tmp_path)
    with pytest.raises(PersistenceError, match="is not a gostage run database") as info:
        SQLiteRunStore(path)
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert file_state(tmp_path) == before  # same bytes, and no -wal / -shm files made


def test_sqlite_refuses_another_apps_database_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada'), ('grace')")
    conn.commit()
    conn.close()
    before = file_state(tmp_path)
    with pytest.raises(PersistenceError, match=r"not a gostage run database.*users") as info:
        SQLiteRunStore(path)
    assert str(path) in str(info.value)
    assert file_state(tmp_path) == before
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("SELECT name FROM users ORDER BY id").fetchall() == [
            ("ada",),
            ("grace",),
        ]
    finally:
        conn.close()


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with SQLiteRunStore(path) as store:
        store.create_run(make_run())
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    before = file_state(tmp_path)
    with pytest.raises(PersistenceError, match=r"schema version 99.*upgrade gostage"):
        SQLiteRunStore(path)
    assert file_state(tmp_path) == before


def test_sqlite_refuses_a_damaged_schema(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    SQLiteRunStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE checkpoints")
    conn.commit()
    conn.close()
    with pytest.raises(PersistenceError, match=r"damaged.*checkpoints"):
        SQLiteRunStore(path)


def test_sqlite_cannot_open_reports_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "runs.db"
    with pytest.raises(PersistenceError, match=r"cannot open run database.*directory exists"):
        SQLiteRunStore(path)


def test_sqlite_errors_become_persistence_errors_and_roll_back(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with SQLiteRunStore(path) as store:
        store.create_run(make_run())
        before = store.get_run("r1")
        # Break the database under the store: the checkpoint write, the second statement
        # of record_action's transaction, fails after the action row went in.
        conn = sqlite3.connect(path)
        conn.execute("DROP TABLE checkpoints")
        conn.commit()
        conn.close()
        with pytest.raises(PersistenceError, match="recording an action failed") as info:
            store.record_action("r1", make_action(), make_checkpoint())
        assert isinstance(info.value.__cause__, sqlite3.Error)
        assert store.list_actions("r1") == []  # the action row went with the rollback
        assert store.get_run("r1") == before
        store.record_action("r1", make_action(), None)  # the store is still usable
        assert store.list_actions("r1") == [make_action()]


def test_sqlite_writer_waits_for_a_lock_held_elsewhere(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    with SQLiteRunStore(path) as store:
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        releaser = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        started = time.monotonic()
        releaser.start()
        try:
            store.create_run(make_run())  # queues instead of failing with "locked"
            assert time.monotonic() - started >= 0.25
        finally:
            releaser.join()
            other.close()
        assert store.get_run("r1").run_id == "r1"


def test_sqlite_gives_up_on_a_lock_held_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_BACKOFF", 0.001)
    path = tmp_path / "runs.db"
    with SQLiteRunStore(path, timeout=0.05) as store:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(PersistenceError, match="locked") as info:
                store.create_run(make_run())
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        finally:
            other.execute("ROLLBACK")
            other.close()
        with pytest.raises(RunNotFoundError):
            store.get_run("r1")


def _child_writes(store: SQLiteRunStore) -> None:
    # Runs in a forked child: the inherited store must open its own connection.
    store.create_run(make_run("from-child"))
    store.record_action("from-child", make_action("from-child"), make_checkpoint())
    store.close()


@pytest.mark.timeout(60)
@pytest.mark.skipif(sys.platform == "win32", reason="needs fork")
def test_sqlite_store_used_after_fork(tmp_path: Path) -> None:
    with SQLiteRunStore(tmp_path / "runs.db") as store:
        store.create_run(make_run("from-parent"))
        child = multiprocessing.get_context("fork").Process(target=_child_writes, args=(store,))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        store.create_run(make_run("parent-again"))  # the parent's connection still works
        assert {r.run_id for r in store.list_runs()} == {
            "from-parent",
            "from-child",
            "parent-again",
        }
        assert store.list_actions("from-child") == [make_action("from-child")]


WRITER = textwrap.dedent(
    """
    import os, sys, time
    from gostage import RunStatus
    from gostage.persistence import ActionRecord, Checkpoint, RunRecord, SQLiteRunStore

    path, name, go = sys.argv[1], sys.argv[2], sys.argv[3]
    while not os.path.exists(go):      # start together, so the schema creation races too
        time.sleep(0.002)
    with SQLiteRunStore(path) as store:
        for i in range(200):
            run_id = f"{name}-{i}"
            now = time.time()
            store.create_run(RunRecord(run_id, name, RunStatus.RUNNING, None, now, now,
                                       {"i": i}, os.getpid(), None))
            for seq in (1, 2):
                store.record_action(
                    run_id,
                    ActionRecord(run_id, seq, "s", seq - 1, f"a{seq}", "completed", None, now),
                    Checkpoint(0, seq - 1, {"i": i}, {"seq": seq}),
                )
            store.set_status(run_id, RunStatus.COMPLETED, expect=RunStatus.RUNNING)
            if i % 20 == 0:
                store.list_runs(limit=10)
    print("done", name)
    """
)


@pytest.mark.timeout(60)
def test_two_processes_write_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"  # does not exist yet: both processes race to create it
    go = tmp_path / "go"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), name, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in ("p1", "p2")
    ]
    try:
        time.sleep(0.3)  # let both interpreters start and wait
        go.touch()
        outputs = [proc.communicate(timeout=50) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert err == ""
        assert out.startswith("done")
    with SQLiteRunStore(path) as store:
        records = store.list_runs(limit=None)
        assert len(records) == 400
        assert {r.status for r in records} == {RunStatus.COMPLETED}
        assert len(store.list_runs(workflow_id="p1", limit=None)) == 200
        # No assertion that the two interleaved: SQLite's write lock is not fair, so a
        # process committing back to back may keep it until it is done while the other
        # waits (and must wait, not fail: that is what this test checks).
        for run_id in ("p1-0", "p2-199", "p1-123"):
            assert [a.seq for a in store.list_actions(run_id)] == [1, 2]
            checkpoint = store.get_checkpoint(run_id)
            assert checkpoint is not None and checkpoint.store == {"seq": 2}


@pytest.mark.timeout(60)
def test_importing_the_package_does_not_import_sqlite3() -> None:
    code = "import sys, gostage.persistence; print('sqlite3' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30
    )
    assert out.stdout.strip() == "False", out.stderr
