"""Parent-side supervision of child processes.

Data flow across the process boundary (one child)::

    parent (the thread that called spawn / spawn_many)               child process
    ---------------------------------------------------              -------------
    Process(target=child_main, args=(limits, code, defn,
            channel writer, alive reader)).start()   --spawn-->     child_main
    alive writer (held, never written) ................. EOF ....>  watchdog: os._exit
    channel reader  <--- length-prefixed JSON frames ------------   ChildChannel
        FrameDecoder -> "m": decode boxes -> on_message(type, value)
                        "r": final store document  |  "e": reported failure
    process.sentinel  <--- ready when the child exits
    psutil.Process(pid) : RSS and CPU samples; terminate/kill of the whole tree

One thread owns every transition of every child: it starts processes, waits on
all channels and sentinels at once (``multiprocessing.connection.wait``), runs the
handlers, enforces deadlines and kills. No lock is needed and nothing can change
a child's state behind its back. When a child ends, the outcome names what died
and why: the reported failure, else the timeout, else the exit status.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from typing import Any

import psutil

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
from gostage._spawn._child import EXIT_UNREPORTED_MEMORY, ChildLimits, child_main
from gostage._spawn._options import SpawnResult

_READ_CHUNK = 1 << 20
_SAMPLE_EVERY = 0.05  # seconds between psutil samples of a running child


@dataclass
class Job:
    """One child workflow to run: what to send, limits, and where its messages go."""

    index: int
    workflow_id: str
    defn: dict[str, Any]
    limits: ChildLimits
    timeout: float | None
    kill_grace: float
    on_message: Callable[[str, Any], None]


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class ChildProcess:
    """One running child and everything the parent knows about it."""

    def __init__(self, job: Job, mp: SpawnContext, code: bytes, allow_pickle: bool) -> None:
        self.job = job
        self.allow_pickle = allow_pickle
        reader, writer = mp.Pipe(duplex=False)
        alive_reader, alive_writer = mp.Pipe(duplex=False)
        self.process = mp.Process(
            target=child_main,
            args=(job.limits, code, job.defn, writer, alive_reader),
            name=f"gostage-child-{job.workflow_id}",
        )
        self.started = time.monotonic()
        try:
            self.process.start()
        finally:
            # The child has its copies now; ours would keep the channel from
            # reaching EOF and the child from noticing our death.
            writer.close()
            alive_reader.close()
        self.reader: Connection = reader
        self._alive_writer: Connection | None = alive_writer
        self.pid: int = self.process.pid or 0
        self.deadline = None if job.timeout is None else self.started + job.timeout
        self.decoder = proto.FrameDecoder(job.limits.max_frame)
        self.final: dict[str, Any] | None = None
        self.failure: SpawnError | BaseException | None = None  # decided by the parent
        self.eof = False
        self.exit_code: int | None = None
        self.peak_rss: int | None = None
        self.cpu_time: float | None = None
        self._next_sample = 0.0
        try:
            self.ps: psutil.Process | None = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            self.ps = None

    # -- reading ----------------------------------------------------------------

    def read(self) -> None:
        """Read what the channel has (called when it is ready) and handle whole frames."""
        try:
            data = os.read(self.reader.fileno(), _READ_CHUNK)
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return
        if self.failure is not None:
            return  # already condemned: drain and ignore
        try:
            for frame in self.decoder.feed(data):
                self._handle(frame)
        except proto.FrameError as exc:
            self.condemn(
                ChildProtocolError(
                    f"child {self.pid} of workflow {self.job.workflow_id!r} broke the channel "
                    f"protocol: {exc}",
                    pid=self.pid,
                )
            )

    def _handle(self, frame: dict[str, Any]) -> None:
        if self.final is not None:
            raise proto.FrameError("frame after the final report")
        kind = frame["k"]
        if kind != "m":
            self.final = frame
            return
        messages = frame.get("m")
        if not isinstance(messages, list):
            raise proto.FrameError("message frame without a message list")
        from gostage._exceptions import StoreSerializationError
        from gostage.store._serialization import decode_value

        for item in messages:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                raise proto.FrameError(f"malformed message {str(item)[:80]!r}")
            msg_type, box = item
            if type(box) is dict and len(box) == 1 and "json" in box:
                # json.loads only ever builds plain JSON types: nothing to check or copy.
                payload = box["json"]
            else:
                try:
                    payload = decode_value(
                        box, f"payload of message {msg_type!r}", self.allow_pickle
                    )
                except StoreSerializationError as exc:
                    raise proto.FrameError(str(exc)) from None
            try:
                self.job.on_message(msg_type, payload)
            except Exception as exc:
                failure = SpawnError(
                    f"handling message {msg_type!r} from child {self.pid} of workflow "
                    f"{self.job.workflow_id!r} raised {type(exc).__name__}: {exc}",
                    pid=self.pid,
                )
                failure.__cause__ = exc
                self.condemn(failure)
                return

    # -- supervising -----------------------------------------------------------

    def sample(self, now: float) -> None:
        """Record RSS and CPU time, at most every ``_SAMPLE_EVERY`` seconds."""
        if self.ps is None or now < self._next_sample:
            return
        self._next_sample = now + _SAMPLE_EVERY
        try:
            with self.ps.oneshot():
                rss = self.ps.memory_info().rss
                times = self.ps.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return
        self.peak_rss = max(self.peak_rss or 0, rss)
        self.cpu_time = times.user + times.system

    def condemn(self, failure: BaseException) -> None:
        """Decide the outcome now and kill the child's whole tree."""
        if self.failure is None:
            self.failure = failure
        self.kill()

    def kill(self) -> None:
        """Terminate the child and every descendant; kill what is left after ``kill_grace``.

        Descendants are listed before anything is signalled: once the child dies
        they are re-parented and can no longer be found from it. The child leads
        its own process group, and the group is signalled too, which also reaches
        descendants that were re-parented before we looked. The child itself is
        waited for through ``multiprocessing`` (psutil would reap it behind
        multiprocessing's back and lose its exit code).
        """
        if self.process.exitcode is not None:
            return
        descendants: list[psutil.Process] = []
        if self.ps is not None:
            try:
                descendants = self.ps.children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        _signal_group(self.pid, signal.SIGTERM)
        self.process.terminate()
        for proc in descendants:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        give_up = time.monotonic() + self.job.kill_grace
        self.process.join(self.job.kill_grace)
        _, alive = psutil.wait_procs(descendants, timeout=max(0.0, give_up - time.monotonic()))
        if self.process.exitcode is None:
            self.process.kill()
        _signal_group(self.pid, signal.SIGKILL)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.join(5)
        psutil.wait_procs(alive, timeout=5)

    def close(self) -> None:
        """Reap the process and release every descriptor (idempotent)."""
        self.process.join(timeout=5)
        if self.process.exitcode is None:  # cannot happen after kill_tree; never hang
            self.process.kill()
            self.process.join()
        self.exit_code = self.process.exitcode
        # The process group may still hold descendants that outlived the child.
        _signal_group(self.pid, signal.SIGKILL)
        self.reader.close()
        if self._alive_writer is not None:
            self._alive_writer.close()
            self._alive_writer = None
        self.process.close()

    def drain(self) -> None:
        """After exit: read what the child wrote before it died.

        Only what is already there: a grandchild that inherited the write end could
        keep the channel open forever, so EOF is not waited for.
        """
        while not self.eof and self.reader.poll(0):
            self.read()

    # -- the verdict -------------------------------------------------------------

    def outcome(self) -> SpawnResult | BaseException:
        """A SpawnResult on success, else the exception that says what went wrong."""
        exit_code = self.exit_code
        duration = time.monotonic() - self.started
        final = self.final
        store_obj = None
        error: BaseException | None = self.failure
        if error is None and final is not None and final["k"] == "r":
            if isinstance(final.get("rss"), int):
                self.peak_rss = max(self.peak_rss or 0, final["rss"])
            if isinstance(final.get("cpu"), (int, float)):
                self.cpu_time = float(final["cpu"])
            try:
                from gostage.store import Store

                store_obj = Store.import_state(final.get("store"), allow_pickle=self.allow_pickle)
            except Exception as exc:
                error = ChildProtocolError(
                    f"child {self.pid} of workflow {self.job.workflow_id!r} sent an "
                    f"unreadable final store: {exc}",
                    pid=self.pid,
                    exit_code=exit_code,
                )
        elif error is None:
            error = self._failure_from(final, exit_code)
        result = SpawnResult(
            success=error is None,
            error=error,
            final_store=store_obj.to_dict() if store_obj is not None else {},
            pid=self.pid,
            exit_code=exit_code,
            duration=duration,
            peak_rss=self.peak_rss,
            cpu_time=self.cpu_time,
            workflow_id=self.job.workflow_id,
            store=store_obj,
        )
        if error is None:
            return result
        if isinstance(error, SpawnError):
            error.exit_code = exit_code
            error.result = result  # type: ignore[attr-defined]
        return error

    def _failure_from(self, final: dict[str, Any] | None, exit_code: int | None) -> BaseException:
        who = f"child {self.pid} of workflow {self.job.workflow_id!r}"
        if final is not None and final["k"] == "e":
            return _reported_failure(final, who, self.pid, exit_code)
        if exit_code is not None and exit_code < 0:
            signum = -exit_code
            if signum == getattr(signal, "SIGXCPU", None):
                return ChildTimeoutError(
                    f"{who} exceeded its CPU-time limit of {self.job.limits.cpu_time_limit} s",
                    pid=self.pid,
                    exit_code=exit_code,
                )
            return ChildCrashedError(
                f"{who} died from {_signal_name(signum)} without reporting a result",
                pid=self.pid,
                exit_code=exit_code,
                signal=signum,
            )
        if exit_code == EXIT_UNREPORTED_MEMORY:
            return ChildMemoryError(f"{who} ran out of memory", pid=self.pid, exit_code=exit_code)
        return ChildCrashedError(
            f"{who} exited with code {exit_code} without reporting a result",
            pid=self.pid,
            exit_code=exit_code,
        )


