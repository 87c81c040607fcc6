"""gostage benchmarks, each against a baseline measured in the same run.

Usage (with the package installed, e.g. in the .venv that tools/test makes)::

    .venv/bin/python tools/bench.py [--quick] [--json out.json] [--case SUBSTRING]

Every case times a gostage operation and a hand-written baseline doing the same
work without gostage. Repetitions are interleaved (gostage, baseline, gostage, ...)
so that drift in machine load hits both alike; the table shows the median of each
and the ratio gostage / baseline. Only the standard library and gostage are used.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from gostage import (
    ActionContext,
    ActionDef,
    ActionRegistry,
    NullLogger,
    Runner,
    Stage,
    StageDef,
    SubWorkflowDef,
    Workflow,
    action,
)

Timer = Callable[[], float]  # runs the work once, returns seconds spent on it


@dataclass
class Case:
    name: str
    size: int
    gostage: Timer
    baseline: Timer
    target: float | None


# -- in-process actions ---------------------------------------------------------


def _noop(ctx: Any) -> None:
    pass


def _put_get(ctx: Any) -> None:
    ctx.store.put("k", 1)
    ctx.store.get("k")


class _DictStore:
    """The baseline's store: a plain dict behind the same two method names."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    def get(self, key: str) -> Any:
        return self.data[key]


class _BaselineCtx:
    def __init__(self) -> None:
        self.store = _DictStore()


def actions_case(name: str, fn: Callable[[Any], None], n: int, target: float | None) -> Case:
    runner = Runner(logger=NullLogger())
    act = action(name="a")(fn)

    def run_gostage() -> float:
        stage = Stage("s")
        for _ in range(n):
            stage.add_action(act)
        wf = Workflow("bench").add_stage(stage)
        start = time.perf_counter()
        runner.execute(wf)
        return time.perf_counter() - start

    def run_baseline() -> float:
        fns = [fn] * n
        ctx = _BaselineCtx()
        start = time.perf_counter()
        for f in fns:
            f(ctx)
        return time.perf_counter() - start

    return Case(name, n, run_gostage, run_baseline, target)


# -- processes ------------------------------------------------------------------


@action
def _reply(ctx: ActionContext) -> None:
    ctx.store.put("answer", 42)


@action
def _chatter(ctx: ActionContext) -> None:
    for i in range(ctx.params["n"]):
        ctx.send("tick", {"i": i, "name": "tick"})


REGISTRY = ActionRegistry()
REGISTRY.register("reply", _reply)
REGISTRY.register("chatter", _chatter)


def _bare_child(conn: Connection) -> None:
    conn.send({"answer": 42})
    conn.close()


def _bare_chatter(conn: Connection, n: int) -> None:
    for i in range(n):
        conn.send({"i": i, "name": "tick"})
    conn.close()


def spawn_case() -> Case:
    runner = Runner(logger=NullLogger(), registry=REGISTRY)
    defn = SubWorkflowDef("one", [StageDef("s", [ActionDef("reply")])])
    mp = multiprocessing.get_context("spawn")

    def run_gostage() -> float:
        start = time.perf_counter()
        result = runner.spawn(defn)
        assert result.final_store["answer"] == 42
        return time.perf_counter() - start

    def run_baseline() -> float:
        start = time.perf_counter()
        reader, writer = mp.Pipe(duplex=False)
        proc = mp.Process(target=_bare_child, args=(writer,))
        proc.start()
        writer.close()
        assert reader.recv()["answer"] == 42
        proc.join()
        reader.close()
        return time.perf_counter() - start

    return Case("spawn: one-action child, end to end", 1, run_gostage, run_baseline, 1.3)


def messages_case(n: int) -> Case:
    runner = Runner(logger=NullLogger(), registry=REGISTRY)
    defn = SubWorkflowDef("chatty", [StageDef("s", [ActionDef("chatter", params={"n": n})])])
    mp = multiprocessing.get_context("spawn")
    received = [0]
    runner.broker.register_handler("tick", lambda t, p: received.__setitem__(0, received[0] + 1))

    def run_gostage() -> float:
        received[0] = 0
        start = time.perf_counter()
        runner.spawn(defn)
        elapsed = time.perf_counter() - start
        assert received[0] == n
        return elapsed

    def run_baseline() -> float:
        start = time.perf_counter()
        reader, writer = mp.Pipe(duplex=False)
        proc = mp.Process(target=_bare_chatter, args=(writer, n))
        proc.start()
        writer.close()
        count = 0
        while True:
            try:
                reader.recv()
            except EOFError:
                break
            count += 1
        proc.join()
        reader.close()
        assert count == n
        return time.perf_counter() - start

    return Case("messages: child -> parent (incl. one spawn)", n, run_gostage, run_baseline, 1.4)


# -- driver --------------------------------------------------------------------------


def build_cases(quick: bool) -> list[Case]:
    n_actions = 2_000 if quick else 10_000
    n_messages = 10_000 if quick else 100_000
    return [
        actions_case("actions: no-op, no middleware", _noop, n_actions, None),
        actions_case("actions: store put + get, no middleware", _put_get, n_actions, 3.0),
        spawn_case(),
        messages_case(n_messages),
    ]


def measure(case: Case, reps: int) -> dict[str, Any]:
    case.gostage()  # warm-up: imports, caches
    case.baseline()
    ours, theirs = [], []
    for _ in range(reps):
        ours.append(case.gostage())
        theirs.append(case.baseline())
    g, b = statistics.median(ours), statistics.median(theirs)
    return {
        "case": case.name,
        "size": case.size,
        "gostage_s": g,
        "baseline_s": b,
        "ratio": g / b if b > 0 else None,
        "target": case.target,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repetitions")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--case", default="", help="only cases whose name contains this")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else 7
    rows = []
    print(f"{'case':48} {'size':>8} {'gostage':>11} {'baseline':>11} {'ratio':>7} {'target':>7}")
    for case in build_cases(args.quick):
        if args.case not in case.name:
            continue
        row = measure(case, reps)
        rows.append(row)
        target = f"<={row['target']}" if row["target"] is not None else "-"
        print(
            f"{row['case']:48} {row['size']:>8} {row['gostage_s'] * 1e3:>9.2f}ms "
            f"{row['baseline_s'] * 1e3:>9.2f}ms {row['ratio']:>7.2f} {target:>7}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
