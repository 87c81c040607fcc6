"""Dynamic actions and stages: a workflow that grows while it runs.

An image pipeline does not know its work up front: the ``scan`` action looks at
the inbox and adds one ``Thumbnail`` action per image with
``ctx.add_dynamic_action``. A large image's ``Thumbnail`` adds a ``Tile`` action,
which in turn adds a ``VerifyTiles`` action (a cascade: dynamic actions can add
more). Dynamic actions run in the same stage, right after the action that added
them, in the order they were added.

Actions also add whole stages with ``ctx.add_dynamic_stage``: they run right after
the current stage, in the order added, before the stages that were there from the
start. Finders see dynamic components too (``ctx.find_actions_by_type``), and the
``Workflow`` definition itself is left untouched, so it can be run again.
"""

from __future__ import annotations

import gostage
from gostage import (
    ActionContext,
    BaseAction,
    Logger,
    RunContext,
    Stage,
    StageFunc,
    Workflow,
    WorkflowMiddleware,
)

INBOX = [
    {"name": "cat.jpg", "megapixels": 2},
    {"name": "panorama.jpg", "megapixels": 48},
    {"name": "dog.png", "megapixels": 3},
]
LARGE_MEGAPIXELS = 20


def trace(ctx: ActionContext, what: str, depth: int = 0) -> None:
    """Record and print what ran, indented by how deep in the cascade it is."""
    ctx.store.put("trace", [*ctx.store.get_or_default("trace", []), what])
    print(f"  [{ctx.stage.id}] {'  ' * depth}{what}")


class Thumbnail(BaseAction):
    """Make a thumbnail; a large image also needs tiles (a cascading dynamic action)."""

    def __init__(self, image: dict[str, object]) -> None:
        super().__init__(f"thumbnail:{image['name']}", tags=("image",))
        self.image = image

    def execute(self, ctx: ActionContext) -> None:
        trace(ctx, f"thumbnail {self.image['name']}", depth=1)
        done = ctx.store.get_or_default("thumbnails", [])
        ctx.store.put("thumbnails", [*done, self.image["name"]])
        megapixels = self.image["megapixels"]
        if isinstance(megapixels, int) and megapixels >= LARGE_MEGAPIXELS:
            ctx.add_dynamic_action(Tile(str(self.image["name"]), pieces=megapixels // 12))


class Tile(BaseAction):
    """Cut a large image into tiles, then schedule their verification."""

    def __init__(self, image: str, pieces: int) -> None:
        super().__init__(f"tile:{image}", tags=("image", "large"))
        self.image = image
        self.pieces = pieces

    def execute(self, ctx: ActionContext) -> None:
        trace(ctx, f"tile {self.image} into {self.pieces} pieces", depth=2)
        ctx.add_dynamic_action(VerifyTiles(self.image, self.pieces))


class VerifyTiles(BaseAction):
    def __init__(self, image: str, pieces: int) -> None:
        super().__init__(f"verify-tiles:{image}", tags=("large",))
        self.image = image
        self.pieces = pieces

    def execute(self, ctx: ActionContext) -> None:
        trace(ctx, f"verify {self.pieces} tiles of {self.image}", depth=3)


@gostage.action(name="scan")
def scan(ctx: ActionContext) -> None:
    """Look at the inbox and plan one thumbnail action per image, plus a publish stage."""
    inbox = ctx.store.get("inbox", list)
    trace(ctx, f"scan: {len(inbox)} images in the inbox")
    for image in inbox:
        ctx.add_dynamic_action(Thumbnail(image))

    publish = Stage("publish", description="added at run time by 'scan'")

    @gostage.action(name="upload")
    def upload(ctx: ActionContext) -> None:
        names = ctx.store.get("thumbnails", list)
        trace(ctx, f"upload {len(names)} thumbnails: {', '.join(names)}")

    publish.add_action(upload)
    ctx.add_dynamic_stage(publish)


@gostage.action(name="plan-report")
def plan_report(ctx: ActionContext) -> None:
    """Runs after every dynamic action of the stage; adds a second dynamic stage."""
    trace(ctx, "plan-report: add a report stage after 'publish'")
    report = Stage("report", description="added at run time by 'plan-report'")

    @gostage.action(name="summarize")
    def summarize(ctx: ActionContext) -> None:
        # Finders cover the whole run, dynamic actions included.
        thumbnails = ctx.find_actions_by_type(Thumbnail)
        large = ctx.find_actions_by_tag("large")
        trace(ctx, f"summary: {len(thumbnails)} thumbnail actions, {len(large)} for large images")

    report.add_action(summarize)
    ctx.add_dynamic_stage(report)


@gostage.action(name="archive-inbox")
def archive_inbox(ctx: ActionContext) -> None:
    trace(ctx, "archive the inbox")


def stage_recorder(seen: list[str]) -> WorkflowMiddleware:
    """Workflow middleware: wraps every stage of the run, dynamic ones included."""

    def middleware(next_: StageFunc) -> StageFunc:
        def run(ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger) -> None:
            seen.append(stage.id)
            next_(ctx, stage, workflow, logger)

        return run

    return middleware


def build_workflow(stages_seen: list[str]) -> Workflow:
    workflow = Workflow("thumbnails", description="make thumbnails for the inbox")
    workflow.use(stage_recorder(stages_seen))
    workflow.store.put("inbox", INBOX)
    workflow.add_stage(Stage("process").add_action(scan).add_action(plan_report))
    workflow.add_stage(Stage("archive").add_action(archive_inbox))
    return workflow


def main() -> None:
    stages_seen: list[str] = []
    workflow = build_workflow(stages_seen)
    defined = [s.id for s in workflow.stages]
    static_actions = sum(len(s.actions) for s in workflow.stages)
    print(
        f"Workflow {workflow.id!r} is defined with stages {defined} and {static_actions} actions."
    )
    print("Running it (indentation shows actions added by dynamic actions):")
    result = gostage.Runner(logger=gostage.NullLogger()).execute(workflow)

    steps = result.final_store["trace"]
    added_stages = [s for s in stages_seen if s not in defined]
    print(
        f"\n{len(steps)} actions ran: {static_actions} defined up front, "
        f"{len(steps) - static_actions} added at run time, in {len(added_stages)} "
        f"dynamic stages ({', '.join(added_stages)}) and the 'process' stage."
    )
    print(f"Stage order of the run: {' -> '.join(stages_seen)}")
    print(
        f"The definition is unchanged: stages {[s.id for s in workflow.stages]}, "
        f"{sum(len(s.actions) for s in workflow.stages)} actions."
    )
    print(f"Run succeeded: {result.success}")


if __name__ == "__main__":
    main()