def _reported_failure(
    final: dict[str, Any], who: str, pid: int, exit_code: int | None
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
        return ChildSerializationError(
            f"{who} produced a value that cannot travel to the parent: {message}; make it "
            "JSON-safe or spawn with trust_child=True",
            key=key if isinstance(key, str) else None,
            pid=pid,
        )
    if kind == proto.KIND_FRAME:
        return ChildProtocolError(f"{who}: {message}", pid=pid, exit_code=exit_code)
    if kind == proto.KIND_UNKNOWN_ACTION:
        return UnknownActionError(message)
    return SpawnError(f"{who} failed: {exc_type}: {message}\n{tb}", pid=pid, exit_code=exit_code)


def supervise(
    jobs: list[Job],
    mp: SpawnContext,
    code: bytes,
    allow_pickle: bool,
    *,
    max_workers: int,
    cancel: Any = None,
    deadline: float | None = None,
    fail_fast: bool = False,
) -> list[SpawnResult | BaseException]:
    """Run ``jobs`` with at most ``max_workers`` children alive; outcomes in job order."""
    from multiprocessing.connection import wait

    outcomes: list[SpawnResult | BaseException | None] = [None] * len(jobs)
    pending = list(reversed(jobs))
    running: dict[int, ChildProcess] = {}  # keyed by job index
    stop: BaseException | None = None
    try:
        while pending or running:
            while pending and len(running) < max_workers and stop is None:
                job = pending.pop()
                running[job.index] = ChildProcess(job, mp, code, allow_pickle)
            if not running:
                break
            now = time.monotonic()
            timeout = _next_wakeup(running.values(), now, deadline)
            waitables: dict[Any, ChildProcess] = {}
            for child in running.values():
                if not child.eof:  # a reader at EOF is always ready: do not spin on it
                    waitables[child.reader] = child
                waitables[child.process.sentinel] = child
            ready = wait(list(waitables), timeout=timeout)
            exited: list[ChildProcess] = []
            for obj in ready:
                child = waitables[obj]
                if obj is child.reader:
                    child.read()
                elif child not in exited:
                    exited.append(child)
            now = time.monotonic()
            if stop is None:
                stop = _run_level_stop(cancel, deadline, now)
            for child in running.values():
                if child in exited:
                    continue
                child.sample(now)
                if stop is not None:
                    child.condemn(stop)
                elif child.failure is None and child.deadline is not None and now >= child.deadline:
                    child.condemn(
                        ChildTimeoutError(
                            f"child {child.pid} of workflow {child.job.workflow_id!r} timed out "
                            f"after {child.job.timeout} s and was killed with its process tree",
                            pid=child.pid,
                        )
                    )
                if child.failure is not None and child not in exited:
                    exited.append(child)  # condemn() killed it: collect now
            for child in exited:
                child.drain()
                child.close()
                del running[child.job.index]
                outcome = child.outcome()
                outcomes[child.job.index] = outcome
                if fail_fast and isinstance(outcome, BaseException) and stop is None:
                    stop = outcome
        if stop is not None:
            for job in pending:
                outcomes[job.index] = stop
    finally:
        # Any exit path (KeyboardInterrupt included) takes every child with it.
        for child in running.values():
            child.kill()
            child.close()
    return [o if o is not None else SpawnError("child was not run") for o in outcomes]


def _next_wakeup(children: Any, now: float, deadline: float | None) -> float:
    """Seconds until the next deadline, but at most the sampling interval.

    Waking at least that often also lets a cancel event, which cannot wake
    ``wait``, take effect within ``_SAMPLE_EVERY``.
    """
    wake = now + _SAMPLE_EVERY
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
