"""Durable runs through the Runner: records, checkpoints, suspend/resume, recover (design.md §8)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gostage import (
    ActionContext,
    ActionDef,
    ActionRegistry,
    NullLogger,
    Runner,
    RunStatus,
    Stage,
    StageDef,
    SubWorkflowDef,
    UnknownActionError,
    Workflow,
    action,
)
from gostage.persistence import (
    MemoryRunStore,
    RunNotFoundError,
    RunRecord,
    RunStateError,
    SQLiteRunStore,
)

CALLS: list[str] = []


@action
def step(ctx: ActionContext) -> None:
    name = ctx.action.name
    CALLS.append(name)
    ctx.store.put(name, ctx.store.get_or_default("counter", 0) + 1)
    ctx.store.put("counter", ctx.store.get_or_default("counter", 0) + 1)


@action
def gate(ctx: ActionContext) -> None:
    CALLS.append("gate")
    if not ctx.is_resuming:
        ctx.suspend("needs approval", ticket=42)
    ctx.store.put("approved_by", ctx.resume_data["by"])


@action
def gate2(ctx: ActionContext) -> None:
    CALLS.append("gate2")
    if not ctx.is_resuming:
        ctx.suspend("second approval")


@action
def boom(ctx: ActionContext) -> None:
    CALLS.append("boom")
    if not ctx.store.get_or_default("fixed", False):
        raise RuntimeError("transient failure")


@action
def grow(ctx: ActionContext) -> None:
    CALLS.append("grow")
    extra = make_registry().get("step")
    extra._name = "dynamic-step"  # type: ignore[attr-defined]
    ctx.add_dynamic_action(extra)
    ctx.disable_stage("optional")


def make_registry() -> ActionRegistry:
    registry = ActionRegistry()
    for fn in (step, gate, gate2, boom, grow):
        registry.register(fn.name, fn)
    return registry


def definition(*stages: tuple[str, list[tuple[str, str]]]) -> SubWorkflowDef:
    return SubWorkflowDef(
        "wf",
        [StageDef(sid, [ActionDef(aid, name=name) for aid, name in acts]) for sid, acts in stages],
    )


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


def test_completed_run_is_recorded_with_a_checkpoint_per_action() -> None:
    runs = MemoryRunStore()
    registry = make_registry()
    runner = Runner(logger=NullLogger(), registry=registry, persistence=runs)
    wf = Workflow.from_def(
        definition(("s1", [("step", "a"), ("step", "b")]), ("s2", [("step", "c")])), registry
    )
    result = runner.execute(wf)

    record = runner.get_run(result.run_id)
    assert record.status is RunStatus.COMPLETED and record.workflow_id == "wf"
    assert record.error is None and record.created_at <= record.updated_at
    assert [(a.stage_id, a.action_name, a.status) for a in runs.list_actions(result.run_id)] == [
        ("s1", "a", "completed"),
        ("s1", "b", "completed"),
        ("s2", "c", "completed"),
    ]
    checkpoint = runs.get_checkpoint(result.run_id)
    assert checkpoint is not None and (checkpoint.stage_index, checkpoint.action_index) == (1, 0)
    assert [r.run_id for r in runner.list_runs(status="completed")] == [result.run_id]


def test_failure_is_recorded_and_resume_reruns_only_the_failed_action() -> None:
    registry = make_registry()
    runner = Runner(logger=NullLogger(), registry=registry, persistence=MemoryRunStore())
    wf = Workflow.from_def(
        definition(("s", [("step", "a"), ("boom", "boom"), ("step", "c")])), registry
    )
    with pytest.raises(Exception, match="transient failure") as info:
        runner.execute(wf)
    run_id = info.value.run_id  # type: ignore[attr-defined]
    record = runner.get_run(run_id)
    assert record.status is RunStatus.FAILED and "transient failure" in (record.error or "")

    registry_fixed = make_registry()
    runner2 = Runner(logger=NullLogger(), registry=registry_fixed, persistence=runner.persistence)

    @action(name="boom")
    def fixed(ctx: ActionContext) -> None:
        CALLS.append("boom-fixed")

    registry_fixed._factories["boom"] = fixed
    CALLS.clear()
    result = runner2.resume(run_id)
    assert result.status is RunStatus.COMPLETED and result.run_id == run_id
    assert CALLS == ["boom-fixed", "c"]  # "a" completed before: never again
    assert result.final_store["a"] == 1 and result.final_store["c"] == 2


def test_suspend_then_resume_with_data() -> None:
    registry = make_registry()
    runner = Runner(logger=NullLogger(), registry=registry, persistence=MemoryRunStore())
    wf = Workflow.from_def(
        definition(("s1", [("step", "a")]), ("s2", [("gate", "gate"), ("step", "after")])),
        registry,
    )
    suspended = runner.execute(wf)
    assert suspended.status is RunStatus.SUSPENDED and not suspended.success
    assert suspended.error is None
    record = runner.get_run(suspended.run_id)
    assert record.suspend_reason == "needs approval" and record.suspend_data == {"ticket": 42}

    CALLS.clear()
    done = runner.resume(suspended.run_id, data={"by": "ana"})
    assert done.status is RunStatus.COMPLETED
    assert CALLS == ["gate", "after"]
    assert done.final_store["approved_by"] == "ana" and done.final_store["a"] == 1

    with pytest.raises(RunStateError, match="completed"):
        runner.resume(suspended.run_id)


def test_suspend_without_persistence_still_ends_the_run_quietly() -> None:
    registry = make_registry()
    runner = Runner(logger=NullLogger(), registry=registry)
    result = runner.execute(
        Workflow.from_def(definition(("s", [("gate", "gate"), ("step", "x")])), registry)
    )
    assert result.status is RunStatus.SUSPENDED and CALLS == ["gate"]
    with pytest.raises(Exception, match="persistence"):
        runner.resume(result.run_id)


def test_dynamic_actions_and_toggles_are_replayed_on_resume() -> None:
    registry = make_registry()
    runner = Runner(logger=NullLogger(), registry=registry, persistence=MemoryRunStore())
    wf = Workflow.from_def(
        definition(
            ("s1", [("grow", "grow"), ("gate", "gate")]),
            ("optional", [("step", "skipped-later")]),
            ("s3", [("step", "last")]),
        ),
        registry,
    )
    first = runner.execute(wf)
    assert first.status is RunStatus.SUSPENDED
    assert CALLS == ["grow", "dynamic-step", "gate"]

    CALLS.clear()
    done = runner.resume(first.run_id, data={"by": "bo"})
    assert CALLS == ["gate", "last"]  # grow and its dynamic action done; stage disabled
    assert done.final_store["dynamic-step"] == 1


def test_refusals_change_nothing() -> None:
    runs = MemoryRunStore()
    registry = make_registry()
    runner = Runner(logger=NullLogger(), registry=registry, persistence=runs)
    with pytest.raises(RunNotFoundError, match="nope"):
        runner.resume("nope")
    suspended = runner.execute(Workflow.from_def(definition(("s", [("gate", "gate")])), registry))

    smaller = ActionRegistry()
    smaller.register("step", step)
    stranger = Runner(logger=NullLogger(), registry=smaller, persistence=runs)
    with pytest.raises(UnknownActionError, match="'gate'"):
        stranger.resume(suspended.run_id)
    assert runner.get_run(suspended.run_id).status is RunStatus.SUSPENDED
    assert len(runs.list_actions(suspended.run_id)) == 0


def test_workflow_of_unregistered_actions_cannot_be_persisted() -> None:
    runs = MemoryRunStore()
    runner = Runner(logger=NullLogger(), persistence=runs)
    wf = Workflow("adhoc").add_stage(Stage("s").add_action(step))
    with pytest.raises(ValueError, match="ActionRegistry"):
        runner.execute(wf)
    assert runs.list_runs() == [] and CALLS == []


def test_recover_marks_runs_of_dead_owners_failed() -> None:
    runs = MemoryRunStore()
    now = time.time()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    runs.create_run(
        RunRecord(
            "gone", "wf", RunStatus.RUNNING, None, now, now, owner_pid=dead.pid, owner_started=1.0
        )
    )
    started = __import__("psutil").Process().create_time()
    runs.create_run(
        RunRecord(
            "mine",
            "wf",
            RunStatus.RUNNING,
            None,
            now,
            now,
            owner_pid=os.getpid(),
            owner_started=started,
        )
    )
    runner = Runner(logger=NullLogger(), persistence=runs)
    recovered = runner.recover()
    assert [r.run_id for r in recovered] == ["gone"]
    assert (
        runner.get_run("gone").status is RunStatus.FAILED
        and runner.get_run("gone").error == "abandoned"
    )
    assert runner.get_run("mine").status is RunStatus.RUNNING


def test_to_def_and_from_def_round_trip() -> None:
    registry = make_registry()
    defn = SubWorkflowDef(
        "wf",
        [StageDef("s", [ActionDef("step", name="a", params={"n": 1}, tags=("t",))])],
        initial_store={"seed": 1},
    )
    wf = Workflow.from_def(defn, registry)
    again = wf.to_def()
    assert again.stages[0].actions[0].id == "step"
    assert again.stages[0].actions[0].params == {"n": 1}
    assert again.initial_store == {"seed": 1}
    assert Workflow.from_def(again, registry).to_def() == again


# -- across processes (SQLite file) ------------------------------------------

SCRIPT = """
import os, sys, time
from gostage import *
from gostage.persistence import SQLiteRunStore

