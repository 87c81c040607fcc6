"""Middleware types at the three levels, and the ready-made middleware.

Every level has the same shape: a middleware takes the next function and returns
a function with the same signature, so it can act before, after or instead of the
call, and derive a new :class:`RunContext` for what runs inside it::

    runner middleware     (ctx, workflow, logger)          around the whole run
    workflow middleware   (ctx, stage, workflow, logger)   around each stage
    stage middleware      (ctx, stage, workflow, logger)   around all actions of one stage

At every level the first middleware registered is the outermost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gostage._context import RunContext
from gostage._exceptions import WorkflowCancelled
from gostage._logging import Logger
from gostage._model import Stage, Workflow

__all__ = [
    "Middleware",
    "RunnerFunc",
    "StageFunc",
    "StageMiddleware",
    "WorkflowMiddleware",
    "error_handling_middleware",
    "logging_middleware",
    "retry_middleware",
    "stage_logging_middleware",
    "store_injection_middleware",
    "time_limit_middleware",
    "timing_middleware",
]

RunnerFunc = Callable[[RunContext, Workflow, Logger], None]
"""Runs a whole workflow: ``fn(ctx, workflow, logger)``."""

Middleware = Callable[[RunnerFunc], RunnerFunc]
"""Runner-level middleware: wraps the whole run."""

StageFunc = Callable[[RunContext, Stage, Workflow, Logger], None]
"""Runs one stage: ``fn(ctx, stage, workflow, logger)``."""

WorkflowMiddleware = Callable[[StageFunc], StageFunc]
"""Workflow-level middleware: wraps each stage of the workflow."""

StageMiddleware = Callable[[StageFunc], StageFunc]
"""Stage-level middleware: wraps all actions of one stage."""


def compose(middleware: Iterable[Callable[[Any], Any]], inner: Any) -> Any:
    """Wrap ``inner`` so that the first of ``middleware`` ends up outermost."""
    fn = inner
    for mw in reversed(tuple(middleware)):
        fn = mw(fn)
    return fn


def _exception_chain(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and its ``__cause__`` chain (guarding against cycles)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def logging_middleware() -> Middleware:
    """Log the start, the end (with its duration) and the failure of each run."""

    def middleware(next_: RunnerFunc) -> RunnerFunc:
        def run(ctx: RunContext, workflow: Workflow, logger: Logger) -> None:
            logger.info("workflow %r started", workflow.id)
            start = time.perf_counter()
            try:
                next_(ctx, workflow, logger)
            except Exception as exc:
                logger.error(
                    "workflow %r failed after %.3f s: %s",
                    workflow.id,
                    time.perf_counter() - start,
                    exc,
                )
                raise
            logger.info("workflow %r completed in %.3f s", workflow.id, time.perf_counter() - start)

        return run

    return middleware


def timing_middleware(
    on_timing: Callable[[str, float], None] | None = None,
) -> Middleware:
    """Measure each run's wall time, failed runs included.

    The time is logged at info level and, if given, passed to
    ``on_timing(workflow_id, seconds)``.
    """

    def middleware(next_: RunnerFunc) -> RunnerFunc:
        def run(ctx: RunContext, workflow: Workflow, logger: Logger) -> None:
            start = time.perf_counter()
            try:
                next_(ctx, workflow, logger)
            finally:
                elapsed = time.perf_counter() - start
                logger.info("workflow %r took %.6f s", workflow.id, elapsed)
                if on_timing is not None:
                    on_timing(workflow.id, elapsed)

        return run

    return middleware


def time_limit_middleware(seconds: float) -> Middleware:
    """Give everything inside a deadline ``seconds`` from the start of the run.

    The deadline is checked between actions (:class:`~gostage.WorkflowTimeout`),
    and long actions see it as ``ctx.deadline`` / ``ctx.cancelled``.
    """
    if seconds <= 0:
        raise ValueError(f"time limit must be positive, got {seconds!r}")

    def middleware(next_: RunnerFunc) -> RunnerFunc:
        def run(ctx: RunContext, workflow: Workflow, logger: Logger) -> None:
            next_(ctx.with_timeout(seconds), workflow, logger)

        return run

    return middleware


def retry_middleware(
    attempts: int,
    delay: float,
    backoff: float = 2.0,
    max_delay: float | None = None,
    jitter: bool = False,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> Middleware:
    """Run the whole workflow up to ``attempts`` times in total.

    After failed try ``n`` (from 1) it waits ``delay * backoff ** (n - 1)`` seconds,
    capped at ``max_delay``; with ``jitter`` the wait is scaled by a random factor in
    [0.5, 1.5) so that many clients do not retry in lockstep. An error is retried
    when it, or any exception in its ``__cause__`` chain, is an instance of
    ``retry_on`` (so ``retry_on=(ConnectionError,)`` matches an action's error).
    Cancellation is never retried, and no retry starts once the run is cancelled
    or past its deadline. Every try sees the store the previous one left.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts!r}")
    if delay < 0 or backoff < 1:
        raise ValueError("delay must be >= 0 and backoff >= 1")

    def wait_for(n: int) -> float:
        wait = delay * backoff ** (n - 1)
        if jitter:
            import random

            wait *= random.uniform(0.5, 1.5)
        return wait if max_delay is None else min(wait, max_delay)

    def middleware(next_: RunnerFunc) -> RunnerFunc:
        def run(ctx: RunContext, workflow: Workflow, logger: Logger) -> None:
            for n in range(1, attempts + 1):
                try:
                    next_(ctx, workflow, logger)
                    return
                except WorkflowCancelled:
                    raise
                except Exception as exc:
                    retryable = any(isinstance(e, retry_on) for e in _exception_chain(exc))
                    if not retryable or n == attempts or ctx.cancelled:
                        raise
                    wait = wait_for(n)
                    logger.warning(
                        "workflow %r attempt %d/%d failed (%s); retrying in %.3f s",
                        workflow.id,
                        n,
                        attempts,
                        exc,
                        wait,
                    )
                    _sleep(ctx, wait)

        return run

    return middleware


