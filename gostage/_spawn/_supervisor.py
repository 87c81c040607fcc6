"""The supervising loop: one thread runs every child of a spawn call.

One thread owns every transition of every child it has checked out of a backend:
it assigns tasks, waits on all channels, exit sentinels and (while tasks wait to be
written) task pipes at once, runs the handlers, enforces deadlines and kills. No
lock is needed and nothing can change a child's state behind its back. The
descriptors are registered once per checkout with a ``poll`` object, not on every
wait. The data flow across the boundary is drawn in ``_worker``.

When a task ends, its outcome names what died and why: the failure the parent
decided (timeout, protocol violation, handler error), else the failure the child
reported, else the exit status of a child that died without reporting.
"""

from __future__ import annotations

import math
import select
import signal
import time
from collections.abc import Callable
from typing import Any

from gostage._exceptions import (
    ChildActionError,
    ChildCrashedError,
    ChildMemoryError,
    ChildProtocolError,
    ChildSerializationError,
    ChildTimeoutError,
    SpawnError,
    UnknownActionError,
    WorkflowCancelled,
    WorkflowTimeout,
)
from gostage._spawn import _protocol as proto
from gostage._spawn._backends.base import Backend
from gostage._spawn._child import EXIT_UNREPORTED_MEMORY
from gostage._spawn._options import SpawnResult
from gostage._spawn._worker import SAMPLE_EVERY, Finished, Job, Worker
from gostage.store import Store

