"""``isolation="worker"``: long-lived spawn workers (design.md §6, issue #4).

Real processes throughout. Every test closes its runner (directly or with
``with``): the autouse fixture fails a test that leaves a worker behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from gostage import (
    ActionContext,
    ActionDef,
    ActionRegistry,
    ChildActionError,
    ChildCrashedError,
    ChildTimeoutError,
    NullLogger,
    Runner,
    SpawnOptions,
    SpawnResult,
    StageDef,
    SubWorkflowDef,
    action,
)

pytestmark = pytest.mark.timeout(60)

_TASKS_SEEN = 0


@action
def count_tasks(ctx: ActionContext) -> None:
    # The registry is unpickled once per worker, so this module's globals (sent by
    # value with it) live as long as the worker: the count grows task by task.
    global _TASKS_SEEN
    _TASKS_SEEN += 1
    ctx.store.put("pid", os.getpid())
    ctx.store.put("seen", _TASKS_SEEN)
    ctx.store.put("i", ctx.params.get("i"))


@action
def die_if_asked(ctx: ActionContext) -> None:
    if ctx.params.get("die"):
        os._exit(9)
    ctx.store.put("pid", os.getpid())


@action
def hang_if_asked(ctx: ActionContext) -> None:
    while ctx.params.get("hang"):
        time.sleep(0.01)
    ctx.store.put("pid", os.getpid())


@action
def raise_if_asked(ctx: ActionContext) -> None:
    if ctx.params.get("fail"):
        raise ValueError("asked to fail")
    ctx.store.put("pid", os.getpid())


@action
def chatter(ctx: ActionContext) -> None:
    for i in range(ctx.params.get("n", 0)):
        ctx.send("tick", {"i": i, "pad": "x" * 100})
    ctx.store.put("pid", os.getpid())


def make_runner() -> Runner:
    registry = ActionRegistry()
    for fn in (count_tasks, die_if_asked, hang_if_asked, raise_if_asked, chatter):
        registry.register(fn.name, fn)
    return Runner(logger=NullLogger(), registry=registry)


def defs(action_id: str, n: int, **per_index: dict[str, Any]) -> list[SubWorkflowDef]:
    out = []
    for i in range(n):
        params = {"i": i, **per_index.get(str(i), {})}
        out.append(SubWorkflowDef(f"w{i}", [StageDef("s", [ActionDef(action_id, params=params)])]))
    return out


def pids_of(outcomes: list[Any]) -> list[int]:
    return [o.final_store["pid"] for o in outcomes if isinstance(o, SpawnResult)]


def test_workers_run_many_tasks_in_order_and_receive_the_registry_once() -> None:
    with make_runner() as runner:
        outcomes = runner.spawn_many(defs("count_tasks", 20), max_workers=2, isolation="worker")
    assert [o.final_store["i"] for o in outcomes] == list(range(20))  # type: ignore[union-attr]
    pids = pids_of(outcomes)
    assert 1 <= len(set(pids)) <= 2 and os.getpid() not in pids
    for pid in set(pids):
        seen = [o.final_store["seen"] for o in outcomes if o.final_store["pid"] == pid]  # type: ignore[union-attr]
        assert seen == list(range(1, len(seen) + 1))


def test_workers_persist_across_calls_until_close() -> None:
    runner = make_runner()
    try:
        first = set(
            pids_of(runner.spawn_many(defs("count_tasks", 4), max_workers=2, isolation="worker"))
        )
        second = set(
            pids_of(runner.spawn_many(defs("count_tasks", 4), max_workers=2, isolation="worker"))
        )
        assert second <= first
        alive = [pid for pid in first if psutil.pid_exists(pid)]
        assert alive
    finally:
        runner.close()
    for pid in first:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    runner.close()  # idempotent


def test_options_select_workers_for_single_spawn_too() -> None:
    with make_runner() as runner:
        options = SpawnOptions(isolation="worker")
        a = runner.spawn(defs("count_tasks", 1)[0], options=options)
        b = runner.spawn(defs("count_tasks", 1)[0], options=options)
    assert a.pid == b.pid
    assert (a.final_store["seen"], b.final_store["seen"]) == (1, 2)


def test_max_tasks_per_worker_recycles_workers() -> None:
    options = SpawnOptions(max_tasks_per_worker=3)
    with make_runner() as runner:
        outcomes = runner.spawn_many(
            defs("count_tasks", 9), max_workers=1, isolation="worker", options=options
        )
    pids = pids_of(outcomes)
    assert len(set(pids)) == 3
    assert [o.final_store["seen"] for o in outcomes] == [1, 2, 3] * 3  # type: ignore[union-attr]


def test_worker_dying_mid_task_fails_only_that_task_and_is_replaced() -> None:
    with make_runner() as runner:
        outcomes = runner.spawn_many(
            defs("die_if_asked", 8, **{"3": {"die": True}}),
            max_workers=1,
            isolation="worker",
            return_exceptions=True,
        )
    assert isinstance(outcomes[3], ChildCrashedError) and outcomes[3].exit_code == 9
    assert "exited with code 9" in str(outcomes[3])
    ok = [o for i, o in enumerate(outcomes) if i != 3]
    assert all(isinstance(o, SpawnResult) for o in ok)
    before, after = set(pids_of(outcomes[:3])), set(pids_of(outcomes[4:]))
    assert len(before) == 1 and len(after) == 1 and before != after


def test_reported_action_error_keeps_the_worker() -> None:
    with make_runner() as runner:
        outcomes = runner.spawn_many(
            defs("raise_if_asked", 4, **{"1": {"fail": True}}),
            max_workers=1,
            isolation="worker",
            return_exceptions=True,
        )
    assert isinstance(outcomes[1], ChildActionError) and outcomes[1].exc_type == "ValueError"
    assert len(set(pids_of(outcomes))) == 1  # the same worker served the rest


def test_timeout_kills_the_worker_and_the_next_task_gets_a_new_one() -> None:
    with make_runner() as runner:
        outcomes = runner.spawn_many(
            defs("hang_if_asked", 3, **{"1": {"hang": True}}),
            max_workers=1,
            isolation="worker",
            return_exceptions=True,
            timeout=1.0,
        )
    assert isinstance(outcomes[1], ChildTimeoutError)
    assert isinstance(outcomes[0], SpawnResult) and isinstance(outcomes[2], SpawnResult)
    assert outcomes[0].pid != outcomes[2].pid


def test_a_big_task_queued_behind_a_chatty_one_does_not_stall_the_parent() -> None:
    # The first task fills the channel while the second, 2 MB, waits in the task
    # pipe: the parent must keep reading messages instead of blocking on the write.
    ticks: list[int] = []
    chatty = SubWorkflowDef("a", [StageDef("s", [ActionDef("chatter", params={"n": 20_000})])])
    big = SubWorkflowDef(
        "b", [StageDef("s", [ActionDef("chatter")])], initial_store={"blob": "y" * 2_000_000}
    )
    with make_runner() as runner:
        runner.broker.register_handler("tick", lambda t, p: ticks.append(p["i"]))
        outcomes = runner.spawn_many([chatty, big], max_workers=1, isolation="worker")
    assert ticks == list(range(20_000))
    assert outcomes[1].final_store["blob"] == "y" * 2_000_000  # type: ignore[union-attr]


def test_many_short_tasks_with_a_failing_handler_fail_only_their_own_task() -> None:
    def on_tick(msg_type: str, payload: Any) -> None:
        if payload["i"] == 1:
            raise RuntimeError("handler refuses")

    tasks = [
        SubWorkflowDef(f"w{i}", [StageDef("s", [ActionDef("chatter", params={"n": 2 * (i == 7)})])])
        for i in range(40)
    ]
    with make_runner() as runner:
        runner.broker.register_handler("tick", on_tick)
        outcomes = runner.spawn_many(
            tasks, max_workers=2, isolation="worker", return_exceptions=True
        )
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert failed == [7]
    assert "handler refuses" in str(outcomes[7]) and "'tick'" in str(outcomes[7])


class _FakeWorker:
    def __init__(self, pace: float | None, queued: int = 0) -> None:
        self.pace = pace
        self.queue = [None] * queued
        self.retired = False

    def assign(self, job: Any, *, last: bool) -> None:
        self.queue.append(job)


class _FakeBackend:
    def __init__(self, depth: int) -> None:
        self.depth = depth

    def is_last_task(self, worker: Any) -> bool:
        return False


@pytest.mark.parametrize(
    ("depth", "pace", "queued", "share", "added"),
    [
        (1, None, 0, 10, 1),  # a fresh process per task: one each
        (1, 1e-5, 1, 10, 0),
        (32, None, 0, 100, 2),  # pace unknown: one running, one waiting
        (32, None, 1, 100, 1),
        (32, None, 2, 100, 0),
        (32, 1e-5, 0, 100, 32),  # tiny tasks: queue deep...
        (32, 1e-5, 17, 100, 0),  # ...and top up in batches of half the depth
        (32, 1e-5, 16, 100, 16),
        (32, 1e-5, 0, 5, 5),  # the end of a run: no more than a fair share
        (32, 0.001, 0, 100, 6),  # 1 ms tasks: about PREFETCH seconds of them
        (32, 0.2, 0, 100, 2),  # long tasks: never more than one waiting
        (32, 0.2, 1, 100, 1),
    ],
)
def test_queue_depth_follows_the_pace_of_the_worker(
    depth: int, pace: float | None, queued: int, share: int, added: int
) -> None:
    from gostage._spawn._supervisor import _top_up

    worker = _FakeWorker(pace, queued)
    pending = list(range(1000))
    _top_up(worker, pending, _FakeBackend(depth), share)  # type: ignore[arg-type]
    assert len(worker.queue) - queued == added == 1000 - len(pending)


WORKER_SCRIPT = """
import os, sys, time
from gostage import *