def effect(name):
    with open(os.environ["EFFECTS"], "a") as fh:
        fh.write(name + "\\n")

@action
def work(ctx):
    name = ctx.action.name
    effect(name)
    ctx.store.put(name, ctx.store.get_or_default("total", 0))
    ctx.store.put("total", ctx.store.get_or_default("total", 0) + len(name))
    if name == os.environ.get("HANG_AT") and not ctx.is_resuming:
        open(os.environ["SIGNAL"], "w").close()
        time.sleep(60)

@action
def approve(ctx):
    effect("approve")
    if not ctx.is_resuming:
        ctx.suspend("waiting", step=1)
    ctx.store.put("approver", ctx.resume_data["who"])

registry = ActionRegistry()
registry.register("work", work)
registry.register("approve", approve)

def definition(gate):
    stages = [
        StageDef("extract", [ActionDef("work", name="e1"), ActionDef("work", name="e2")]),
        StageDef("transform", [ActionDef("work", name="t1")]
                 + ([ActionDef("approve", name="approve")] if gate else [])
                 + [ActionDef("work", name="t2")]),
        StageDef("load", [ActionDef("work", name="l1")]),
    ]
    return SubWorkflowDef("etl", stages)

if __name__ == "__main__":
    mode, db = sys.argv[1], sys.argv[2]
    runner = Runner(logger=NullLogger(), registry=registry, persistence=SQLiteRunStore(db))
    if mode in ("run", "gate"):
        result = runner.execute(Workflow.from_def(definition(mode == "gate"), registry))
        print(result.run_id, result.status.value, flush=True)
    elif mode == "resume":
        for record in runner.recover():
            print("recovered", record.run_id, flush=True)
        result = runner.resume(sys.argv[3], data={"who": "ops"})
        print(result.run_id, result.status.value, flush=True)
        import json
        print(json.dumps(result.final_store, sort_keys=True), flush=True)
    elif mode == "many":
        for _ in range(int(sys.argv[3])):
            runner.execute(Workflow.from_def(definition(False), registry))
        print("ok", flush=True)
