"""Conditional execution: actions enable and disable stages and actions at run time.

A release pipeline reads its settings from the store and switches parts of itself
on and off from inside actions:

* by stage id: ``ctx.disable_stage("deploy-production")`` outside production, and
  ``ctx.enable_stage("smoke-tests")`` for a stage the definition disabled;
* by action name: ``ctx.disable_action("post-to-chat")`` when chat is off;
* by tag: ``ctx.disable_actions_by_tag("slow")`` skips the slow test suites,
  ``ctx.disable_stages_by_tag("docs")`` skips the docs stages when no docs changed;
* from results: a test gate disables every ``deploy`` stage if a test failed.

Disabled stages and actions are skipped, the runner logs each skip, and the state
stays on the workflow after the run (``workflow.is_stage_enabled(id)``).
The same pipeline runs three times with different settings.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import gostage
from gostage import ActionContext, Stage, Workflow


def step(name: str, tags: tuple[str, ...] = ()) -> gostage.Action:
    """An action that only records that it ran."""

    @gostage.action(name=name, tags=tags)
    def run(ctx: ActionContext) -> None:
        ctx.store.put("ran", [*ctx.store.get_or_default("ran", []), name])

    return run


@gostage.action(name="decide", description="switch pipeline parts on and off from settings")
def decide(ctx: ActionContext) -> None:
    settings = ctx.store.get("settings", dict)
    if settings["environment"] != "production":
        ctx.disable_stage("deploy-production")  # by stage id
    if settings["environment"] == "staging":
        ctx.enable_stage("smoke-tests")  # disabled in the definition; on for staging
    if not settings["slow_tests"]:
        skipped = ctx.disable_actions_by_tag("slow")  # by action tag
        print(f"    decide: slow tests off ({skipped} actions tagged 'slow')")
    if not settings["chat"]:
        ctx.disable_action("post-to-chat")  # by action name
    if not any(path.startswith("docs/") for path in settings["changed"]):
        skipped = ctx.disable_stages_by_tag("docs")  # by stage tag
        print(f"    decide: no docs changed ({skipped} stage tagged 'docs')")
    tests = ctx.find_actions_by_name("tests")  # case-insensitive substring
    enabled = [a.name for a in tests if ctx.is_action_enabled(a.name)]
    print(f"    decide: test suites that will run: {enabled}")


@gostage.action(name="unit-tests")
def unit_tests(ctx: ActionContext) -> None:
    failures = ctx.store.get("settings", dict)["failing_tests"]
    ctx.store.put("tests.failed", failures)
    ctx.store.put("ran", [*ctx.store.get_or_default("ran", []), "unit-tests"])


@gostage.action(name="gate", description="stop deployments when a test failed")
def gate(ctx: ActionContext) -> None:
    failed = ctx.store.get("tests.failed", int)
    if failed:
        ids = [s.id for s in ctx.find_stages_by_tag("deploy")]
        for stage_id in ids:
            ctx.disable_stage(stage_id)
        print(f"    gate: {failed} test(s) failed, deployment stages disabled: {ids}")


def build_workflow(settings: dict[str, Any]) -> Workflow:
    workflow = Workflow("release", description="test, document and deploy")
    workflow.store.put("settings", settings)
    stages = [
        Stage("configure").add_action(decide),
        Stage("test")
        .add_action(step("lint"))
        .add_action(unit_tests)
        .add_action(step("integration-tests", tags=("slow",)))
        .add_action(step("browser-tests", tags=("slow", "ui")))
        .add_action(gate),
        Stage("build-docs", tags=("docs",)).add_action(step("render-docs")),
        Stage("deploy-staging", tags=("deploy",)).add_action(step("push-staging")),
        Stage("smoke-tests").add_action(step("smoke")),
        Stage("deploy-production", tags=("deploy", "prod")).add_action(step("push-production")),
        Stage("notify").add_action(step("write-changelog")).add_action(step("post-to-chat")),
    ]
    for stage in stages:
        workflow.add_stage(stage)
    workflow.disable_stage("smoke-tests")  # off unless an action turns it on
    return workflow


SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    (
        "staging, code change only",
        {
            "environment": "staging",
            "slow_tests": False,
            "chat": False,
            "changed": ["src/app.py"],
            "failing_tests": 0,
        },
    ),
    (
        "production, code and docs, everything on",
        {
            "environment": "production",
            "slow_tests": True,
            "chat": True,
            "changed": ["src/app.py", "docs/guide.md"],
            "failing_tests": 0,
        },
    ),
    (
        "production, but a unit test fails",
        {
            "environment": "production",
            "slow_tests": False,
            "chat": True,
            "changed": ["src/app.py"],
            "failing_tests": 2,
        },
    ),
]


def main() -> None:
    # The runner logs every skipped stage and action at info level.
    logging.basicConfig(level=logging.INFO, format="    log: %(message)s", stream=sys.stdout)
    runner = gostage.Runner(logger=logging.getLogger("release"))
    for number, (title, settings) in enumerate(SCENARIOS, start=1):
        print(f"{number}) {title}")
        workflow = build_workflow(settings)
        result = runner.execute(workflow)
        print(f"  ran: {', '.join(result.final_store['ran'])}")
        skipped = [s.id for s in workflow.stages if not workflow.is_stage_enabled(s.id)]
        print(f"  stages left disabled: {', '.join(skipped) or 'none'}")
        print()


if __name__ == "__main__":
    main()
