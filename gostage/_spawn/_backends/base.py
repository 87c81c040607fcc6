"""The seam between the supervisor and the ways of getting child processes.

The supervisor asks a backend for a worker per task and hands it back once the
task is answered; what a backend does in between (start a fresh process each
time, keep a pool, one day talk to a cluster) is its own business. A backend is
used by one supervising thread per checked-out worker; backends that share
workers across calls guard their own bookkeeping.
"""

from __future__ import annotations

import abc
from multiprocessing.context import SpawnContext

from gostage._spawn._child import ChildLimits
from gostage._spawn._worker import Worker


class Backend(abc.ABC):
    """Hands out :class:`Worker` processes and takes them back."""

    depth = 1
    """The most tasks a worker may hold at once: the one it runs and those queued
    behind it in its task pipe, so it never waits for the parent between tasks.
    Above 2, the supervisor queues only as many as cover a few milliseconds of the
    worker's recent pace, so long tasks are never stuck behind one another."""

    def __init__(self, mp: SpawnContext, limits: ChildLimits, code: bytes, kill_grace: float):
        self.mp = mp
        self.limits = limits
        self.code = code
        self.kill_grace = kill_grace

    def start_worker(self) -> Worker:
        """A new child process, ready for its first task."""
        return Worker(self.mp, self.limits, self.code, self.kill_grace)

    @abc.abstractmethod
    def checkout(self) -> Worker:
        """A live worker with no task: an idle one, or a new one."""

    @abc.abstractmethod
    def is_last_task(self, worker: Worker) -> bool:
        """Whether the task about to be assigned is the worker's last."""

    @abc.abstractmethod
    def checkin(self, worker: Worker) -> None:
        """Take back a live worker that answered its task and was not retired."""
