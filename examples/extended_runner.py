"""Extending the Runner: a runner that owns a shared resource and cleans it up.

``PooledRunner`` subclasses ``gostage.Runner`` and owns a connection pool (a small
stand-in for a database pool) that every workflow it runs may use:

* in ``__init__`` it registers its own runner middleware first, so it is the
  outermost: for the length of each run it puts the pool into the workflow's store
  (key ``resource:db``, tagged ``resource``) and into the ``RunContext``
  (``ctx.with_value("db", pool)``), and takes it out of the store afterwards, even
  when the run fails, so ``RunResult.final_store`` holds only plain data;
* actions borrow connections from the pool in the store; a workflow middleware
  reads the pool from ``ctx.value("db")`` to check it before each stage;
* ``execute`` is overridden to count runs (``execute_all`` goes through it too);
* ``close()`` (also via ``with``) closes the pool; a closed runner refuses to run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import gostage
from gostage import (
    ActionContext,
    CancelEvent,
    Logger,
    Metadata,
    Middleware,
    RunContext,
    RunnerFunc,
    RunResult,
    Stage,
    StageFunc,
    Workflow,
)


class Connection:
    def __init__(self, number: int) -> None:
        self.number = number
        self.queries = 0
        self.open = True

    def query(self, sql: str) -> list[tuple[str, int]]:
        if not self.open:
            raise RuntimeError("connection is closed")
        self.queries += 1
        table = sql.rsplit(" ", 1)[-1]
        return [(f"{table}-row-{i}", i * len(table)) for i in range(1, 4)]


class ConnectionPool:
    """Hands out at most ``size`` connections, reusing released ones."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.created: list[Connection] = []
        self._free: list[Connection] = []
        self._lock = threading.Lock()  # a lock: this object cannot be deep-copied
        self.borrowed = 0
        self.closed = False

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        with self._lock:
            if self.closed:
                raise RuntimeError("pool is closed")
            if self._free:
                conn = self._free.pop()
            elif len(self.created) < self.size:
                conn = Connection(len(self.created) + 1)
                self.created.append(conn)
            else:
                raise RuntimeError("pool exhausted")
            self.borrowed += 1
        try:
            yield conn
        finally:
            with self._lock:
                self._free.append(conn)

    def close(self) -> None:
        with self._lock:
            for conn in self.created:
                conn.open = False
            self.closed = True


POOL_KEY = "resource:db"


class PooledRunner(gostage.Runner):
    """A Runner that lends its connection pool to every workflow it runs."""

    def __init__(
        self,
        pool_size: int = 2,
        middleware: Iterable[Middleware] = (),
        logger: Logger | None = None,
    ) -> None:
        super().__init__(logger=logger)
        self.pool = ConnectionPool(pool_size)
        self.runs = 0
        # Ours first, so it is the outermost: the pool is there for every other layer.
        self.use(self._lend_pool, *middleware)

    def _lend_pool(self, next_: RunnerFunc) -> RunnerFunc:
        def run(ctx: RunContext, workflow: Workflow, logger: Logger) -> None:
            if self.pool.closed:
                raise RuntimeError(f"runner is closed; cannot run {workflow.id!r}")
            meta = Metadata(tags=("resource",), description="lent by PooledRunner for one run")
            workflow.store.put_with_metadata(POOL_KEY, self.pool, meta)
            try:
                next_(ctx.with_value("db", self.pool), workflow, logger)
            finally:
                # Out before the run ends: the result's final_store is a deep copy of
                # the store, and the pool (it holds a lock) is not copyable.
                workflow.store.delete(POOL_KEY)

        return run

    def execute(
        self,
        workflow: Workflow,
        logger: Logger | None = None,
        *,
        timeout: float | None = None,
        cancel: CancelEvent | None = None,
    ) -> RunResult:
        self.runs += 1
        return super().execute(workflow, logger, timeout=timeout, cancel=cancel)

    def close(self) -> None:
        """Close the pool; the runner cannot run workflows afterwards."""
        self.pool.close()
        base_close = getattr(super(), "close", None)
        if callable(base_close):  # release whatever the base Runner holds, if anything
            base_close()

    def __enter__(self) -> PooledRunner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def db(ctx: ActionContext) -> ConnectionPool:
    """What actions call to reach the runner's pool."""
    pool: ConnectionPool = ctx.store.get(POOL_KEY, ConnectionPool)
    return pool


def check_pool(next_: StageFunc) -> StageFunc:
    """Workflow middleware: refuse to start a stage without a usable pool."""

    def run(ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger) -> None:
        pool = ctx.value("db")
        if pool is None or pool.closed:
            raise RuntimeError(f"stage {stage.id!r} needs a database pool")
        next_(ctx, stage, workflow, logger)

    return run


def report_workflow(table: str) -> Workflow:
    @gostage.action(name=f"load-{table}")
    def load(ctx: ActionContext) -> None:
        with db(ctx).connection() as conn:
            rows = conn.query(f"SELECT * FROM {table}")
        ctx.store.put("rows", rows)
        print(f"  [{table}] loaded {len(rows)} rows on connection #{conn.number}")

    @gostage.action(name=f"total-{table}")
    def total(ctx: ActionContext) -> None:
        with db(ctx).connection() as conn:
            conn.query(f"SELECT count(*) FROM {table}")
            amount = sum(value for _, value in ctx.store.get("rows", list))
        ctx.store.put("total", amount)
        print(f"  [{table}] total {amount} (connection #{conn.number})")

    workflow = Workflow(f"report-{table}").use(check_pool)
    workflow.add_stage(Stage("load").add_action(load))
    workflow.add_stage(Stage("aggregate").add_action(total))
    return workflow


def main() -> None:
    tables = ["sales", "inventory", "signups"]
    with PooledRunner(pool_size=2, logger=gostage.NullLogger()) as runner:
        print(f"Running {len(tables)} report workflows on one PooledRunner:")
        results = runner.execute_all(report_workflow(t) for t in tables)
        pool = runner.pool
        totals: dict[str, Any] = {r.workflow_id: r.final_store["total"] for r in results}
        print(f"Totals: {totals}")
        print(
            f"Runs: {runner.runs}; connections borrowed {pool.borrowed} times, "
            f"created {len(pool.created)} (reused, never more than {pool.size})"
        )
        print(f"Pool left in any final_store: {any(POOL_KEY in r.final_store for r in results)}")

    print(
        f"After the with block: pool closed={pool.closed}, "
        f"open connections={sum(c.open for c in pool.created)}"
    )
    try:
        runner.execute(report_workflow("late"))
    except RuntimeError as exc:
        print(f"Running on a closed runner fails: {exc}")


if __name__ == "__main__":
    main()