"""


def _script(tmp_path: Path) -> Path:
    path = tmp_path / "etl.py"
    path.write_text(SCRIPT)
    return path


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
        "EFFECTS": str(tmp_path / "effects.txt"),
        "SIGNAL": str(tmp_path / "signal"),
        **extra,
    }


def _effects(tmp_path: Path) -> list[str]:
    path = tmp_path / "effects.txt"
    return path.read_text().split() if path.exists() else []


@pytest.mark.timeout(60)
def test_kill_9_mid_run_then_resume_in_a_fresh_process(tmp_path: Path) -> None:
    script, db = _script(tmp_path), str(tmp_path / "runs.db")
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    ref = subprocess.run(
        [sys.executable, str(script), "run", str(reference_dir / "ref.db")],
        env=_env(reference_dir),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ref.returncode == 0, ref.stderr
    ref_run_id = ref.stdout.split()[0]
    with SQLiteRunStore(str(reference_dir / "ref.db")) as runs:
        checkpoint = runs.get_checkpoint(ref_run_id)
        assert checkpoint is not None
        from gostage import Store

        expected = dict(Store.import_state(checkpoint.store).items())

    proc = subprocess.Popen(
        [sys.executable, str(script), "run", db],
        env=_env(tmp_path, HANG_AT="t1"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "signal").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "never reached t1"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert _effects(tmp_path) == ["e1", "e2", "t1"]
    with SQLiteRunStore(db) as runs:
        (record,) = runs.list_runs()
        assert record.status is RunStatus.RUNNING  # left behind by the dead process

    out = subprocess.run(
        [sys.executable, str(script), "resume", db, record.run_id],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"recovered {record.run_id}"
    assert lines[1] == f"{record.run_id} completed"
    assert json.loads(lines[2]) == expected
    # e1 and e2 completed before the kill and never ran again; t1 was in flight.
    assert _effects(tmp_path) == ["e1", "e2", "t1", "t1", "t2", "l1"]


@pytest.mark.timeout(60)
def test_suspend_and_resume_across_two_processes(tmp_path: Path) -> None:
    script, db = _script(tmp_path), str(tmp_path / "runs.db")
    first = subprocess.run(
        [sys.executable, str(script), "gate", db],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert first.returncode == 0, first.stderr
    run_id, status = first.stdout.split()
    assert status == "suspended"
    second = subprocess.run(
        [sys.executable, str(script), "resume", db, run_id],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[0] == f"{run_id} completed"
    assert json.loads(second.stdout.splitlines()[1])["approver"] == "ops"
    assert _effects(tmp_path) == ["e1", "e2", "t1", "approve", "approve", "t2", "l1"]


@pytest.mark.timeout(120)
def test_two_processes_writing_runs_to_one_file(tmp_path: Path) -> None:
    script, db = _script(tmp_path), str(tmp_path / "runs.db")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), "many", db, "40"],
            env=_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=100)
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    with SQLiteRunStore(db) as runs:
        records = runs.list_runs(limit=None)
        assert len(records) == 80
        assert all(r.status is RunStatus.COMPLETED for r in records)


def test_dynamic_plan_survives_two_resumes() -> None:
    registry = make_registry()
    runner = Runner(logger=NullLogger(), registry=registry, persistence=MemoryRunStore())
    wf = Workflow.from_def(
        definition(
            ("s1", [("grow", "grow"), ("gate", "gate"), ("gate2", "gate2")]),
            ("optional", [("step", "skipped")]),
            ("s3", [("step", "last")]),
        ),
        registry,
    )
    first = runner.execute(wf)
    second = runner.resume(first.run_id, data={"by": "a"})
    assert second.status is RunStatus.SUSPENDED
    CALLS.clear()
    done = runner.resume(first.run_id)
    assert done.status is RunStatus.COMPLETED
    assert CALLS == ["gate2", "last"]
    assert done.final_store["dynamic-step"] == 1 and "skipped" not in done.final_store


@action
def show_region(ctx: ActionContext) -> None:
    ctx.store.put("seen_region", ctx.store.get_or_default("region", None))


def test_stage_initial_data_survives_resume_and_to_def() -> None:
    registry = make_registry()
    registry.register("show_region", show_region)
    runner = Runner(logger=NullLogger(), registry=registry, persistence=MemoryRunStore())
    wf = Workflow.from_def(
        definition(("a", [("gate", "gate")]), ("b", [("show_region", "show")])), registry
    )
    wf.get_stage("b").set_initial_data("region", "eu")
    assert wf.to_def().stages[1].initial_data == {"region": "eu"}
    first = runner.execute(wf)
    done = runner.resume(first.run_id, data={"by": "x"})
    assert done.final_store["seen_region"] == "eu"


def test_suspend_data_that_cannot_be_stored_fails_the_run_instead_of_leaving_it_running() -> None:
    from gostage.persistence import PersistenceError

    @action
    def odd_suspend(ctx: ActionContext) -> None:
        ctx.suspend("wait", when=object())

    registry = make_registry()
    registry.register("odd_suspend", odd_suspend)
    runner = Runner(logger=NullLogger(), registry=registry, persistence=MemoryRunStore())
    with pytest.raises(PersistenceError) as info:
        runner.execute(Workflow.from_def(definition(("s", [("odd_suspend", "odd")])), registry))
    record = runner.get_run(info.value.run_id or "")
    assert record.status is RunStatus.FAILED and "could not suspend" in (record.error or "")