@action
def whoami(ctx):
    ctx.store.put("pid", os.getpid())

if __name__ == "__main__":
    registry = ActionRegistry()
    registry.register("whoami", whoami)
    runner = Runner(logger=NullLogger(), registry=registry)
    defn = SubWorkflowDef("w", [StageDef("s", [ActionDef("whoami")])])
    for result in runner.spawn_many([defn] * 4, max_workers=2, isolation="worker"):
        print(result.final_store["pid"], flush=True)
    print("done", flush=True)
    if sys.argv[1] == "wait":
        time.sleep(60)
    # else: exit without runner.close(): must not hang on the idle workers
"""


def _wait_gone(pids: set[int], within: float) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        alive = set()
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.add(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return
        time.sleep(0.02)
    raise AssertionError(f"workers {sorted(alive)} still alive after {within} s")


def _start_script(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], set[int]]:
    script = tmp_path / "workers.py"
    script.write_text(WORKER_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = set()
    for line in proc.stdout:
        if line.strip() == "done":
            break
        pids.add(int(line))
    return proc, pids


def test_idle_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    proc, pids = _start_script(tmp_path, "wait")
    try:
        assert pids and all(psutil.pid_exists(p) for p in pids)
        proc.kill()
        proc.wait()
        _wait_gone(pids, within=3.0)
    finally:
        proc.kill()
        proc.wait()


def test_interpreter_exit_without_close_does_not_hang(tmp_path: Path) -> None:
    proc, pids = _start_script(tmp_path, "exit")
    try:
        assert proc.wait(timeout=20) == 0
        _wait_gone(pids, within=3.0)
    finally:
        proc.kill()
        proc.wait()
