"""Action wrapping: one action decorating another.

An ``Action`` is a small object with a name, tags and ``execute(ctx)``, so an
action can hold another and run it with behaviour before and after, like a
function decorator:

* ``Timed(inner)`` measures the inner action and records the time in the store;
* ``Retrying(inner, attempts=3)`` runs the inner action again when it raises one
  of the given exceptions, and gives up after the last attempt;
* wrappers compose: ``Timed(Retrying(fetch))`` times all attempts together.

A wrapper keeps the inner action's name (so ``ctx.disable_action(name)`` and the
runner's error messages still name the real action) and adds a tag, so finders such
as ``ctx.find_actions_by_type(Retrying)`` or ``find_actions_by_tag("timed")`` see it.
"""

from __future__ import annotations

import time

import gostage
from gostage import Action, ActionContext, ActionError, BaseAction, Stage, Workflow


class Timed(Action):
    """Run ``inner`` and record its duration under ``timing:<name>`` in the store."""

    def __init__(self, inner: Action) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def description(self) -> str:
        return f"timed: {self.inner.description}"

    @property
    def tags(self) -> tuple[str, ...]:
        return (*self.inner.tags, "timed")

    def execute(self, ctx: ActionContext) -> None:
        start = time.perf_counter()
        try:
            self.inner.execute(ctx)
        finally:
            elapsed_ms = (time.perf_counter() - start) * 1000
            ctx.store.put(f"timing:{self.name}", round(elapsed_ms, 3))


class Retrying(Action):
    """Run ``inner`` up to ``attempts`` times while it raises one of ``retry_on``."""

    def __init__(
        self,
        inner: Action,
        attempts: int = 3,
        retry_on: tuple[type[Exception], ...] = (Exception,),
    ) -> None:
        self.inner = inner
        self.attempts = attempts
        self.retry_on = retry_on

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def description(self) -> str:
        return f"retried up to {self.attempts} times: {self.inner.description}"

    @property
    def tags(self) -> tuple[str, ...]:
        return (*self.inner.tags, "retrying")

    def execute(self, ctx: ActionContext) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                self.inner.execute(ctx)
            except self.retry_on as exc:
                if attempt == self.attempts:
                    print(f"    {self.name}: attempt {attempt} failed ({exc}); giving up")
                    raise
                print(f"    {self.name}: attempt {attempt} failed ({exc}); retrying")
            else:
                print(f"    {self.name}: succeeded on attempt {attempt}")
                return


class FlakyFetch(BaseAction):
    """Fetches customers; the 'network' fails the first ``failures`` calls."""

    def __init__(self, failures: int) -> None:
        super().__init__("fetch-customers", description="fetch customers", tags=("io",))
        self.failures = failures
        self.calls = 0

    def execute(self, ctx: ActionContext) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"connection reset (call {self.calls})")
        ctx.store.put("customers", ["ada", "grace", "linus"])


@gostage.action(name="normalize", description="normalize the names")
def normalize(ctx: ActionContext) -> None:
    ctx.store.put("customers", [c.title() for c in ctx.store.get("customers", list)])


@gostage.action(name="report")
def report(ctx: ActionContext) -> None:
    """Finders see the outermost wrapper's type, and the tags every layer adds."""
    timed = [a.name for a in ctx.find_actions_by_type(Timed)]
    retried = [a.name for a in ctx.find_actions_by_tag("retrying")]
    print(f"    finders: Timed actions {timed}, actions tagged 'retrying' {retried}")


def build_workflow(fetch: Action) -> Workflow:
    stage = Stage("sync", description="sync the customer list")
    stage.add_action(Timed(Retrying(fetch, attempts=3, retry_on=(ConnectionError,))))
    stage.add_action(Timed(normalize))
    stage.add_action(report)
    return Workflow("customer-sync").add_stage(stage)


def main() -> None:
    runner = gostage.Runner(logger=gostage.NullLogger())

    print("1) The fetch fails twice, then works: Retrying hides the glitch.")
    workflow = build_workflow(FlakyFetch(failures=2))
    result = runner.execute(workflow)
    print(f"  customers: {result.final_store['customers']}")
    timings = sorted(k for k in result.final_store if k.startswith("timing:"))
    print(f"  Timed recorded: {', '.join(timings)}")
    print(f"  success={result.success}")

    print("\n2) The fetch keeps failing: after 3 attempts the error reaches the runner.")
    workflow = build_workflow(FlakyFetch(failures=10))
    try:
        runner.execute(workflow)
    except ActionError as exc:
        print(f"  ActionError for action {exc.action_name!r} in stage {exc.stage_id!r}")
        print(f"  caused by {type(exc.__cause__).__name__}: {exc.__cause__}")
        # Timed's finally clause still recorded how long the three attempts took.
        recorded = workflow.store.has("timing:fetch-customers")
        print(f"  timing recorded despite the failure: {recorded}")


if __name__ == "__main__":
    main()
