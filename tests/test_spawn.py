"""Child workflows in real, supervised processes (design.md §6).

Everything here starts real children through the spawn context and talks over
real pipes; nothing about processes is mocked. The autouse fixture in conftest
fails any test that leaves a process behind.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import psutil
import pytest

from gostage import (
    ActionContext,
    ActionDef,
    ActionRegistry,
    BaseAction,
    ChildActionError,
    ChildCrashedError,
    ChildMemoryError,
    ChildProtocolError,
    ChildSerializationError,
    ChildTimeoutError,
    IPCMiddleware,
    IPCMiddlewareFunc,
    NullLogger,
    Runner,
    SpawnError,
    SpawnMiddleware,
    SpawnMiddlewareFunc,
    SpawnOptions,
    SpawnResult,
    Stage,
    StageDef,
    Store,
    SubWorkflowDef,
    UnknownActionError,
    Workflow,
    WorkflowCancelled,
    WorkflowTimeout,
    action,
    time_limit_middleware,
)

pytestmark = pytest.mark.timeout(60)


def one_action(action_id: str, params: dict[str, Any] | None = None, **kw: Any) -> SubWorkflowDef:
    return SubWorkflowDef("child", [StageDef("main", [ActionDef(action_id, params=params)])], **kw)


def runner_with(**actions: Any) -> Runner:
    registry = ActionRegistry()
    for action_id, factory in actions.items():
        registry.register(action_id, factory)
    return Runner(logger=NullLogger(), registry=registry)


# -- actions used by the children (pickled by value: tests are not installed) ------


@action
def report_pid(ctx: ActionContext) -> None:
    ctx.store.put("child_pid", os.getpid())


@action
def chatty(ctx: ActionContext) -> None:
    for i in range(5):
        ctx.logger.info("step %d", i)
        ctx.store.put(f"k{i}", i)
        ctx.send("progress", {"i": i})
    ctx.store.delete("k0")


@action
def raise_value_error(ctx: ActionContext) -> None:
    raise ValueError("bad input in child")


@action
def exit_3(ctx: ActionContext) -> None:
    ctx.store.put("before", 1)
    os._exit(3)


@action
def sigkill_self(ctx: ActionContext) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@action
def segfault(ctx: ActionContext) -> None:
    import ctypes

    ctypes.string_at(0)


@action
def allocate_too_much(ctx: ActionContext) -> None:
    hoard = bytearray(1024 * 1024 * 1024)  # 1 GiB: over the limit below
    ctx.store.put("never", len(hoard))


@action
def spin_forever(ctx: ActionContext) -> None:
    while True:
        pass


@action
def start_grandchild_then_hang(ctx: ActionContext) -> None:
    import subprocess
    import sys

    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    ctx.send("grandchild", {"pid": grandchild.pid})
    while True:
        time.sleep(0.05)


@action
def return_set(ctx: ActionContext) -> None:
    ctx.store.put("ok", "fine")
    ctx.store.put("widget", Widget(3))


class Widget:
    def __init__(self, size: int) -> None:
        self.size = size


@action
def send_huge(ctx: ActionContext) -> None:
    ctx.send("big", "x" * 200_000)


@action
def write_garbage(ctx: ActionContext) -> None:
    from gostage._spawn import _child

    channel = _child.active_channel()
    assert channel is not None
    os.write(channel._fd, b"\x00\x00\x00\x05not json at all")
    time.sleep(30)


@action
def write_oversized_header(ctx: ActionContext) -> None:
    from gostage._spawn import _child

    channel = _child.active_channel()
    assert channel is not None
    os.write(channel._fd, b"\x7f\xff\xff\xff")
    time.sleep(30)


@action
def write_malformed_message(ctx: ActionContext) -> None:
    from gostage._spawn import _child

    channel = _child.active_channel()
    assert channel is not None
    body = b'{"k":"m","m":[["progress"]]}'
    os.write(channel._fd, len(body).to_bytes(4, "big") + body)
    time.sleep(30)


@action
def write_malformed_report(ctx: ActionContext) -> None:
    from gostage._spawn import _child

    channel = _child.active_channel()
    assert channel is not None
    body = b'{"m":"not a list","k":"r","store":{}}'
    os.write(channel._fd, len(body).to_bytes(4, "big") + body)
    time.sleep(30)


@action
def use_params(ctx: ActionContext) -> None:
    ctx.store.put("doubled", ctx.params["n"] * 2)


@action
def sleep_briefly(ctx: ActionContext) -> None:
    time.sleep(0.3)
    ctx.store.put("slept", True)


@action
def fail_if_asked(ctx: ActionContext) -> None:
    if ctx.params.get("fail"):
        raise RuntimeError(f"child {ctx.params['i']} failed on purpose")
    time.sleep(0.05)
    ctx.store.put("i", ctx.params["i"])


def assert_gone(pid: int, within: float = 3.0) -> None:
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still alive after {within} s")


# -- the happy path ------------------------------------------------------------


def test_child_runs_in_another_process_and_returns_its_store() -> None:
    runner = runner_with(report_pid=report_pid)
    result = runner.spawn(one_action("report_pid", initial_store={"seed": [1, 2]}))
    assert isinstance(result, SpawnResult) and result.success and result.error is None
    assert result.final_store["child_pid"] == result.pid != os.getpid()
    assert result.final_store["seed"] == [1, 2]
    assert result.exit_code == 0
    assert result.duration > 0
    assert result.peak_rss is not None and result.peak_rss > 1_000_000


def test_logs_store_writes_and_custom_messages_arrive_in_order() -> None:
    runner = runner_with(chatty=chatty)
    seen: list[tuple[str, Any]] = []
    runner.broker.set_default_handler(lambda t, p: seen.append((t, p)))
    parent_store = Store()
    result = runner.spawn(one_action("chatty"), store=parent_store)

    kinds = [t for t, _ in seen]
    assert kinds[0] == "workflow_start" and kinds[-1] == "workflow_result"
    body = [(t, p) for t, p in seen if t in ("log", "store_put", "store_delete", "progress")]
    expected: list[tuple[str, Any]] = []
    for i in range(5):
        expected.append(("log", {"level": "info", "message": f"step {i}", "pid": result.pid}))
        expected.append(("store_put", {"key": f"k{i}", "value": i}))
        expected.append(("progress", {"i": i}))
    expected.append(("store_delete", {"key": "k0"}))
    assert body == expected
    # Writes were applied to the given store as they arrived.
    assert parent_store.to_dict() == {"k1": 1, "k2": 2, "k3": 3, "k4": 4}


def test_child_logs_without_handler_are_reemitted_through_runner_logger(logger: Any) -> None:
    registry = ActionRegistry()
    registry.register("chatty", chatty)
    runner = Runner(logger=logger, registry=registry)
    result = runner.spawn(one_action("chatty"))
    assert [m for m in logger.messages("info") if "step" in m] == [
        f"[pid {result.pid}] step {i}" for i in range(5)
    ]


def test_custom_message_handler_runs_live_while_child_runs() -> None:
    @action
    def wait_for_ack(ctx: ActionContext) -> None:
        ctx.send("hello", {"from": os.getpid()})
        # The parent creates this file from its handler: proof that handlers run
        # while the child is still alive, not after it exits.
        path = ctx.params["path"]
        end = time.monotonic() + 20
        while not os.path.exists(path):
            if time.monotonic() > end:
                raise TimeoutError("handler never ran")
            time.sleep(0.01)
        ctx.store.put("acked", True)

    runner = runner_with(wait_for_ack=wait_for_ack)
    import tempfile

    path = os.path.join(tempfile.mkdtemp(), "ack")
    got: list[Any] = []

    def on_hello(msg_type: str, payload: Any) -> None:
        got.append(payload)
        open(path, "w").close()

    runner.broker.register_handler("hello", on_hello)
    result = runner.spawn(one_action("wait_for_ack", {"path": path}))
    assert result.final_store["acked"] is True
    assert got == [{"from": result.pid}]


def test_inbound_and_outbound_ipc_middleware_are_both_applied() -> None:
    runner = runner_with(chatty=chatty)

    def mark_out(t: str, p: Any) -> tuple[str, Any]:
        return t, {"wrapped": p, "sender": os.getpid()}

    def mark_in(t: str, p: Any) -> tuple[str, Any]:
        return t, {**p, "receiver": os.getpid()}

    runner.add_ipc_middleware(IPCMiddlewareFunc(process_outbound=mark_out, process_inbound=mark_in))
    seen: list[Any] = []
    runner.broker.register_handler("progress", lambda t, p: seen.append(p))
    result = runner.spawn(one_action("chatty"))
    assert seen[0] == {"wrapped": {"i": 0}, "sender": result.pid, "receiver": os.getpid()}
    assert len(seen) == 5


def test_ipc_layers_undo_each_other_in_nesting_order() -> None:
    class Shift(IPCMiddleware):
        def __init__(self, amount: int) -> None:
            self.amount = amount

        def process_outbound(self, t: str, p: Any) -> tuple[str, Any]:
            if t == "progress":
                return t, {"i": p["i"] * 10 + self.amount}
            return t, p

        def process_inbound(self, t: str, p: Any) -> tuple[str, Any]:
            if t == "progress":
                assert (p["i"] - self.amount) % 10 == 0, "layers undone out of order"
                return t, {"i": (p["i"] - self.amount) // 10}
            return t, p

    runner = runner_with(chatty=chatty)
    runner.add_ipc_middleware(Shift(1)).add_ipc_middleware(Shift(2))
    seen: list[Any] = []
    runner.broker.register_handler("progress", lambda t, p: seen.append(p["i"]))
    runner.spawn(one_action("chatty"))
    assert seen == [0, 1, 2, 3, 4]


def test_spawn_middleware_lifecycle_and_one_object_as_both_kinds() -> None:
    events: list[Any] = []

    class Both(IPCMiddleware, SpawnMiddleware):
        def before_spawn(self, ctx: Any, defn: SubWorkflowDef) -> Any:
            events.append(("before", defn.id))
            return ctx.with_value("t0", time.perf_counter()), defn

        def after_spawn(self, ctx: Any, defn: SubWorkflowDef, err: BaseException | None) -> None:
            events.append(("after", defn.id, err, ctx.value("t0") is not None))

        def on_child_message(self, msg_type: str, payload: Any) -> None:
            if msg_type == "progress":
                events.append(("message", payload["i"]))

    runner = runner_with(chatty=chatty, raise_value_error=raise_value_error)
    both = Both()
    runner.add_ipc_middleware(both)
    runner.use_spawn_middleware(both)
    runner.spawn(one_action("chatty"))
    assert events == [
        ("before", "child"),
        *[("message", i) for i in range(5)],
        ("after", "child", None, True),
    ]

    events.clear()
    runner.use_spawn_middleware(SpawnMiddlewareFunc(after_spawn=lambda c, d, e: events.append(e)))
    with pytest.raises(ChildActionError) as info:
        runner.spawn(one_action("raise_value_error"))
    assert events[-2] is info.value  # reverse order: the later middleware runs first
    assert events[-1][0] == "after" and events[-1][2] is info.value


def test_params_reach_the_action() -> None:
    result = runner_with(use_params=use_params).spawn(one_action("use_params", {"n": 21}))
    assert result.final_store["doubled"] == 42


def test_ctx_spawn_merges_child_store_into_parent_run() -> None:
    runner = runner_with(chatty=chatty, report_pid=report_pid)

    @action
    def parent(ctx: ActionContext) -> None:
        ctx.store.put("k0", "parent value, deleted by the child")
        result = ctx.spawn(one_action("chatty"))
        ctx.store.put("child_pid", result.pid)

    wf = Workflow("parent").add_stage(Stage("s").add_action(parent))
    result = runner.execute(wf)
    assert result.final_store["k4"] == 4
    assert "k0" not in result.final_store
    assert result.final_store["child_pid"] != os.getpid()


# -- the fault matrix ---------------------------------------------------------


def timed_spawn(runner: Runner, defn: SubWorkflowDef, **kwargs: Any) -> tuple[BaseException, float]:
    """Spawn expecting failure; the typed error must come within 2 s of the fault.

    The faults here happen as soon as the child starts (or at its timeout), so the
    bound is start-up (generously 3 s on a loaded 2-core machine) plus 2 s.
    """
    start = time.monotonic()
    with pytest.raises(SpawnError) as info:
        runner.spawn(defn, **kwargs)
    elapsed = time.monotonic() - start
    allowed = 3.0 + 2.0 + (kwargs.get("timeout") or 0.0)
    assert elapsed < allowed, f"{type(info.value).__name__} took {elapsed:.1f} s"
    return info.value, elapsed


def test_action_error_in_child_names_type_and_carries_traceback() -> None:
    err, _ = timed_spawn(
        runner_with(raise_value_error=raise_value_error), one_action("raise_value_error")
    )
    assert isinstance(err, ChildActionError)
    assert err.exc_type == "ValueError"
    assert "bad input in child" in str(err)
    assert "'main'" in str(err) and "raise_value_error" in str(err)
    # By-value code shows as <dynamic-code>, but function, line and error are there.
    assert "in raise_value_error" in err.traceback
    assert err.traceback.rstrip().endswith("ValueError: bad input in child")
    assert (err.stage_id, err.action_name) == ("main", "raise_value_error")
    assert err.exit_code == 0  # the child reported, then exited cleanly


def test_os_exit_is_a_crash_with_exit_code() -> None:
    err, _ = timed_spawn(runner_with(exit_3=exit_3), one_action("exit_3"))
    assert isinstance(err, ChildCrashedError)
    assert err.exit_code == 3 and err.signal is None
    assert "exited with code 3" in str(err)


def test_sigkill_is_a_crash_naming_the_signal() -> None:
    err, _ = timed_spawn(runner_with(sigkill_self=sigkill_self), one_action("sigkill_self"))
    assert isinstance(err, ChildCrashedError)
    assert err.signal == signal.SIGKILL and err.exit_code == -signal.SIGKILL
    assert "SIGKILL" in str(err)


def test_segfault_is_a_crash_naming_the_signal() -> None:
    err, _ = timed_spawn(runner_with(segfault=segfault), one_action("segfault"))
    assert isinstance(err, ChildCrashedError)
    assert err.signal == signal.SIGSEGV
    assert "SIGSEGV" in str(err)


def test_memory_limit_gives_child_memory_error() -> None:
    options = SpawnOptions(memory_limit=512 * 1024 * 1024)
    err, _ = timed_spawn(
        runner_with(allocate_too_much=allocate_too_much),
        one_action("allocate_too_much"),
        options=options,
    )
    assert isinstance(err, ChildMemoryError)


def test_timeout_kills_infinite_loop_within_two_seconds_of_deadline() -> None:
    err, elapsed = timed_spawn(
        runner_with(spin_forever=spin_forever), one_action("spin_forever"), timeout=1.0
    )
    assert isinstance(err, ChildTimeoutError) and isinstance(err, TimeoutError)
    assert "timed out after 1.0 s" in str(err)
    assert elapsed < 1.0 + 2.0


def test_cpu_time_limit_is_a_timeout() -> None:
    options = SpawnOptions(cpu_time_limit=1)
    err, _ = timed_spawn(
        runner_with(spin_forever=spin_forever), one_action("spin_forever"), options=options
    )
    assert isinstance(err, ChildTimeoutError)
    assert "CPU-time limit" in str(err)


def test_timeout_kills_grandchildren_too() -> None:
    runner = runner_with(start_grandchild_then_hang=start_grandchild_then_hang)
    grandchildren: list[int] = []
    runner.broker.register_handler("grandchild", lambda t, p: grandchildren.append(p["pid"]))
    err, _ = timed_spawn(runner, one_action("start_grandchild_then_hang"), timeout=1.5)
    assert isinstance(err, ChildTimeoutError)
    assert len(grandchildren) == 1
    assert_gone(grandchildren[0], within=2.0)


def test_unknown_action_id_fails_before_any_process_starts() -> None:
    runner = runner_with(report_pid=report_pid)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(UnknownActionError) as info:
        runner.spawn(one_action("no_such_action"))
    assert "'no_such_action'" in str(info.value) and "'report_pid'" in str(info.value)
    assert isinstance(info.value, KeyError)
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before


def test_non_json_final_value_fails_without_trust_and_travels_with_it() -> None:
    runner = runner_with(return_set=return_set)
    err, _ = timed_spawn(runner, one_action("return_set"))
    assert isinstance(err, ChildSerializationError)
    assert err.key == "widget" and "'widget'" in str(err)

    result = runner.spawn(one_action("return_set"), trust_child=True)
    assert result.final_store["ok"] == "fine"
    assert type(result.final_store["widget"]).__name__ == "Widget"
    assert result.final_store["widget"].size == 3


def test_message_over_the_frame_limit_is_a_protocol_error() -> None:
    options = SpawnOptions(max_frame_size=64 * 1024)
    err, _ = timed_spawn(runner_with(send_huge=send_huge), one_action("send_huge"), options=options)
    assert isinstance(err, ChildProtocolError)
    assert "frame limit" in str(err)


@pytest.mark.parametrize(
    ("action_id", "needle"),
    [
        ("write_garbage", "not valid JSON"),
        ("write_oversized_header", "over the"),
        ("write_malformed_message", "malformed message"),
        ("write_malformed_report", "malformed message list"),
    ],
)
def test_hostile_bytes_on_the_channel_are_a_protocol_error_and_parent_survives(
    action_id: str, needle: str
) -> None:
    runner = runner_with(
        write_garbage=write_garbage,
        write_oversized_header=write_oversized_header,
        write_malformed_message=write_malformed_message,
        write_malformed_report=write_malformed_report,
        report_pid=report_pid,
    )
    err, elapsed = timed_spawn(runner, one_action(action_id))
    assert isinstance(err, ChildProtocolError)
    assert needle in str(err)
    assert elapsed < 10  # the child sleeps 30 s: it was killed, not waited for
    # The parent is fine: the next child works.
    assert runner.spawn(one_action("report_pid")).success


def test_handler_error_kills_the_child_and_names_the_message() -> None:
    runner = runner_with(chatty=chatty)

    def broken(t: str, p: Any) -> None:
        raise RuntimeError("handler bug")

    runner.broker.register_handler("progress", broken)
    err, _ = timed_spawn(runner, one_action("chatty"))
    assert "'progress'" in str(err) and "handler bug" in str(err)
    assert isinstance(err.__cause__, RuntimeError)


# -- runs that own children --------------------------------------------------


def test_cancelling_the_run_kills_the_spawned_child() -> None:
    runner = runner_with(spin_forever=spin_forever)
    cancel = threading.Event()
    pids: list[int] = []
    runner.broker.register_handler(
        "workflow_start", lambda t, p: (pids.append(p["pid"]), cancel.set())
    )

    @action
    def parent(ctx: ActionContext) -> None:
        ctx.spawn(one_action("spin_forever"))

    wf = Workflow("p").add_stage(Stage("s").add_action(parent))
    start = time.monotonic()
    with pytest.raises(WorkflowCancelled):
        runner.execute(wf, cancel=cancel)
    assert time.monotonic() - start < 10
    assert_gone(pids[0])


def test_time_limit_middleware_kills_the_spawned_child() -> None:
    runner = runner_with(spin_forever=spin_forever)
    runner.use(time_limit_middleware(1.0))

    @action
    def parent(ctx: ActionContext) -> None:
        ctx.spawn(one_action("spin_forever"))

    wf = Workflow("p").add_stage(Stage("s").add_action(parent))
    start = time.monotonic()
    with pytest.raises(WorkflowTimeout):
        runner.execute(wf)
    assert time.monotonic() - start < 3.0


# -- many children -----------------------------------------------------------


def test_spawn_many_bounds_live_children_and_isolates_failures() -> None:
    runner = runner_with(fail_if_asked=fail_if_asked)
    defs = [
        SubWorkflowDef(
            f"child-{i}",
            [StageDef("s", [ActionDef("fail_if_asked", params={"i": i, "fail": i == 7})])],
        )
        for i in range(16)
    ]
    me = psutil.Process()
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            live = [p for p in me.children() if _is_live_child(p)]
            peak = max(peak, len(live))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        outcomes = runner.spawn_many(defs, max_workers=2, return_exceptions=True)
    finally:
        stop.set()
        watcher.join()

    assert peak == 2
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    results = [o for o in outcomes if isinstance(o, SpawnResult)]
    assert len(results) == 15 and len(errors) == 1
    assert isinstance(outcomes[7], ChildActionError) and "child 7 failed" in str(outcomes[7])
    assert [r.final_store["i"] for r in results] == [i for i in range(16) if i != 7]


def _is_live_child(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def test_spawn_many_without_return_exceptions_raises_first_failure_after_all_ran() -> None:
    runner = runner_with(fail_if_asked=fail_if_asked)
    ran: list[int] = []
    runner.broker.register_handler("store_put", lambda t, p: ran.append(p["value"]))
    defs = [
        SubWorkflowDef(
            f"c{i}", [StageDef("s", [ActionDef("fail_if_asked", params={"i": i, "fail": i == 1})])]
        )
        for i in range(4)
    ]
    with pytest.raises(ChildActionError, match="child 1 failed"):
        runner.spawn_many(defs, max_workers=2)
    assert sorted(ran) == [0, 2, 3]


def test_spawn_many_fail_fast_stops_the_rest() -> None:
    runner = runner_with(fail_if_asked=fail_if_asked, spin_forever=spin_forever)
    defs = [one_action("fail_if_asked", {"i": 0, "fail": True})] + [
        one_action("spin_forever") for _ in range(3)
    ]
    start = time.monotonic()
    outcomes = runner.spawn_many(defs, max_workers=2, return_exceptions=True, fail_fast=True)
    assert time.monotonic() - start < 10
    assert isinstance(outcomes[0], ChildActionError)
    assert all(isinstance(o, BaseException) for o in outcomes)


def test_many_sequential_spawns_leak_no_descriptors_or_threads() -> None:
    runner = runner_with(report_pid=report_pid)
    me = psutil.Process()
    runner.spawn(one_action("report_pid"))  # warm up lazily created state
    fds, threads = me.num_fds(), me.num_threads()
    for _ in range(200):
        runner.spawn(one_action("report_pid"))
    assert me.num_fds() <= fds
    assert me.num_threads() <= threads


# -- options -------------------------------------------------------------------


def test_env_and_cwd_apply_in_the_child(tmp_path: Any) -> None:
    @action
    def look(ctx: ActionContext) -> None:
        ctx.store.put("cwd", os.getcwd())
        ctx.store.put("env", os.environ.get("GOSTAGE_TEST_VAR"))
        with open("written-by-child.txt", "w") as fh:
            fh.write("hi")

    options = SpawnOptions(env={"GOSTAGE_TEST_VAR": "yes"}, cwd=str(tmp_path))
    result = runner_with(look=look).spawn(one_action("look"), options=options)
    assert result.final_store["cwd"] == str(tmp_path)
    assert result.final_store["env"] == "yes"
    assert (tmp_path / "written-by-child.txt").read_text() == "hi"
    assert "GOSTAGE_TEST_VAR" not in os.environ


def test_definition_that_is_not_json_fails_before_any_process_starts(monkeypatch: Any) -> None:
    from gostage._spawn._backends.base import Backend

    def no_process(self: Any) -> Any:
        raise AssertionError("a process was started")

    monkeypatch.setattr(Backend, "start_worker", no_process)
    runner = runner_with(use_params=use_params)
    good = one_action("use_params", {"n": 1})
    bad = SubWorkflowDef("bad", [StageDef("s", [ActionDef("use_params", params={"n": {1}})])])
    for isolation in ("process", "worker"):
        with runner, pytest.raises(TypeError, match=r"'bad' cannot be sent.* set "):
            runner.spawn_many([good, bad], isolation=isolation)  # type: ignore[arg-type]


def test_spawn_options_validate() -> None:
    with pytest.raises(ValueError):
        SpawnOptions(timeout=0)
    with pytest.raises(ValueError):
        SpawnOptions(memory_limit=-1)
    with pytest.raises(ValueError, match="isolation"):
        SpawnOptions(isolation="cluster")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_tasks_per_worker"):
        SpawnOptions(max_tasks_per_worker=0)


def test_registry_rules() -> None:
    registry = ActionRegistry()
    registry.register("a", report_pid)

    class Custom(BaseAction):
        def __init__(self) -> None:
            super().__init__("custom")

        def execute(self, ctx: ActionContext) -> None:
            pass

    registry.register("b", Custom)
    registry.register("c", lambda: Custom())
    with pytest.raises(ValueError):
        registry.register("a", report_pid)
    assert registry.ids() == ["a", "b", "c"] and "b" in registry and "zz" not in registry
    first, second = registry.get("a"), registry.get("a")
    assert first is not second and first.name == "report_pid"
    assert isinstance(registry.get("b"), Custom) and registry.get("b") is not registry.get("b")
    with pytest.raises(UnknownActionError, match="'zz'"):
        registry.get("zz")
    with pytest.raises(TypeError):
        registry.register("d", 42)  # type: ignore[arg-type]


def test_definitions_round_trip_through_json() -> None:
    import json

    defn = SubWorkflowDef(
        "wf",
        [StageDef("s", [ActionDef("a", "n", "d", ("t",), {"x": [1, 2]})], "S", "sd", ("st",))],
        name="W",
        description="wd",
        tags=("wt",),
        initial_store={"k": {"v": 1}},
    )
    again = SubWorkflowDef.from_dict(json.loads(json.dumps(defn.to_dict())))
    assert again == defn
    with pytest.raises(ValueError):
        SubWorkflowDef.from_dict({"stages": []})


PARENT_SCRIPT = """
import sys, time
from gostage import *

