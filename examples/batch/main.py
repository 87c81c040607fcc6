"""A CPU-heavy batch in child processes: the flagship gostage example.

Counting the primes below a few million by trial division is slow, pure-Python work,
so the range is cut into jobs and every job runs as a child workflow in its own
process (``./tools/demo`` runs this script; ``--quick`` makes a smaller batch):

* one registered action, ``count-primes``, described by a ``SubWorkflowDef`` per job
  whose ``ActionDef`` params carry the job's range;
* ``runner.spawn_many(defs, max_workers=os.cpu_count())`` runs them, never more
  children alive at once than there are CPUs, and returns results in input order;
* each child reports progress with ``ctx.send("progress", ...)``; a broker handler in
  the parent prints each message live, while the children are still running;
* the children's final stores are merged into one answer, checked against an
  in-process sieve of Eratosthenes (a different, much faster algorithm);
* each ``SpawnResult`` carries the child's PID, peak RSS, duration and CPU time, so
  the run ends with a table and the parallel speedup: wall time against the time
  the same children take one after another.

Run it from the repository root: ``python examples/batch/main.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import primes  # a sibling module: the children import it too

import gostage
from gostage import ActionContext, ActionDef, SpawnOptions, SpawnResult, StageDef, SubWorkflowDef

SLICES = 2  # progress messages per job


@gostage.register("count-primes")  # the default registry, which runners use unless given one
@gostage.action(name="count-primes", description="count the primes in [lo, hi)")
def count_primes(ctx: ActionContext) -> None:
    """Runs in a child process: count a range slice by slice, reporting progress."""
    lo, hi = ctx.params["lo"], ctx.params["hi"]
    step = -(-(hi - lo) // SLICES)
    found, largest = 0, None
    for number, start in enumerate(range(lo, hi, step), start=1):
        count, biggest = primes.count_primes(start, min(start + step, hi))
        found += count
        largest = biggest if biggest is not None else largest
        ctx.send(
            "progress",
            {"job": ctx.workflow.id, "pid": os.getpid(), "slice": number, "primes": found},
        )
    # Store writes travel to the parent too; the final store comes back in the result.
    ctx.store.put("primes", found)
    ctx.store.put("largest", largest)


def mib(size: int | None) -> str:
    return "?" if size is None else f"{size / 2**20:.1f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small batch (for tests)")
    args = parser.parse_args()
    jobs, width = (8, 25_000) if args.quick else (24, 100_000)
    limit = jobs * width
    workers = os.cpu_count() or 1

    defs = [
        SubWorkflowDef(
            f"primes-{i:02d}",
            [
                StageDef(
                    "count",
                    [ActionDef("count-primes", params={"lo": i * width, "hi": (i + 1) * width})],
                )
            ],
        )
        for i in range(jobs)
    ]

    runner = gostage.Runner(logger=gostage.NullLogger())
    start = time.perf_counter()
    received = 0

    def on_progress(msg_type: str, payload: Any) -> None:
        # Runs in the parent, live, in the order each child sent its messages.
        nonlocal received
        received += 1
        print(
            f"[{time.perf_counter() - start:5.2f} s] {payload['job']} (pid {payload['pid']}): "
            f"slice {payload['slice']}/{SLICES}, {payload['primes']:>6,} primes so far"
            f"   [{received:>2}/{jobs * SLICES}]",
            flush=True,
        )

    runner.broker.register_handler("progress", on_progress)

    print(
        f"Counting the primes below {limit:,} in {jobs} child processes, "
        f"at most {workers} at a time (parent pid {os.getpid()})."
    )
    print("Each child is a fresh Python process running a one-stage workflow.\n")
    start = time.perf_counter()
    outcomes = runner.spawn_many(defs, max_workers=workers, options=SpawnOptions(timeout=60))
    wall = time.perf_counter() - start
    results = [r for r in outcomes if isinstance(r, SpawnResult)]  # failures would raise
    print(f"\nAll {len(results)} children finished in {wall:.2f} s.\n")

    print(f"{'job':<10} {'range':<22} {'primes':>7} {'pid':>8} {'time':>7} {'cpu':>7} {'RSS':>9}")
    for defn, result in zip(defs, results, strict=True):
        params = defn.stages[0].actions[0].params or {}
        cpu = "?" if result.cpu_time is None else f"{result.cpu_time:.2f} s"
        print(
            f"{defn.id:<10} [{params['lo']:>9,}, {params['hi']:>9,}) "
            f"{result.final_store['primes']:>7,} {result.pid:>8} "
            f"{result.duration:>5.2f} s {cpu:>7} {mib(result.peak_rss):>9}"
        )

    # Merge: the total of every child's count, and the largest prime anyone found.
    total = sum(r.final_store["primes"] for r in results)
    largest = max(r.final_store["largest"] for r in results)
    flags = primes.sieve(limit)
    agree = all(
        r.final_store["primes"] == flags[i * width : (i + 1) * width].count(1)
        for i, r in enumerate(results)
    )
    assert agree and total == flags.count(1), "children and sieve disagree"
    print("\nResults")
    print(f"  primes below {limit:,}: {total:,} (the largest is {largest:,})")
    print(f"  an in-process sieve agrees on all {jobs} ranges: {agree}")

    pids = {r.pid for r in results}
    rss = [r.peak_rss for r in results if r.peak_rss is not None]
    print("Processes")
    print(
        f"  {len(results)} children, {len(pids)} distinct PIDs, "
        f"none of them the parent: {os.getpid() not in pids}"
    )
    if rss:
        print(
            f"  peak RSS per child: min {mib(min(rss))}, median "
            f"{mib(int(statistics.median(rss)))}, max {mib(max(rss))}"
        )
    durations = sum(r.duration for r in results)
    cpu_total = sum(r.cpu_time or 0.0 for r in results)
    print("Time")
    print(f"  wall time                   {wall:6.2f} s")
    print(f"  children's durations, added {durations:6.2f} s  (one child after another)")
    print(f"  children's CPU time, added  {cpu_total:6.2f} s")
    print(f"  speedup                     {durations / wall:6.2f}x with {workers} workers")


if __name__ == "__main__":  # required: each child re-imports this module
    sys.exit(main())