Outcome = SpawnResult | BaseException


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def supervise(
    jobs: list[Job],
    backend: Backend,
    *,
    allow_pickle: bool,
    max_workers: int,
    cancel: Any = None,
    deadline: float | None = None,
    fail_fast: bool = False,
    on_outcome: Callable[[int, Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``jobs`` on at most ``max_workers`` live children; outcomes in job order.

    ``on_outcome(index, outcome)`` is called as soon as each job's outcome is known.
    """
    outcomes: list[Outcome | None] = [None] * len(jobs)
    pending = list(reversed(jobs))  # a stack: pop() gives the next job in order
    workers: list[Worker] = []  # checked out, alive (or exiting after their last answer)
    stop: BaseException | None = None
    watch = _Watch()

    def settle(worker: Worker, finished: Finished) -> None:
        nonlocal stop
        index, outcome = _outcome(worker, finished, allow_pickle)
        outcomes[index] = outcome
        if on_outcome is not None:
            on_outcome(index, outcome)
        if fail_fast and stop is None and isinstance(outcome, BaseException):
            stop = SpawnError(f"stopped: another child failed and fail_fast is set ({outcome})")

    try:
        while pending or workers:
            if stop is None:
                _fill(workers, pending, backend, max_workers, watch)
            if not workers:
                break
            for worker in workers:
                if worker.wants_write:
                    worker.push()
                watch.sync_write(worker)
            exited: set[Worker] = set()
            for worker, role in watch.wait(_next_wakeup(workers, time.monotonic(), deadline)):
                if role == _READ:
                    worker.read(allow_pickle)
                    if worker.eof:  # a reader at EOF is always ready: do not spin on it
                        watch.reader_done(worker)
                elif role == _EXIT:
                    exited.add(worker)
                # _WRITE: the task pipe has room; the push above writes next time round
            now = time.monotonic()
            if stop is None:
                stop = _run_level_stop(cancel, deadline, now)
            for worker in list(workers):
                if worker not in exited and worker.job is not None:
                    worker.sample(now)
                    if stop is not None:
                        worker.condemn(type(stop)(str(stop)))
                    elif (
                        worker.failure is None
                        and worker.deadline is not None
                        and now >= worker.deadline
                    ):
                        worker.condemn(_timed_out(worker))
                if worker.failure is not None:
                    exited.add(worker)  # condemn() killed it: collect now
                if worker in exited:
                    worker.drain(allow_pickle)
                    watch.remove(worker)
                    worker.close()
                    workers.remove(worker)
                    finished, unstarted = worker.abandon()
                    pending.extend(reversed(unstarted))  # back to the front, in order
                    for done in worker.finished:
                        settle(worker, done)
                    if finished is not None:
                        settle(worker, finished)
                elif not worker.retired:
                    # Answers of a worker that stays are final now; a retired
                    # one's wait for its exit status.
                    if worker.finished:
                        for done in worker.finished:
                            settle(worker, done)
                        worker.finished.clear()
                    if worker.job is None and (stop is not None or not pending):
                        watch.remove(worker)
                        workers.remove(worker)
                        backend.checkin(worker)
        for job in pending:  # only left when the run stopped
            assert stop is not None
            outcomes[job.index] = type(stop)(str(stop))
            if on_outcome is not None:
                on_outcome(job.index, outcomes[job.index])  # type: ignore[arg-type]
    finally:
        # Any way out (KeyboardInterrupt included) takes the working children with it;
        # idle ones go back to the backend.
        watch.close()
        for worker in workers:
            if worker.job is not None or worker.retired:
                worker.kill()
                worker.close()
            else:
                backend.checkin(worker)
    results = [o for o in outcomes if o is not None]
    assert len(results) == len(jobs)
    return results


def _fill(
    workers: list[Worker], pending: list[Job], backend: Backend, max_workers: int, watch: _Watch
) -> None:
    """Give pending jobs to children: top up the queue of each, start new ones."""
    if not pending:
        return
    # At the end of a run, no worker takes more than its share of what is left.
    share = -(-len(pending) // max_workers)
    for worker in workers:
        if not worker.retired:
            _top_up(worker, pending, backend, share)
    while pending and len(workers) < max_workers:
        worker = backend.checkout()
        worker.pace = None  # a reused worker's pace was that of another call's tasks
        workers.append(worker)
        watch.add(worker)
        _top_up(worker, pending, backend, share)


PREFETCH = 0.005
"""Seconds of work (at a worker's recent pace) to keep queued behind its running task."""


def _top_up(worker: Worker, pending: list[Job], backend: Backend, share: int) -> None:
    """Queue tasks on ``worker``: up to its depth, in batches of half of it.

    The depth is ``backend.depth`` at most, 2 (one running, one waiting) until the
    worker's pace is known, and otherwise as many as cover ``PREFETCH`` seconds, so
    tasks of tens of microseconds travel dozens per write while long ones are
    queued only one ahead and cannot pile up behind a slow one.
    """
    limit = backend.depth
    if limit > 2:
        pace = worker.pace
        if pace is None:
            limit = 2
        elif pace * (limit - 1) > PREFETCH:
            limit = max(2, 1 + int(PREFETCH / pace))
    queued = len(worker.queue)
    if queued > limit // 2:
        return
    for _ in range(min(limit - queued, share)):
        if not pending or worker.retired:
            return
        worker.assign(pending.pop(), last=backend.is_last_task(worker))


_READ, _EXIT, _WRITE = 0, 1, 2
_IN = select.POLLIN | select.POLLPRI
_OUT = select.POLLOUT


class _Watch:
    """The descriptors of the checked-out workers, each registered once with ``poll``.

    Per worker: its channel reader (until EOF), its exit sentinel, and its task pipe
    while task bytes wait for room. A worker's descriptors are unregistered before
    they are closed, so a reused descriptor number never reaches the wrong worker.
    """

    def __init__(self) -> None:
        self._poll = select.poll()
        self._roles: dict[int, tuple[Worker, int]] = {}
        self._fds: dict[Worker, list[int]] = {}

    def _register(self, worker: Worker, fd: int, role: int, events: int) -> None:
        self._poll.register(fd, events)
        self._roles[fd] = (worker, role)
        self._fds.setdefault(worker, []).append(fd)

    def _unregister(self, worker: Worker, fd: int) -> None:
        self._poll.unregister(fd)
        del self._roles[fd]
        self._fds[worker].remove(fd)

    def add(self, worker: Worker) -> None:
        if not worker.eof:
            self._register(worker, worker.reader.fileno(), _READ, _IN)
        self._register(worker, worker.process.sentinel, _EXIT, _IN)

    def reader_done(self, worker: Worker) -> None:
        fd = worker.reader.fileno()
        if fd in self._roles:
            self._unregister(worker, fd)

    def sync_write(self, worker: Worker) -> None:
        """Watch the task pipe for room exactly while task bytes wait for it."""
        fd = worker.task_fd
        watched = fd in self._roles and self._roles[fd][1] == _WRITE
        if worker.wants_write and not watched:
            self._register(worker, fd, _WRITE, _OUT)
        elif watched and not worker.wants_write:
            self._unregister(worker, fd)

    def remove(self, worker: Worker) -> None:
        for fd in self._fds.pop(worker, []):
            self._poll.unregister(fd)
            del self._roles[fd]

    def close(self) -> None:
        for worker in list(self._fds):
            self.remove(worker)

    def wait(self, timeout: float) -> list[tuple[Worker, int]]:
        """The (worker, role) pairs ready within ``timeout`` seconds."""
        ready = self._poll.poll(math.ceil(timeout * 1000))
        roles = self._roles
        return [roles[fd] for fd, _ in ready]


def _timed_out(worker: Worker) -> ChildTimeoutError:
    assert worker.job is not None
    return ChildTimeoutError(
        f"{worker.who} timed out after {worker.job.timeout} s and was killed with its process tree",
        pid=worker.pid,
    )


def _outcome(worker: Worker, finished: Finished, allow_pickle: bool) -> tuple[int, Outcome]:
    """Turn a finished task into a result or an exception."""
    job, final, error = finished.job, finished.final, finished.failure
    exit_code = worker.exit_code
    store_obj = None
    cpu_time = None
    peak_rss = worker.peak_rss
    if final is not None and final["k"] == "r" and error is None:
        if isinstance(final.get("rss"), int):
            peak_rss = max(peak_rss or 0, final["rss"])
        if isinstance(final.get("cpu"), (int, float)):
            cpu_time = float(final["cpu"])
        try:
            # The document is fresh from json.loads and ours alone: no copy needed.
            store_obj = Store._import_owned(final.get("store"), allow_pickle)
        except Exception as exc:
            error = ChildProtocolError(
                f"{_who(worker, job)} sent an unreadable final store: {exc}",
                pid=worker.pid,
                exit_code=exit_code,
            )
    elif error is None:
        error = _failure_from(final, exit_code, _who(worker, job), worker, allow_pickle)
    result = SpawnResult(
        success=error is None,
        error=error,
        final_store=dict(store_obj.items()) if store_obj is not None else {},
        pid=worker.pid,
        exit_code=exit_code,
        duration=finished.duration,
        peak_rss=peak_rss,
        cpu_time=cpu_time,
        workflow_id=job.workflow_id,
        store=store_obj,
    )
    if error is None:
        return job.index, result
    if isinstance(error, SpawnError):
        if error.exit_code is None:
            error.exit_code = exit_code
        error.result = result  # type: ignore[attr-defined]
    return job.index, error


def _who(worker: Worker, job: Job) -> str:
    return f"child {worker.pid} of workflow {job.workflow_id!r}"


def _failure_from(
    final: dict[str, Any] | None,
    exit_code: int | None,
    who: str,
    worker: Worker,
    allow_pickle: bool,
) -> BaseException:
    pid = worker.pid
    if final is not None and final["k"] == "e":
        return _reported_failure(final, who, pid, exit_code, allow_pickle)
    if exit_code is not None and exit_code < 0:
        signum = -exit_code
        if signum == getattr(signal, "SIGXCPU", None):
            return ChildTimeoutError(
                f"{who} exceeded its CPU-time limit of {worker.limits.cpu_time_limit} s",
                pid=pid,
                exit_code=exit_code,
            )
        return ChildCrashedError(
            f"{who} died from {_signal_name(signum)} without reporting a result",
            pid=pid,
            exit_code=exit_code,
            signal=signum,
        )
    if exit_code == EXIT_UNREPORTED_MEMORY:
        return ChildMemoryError(f"{who} ran out of memory", pid=pid, exit_code=exit_code)
    return ChildCrashedError(
        f"{who} exited with code {exit_code} without reporting a result",
        pid=pid,
        exit_code=exit_code,
    )


def _reported_failure(
    final: dict[str, Any], who: str, pid: int, exit_code: int | None, allow_pickle: bool
) -> BaseException:
    kind = final.get("kind")
    message = str(final.get("message", ""))
    exc_type = str(final.get("exc_type", "Exception"))
    tb = str(final.get("traceback", ""))
    if kind == proto.KIND_ACTION:
        return ChildActionError(
            f"{who}: {message}",
            exc_type=exc_type,
            traceback=tb,
            stage_id=final.get("stage"),
            action_name=final.get("action"),
            pid=pid,
            exit_code=exit_code,
        )
    if kind == proto.KIND_MEMORY:
        return ChildMemoryError(f"{who} ran out of memory: {message}", pid=pid, exit_code=exit_code)
    if kind == proto.KIND_SERIALIZATION:
        key = final.get("key")
        hint = "" if allow_pickle else "; make it JSON-safe or spawn with trust_child=True"
        return ChildSerializationError(
            f"{who} produced a value that cannot travel to the parent: {message}{hint}",
            key=key if isinstance(key, str) else None,
            pid=pid,
        )
    if kind == proto.KIND_FRAME:
        return ChildProtocolError(f"{who}: {message}", pid=pid, exit_code=exit_code)
    if kind == proto.KIND_UNKNOWN_ACTION:
        return UnknownActionError(message)
    return SpawnError(f"{who} failed: {exc_type}: {message}\n{tb}", pid=pid, exit_code=exit_code)


def _next_wakeup(children: list[Worker], now: float, deadline: float | None) -> float:
    """Seconds until the next deadline, but at most the sampling interval.

    Waking at least that often also lets a cancel event, which cannot wake
    ``wait``, take effect within ``SAMPLE_EVERY``.
    """
    wake = now + SAMPLE_EVERY
    for child in children:
        if child.deadline is not None:
            wake = min(wake, child.deadline)
    if deadline is not None:
        wake = min(wake, deadline)
    return max(0.0, wake - now)


def _run_level_stop(cancel: Any, deadline: float | None, now: float) -> BaseException | None:
    if cancel is not None and cancel.is_set():
        return WorkflowCancelled("run cancelled: its child processes were terminated")
    if deadline is not None and now >= deadline:
        return WorkflowTimeout("run deadline passed: its child processes were killed")
    return None