def _sleep(ctx: RunContext, seconds: float) -> None:
    """Sleep, but wake up early when the run is cancelled or reaches its deadline."""
    remaining = ctx.remaining()
    if remaining is not None:
        seconds = max(0.0, min(seconds, remaining))
    wait = getattr(ctx.cancel, "wait", None)
    if callable(wait):
        wait(seconds)
    else:
        time.sleep(seconds)
    ctx.check("while waiting to retry")


def error_handling_middleware(ignore: Iterable[str] = ("non-critical",)) -> Middleware:
    """Swallow errors whose message contains one of ``ignore``.

    Each pattern is a plain substring, tried against the error's message and the
    message of every exception in its ``__cause__`` chain. A swallowed error is
    logged as a warning and the run counts as a success (later stages still do not
    run: the workflow stopped where it failed).
    """
    patterns = tuple(ignore)

    def middleware(next_: RunnerFunc) -> RunnerFunc:
        def run(ctx: RunContext, workflow: Workflow, logger: Logger) -> None:
            try:
                next_(ctx, workflow, logger)
            except Exception as exc:
                messages = [str(e) for e in _exception_chain(exc)]
                if not any(p in m for p in patterns for m in messages):
                    raise
                logger.warning("workflow %r: ignoring error: %s", workflow.id, exc)

        return run

    return middleware


def store_injection_middleware(values: Mapping[str, Any]) -> Middleware:
    """Put ``values`` into the workflow's store before the run starts."""
    items = dict(values)

    def middleware(next_: RunnerFunc) -> RunnerFunc:
        def run(ctx: RunContext, workflow: Workflow, logger: Logger) -> None:
            for key, value in items.items():
                workflow.store.put(key, value)
            next_(ctx, workflow, logger)

        return run

    return middleware


def stage_logging_middleware() -> StageMiddleware:
    """Stage-level: log when each stage's actions start and end, with the duration."""

    def middleware(next_: StageFunc) -> StageFunc:
        def run(ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger) -> None:
            logger.info("stage %r of workflow %r started", stage.id, workflow.id)
            start = time.perf_counter()
            try:
                next_(ctx, stage, workflow, logger)
            except Exception as exc:
                logger.error(
                    "stage %r of workflow %r failed after %.3f s: %s",
                    stage.id,
                    workflow.id,
                    time.perf_counter() - start,
                    exc,
                )
                raise
            logger.info(
                "stage %r of workflow %r completed in %.3f s",
                stage.id,
                workflow.id,
                time.perf_counter() - start,
            )

        return run

    return middleware
