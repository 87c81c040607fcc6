"""The ready-made middleware (design.md §4)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from gostage import (
    ActionContext,
    ActionError,
    NullLogger,
    Runner,
    Stage,
    Workflow,
    WorkflowCancelled,
    WorkflowTimeout,
    _middleware,
    action,
    error_handling_middleware,
    logging_middleware,
    retry_middleware,
    stage_logging_middleware,
    store_injection_middleware,
    time_limit_middleware,
    timing_middleware,
)


def one_stage(*actions: Any, id: str = "wf") -> Workflow:
    stage = Stage("s")
    for a in actions:
        stage.add_action(a)
    return Workflow(id).add_stage(stage)


def flaky(failures: int, calls: list[int], exc_type: type[Exception] = RuntimeError) -> Any:
    @action
    def flaky_action(ctx: ActionContext) -> None:
        calls.append(1)
        if len(calls) <= failures:
            raise exc_type(f"failure #{len(calls)}")
        ctx.store.put("done", True)

    return flaky_action


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record retry waits instead of sleeping."""
    waits: list[float] = []
    monkeypatch.setattr(_middleware.time, "sleep", waits.append)
    return waits


# -- retry -----------------------------------------------------------------------


def test_retry_succeeds_on_third_attempt(sleeps: list[float], logger: Any) -> None:
    calls: list[int] = []
    runner = Runner([retry_middleware(3, delay=0.5, backoff=2.0)], logger=logger)
    result = runner.execute(one_stage(flaky(2, calls)))
    assert result.success and result.final_store == {"done": True}
    assert len(calls) == 3
    assert sleeps == [0.5, 1.0]
    assert len(logger.messages("warning")) == 2
    assert "attempt 1/3 failed" in logger.messages("warning")[0]


def test_retry_gives_up_after_attempts_and_raises_last_error(sleeps: list[float]) -> None:
    calls: list[int] = []
    runner = Runner(
        [retry_middleware(3, delay=1.0, backoff=3.0, max_delay=2.0)], logger=NullLogger()
    )
    with pytest.raises(ActionError, match="failure #3"):
        runner.execute(one_stage(flaky(5, calls)))
    assert len(calls) == 3
    assert sleeps == [1.0, 2.0]  # 3.0 capped at max_delay


def test_retry_only_retries_matching_errors_anywhere_in_the_cause_chain(
    sleeps: list[float],
) -> None:
    calls: list[int] = []
    runner = Runner([retry_middleware(3, 0, retry_on=(ConnectionError,))], logger=NullLogger())
    assert runner.execute(one_stage(flaky(2, calls, ConnectionError))).success
    assert len(calls) == 3

    calls.clear()
    with pytest.raises(ActionError):
        runner.execute(one_stage(flaky(2, calls, ValueError)))
    assert len(calls) == 1


def test_retry_jitter_stays_within_half_to_one_and_a_half(sleeps: list[float]) -> None:
    calls: list[int] = []
    runner = Runner([retry_middleware(6, delay=1.0, backoff=1.0, jitter=True)], logger=NullLogger())
    runner.execute(one_stage(flaky(5, calls)))
    assert len(sleeps) == 5
    assert all(0.5 <= w < 1.5 for w in sleeps)
    assert len(set(sleeps)) > 1


def test_retry_does_not_retry_cancellation() -> None:
    cancel = threading.Event()
    calls: list[int] = []

    @action
    def cancel_it(ctx: ActionContext) -> None:
        calls.append(1)
        cancel.set()

    wf = one_stage(cancel_it, flaky(0, []))
    runner = Runner([retry_middleware(5, 0)], logger=NullLogger())
    with pytest.raises(WorkflowCancelled):
        runner.execute(wf, cancel=cancel)
    assert calls == [1]


def test_retry_wait_is_cut_short_by_cancel() -> None:
    cancel = threading.Event()
    calls: list[int] = []
    threading.Timer(0.05, cancel.set).start()
    runner = Runner([retry_middleware(2, delay=30)], logger=NullLogger())
    start = time.monotonic()
    with pytest.raises(WorkflowCancelled):
        runner.execute(one_stage(flaky(1, calls)), cancel=cancel)
    assert time.monotonic() - start < 10  # far below the 30 s wait it replaced
    assert calls == [1]


def test_retry_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        retry_middleware(0, 1)
    with pytest.raises(ValueError):
        retry_middleware(2, -1)


# -- time limit ------------------------------------------------------------------