@action
def hang(ctx):
    while True:
        time.sleep(0.05)

if __name__ == "__main__":
    registry = ActionRegistry()
    registry.register("hang", hang)
    runner = Runner(logger=NullLogger(), registry=registry)
    runner.broker.register_handler("workflow_start", lambda t, p: print(p["pid"], flush=True))
    defn = SubWorkflowDef("c", [StageDef("s", [ActionDef("hang")])])
    runner.spawn_many([defn, defn, defn], max_workers=3)
"""


def test_children_exit_within_three_seconds_of_parent_sigkill(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = [int(parent.stdout.readline()) for _ in range(3)]
        parent.kill()
        parent.wait()
        killed_at = time.monotonic()
        for pid in pids:
            assert_gone(pid, within=max(0.1, killed_at + 3.0 - time.monotonic()))
    finally:
        parent.kill()
        parent.wait()


@action
def report_modules(ctx: ActionContext) -> None:
    import sys

    ctx.store.put("heavy", sorted(m for m in ("loguru", "psutil") if m in sys.modules))


def test_child_imports_neither_loguru_nor_psutil() -> None:
    result = runner_with(report_modules=report_modules).spawn(one_action("report_modules"))
    assert result.final_store["heavy"] == []


def test_import_gostage_loads_no_heavy_dependency() -> None:
    import subprocess
    import sys

    code = (
        "import sys, gostage; "
        "print(sorted(m for m in ('loguru', 'cloudpickle', 'psutil', 'multiprocessing') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


TRUSTED_SCRIPT = """
from gostage import *

