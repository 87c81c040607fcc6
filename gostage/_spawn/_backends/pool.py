"""``isolation="worker"``: long-lived workers that run many child workflows.

A worker receives the registry once, when it starts, then one workflow
definition per task, so a small child workflow costs a pipe round trip instead
of a process start. ``max_tasks_per_worker`` retires a worker after that many
tasks (against leaks in user code). A worker that dies mid-task fails only that
task; the next checkout starts a replacement. Idle workers exit when the pool
is closed, and by themselves when the parent dies (their parent-alive pipe).
"""

from __future__ import annotations

import atexit
import threading
import weakref
from multiprocessing.context import SpawnContext

from gostage._spawn._backends.base import Backend
from gostage._spawn._child import ChildLimits
from gostage._spawn._worker import Worker


class WorkerPool(Backend):
    """Idle workers shared by successive ``spawn_many`` calls of one runner."""

    # Up to this many tasks per worker: short tasks queue deep (one write and one
    # wake-up serve many), long ones two deep (see _supervisor._top_up).
    depth = 32

    def __init__(
        self,
        mp: SpawnContext,
        limits: ChildLimits,
        code: bytes,
        kill_grace: float,
        max_tasks_per_worker: int | None,
    ) -> None:
        super().__init__(mp, limits, code, kill_grace)
        self.max_tasks_per_worker = max_tasks_per_worker
        self._idle: list[Worker] = []
        self._lock = threading.Lock()  # several threads may spawn on one runner
        self._closed = False

    def checkout(self) -> Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.process.exitcode is None and not worker.eof:
                    return worker
                worker.close()  # died while idle: never hand it out
        return self.start_worker()

    def is_last_task(self, worker: Worker) -> bool:
        limit = self.max_tasks_per_worker
        return limit is not None and worker.tasks_assigned + 1 >= limit

    def checkin(self, worker: Worker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)
                return
        worker.close()

    @property
    def idle_count(self) -> int:
        """How many workers wait for a task."""
        return len(self._idle)

    def close(self) -> None:
        """Stop every idle worker: close their task pipes, then reap them."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.retire()
        for worker in idle:
            worker.close()


_live_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()
_atexit_registered = False


def close_at_exit(pool: WorkerPool) -> None:
    """Close ``pool`` at interpreter exit if nobody did before.

    Without this, exit would hang: multiprocessing's own exit handler joins every
    non-daemon child, and an idle worker waits for a task forever. Workers are not
    daemons because a child workflow must be able to start processes. Our handler
    is registered after multiprocessing's (which we have imported by now), and
    atexit runs handlers last-in first-out, so ours runs first.
    """
    global _atexit_registered
    _live_pools.add(pool)
    if not _atexit_registered:
        import multiprocessing.util  # noqa: F401  (its exit handler must be registered first)

        atexit.register(_close_live_pools)
        _atexit_registered = True


def _close_live_pools() -> None:
    for pool in list(_live_pools):
        pool.close()