def test_time_limit_stops_cooperative_action_early() -> None:
    @action
    def slow_but_polite(ctx: ActionContext) -> None:
        end = time.monotonic() + 0.5
        while time.monotonic() < end and not ctx.cancelled:
            time.sleep(0.005)

    runner = Runner([time_limit_middleware(0.1)], logger=NullLogger())
    start = time.monotonic()
    with pytest.raises(WorkflowTimeout):
        runner.execute(one_stage(slow_but_polite))
    assert time.monotonic() - start < 0.4


def test_time_limit_checked_between_uncooperative_actions() -> None:
    ran: list[str] = []

    @action
    def sleeper(ctx: ActionContext) -> None:
        ran.append("sleeper")
        time.sleep(0.15)

    @action
    def next_one(ctx: ActionContext) -> None:
        ran.append("next")

    runner = Runner([time_limit_middleware(0.05)], logger=NullLogger())
    with pytest.raises(WorkflowTimeout, match="before action 'next_one'"):
        runner.execute(one_stage(sleeper, next_one))
    assert ran == ["sleeper"]


def test_time_limit_sets_deadline_seen_by_actions() -> None:
    seen: list[float | None] = []

    @action
    def look(ctx: ActionContext) -> None:
        seen.append(ctx.deadline)

    before = time.monotonic()
    Runner([time_limit_middleware(30)], logger=NullLogger()).execute(one_stage(look))
    assert seen[0] is not None and before + 29 < seen[0] <= time.monotonic() + 30


def test_time_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        time_limit_middleware(0)


# -- error handling --------------------------------------------------------------


def test_error_handling_swallows_matching_errors_from_the_cause_chain(logger: Any) -> None:
    @action
    def minor(ctx: ActionContext) -> None:
        ctx.store.put("before", 1)
        raise RuntimeError("a non-critical hiccup")

    result = Runner([error_handling_middleware()], logger=logger).execute(one_stage(minor))
    assert result.success and result.error is None
    assert result.final_store == {"before": 1}
    assert any("non-critical hiccup" in m for m in logger.messages("warning"))


def test_error_handling_reraises_other_errors() -> None:
    @action
    def major(ctx: ActionContext) -> None:
        raise RuntimeError("critical failure")

    runner = Runner(
        [error_handling_middleware(ignore=("non-critical", "flaky"))], logger=NullLogger()
    )
    with pytest.raises(ActionError, match="critical failure"):
        runner.execute(one_stage(major))


# -- logging, timing, injection ------------------------------------------------


def test_logging_middleware_logs_start_end_and_failure(logger: Any) -> None:
    @action
    def ok(ctx: ActionContext) -> None:
        pass

    runner = Runner([logging_middleware()], logger=logger)
    runner.execute(one_stage(ok))
    assert logger.messages("info")[0] == "workflow 'wf' started"
    assert logger.messages("info")[1].startswith("workflow 'wf' completed in ")

    @action
    def bad(ctx: ActionContext) -> None:
        raise ValueError("bad input")

    with pytest.raises(ActionError):
        runner.execute(one_stage(bad))
    assert "bad input" in logger.messages("error")[0]


def test_timing_middleware_reports_duration_even_on_failure(logger: Any) -> None:
    timings: list[tuple[str, float]] = []

    @action
    def nap(ctx: ActionContext) -> None:
        time.sleep(0.02)

    runner = Runner([timing_middleware(lambda wid, s: timings.append((wid, s)))], logger=logger)
    runner.execute(one_stage(nap))
    assert timings[0][0] == "wf" and timings[0][1] >= 0.02
    assert logger.messages("info")[0].startswith("workflow 'wf' took ")

    @action
    def bad(ctx: ActionContext) -> None:
        raise ValueError("x")

    with pytest.raises(ActionError):
        runner.execute(one_stage(bad))
    assert len(timings) == 2


def test_store_injection_puts_values_before_the_run() -> None:
    seen: list[Any] = []

    @action
    def read(ctx: ActionContext) -> None:
        seen.append(ctx.store.get("config"))

    runner = Runner([store_injection_middleware({"config": {"debug": True}})], logger=NullLogger())
    runner.execute(one_stage(read))
    assert seen == [{"debug": True}]


def test_stage_logging_middleware(logger: Any) -> None:
    @action
    def ok(ctx: ActionContext) -> None:
        pass

    wf = one_stage(ok)
    wf.get_stage("s").use(stage_logging_middleware())
    Runner(logger=logger).execute(wf)
    assert logger.messages("info")[0] == "stage 's' of workflow 'wf' started"
    assert logger.messages("info")[1].startswith("stage 's' of workflow 'wf' completed in ")
