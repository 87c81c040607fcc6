"""Middleware patterns at the three levels: runner, workflow and stage.

A middleware takes the next function and returns one with the same signature, so
it can act before, after or instead of it:

* runner middleware   ``(ctx, workflow, logger)``        wraps the whole run;
* workflow middleware ``(ctx, stage, workflow, logger)`` wraps each stage;
* stage middleware    ``(ctx, stage, workflow, logger)`` wraps the actions of one stage.

At every level the first registered is the outermost. The sections below show:

1. the nesting order;
2. error handling: ``error_handling_middleware`` swallows non-critical errors;
3. retry with backoff: ``retry_middleware``, timed by ``timing_middleware``;
4. validation: a stage middleware checks store preconditions before a stage runs;
5. state injection: ``store_injection_middleware`` and ``RunContext.with_value``;
6. an audit trail: a workflow middleware records every stage, disabled ones too.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import gostage
from gostage import (
    ActionContext,
    ActionError,
    Logger,
    Middleware,
    RunContext,
    Runner,
    RunnerFunc,
    Stage,
    StageFunc,
    StageMiddleware,
    Workflow,
    WorkflowMiddleware,
)

LOGGER = logging.getLogger("patterns")


def record(ctx: ActionContext, key: str, item: str) -> None:
    ctx.store.put(key, [*ctx.store.get_or_default(key, []), item])


def one_stage(workflow_id: str, *actions: gostage.Action, stage_id: str = "main") -> Workflow:
    stage = Stage(stage_id)
    for act in actions:
        stage.add_action(act)
    return Workflow(workflow_id).add_stage(stage)


# -- 1. order ------------------------------------------------------------------------


def section_order() -> None:
    print("== 1. Order: the first registered middleware is the outermost, at every level")
    trail: list[str] = []

    def runner_mw(name: str) -> Middleware:
        def mw(next_: RunnerFunc) -> RunnerFunc:
            def run(ctx: RunContext, workflow: Workflow, logger: Logger) -> None:
                trail.append(f"{name}>")
                next_(ctx, workflow, logger)
                trail.append(f"<{name}")

            return run

        return mw

    def stage_mw(name: str) -> Callable[[StageFunc], StageFunc]:
        def mw(next_: StageFunc) -> StageFunc:
            def run(ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger) -> None:
                trail.append(f"{name}>")
                next_(ctx, stage, workflow, logger)
                trail.append(f"<{name}")

            return run

        return mw

    @gostage.action
    def work(ctx: ActionContext) -> None:
        trail.append("action")

    workflow = one_stage("order", work)
    workflow.use(stage_mw("workflow1"), stage_mw("workflow2"))
    workflow.get_stage("main").use(stage_mw("stage1"), stage_mw("stage2"))
    runner = Runner([runner_mw("runner1")], logger=LOGGER).use(runner_mw("runner2"))
    runner.execute(workflow)
    print("  " + " ".join(trail))


# -- 2. error handling ---------------------------------------------------------------


def section_error_handling() -> None:
    print("\n== 2. Error handling: ignore errors whose message says 'non-critical'")
    runner = Runner([gostage.error_handling_middleware(ignore=("non-critical",))], logger=LOGGER)

    @gostage.action(name="warm-cache")
    def warm_cache(ctx: ActionContext) -> None:
        raise RuntimeError("non-critical: cache server unreachable")

    @gostage.action(name="charge-card")
    def charge_card(ctx: ActionContext) -> None:
        raise RuntimeError("card declined")

    @gostage.action(name="never-reached")
    def never_reached(ctx: ActionContext) -> None:
        record(ctx, "ran", "never-reached")

    result = runner.execute(one_stage("warmup", warm_cache, never_reached))
    print(
        f"  non-critical failure: success={result.success}, status={result.status}; "
        f"later actions ran: {'ran' in result.final_store}"
    )
    try:
        runner.execute(one_stage("payment", charge_card))
    except ActionError as exc:
        print(f"  critical failure still raises ActionError: {exc}")


# -- 3. retry with backoff, timed -------------------------------------------------------


def section_retry() -> None:
    print("\n== 3. Retry with backoff (3 tries in total), timed by an outer timing middleware")
    timings: dict[str, float] = {}
    runner = Runner(
        [
            gostage.timing_middleware(on_timing=timings.__setitem__),  # outermost: all tries
            gostage.retry_middleware(
                attempts=3, delay=0.01, backoff=2.0, max_delay=0.05, retry_on=(ConnectionError,)
            ),
        ],
        logger=LOGGER,
    )

    @gostage.action(name="call-api")
    def call_api(ctx: ActionContext) -> None:
        # Each try sees the store the previous one left, so it can count the tries.
        tries = ctx.store.get_or_default("tries", 0) + 1
        ctx.store.put("tries", tries)
        if tries < 3:
            raise ConnectionError(f"timeout on try {tries}")
        ctx.store.put("response", {"status": 200})

    result = runner.execute(one_stage("flaky-api", call_api))
    print(
        f"  succeeded after {result.final_store['tries']} tries; timing_middleware measured "
        f"{timings['flaky-api'] * 1000:.0f} ms including the backoff waits (10 + 20 ms)"
    )

    @gostage.action(name="parse")
    def parse(ctx: ActionContext) -> None:
        record(ctx, "tries", "parse")
        raise ValueError("malformed payload")

    workflow = one_stage("bad-payload", parse)
    try:
        runner.execute(workflow)
    except ActionError as exc:
        print(
            f"  a ValueError is not in retry_on: failed after "
            f"{len(workflow.store.get('tries', list))} try ({type(exc.__cause__).__name__})"
        )


# -- 4. validation ---------------------------------------------------------------------


class PreconditionError(Exception):
    pass


def require_keys(*keys: str) -> StageMiddleware:
    """Stage middleware: refuse to run the stage unless the store holds ``keys``."""

    def middleware(next_: StageFunc) -> StageFunc:
        def run(ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger) -> None:
            missing = [k for k in keys if not workflow.store.has(k)]
            if missing:
                raise PreconditionError(f"stage {stage.id!r} needs {', '.join(missing)}")
            next_(ctx, stage, workflow, logger)

        return run

    return middleware


def section_validation() -> None:
    print("\n== 4. Validation: a stage middleware checks the store before the stage runs")
    runner = Runner(logger=LOGGER)

    @gostage.action(name="ship")
    def ship(ctx: ActionContext) -> None:
        record(ctx, "shipped", ctx.store.get("address", str))

    def shipping(order: dict[str, str]) -> Workflow:
        workflow = one_stage("shipping", ship, stage_id="ship")
        workflow.get_stage("ship").use(require_keys("address", "parcel_id"))
        for key, value in order.items():
            workflow.store.put(key, value)
        return workflow

    result = runner.execute(shipping({"address": "1 Main St", "parcel_id": "P-7"}))
    print(f"  complete order: shipped to {result.final_store['shipped']}")
    try:
        runner.execute(shipping({"address": "1 Main St"}))
    except PreconditionError as exc:  # a middleware's own error propagates unchanged
        print(f"  incomplete order refused: PreconditionError: {exc}")


# -- 5. state injection ------------------------------------------------------------------


def with_request_id(request_id: str) -> Middleware:
    """Runner middleware: give everything inside a context value."""

    def middleware(next_: RunnerFunc) -> RunnerFunc:
        def run(ctx: RunContext, workflow: Workflow, logger: Logger) -> None:
            next_(ctx.with_value("request_id", request_id), workflow, logger)

        return run

    return middleware


def context_to_store(*names: str) -> WorkflowMiddleware:
    """Workflow middleware: copy context values into the store for the actions."""

    def middleware(next_: StageFunc) -> StageFunc:
        def run(ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger) -> None:
            for name in names:
                workflow.store.put(f"ctx.{name}", ctx.value(name))
            next_(ctx, stage, workflow, logger)

        return run

    return middleware


def section_injection() -> None:
    print("\n== 5. State injection: store values and context values")
    runner = Runner(
        [
            gostage.store_injection_middleware({"region": "eu-west-1", "flags": {"beta": True}}),
            with_request_id("req-0042"),
        ],
        logger=LOGGER,
    )

    @gostage.action(name="handle")
    def handle(ctx: ActionContext) -> None:
        print(
            f"  the action sees region={ctx.store.get('region', str)}, "
            f"flags={ctx.store.get('flags', dict)}, "
            f"request_id={ctx.store.get('ctx.request_id', str)}"
        )

    runner.execute(one_stage("request", handle).use(context_to_store("request_id")))


# -- 6. audit trail ------------------------------------------------------------------------


def audit(trail: list[str]) -> WorkflowMiddleware:
    """Workflow middleware: one line per stage, whether it ran, was skipped or failed."""

    def middleware(next_: StageFunc) -> StageFunc:
        def run(ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger) -> None:
            if not workflow.is_stage_enabled(stage.id):
                trail.append(f"{stage.id}: skipped (disabled)")
                next_(ctx, stage, workflow, logger)  # the runner logs the skip
                return
            try:
                next_(ctx, stage, workflow, logger)
            except Exception as exc:
                trail.append(f"{stage.id}: FAILED ({exc.__cause__ or exc})")
                raise
            trail.append(f"{stage.id}: ran, store has {workflow.store.count()} keys")

        return run

    return middleware


def section_audit() -> None:
    print("\n== 6. Audit trail: a workflow middleware sees every stage, disabled ones too")
    trail: list[str] = []

    @gostage.action(name="extract")
    def extract(ctx: ActionContext) -> None:
        ctx.store.put("rows", [3, 1, 2])
        ctx.disable_stage("transform")  # the data is already clean: skip it

    @gostage.action(name="transform")
    def transform(ctx: ActionContext) -> None:
        ctx.store.put("rows", sorted(ctx.store.get("rows", list)))

    @gostage.action(name="load")
    def load(ctx: ActionContext) -> None:
        ctx.store.put("loaded", len(ctx.store.get("rows", list)))

    @gostage.action(name="notify")
    def notify(ctx: ActionContext) -> None:
        raise RuntimeError("non-critical: chat webhook returned 503")

    workflow = Workflow("etl").use(audit(trail))
    for stage_id, act in [
        ("extract", extract),
        ("transform", transform),
        ("load", load),
        ("notify", notify),
    ]:
        workflow.add_stage(Stage(stage_id).add_action(act))
    runner = Runner([gostage.error_handling_middleware(ignore=("non-critical",))], logger=LOGGER)
    result = runner.execute(workflow)
    for line in trail:
        print(f"  audit: {line}")
    print(f"  run success={result.success} (the notify failure was non-critical)")


def main() -> None:
    # Library log lines (retries, skips, ignored errors) appear indented under the sections.
    logging.basicConfig(
        level=logging.INFO, format="    %(levelname)s: %(message)s", stream=sys.stdout
    )
    section_order()
    section_error_handling()
    section_retry()
    section_validation()
    section_injection()
    section_audit()


if __name__ == "__main__":
    main()