class Point:
    def __init__(self, x):
        self.x = x

@action
def make_point(ctx):
    ctx.store.put("point", Point(3))

if __name__ == "__main__":
    registry = ActionRegistry()
    registry.register("make_point", make_point)
    runner = Runner(registry=registry, logger=NullLogger())
    defn = SubWorkflowDef("c", [StageDef("s", [ActionDef("make_point")])])
    try:
        runner.spawn(defn)
    except ChildSerializationError as exc:
        print("untrusted:", exc.key, "trust_child=True" in str(exc))
    value = runner.spawn(defn, trust_child=True).final_store["point"]
    print("trusted:", type(value).__name__, value.x)
"""


def test_trusted_child_returns_instances_of_classes_defined_in_main(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = tmp_path / "trusted.py"
    script.write_text(TRUSTED_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["untrusted: point True", "trusted: Point 3"]


def test_after_spawn_runs_as_each_child_ends() -> None:
    ended: list[tuple[str, float]] = []
    runner = runner_with(sleep_briefly=sleep_briefly, report_pid=report_pid)
    runner.use_spawn_middleware(
        SpawnMiddlewareFunc(after_spawn=lambda c, d, e: ended.append((d.id, time.monotonic())))
    )
    fast = SubWorkflowDef("fast", [StageDef("s", [ActionDef("report_pid")])])
    slow = SubWorkflowDef("slow", [StageDef("s", [ActionDef("sleep_briefly")])])
    runner.spawn_many([slow, fast], max_workers=2)
    assert [name for name, _ in ended] == ["fast", "slow"]


# -- the wire format: messages folded into the report frame -----------------------


def _channel_frames(max_frame: int, script: Any) -> list[dict[str, Any]]:
    """Run ``script(channel)`` against a real pipe; the frames the parent would decode."""
    from gostage._spawn import _child
    from gostage._spawn import _protocol as proto

    read_fd, write_fd = os.pipe()
    channel = _child.ChildChannel(write_fd, max_frame, False)
    try:
        script(channel)
    finally:
        channel.close()
        os.close(write_fd)
    data = b""
    while chunk := os.read(read_fd, 1 << 16):
        data += chunk
    os.close(read_fd)
    return list(proto.FrameDecoder(max_frame).feed(data))


def test_report_frame_carries_the_queued_messages_in_order() -> None:
    def script(channel: Any) -> None:
        channel.send("workflow_start", {"workflow_id": "w"})
        channel.send("store_put", {"key": "k", "value": [1, 2]})
        channel.send_plain("workflow_result", {"workflow_id": "w", "success": True})
        channel.report({"k": "r", "store": {"x": 1}})

    (frame,) = _channel_frames(1 << 20, script)  # one frame for the whole task
    assert frame["k"] == "r" and frame["store"] == {"x": 1}
    assert frame["m"] == [
        ["workflow_start", {"json": {"workflow_id": "w"}}],
        ["store_put", {"json": {"key": "k", "value": [1, 2]}}],
        ["workflow_result", {"json": {"workflow_id": "w", "success": True}}],
    ]


def test_messages_that_do_not_fit_the_report_frame_travel_before_it() -> None:
    def script(channel: Any) -> None:
        for i in range(3):
            channel.send("note", "x" * 600 + str(i))
        channel.report({"k": "r", "store": {}})

    frames = _channel_frames(1024, script)
    assert [f["k"] for f in frames][-1] == "r" and "m" not in frames[-1]
    sent = [m[1]["json"][-1] for f in frames[:-1] for m in f["m"]]
    assert sent == ["0", "1", "2"]


def test_a_report_over_the_frame_limit_still_delivers_the_messages_first() -> None:
    from gostage._spawn import _protocol as proto

    raised: list[BaseException] = []

    def script(channel: Any) -> None:
        channel.send("note", "before")
        try:
            channel.report({"k": "r", "store": {"big": "y" * 4096}})
        except proto.FrameTooLargeError as exc:
            raised.append(exc)

    frames = _channel_frames(1024, script)
    assert raised and "exceeds the 1024-byte limit" in str(raised[0])
    assert frames == [{"k": "m", "m": [["note", {"json": "before"}]]}]


def test_frame_decoder_reads_any_json_layout_and_rejects_the_rest() -> None:
    from gostage._spawn import _protocol as proto

    def frame(body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + body

    decoder = proto.FrameDecoder(1 << 20)
    data = frame(b' {"k": "m", "m": []} \n') + frame(b'{"k":"r","store":{}}')
    # Any chunking gives the same frames.
    got = [f for i in range(len(data)) for f in decoder.feed(data[i : i + 1])]
    assert got == [{"k": "m", "m": []}, {"k": "r", "store": {}}]
    for bad, needle in [
        (b'{"k":"r"} trailing', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'["k","r"]', "no valid kind"),
    ]:
        with pytest.raises(proto.FrameError, match=needle):
            list(proto.FrameDecoder(1 << 20).feed(frame(bad)))


def test_task_reader_returns_whole_tasks_from_any_chunking() -> None:
    from gostage._spawn import _protocol as proto

    tasks = [{"id": "a"}, {"id": "b", "big": "z" * 200_000}, {"id": "c", "nan": float("nan")}]
    data = b"".join(proto.encode_task(t) for t in tasks)
    read_fd, write_fd = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_fd, data), os.close(write_fd)))
    writer.start()
    reader = proto.TaskReader(read_fd)
    import json

    got = []
    while (body := reader.next()) is not None:
        got.append(json.loads(body))
    writer.join()
    os.close(read_fd)
    assert [t["id"] for t in got] == ["a", "b", "c"] and len(got[1]["big"]) == 200_000
    assert got[2]["nan"] != got[2]["nan"]  # params keep json.dumps's leniency


@action
def ttl_and_metadata(ctx: ActionContext) -> None:
    from gostage.store import Metadata

    ctx.store.put_with_ttl("token", "abc", 600)
    ctx.store.put_with_metadata("report", {"rows": 3}, Metadata(tags=["out"]))
    ctx.store.put("pair", (1, 2))
    ctx.store.put("plain", [1, {"a": None}])


def test_final_store_keeps_ttl_metadata_and_tagged_values() -> None:
    result = runner_with(ttl_and_metadata=ttl_and_metadata).spawn(one_action("ttl_and_metadata"))
    store = result.store
    assert store is not None
    assert result.final_store == {
        "token": "abc",
        "report": {"rows": 3},
        "pair": (1, 2),
        "plain": [1, {"a": None}],
    }
    ttl = store.get_ttl("token")
    assert ttl is not None and 500 < ttl <= 600
    assert store.has_tag("report", "out") and store.get_ttl("plain") is None


def test_folded_messages_reach_handlers_in_order_before_each_outcome() -> None:
    # Short tasks send their messages inside the report frame: they must still be
    # handled in order, and before the task's outcome is known. (The next task's
    # messages may come before that outcome's after_spawn: answers read together
    # are settled together.)
    events: list[tuple[str, Any]] = []
    runner = runner_with(chatty=chatty)
    runner.use_spawn_middleware(
        SpawnMiddlewareFunc(
            on_child_message=lambda t, p: events.append((t, p)),
            after_spawn=lambda c, d, e: events.append(("ended", d.id)),
        )
    )
    defs = [SubWorkflowDef(f"c{i}", [StageDef("s", [ActionDef("chatty")])]) for i in range(8)]
    one_child = (
        ["workflow_start"]
        + ["log", "store_put", "progress"] * 5
        + ["store_delete", "workflow_result"]
    )
    for isolation in ("process", "worker"):
        events.clear()
        with runner:
            runner.spawn_many(defs, max_workers=1, isolation=isolation)  # type: ignore[arg-type]
        assert [kind for kind, _ in events if kind != "ended"] == one_child * 8
        progress = [p["i"] for kind, p in events if kind == "progress"]
        assert progress == list(range(5)) * 8
        ends = [p for kind, p in events if kind == "ended"]
        assert ends == [d.id for d in defs]
        for defn in defs:
            result_at = next(
                i
                for i, (kind, p) in enumerate(events)
                if kind == "workflow_result" and p["workflow_id"] == defn.id
            )
            assert events.index(("ended", defn.id)) > result_at


def test_definition_replaced_by_before_spawn_is_checked_before_any_process() -> None:
    runner = runner_with(report_pid=report_pid)
    runner.use_spawn_middleware(
        SpawnMiddlewareFunc(before_spawn=lambda c, d: (c, one_action("not_registered")))
    )
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(UnknownActionError, match="'not_registered'"):
        runner.spawn(one_action("report_pid"))
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before
