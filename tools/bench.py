"""gostage benchmarks, each against a baseline measured in the same run.

Usage (with the package installed, e.g. in the .venv that tools/test makes)::

    .venv/bin/python tools/bench.py [--quick] [--json out.json] [--case SUBSTRING]

Every case times a gostage operation and a hand-written baseline doing the same
work without gostage, at several sizes. Repetitions are interleaved (gostage,
baseline, gostage, ...) so that drift in machine load hits both alike; the table
shows the median of each and the ratio gostage / baseline. The headline size of
each case carries the target ratio. The last two columns are the median CPU time
of each side, as "this process + the processes it started and reaped". Only the
standard library and gostage are used.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from gostage import (
    ActionContext,
    ActionDef,
    ActionRegistry,
    Logger,
    NullLogger,
    RunContext,
    Runner,
    RunnerFunc,
    SpawnOptions,
    Stage,
    StageDef,
    StageFunc,
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


@dataclass
class Family:
    """One benchmark at several sizes; ``headline`` is the size the target is for."""

    name: str
    make: Callable[[int], tuple[Timer, Timer]]
    sizes: tuple[int, ...]
    quick_sizes: tuple[int, ...]
    headline: int
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


def _runner_passthrough(next_: RunnerFunc) -> RunnerFunc:
    def run(ctx: RunContext, wf: Workflow, logger: Logger) -> None:
        next_(ctx, wf, logger)

    return run


def _stage_passthrough(next_: StageFunc) -> StageFunc:
    def run(ctx: RunContext, stage: Stage, wf: Workflow, logger: Logger) -> None:
        next_(ctx, stage, wf, logger)

    return run


def _wrap(fn: Callable[[], None]) -> Callable[[], None]:
    def call() -> None:
        fn()

    return call


def actions_family(fn: Callable[[Any], None], middleware: bool) -> Callable[[int], Any]:
    def make(n: int) -> tuple[Timer, Timer]:
        runner = Runner(logger=NullLogger())
        act = action(name="a")(fn)
        if middleware:
            runner.use(*[_runner_passthrough] * 3)

        def run_gostage() -> float:
            stage = Stage("s")
            if middleware:
                stage.use(*[_stage_passthrough] * 3)
            for _ in range(n):
                stage.add_action(act)
            wf = Workflow("bench").add_stage(stage)
            if middleware:
                wf.use(*[_stage_passthrough] * 3)
            start = time.perf_counter()
            runner.execute(wf)
            return time.perf_counter() - start

        def run_baseline() -> float:
            fns = [fn] * n
            ctx = _BaselineCtx()

            def loop() -> None:
                for f in fns:
                    f(ctx)

            body = loop
            if middleware:
                for _ in range(9):
                    body = _wrap(body)
            start = time.perf_counter()
            body()
            return time.perf_counter() - start

        return run_gostage, run_baseline

    return make


# -- processes ------------------------------------------------------------------


@action
def _reply(ctx: ActionContext) -> None:
    ctx.store.put("answer", 42)


@action
def _chatter(ctx: ActionContext) -> None:
    for i in range(ctx.params["n"]):
        ctx.send("tick", {"i": i, "name": "tick"})


def tiny(i: int) -> int:
    """The work of a tiny child workflow (and of the baseline's tasks)."""
    return i * 2


def crunch(i: int, n: int) -> int:
    """CPU-bound work: about 0.2 s for n = CRUNCH_N on the machine of BENCHMARKS.md."""
    total = 0
    for k in range(n):
        total += (k * k + i) % 7
    return total


@action
def _tiny(ctx: ActionContext) -> None:
    ctx.store.put("out", tiny(ctx.params["i"]))


@action
def _crunch(ctx: ActionContext) -> None:
    ctx.store.put("out", crunch(ctx.params["i"], ctx.params["n"]))


REGISTRY = ActionRegistry()
REGISTRY.register("reply", _reply)
REGISTRY.register("chatter", _chatter)
REGISTRY.register("tiny", _tiny)
REGISTRY.register("crunch", _crunch)
CRUNCH_N = 2_400_000


def _bare_child(conn: Connection) -> None:
    conn.send({"answer": 42})
    conn.close()


def _bare_chatter(conn: Connection, n: int) -> None:
    for i in range(n):
        conn.send({"i": i, "name": "tick"})
    conn.close()


def _one(action_id: str, **params: Any) -> SubWorkflowDef:
    return SubWorkflowDef("bench", [StageDef("s", [ActionDef(action_id, params=params)])])


def spawn_family(n: int) -> tuple[Timer, Timer]:
    """``n`` one-action children, one after the other."""
    runner = Runner(logger=NullLogger(), registry=REGISTRY)
    defn = _one("reply")
    mp = multiprocessing.get_context("spawn")

    def run_gostage() -> float:
        start = time.perf_counter()
        for _ in range(n):
            assert runner.spawn(defn).final_store["answer"] == 42
        return time.perf_counter() - start

    def run_baseline() -> float:
        start = time.perf_counter()
        for _ in range(n):
            reader, writer = mp.Pipe(duplex=False)
            proc = mp.Process(target=_bare_child, args=(writer,))
            proc.start()
            writer.close()
            assert reader.recv()["answer"] == 42
            proc.join()
            reader.close()
        return time.perf_counter() - start

    return run_gostage, run_baseline


def messages_family(n: int) -> tuple[Timer, Timer]:
    runner = Runner(logger=NullLogger(), registry=REGISTRY)
    defn = _one("chatter", n=n)
    mp = multiprocessing.get_context("spawn")
    received = [0]

    def count(msg_type: str, payload: Any) -> None:
        received[0] += 1

    runner.broker.register_handler("tick", count)

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
        got = 0
        while True:
            try:
                reader.recv()
            except EOFError:
                break
            got += 1
        proc.join()
        reader.close()
        assert got == n
        return time.perf_counter() - start

    return run_gostage, run_baseline


def pool_family(action_id: str, isolation: str, **params: Any) -> Callable[[int], Any]:
    """``n`` child workflows on all cores against ProcessPoolExecutor, both started cold."""
    workers = os.cpu_count() or 1

    def make(n: int) -> tuple[Timer, Timer]:
        defs = [_one(action_id, i=i, **params) for i in range(n)]
        # Both sides must compute the same outputs: tiny ones are known in advance;
        # crunch ones (too slow to compute here too) are checked against each other.
        expected = [tiny(i) for i in range(n)] if action_id == "tiny" else None
        outputs: dict[str, list[Any]] = {}

        def check(side: str, out: list[Any]) -> None:
            if expected is not None:
                assert out == expected
            outputs[side] = out
            if len(outputs) == 2:
                assert outputs["gostage"] == outputs["baseline"]

        def run_gostage() -> float:
            start = time.perf_counter()
            with Runner(logger=NullLogger(), registry=REGISTRY) as runner:
                results = runner.spawn_many(
                    defs,
                    max_workers=workers,
                    options=SpawnOptions(isolation=isolation),  # type: ignore[arg-type]
                )
            elapsed = time.perf_counter() - start
            check("gostage", [r.final_store["out"] for r in results])  # type: ignore[union-attr]
            return elapsed

        def run_baseline() -> float:
            mp = multiprocessing.get_context("spawn")
            start = time.perf_counter()
            with ProcessPoolExecutor(max_workers=workers, mp_context=mp) as pool:
                if action_id == "tiny":
                    out = list(pool.map(tiny, range(n)))
                else:
                    out = list(pool.map(crunch, range(n), [params["n"]] * n))
            elapsed = time.perf_counter() - start
            check("baseline", out)
            return elapsed

        return run_gostage, run_baseline

    return make


def import_family(n: int) -> tuple[Timer, Timer]:
    """``n`` fresh interpreters importing gostage / multiprocessing."""

    def timer(module: str) -> Timer:
        def run() -> float:
            start = time.perf_counter()
            for _ in range(n):
                subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
            return time.perf_counter() - start

        return run

    return timer("gostage"), timer("multiprocessing")


# -- driver --------------------------------------------------------------------------


def families() -> list[Family]:
    return [
        Family(
            "actions: store put + get, no middleware",
            actions_family(_put_get, middleware=False),
            (1_000, 10_000, 100_000),
            (1_000,),
            10_000,
            3.0,
        ),
        Family(
            "actions: put + get, 3+3+3 middleware",
            actions_family(_put_get, middleware=True),
            (1_000, 10_000, 100_000),
            (1_000,),
            10_000,
            3.0,
        ),
        Family(
            "actions: no-op (engine overhead only)",
            actions_family(_noop, middleware=False),
            (1_000, 10_000, 100_000),
            (1_000,),
            10_000,
            None,
        ),
        Family("spawn: one-action child, end to end", spawn_family, (1, 4, 16), (1,), 1, 1.3),
        Family(
            "messages: child -> parent (incl. one spawn)",
            messages_family,
            (1_000, 10_000, 100_000),
            (1_000,),
            100_000,
            1.4,
        ),
        Family(
            "tiny children: reused workers vs PPE",
            pool_family("tiny", "worker"),
            (100, 1_000, 3_000),
            (50,),
            1_000,
            1.25,
        ),
        Family(
            "tiny children: fresh processes vs PPE",
            pool_family("tiny", "process"),
            (10, 50, 100),
            (4,),
            100,
            None,
        ),
        Family(
            "cpu children (~0.2 s): reused workers vs PPE",
            pool_family("crunch", "worker", n=CRUNCH_N),
            (8, 16, 32),
            (2,),
            32,
            1.05,
        ),
        Family(
            "cpu children (~0.2 s): fresh processes vs PPE",
            pool_family("crunch", "process", n=CRUNCH_N),
            (8, 16, 32),
            (2,),
            32,
            None,
        ),
        Family(
            "import: gostage vs multiprocessing (x runs)",
            import_family,
            (5, 10, 20),
            (2,),
            10,
            1.5,
        ),
    ]


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process (all its threads)
    and by its children that have been waited for."""
    try:
        import resource
    except ImportError:  # not POSIX: os.times is coarser but exists
        t = os.times()
        return t.user + t.system, t.children_user + t.children_system
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _timed(timer: Timer) -> tuple[float, float, float]:
    """Wall seconds of one repetition, and the CPU seconds of the parent and of the
    children during the whole call (every side reaps its processes inside it)."""
    self_before, kids_before = _cpu()
    wall = timer()
    self_after, kids_after = _cpu()
    return wall, self_after - self_before, kids_after - kids_before


def measure(case: Case, reps: int) -> dict[str, Any]:
    case.gostage()  # warm-up: imports, caches
    case.baseline()
    ours, theirs = [], []
    for _ in range(reps):
        ours.append(_timed(case.gostage))
        theirs.append(_timed(case.baseline))
    g, b = (statistics.median(t[0] for t in ours), statistics.median(t[0] for t in theirs))
    return {
        "case": case.name,
        "size": case.size,
        "gostage_s": g,
        "baseline_s": b,
        "ratio": g / b if b > 0 else None,
        "target": case.target,
        # Medians of the CPU seconds: this process, and the processes it started.
        "gostage_cpu_s": statistics.median(t[1] for t in ours),
        "gostage_children_cpu_s": statistics.median(t[2] for t in ours),
        "baseline_cpu_s": statistics.median(t[1] for t in theirs),
        "baseline_children_cpu_s": statistics.median(t[2] for t in theirs),
    }


def _cpu_shown(row: dict[str, Any], side: str) -> str:
    return f"{row[side + '_cpu_s'] * 1e3:.0f}+{row[side + '_children_cpu_s'] * 1e3:.0f}ms"


def _reps(quick: bool, size: int, family: Family) -> int:
    if quick:
        return 1
    # Big sizes already average over many operations; keep the whole run short,
    # but give the size a target is judged at five repetitions.
    return 3 if size >= max(family.sizes) and size != family.headline else 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--case", default="", help="only cases whose name contains this")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {sys.platform}")
    print(
        f"{'case':46} {'size':>7} {'gostage':>11} {'baseline':>11} {'ratio':>6} {'target':>7}"
        f" {'cpu: gostage':>14} {'baseline':>13}"
    )
    rows = []
    for family in families():
        if args.case not in family.name:
            continue
        for size in family.quick_sizes if args.quick else family.sizes:
            target = family.target if size == family.headline else None
            gostage_timer, baseline_timer = family.make(size)
            case = Case(family.name, size, gostage_timer, baseline_timer, target)
            row = measure(case, _reps(args.quick, size, family))
            rows.append(row)
            shown = f"<={target}" if target is not None else ""
            print(
                f"{row['case']:46} {size:>7} {row['gostage_s'] * 1e3:>9.1f}ms "
                f"{row['baseline_s'] * 1e3:>9.1f}ms {row['ratio']:>6.2f} {shown:>7} "
                f"{_cpu_shown(row, 'gostage'):>14} {_cpu_shown(row, 'baseline'):>13}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
