"""Execution semantics of the Runner (design.md §2)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from gostage import (
    ActionContext,
    ActionError,
    BaseAction,
    NullLogger,
    RunContext,
    Runner,
    RunStatus,
    Stage,
    Workflow,
    WorkflowCancelled,
    WorkflowError,
    WorkflowTimeout,
    action,
)
from gostage._logging import Logger
from gostage._middleware import RunnerFunc, StageFunc


def make_runner(**kwargs: Any) -> Runner:
    return Runner(logger=NullLogger(), **kwargs)


def recorder(log: list[str], name: str, **kwargs: Any) -> BaseAction:
    @action(name=name, **kwargs)
    def fn(ctx: ActionContext) -> None:
        log.append(name)

    return fn


def workflow_of(*stages: Stage, id: str = "wf") -> Workflow:
    wf = Workflow(id)
    for stage in stages:
        wf.add_stage(stage)
    return wf


def stage_of(id: str, *actions: BaseAction, **kwargs: Any) -> Stage:
    stage = Stage(id, **kwargs)
    for a in actions:
        stage.add_action(a)
    return stage


# -- ordering and middleware nesting -------------------------------------------


def test_middleware_nesting_across_two_stages_matches_design() -> None:
    log: list[str] = []

    def runner_mw(tag: str) -> Any:
        def mw(next_: RunnerFunc) -> RunnerFunc:
            def run(ctx: RunContext, wf: Workflow, logger: Logger) -> None:
                log.append(f"{tag}>")
                next_(ctx, wf, logger)
                log.append(f"<{tag}")

            return run

        return mw

    def stage_level_mw(tag: str) -> Any:
        def mw(next_: StageFunc) -> StageFunc:
            def run(ctx: RunContext, stage: Stage, wf: Workflow, logger: Logger) -> None:
                log.append(f"{tag}:{stage.id}>")
                next_(ctx, stage, wf, logger)
                log.append(f"<{tag}:{stage.id}")

            return run

        return mw

    s1 = stage_of("s1", recorder(log, "a1"), recorder(log, "a2"))
    s2 = stage_of("s2", recorder(log, "b1"))
    s1.use(stage_level_mw("S1"), stage_level_mw("S2"))
    s2.use(stage_level_mw("S1"))
    wf = workflow_of(s1, s2)
    wf.use(stage_level_mw("W1"), stage_level_mw("W2"))
    runner = make_runner(middleware=[runner_mw("R1")])
    runner.use(runner_mw("R2"))

    runner.execute(wf)

    assert log == [
        "R1>", "R2>",
        "W1:s1>", "W2:s1>", "S1:s1>", "S2:s1>", "a1", "a2", "<S2:s1", "<S1:s1", "<W2:s1", "<W1:s1",
        "W1:s2>", "W2:s2>", "S1:s2>", "b1", "<S1:s2", "<W2:s2", "<W1:s2",
        "<R2", "<R1",
    ]  # fmt: skip


@pytest.mark.parametrize("level", ["runner", "workflow", "stage"])
def test_middleware_that_raises_stops_the_run_with_that_exception(level: str) -> None:
    log: list[str] = []
    boom = RuntimeError("middleware exploded")

    def bad(next_: Any) -> Any:
        def run(*args: Any) -> None:
            raise boom

        return run

    s1 = stage_of("s1", recorder(log, "a"))
    wf = workflow_of(s1, stage_of("s2", recorder(log, "b")))
    runner = make_runner()
    {"runner": runner.use, "workflow": wf.use, "stage": s1.use}[level](bad)

    with pytest.raises(RuntimeError) as info:
        runner.execute(wf)
    assert info.value is boom
    assert log == []


def test_stages_and_actions_run_in_order_and_result_reports_store() -> None:
    log: list[str] = []

    @action
    def write(ctx: ActionContext) -> None:
        ctx.store.put("answer", 42)

    wf = workflow_of(
        stage_of("one", recorder(log, "a"), recorder(log, "b")),
        stage_of("two", recorder(log, "c"), write),
    )
    result = make_runner().execute(wf)
    assert log == ["a", "b", "c"]
    assert result.success and result.error is None
    assert result.status is RunStatus.COMPLETED
    assert result.workflow_id == "wf"
    assert result.final_store == {"answer": 42}
    assert len(result.run_id) == 32 and result.duration >= 0


def test_each_run_gets_its_own_run_id() -> None:
    wf = workflow_of(stage_of("s", recorder([], "a")))
    runner = make_runner()
    assert runner.execute(wf).run_id != runner.execute(wf).run_id


def test_workflow_without_stages_is_an_error_and_empty_stage_is_a_no_op() -> None:
    with pytest.raises(WorkflowError, match="no stages"):
        make_runner().execute(Workflow("empty"))
    log: list[str] = []
    wf = workflow_of(Stage("nothing"), stage_of("s", recorder(log, "a")))
    assert make_runner().execute(wf).success
    assert log == ["a"]


# -- failure -------------------------------------------------------------------


def test_failing_action_stops_stage_and_workflow_and_keeps_store() -> None:
    ran: list[str] = []

    @action
    def ok(ctx: ActionContext) -> None:
        ran.append("ok")
        ctx.store.put("written_by_ok", "yes")

    original = ValueError("disk is full")

    @action
    def fail(ctx: ActionContext) -> None:
        ran.append("fail")
        raise original

    @action
    def never(ctx: ActionContext) -> None:
        ran.append("never")

    wf = workflow_of(stage_of("main", ok, fail, never), stage_of("later", recorder(ran, "later")))
    with pytest.raises(ActionError) as info:
        make_runner().execute(wf)

    err = info.value
    assert ran == ["ok", "fail"]
    assert "'main'" in str(err) and "'fail'" in str(err) and "disk is full" in str(err)
    assert err.__cause__ is original
    assert (err.workflow_id, err.stage_id, err.action_name) == ("wf", "main", "fail")
    assert wf.store.get("written_by_ok") == "yes"


def test_execute_all_raises_or_collects_failures() -> None:
    @action
    def fail(ctx: ActionContext) -> None:
        raise RuntimeError("nope")

    log: list[str] = []
    good = workflow_of(stage_of("s", recorder(log, "g")), id="good")
    bad = workflow_of(stage_of("s", fail), id="bad")
    runner = make_runner()

    with pytest.raises(ActionError):
        runner.execute_all([good, bad, good])
    assert log == ["g"]

    results = runner.execute_all([good, bad, good], ignore_errors=True)
    assert [r.workflow_id for r in results] == ["good", "bad", "good"]
    assert [r.success for r in results] == [True, False, True]
    assert results[1].status is RunStatus.FAILED
    assert isinstance(results[1].error, ActionError)
    assert log == ["g", "g", "g"]


# -- dynamic actions and stages ---------------------------------------------


def test_thousand_dynamic_actions_run_in_order_right_after_their_parent() -> None:
    log: list[str] = []

    @action
    def spawner(ctx: ActionContext) -> None:
        log.append("spawner")
        for i in range(1000):
            ctx.add_dynamic_action(recorder(log, f"d{i}"))

    wf = workflow_of(
        stage_of("s", spawner, recorder(log, "after")), stage_of("t", recorder(log, "t"))
    )
    make_runner().execute(wf)
    assert log == ["spawner", *[f"d{i}" for i in range(1000)], "after", "t"]
    # The definition is untouched: dynamic actions belong to the run.
    assert [a.name for a in wf.get_stage("s").actions] == ["spawner", "after"]


def test_three_level_cascade_runs_level_by_level() -> None:
    log: list[str] = []

    def level(n: int) -> BaseAction:
        @action(name=f"level-{n}")
        def fn(ctx: ActionContext) -> None:
            log.append(f"level-{n}")
            if n < 3:
                ctx.add_dynamic_action(level(n + 1))

        return fn

    @action
    def root(ctx: ActionContext) -> None:
        log.append("root")
        ctx.add_dynamic_action(level(1))

    make_runner().execute(workflow_of(stage_of("s", root, recorder(log, "tail"))))
    assert log == ["root", "level-1", "level-2", "level-3", "tail"]


def test_dynamic_stages_from_two_actions_both_run_after_current_stage() -> None:
    log: list[str] = []

    def adder(name: str, stage_id: str) -> BaseAction:
        @action(name=name)
        def fn(ctx: ActionContext) -> None:
            log.append(name)
            ctx.add_dynamic_stage(stage_of(stage_id, recorder(log, f"in-{stage_id}")))

        return fn

    wf = workflow_of(
        stage_of("first", adder("x", "dyn-x"), adder("y", "dyn-y")),
        stage_of("last", recorder(log, "in-last")),
    )
    make_runner().execute(wf)
    assert log == ["x", "y", "in-dyn-x", "in-dyn-y", "in-last"]
    assert [s.id for s in wf.stages] == ["first", "last"]


def test_dynamic_stage_with_duplicate_id_is_rejected() -> None:
    @action
    def dup(ctx: ActionContext) -> None:
        ctx.add_dynamic_stage(Stage("s"))

    with pytest.raises(ActionError) as info:
        make_runner().execute(workflow_of(stage_of("s", dup)))
    assert isinstance(info.value.__cause__, ValueError)


def test_retrying_a_run_does_not_replay_dynamic_actions_of_the_failed_try() -> None:
    log: list[str] = []
    tries = {"n": 0}

    @action
    def flaky(ctx: ActionContext) -> None:
        tries["n"] += 1
        ctx.add_dynamic_action(recorder(log, f"dyn{tries['n']}"))
        if tries["n"] == 1:
            raise RuntimeError("first try fails")

    from gostage import retry_middleware

    make_runner(middleware=[retry_middleware(2, 0)]).execute(workflow_of(stage_of("s", flaky)))
    assert log == ["dyn2"]


# -- enable / disable ----------------------------------------------------------


def test_disabling_a_later_stage_skips_it_and_reenabling_runs_it() -> None:
    log: list[str] = []

    @action
    def disable_third(ctx: ActionContext) -> None:
        ctx.disable_stage("third")
        assert not ctx.is_stage_enabled("third")

    wf = workflow_of(
        stage_of("first", disable_third),
        stage_of("second", recorder(log, "second")),
        stage_of("third", recorder(log, "third")),
    )
    runner = make_runner()
    runner.execute(wf)
    assert log == ["second"]
    assert wf.is_stage_enabled("third") is False  # the run's toggles stay on the workflow

    @action
    def enable_third(ctx: ActionContext) -> None:
        ctx.enable_stage("third")

    log.clear()
    wf2 = workflow_of(
        stage_of("first", disable_third),
        stage_of("second", enable_third),
        stage_of("third", recorder(log, "third")),
    )
    runner.execute(wf2)
    assert log == ["third"]
    assert wf2.is_stage_enabled("third")


def test_disable_actions_by_name_and_tag_across_stages(logger: Any) -> None:
    log: list[str] = []

    @action
    def toggler(ctx: ActionContext) -> None:
        ctx.disable_action("plain")
        assert ctx.disable_actions_by_tag("slow") == 2
        assert not ctx.is_action_enabled("slow-1")
        assert ctx.enable_actions_by_tag("keep") == 1

    wf = workflow_of(
        stage_of("s1", toggler, recorder(log, "plain"), recorder(log, "slow-1", tags=["slow"])),
        stage_of(
            "s2",
            recorder(log, "slow-2", tags=["slow", "keep"]),
            recorder(log, "fast"),
        ),
    )
    Runner(logger=logger).execute(wf)
    assert log == ["slow-2", "fast"]
    skipped = [m for m in logger.messages("info") if m.startswith("skipping")]
    assert skipped == [
        "skipping disabled action 'plain' in stage 's1'",
        "skipping disabled action 'slow-1' in stage 's1'",
    ]


def test_stage_toggles_by_tag_and_skip_is_logged(logger: Any) -> None:
    log: list[str] = []

    @action
    def toggler(ctx: ActionContext) -> None:
        assert ctx.disable_stages_by_tag("optional") == 2
        assert ctx.enable_stages_by_tag("needed") == 1

    wf = workflow_of(
        stage_of("s1", toggler),
        stage_of("s2", recorder(log, "a"), tags=["optional"]),
        stage_of("s3", recorder(log, "b"), tags=["optional", "needed"]),
    )
    Runner(logger=logger).execute(wf)
    assert log == ["b"]
    assert "skipping disabled stage 's2' of workflow 'wf'" in logger.messages("info")


def test_workflow_middleware_sees_disabled_stage() -> None:
    seen: list[tuple[str, bool]] = []

    def observer(next_: StageFunc) -> StageFunc:
        def run(ctx: RunContext, stage: Stage, wf: Workflow, logger: Logger) -> None:
            seen.append((stage.id, wf.is_stage_enabled(stage.id)))
            next_(ctx, stage, wf, logger)

        return run

    wf = workflow_of(stage_of("a", recorder([], "x")), stage_of("b", recorder([], "y")))
    wf.disable_stage("b")
    wf.use(observer)
    make_runner().execute(wf)
    assert seen == [("a", True), ("b", False)]


def test_toggles_with_unknown_names_raise() -> None:
    @action
    def typo(ctx: ActionContext) -> None:
        ctx.disable_stage("no-such-stage")

    with pytest.raises(ActionError, match="no-such-stage"):
        make_runner().execute(workflow_of(stage_of("s", typo)))
    wf = workflow_of(stage_of("s", recorder([], "a")))
    with pytest.raises(KeyError):
        wf.disable_stage("nope")
    with pytest.raises(KeyError):
        wf.disable_action("nope")


def test_toggles_reach_dynamic_components() -> None:
    log: list[str] = []

    @action
    def adder(ctx: ActionContext) -> None:
        ctx.add_dynamic_stage(stage_of("dyn", recorder(log, "dyn-action")))
        ctx.add_dynamic_action(recorder(log, "dyn-sibling"))
        ctx.disable_stage("dyn")

    wf = workflow_of(stage_of("s", adder))
    make_runner().execute(wf)
    assert log == ["dyn-sibling"]


# -- finders -------------------------------------------------------------------


class Loader(BaseAction):
    def execute(self, ctx: ActionContext) -> None:
        pass


def test_finders_cover_the_whole_run_in_order() -> None:
    found: dict[str, Any] = {}

    @action(name="Inspect", description="looks around")
    def inspect(ctx: ActionContext) -> None:
        ctx.add_dynamic_action(Loader("load-extra", description="Reads a FILE", tags=["io"]))
        found["tag"] = [a.name for a in ctx.find_actions_by_tag("io")]
        found["tags"] = [a.name for a in ctx.find_actions_by_tags(["io", "db"])]
        found["any"] = [a.name for a in ctx.find_actions_by_any_tag(["db", "net"])]
        found["name"] = [a.name for a in ctx.find_actions_by_name("LOAD")]
        found["desc"] = [a.name for a in ctx.find_actions_by_description("file")]
        found["type"] = [a.name for a in ctx.find_actions_by_type(Loader)]
        found["pred"] = [a.name for a in ctx.filter_actions(lambda a: "-" not in a.name)]
        found["stage_tag"] = [s.id for s in ctx.find_stages_by_tag("late")]
        found["stage_desc"] = [s.id for s in ctx.find_stages_by_description("CLEAN")]
        found["stage_pred"] = [s.id for s in ctx.filter_stages(lambda s: s.id.startswith("s"))]
        stage = ctx.find_stage("s2")
        found["find_stage"] = stage.id if stage else None
        found["missing_stage"] = ctx.find_stage("zzz")
        found["position"] = (ctx.action_index, ctx.is_last_action, ctx.stage.id)

    wf = workflow_of(
        stage_of(
            "s1",
            Loader("load-db", description="reads the database", tags=["io", "db"]),
            inspect,
        ),
        stage_of(
            "s2",
            Loader("load-web", tags=["net"]),
            Loader("sub", tags=["io"]),
            description="Cleanup things",
            tags=["late"],
        ),
    )
    make_runner().execute(wf)
    assert found == {
        "tag": ["load-db", "load-extra", "sub"],
        "tags": ["load-db"],
        "any": ["load-db", "load-web"],
        "name": ["load-db", "load-extra", "load-web"],
        "desc": ["load-extra"],
        "type": ["load-db", "load-extra", "load-web", "sub"],
        "pred": ["Inspect", "sub"],
        "stage_tag": ["s2"],
        "stage_desc": ["s2"],
        "stage_pred": ["s1", "s2"],
        "find_stage": "s2",
        "missing_stage": None,
        "position": (1, False, "s1"),
    }


def test_is_last_action() -> None:
    flags: list[bool] = []

    @action
    def a(ctx: ActionContext) -> None:
        flags.append(ctx.is_last_action)

    @action
    def b(ctx: ActionContext) -> None:
        flags.append(ctx.is_last_action)

    make_runner().execute(workflow_of(stage_of("s", a, b)))
    assert flags == [False, True]


# -- initial data ----------------------------------------------------------------


def test_stage_initial_data_is_copied_into_store_and_wins() -> None:
    seen: list[Any] = []

    @action
    def read(ctx: ActionContext) -> None:
        seen.append(ctx.store.get("mode"))

    wf = workflow_of(stage_of("s1", read), stage_of("s2", read))
    wf.store.put("mode", "from-store")
    wf.get_stage("s2").set_initial_data("mode", "from-stage")
    make_runner().execute(wf)
    assert seen == ["from-store", "from-stage"]


# -- timeout and cancel --------------------------------------------------------


def test_cancel_is_checked_between_actions() -> None:
    cancel = threading.Event()
    log: list[str] = []

    @action
    def cancel_now(ctx: ActionContext) -> None:
        log.append("cancel")
        cancel.set()
        assert ctx.cancelled

    wf = workflow_of(stage_of("s", cancel_now, recorder(log, "never")))
    with pytest.raises(WorkflowCancelled, match="before action 'never'"):
        make_runner().execute(wf, cancel=cancel)
    assert log == ["cancel"]


def test_timeout_expires_between_actions(monkeypatch: pytest.MonkeyPatch) -> None:
    import gostage._context as context_module

    now = [1000.0]
    monkeypatch.setattr(context_module.time, "monotonic", lambda: now[0])
    log: list[str] = []

    @action
    def slow(ctx: ActionContext) -> None:
        log.append("slow")
        assert ctx.deadline == pytest.approx(1005.0)
        now[0] += 10  # "takes" ten seconds without cooperating

    wf = workflow_of(stage_of("s", slow, recorder(log, "never")))
    with pytest.raises(WorkflowTimeout) as info:
        make_runner().execute(wf, timeout=5)
    assert log == ["slow"]
    assert isinstance(info.value, TimeoutError)
    assert "before action 'never'" in str(info.value)


def test_context_values_flow_down_from_middleware() -> None:
    seen: list[Any] = []

    def inject(next_: RunnerFunc) -> RunnerFunc:
        def run(ctx: RunContext, wf: Workflow, logger: Logger) -> None:
            next_(ctx.with_value("tenant", "acme"), wf, logger)

        return run

    def read(next_: StageFunc) -> StageFunc:
        def run(ctx: RunContext, stage: Stage, wf: Workflow, logger: Logger) -> None:
            seen.append(ctx.value("tenant"))
            seen.append(ctx.value("missing", "default"))
            next_(ctx, stage, wf, logger)

        return run

    wf = workflow_of(stage_of("s", recorder([], "a")).use(read))
    make_runner(middleware=[inject]).execute(wf)
    assert seen == ["acme", "default"]


def test_failed_run_keeps_its_run_id_and_unpicklable_values_do_not_break_results() -> None:
    lock = threading.Lock()

    @action
    def keep_lock(ctx: ActionContext) -> None:
        ctx.store.put("lock", lock)

    @action
    def fail(ctx: ActionContext) -> None:
        raise RuntimeError("late failure")

    ok = make_runner().execute(workflow_of(stage_of("s", keep_lock)))
    assert ok.final_store["lock"] is lock

    with pytest.raises(ActionError) as info:
        make_runner().execute(workflow_of(stage_of("s", keep_lock, fail)))
    assert info.value.run_id is not None and len(info.value.run_id) == 32

    (result,) = make_runner().execute_all(
        [workflow_of(stage_of("s", keep_lock, fail))], ignore_errors=True
    )
    assert not result.success and result.final_store["lock"] is lock
    assert result.error is not None and result.run_id == getattr(result.error, "run_id", None)
