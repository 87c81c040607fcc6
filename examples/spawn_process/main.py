"""A child workflow in another OS process: isolation, store sync, ctx.spawn and logs.

Four short scenes, each printing what it proves:

1. ``runner.spawn(defn, store=parent_store)`` runs a child workflow in a fresh Python
   process. The child writes files into a temporary directory it is given through
   ``ActionDef`` params, each holding its own PID, and changes a module global and an
   environment variable: the parent sees the files, but not the other changes. Every
   store write of the child reaches ``parent_store`` while the child runs.
2. The child's ``ctx.logger`` messages travel to the parent as ``LOG`` messages; with
   no ``LOG`` handler the runner's logger re-emits them prefixed with ``[pid N]``.
3. ``ctx.spawn(defn)`` from inside an action of an ordinary (in-process) workflow: the
   child's final store is merged into the running workflow's store, so a later stage
   reads the child's results.
4. Failures stay in the child: an exception, a hard exit and a hang each come back as
   a typed ``SpawnError`` and the parent carries on.

The child's actions live in an ``ActionRegistry`` given to the runner; they are
defined in this script and travel to the child by value (cloudpickle). Because
multiprocessing starts each child by re-importing this module, the entry point is
guarded by ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gostage
from gostage import (
    ActionContext,
    ActionDef,
    ActionRegistry,
    ChildActionError,
    ChildCrashedError,
    ChildTimeoutError,
    MessageType,
    Runner,
    SpawnOptions,
    Stage,
    StageDef,
    Store,
    SubWorkflowDef,
    Workflow,
)

TOUCHED_BY: list[int] = []  # a module global: each process has its own copy


# -- actions that run in the child ----------------------------------------------


@gostage.action(name="look-around")
def look_around(ctx: ActionContext) -> None:
    """Record where we run, then change process-local state the parent never sees."""
    ctx.store.put("child.pid", os.getpid())
    ctx.store.put("child.parent_pid", os.getppid())
    ctx.store.put("child.greeting", os.environ.get("GREETING", "(unset)"))
    TOUCHED_BY.append(os.getpid())
    os.environ["SET_BY_CHILD"] = "yes"
    ctx.logger.info("running in pid %d, started by pid %d", os.getpid(), os.getppid())


@gostage.action(name="write-files")
def write_files(ctx: ActionContext) -> None:
    """Write ``count`` files into the directory named by the params."""
    out = Path(ctx.params["outdir"])
    names = []
    for i in range(ctx.params["count"]):
        path = out / f"part-{i}.txt"
        path.write_text(f"part {i} written by pid {os.getpid()}\n", encoding="utf-8")
        names.append(path.name)
        ctx.store.put("files", names)  # every write travels to the parent at once
    ctx.logger.info("wrote %d files into %s", len(names), out.name)


@gostage.action(name="count-words")
def count_words(ctx: ActionContext) -> None:
    """Count the words of the text the parent put into the child's initial store."""
    words = ctx.store.get("text", str).split()
    ctx.store.put("summary.words", len(words))
    ctx.store.put("summary.longest", max(words, key=len))
    ctx.store.put("summary.pid", os.getpid())
    ctx.logger.info("counted %d words", len(words))


@gostage.action(name="chatter")
def chatter(ctx: ActionContext) -> None:
    ctx.logger.info("loading %d records", 3)
    ctx.logger.warning("record %d has no date; using today", 2)
    ctx.logger.error("record %d rejected", 3)


@gostage.action(name="fail")
def fail(ctx: ActionContext) -> None:
    raise ValueError(f"cannot parse record {ctx.params['record']}")


@gostage.action(name="hard-exit")
def hard_exit(ctx: ActionContext) -> None:
    os._exit(7)  # no exception, no report: the process just ends


@gostage.action(name="hang")
def hang(ctx: ActionContext) -> None:
    while True:
        time.sleep(0.05)


def make_registry() -> ActionRegistry:
    registry = ActionRegistry()
    for factory in (look_around, write_files, chatter, count_words, fail, hard_exit, hang):
        registry.register(factory.name, factory)
    return registry


def one_stage(workflow_id: str, *actions: ActionDef, **kwargs: Any) -> SubWorkflowDef:
    return SubWorkflowDef(workflow_id, [StageDef("main", list(actions))], **kwargs)


# -- the parent ------------------------------------------------------------------


