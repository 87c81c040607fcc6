"""``isolation="process"``: a fresh process for every child workflow.

The strongest isolation: nothing a child workflow does (module state, threads,
leaked memory, changed cwd) can reach the next one. Each process gets one task
and its task pipe is closed at once, so it exits as soon as it has answered.
"""

from __future__ import annotations

from gostage._spawn._backends.base import Backend
from gostage._spawn._worker import Worker


class ProcessBackend(Backend):
    """Starts a new child process per task."""

    def checkout(self) -> Worker:
        return self.start_worker()

    def is_last_task(self, worker: Worker) -> bool:
        return True

    def checkin(self, worker: Worker) -> None:
        raise AssertionError("a fresh process is retired with its only task")