def scene_isolation(runner: Runner, outdir: Path) -> None:
    print("== 1. a child workflow in its own process, its store writes synced back")
    defn = SubWorkflowDef(
        "write-report",
        [
            StageDef("inspect", [ActionDef("look-around")]),
            StageDef(
                "write", [ActionDef("write-files", params={"outdir": str(outdir), "count": 3})]
            ),
        ],
    )
    parent_store = Store()
    parent_store.put("owner", "parent")
    synced: list[str] = []
    # Runs in the parent as each write arrives (the store is updated first).
    runner.broker.register_handler(
        MessageType.STORE_PUT, lambda msg_type, payload: synced.append(payload["key"])
    )
    result = runner.spawn(
        defn, store=parent_store, options=SpawnOptions(env={"GREETING": "hello, child"})
    )
    runner.broker.unregister_handler(MessageType.STORE_PUT)

    print(f"parent pid {os.getpid()}, child pid {result.pid}")
    print(f"different processes: {result.pid != os.getpid()}")
    child_parent = result.final_store["child.parent_pid"]
    print(f"the child's parent is this process: {child_parent == os.getpid()}")
    print(f"the child saw SpawnOptions.env: GREETING={result.final_store['child.greeting']!r}")
    for path in sorted(outdir.iterdir()):
        text = path.read_text(encoding="utf-8").strip()
        print(f"  {path.name}: {text.replace(str(result.pid), '<child pid>')}")
    pids = {int(p.read_text(encoding="utf-8").split()[-1]) for p in outdir.iterdir()}
    print(f"every file names the child's pid: {pids == {result.pid}}")
    print(f"module global in the parent untouched: TOUCHED_BY={TOUCHED_BY}")
    leaked = "SET_BY_CHILD" in os.environ
    print(f"environment of the parent untouched: SET_BY_CHILD in os.environ = {leaked}")
    print(f"store writes synced live, in order: {synced}")
    print(f"parent store now: {sorted(parent_store.keys())}")
    rss = "unknown" if result.peak_rss is None else f"{result.peak_rss / 2**20:.1f} MiB"
    print(f"exit code {result.exit_code}, {result.duration:.2f} s, peak RSS {rss}")


def scene_logs(runner: Runner) -> None:
    print("\n== 2. child logs arrive in the parent")
    print("without a LOG handler, the runner's logger re-emits them with the child's pid:")
    runner.spawn(one_stage("chatty", ActionDef("chatter")))
    print("with a LOG handler, each arrives as a message {level, message, pid}:")
    records: list[dict[str, Any]] = []
    runner.broker.register_handler(MessageType.LOG, lambda t, payload: records.append(payload))
    result = runner.spawn(one_stage("chatty", ActionDef("chatter")))
    runner.broker.unregister_handler(MessageType.LOG)
    for record in records:
        from_child = record["pid"] == result.pid
        print(f"  {record['level']:<7} {record['message']} (from the child: {from_child})")


def scene_ctx_spawn(runner: Runner) -> None:
    print("\n== 3. ctx.spawn inside a workflow: the child's store merges into the run")

    @gostage.action(name="prepare")
    def prepare(ctx: ActionContext) -> None:
        ctx.store.put("text", "the quick brown fox jumps over the lazy dog again and again")

    @gostage.action(name="delegate")
    def delegate(ctx: ActionContext) -> None:
        # Data goes to the child through its initial store (or ActionDef params).
        child = one_stage(
            "summarise", ActionDef("count-words"), initial_store={"text": ctx.store.get("text")}
        )
        result = ctx.spawn(child, timeout=30)
        print(f"delegate (pid {os.getpid()}): child {result.pid} finished, its store is merged")

    @gostage.action(name="report")
    def report(ctx: ActionContext) -> None:
        pid = ctx.store.get("summary.pid", int)
        print(
            f"report (pid {os.getpid()}): {ctx.store.get('summary.words', int)} words, "
            f"longest {ctx.store.get('summary.longest', str)!r}, "
            f"counted in another process: {pid != os.getpid()}"
        )

    workflow = Workflow("nightly")
    workflow.add_stage(Stage("prepare").add_action(prepare))
    workflow.add_stage(Stage("delegate").add_action(delegate))
    workflow.add_stage(Stage("report").add_action(report))
    result = runner.execute(workflow)
    print(f"run success={result.success}; final store keys: {sorted(result.final_store)}")


def scene_failures(runner: Runner) -> None:
    print("\n== 4. failures stay in the child")
    try:
        runner.spawn(one_stage("parse", ActionDef("fail", params={"record": 17})))
    except ChildActionError as exc:
        last = exc.traceback.strip().splitlines()[-1]
        print(f"ChildActionError: exc_type={exc.exc_type}, action={exc.action_name!r}")
        print(f"  the child's traceback ends with: {last}")
    try:
        runner.spawn(one_stage("quit", ActionDef("hard-exit")))
    except ChildCrashedError as exc:
        print(f"ChildCrashedError: exit_code={exc.exit_code}, signal={exc.signal}")
    start = time.monotonic()
    try:
        runner.spawn(one_stage("stuck", ActionDef("hang")), timeout=0.5)
    except ChildTimeoutError as exc:
        print(f"ChildTimeoutError after {time.monotonic() - start:.1f} s: the child was killed")
        assert exc.pid is not None
    print(f"the parent (pid {os.getpid()}) carries on")


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="log: %(levelname)-7s %(message)s", stream=sys.stdout
    )
    runner = Runner(logger=logging.getLogger("spawn_process"), registry=make_registry())
    with tempfile.TemporaryDirectory(prefix="gostage-spawn-") as tmp:
        scene_isolation(runner, Path(tmp))
    scene_logs(runner)
    scene_ctx_spawn(runner)
    scene_failures(runner)


if __name__ == "__main__":  # required: each child re-imports this module
    main()
