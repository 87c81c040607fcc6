"""The parent's handle on one child process, and what it knows of the task it runs.

Data flow across the process boundary (one child)::

    parent (the supervising thread)                                  child process
    -------------------------------                                  -------------
    Process(target=worker_main, args=(limits, code, task reader,
            channel writer, alive reader)).start()  --spawn-->      worker_main
    alive writer (held, never written) ................ EOF ....>   watchdog: os._exit
    task writer   ---- one JSON frame per task (non-blocking) -->   TaskReader -> _serve
    channel reader <--- length-prefixed JSON frames -------------   ChildChannel
        FrameDecoder -> "m": decode boxes -> job.on_message(type, value)
                        "r": final store document | "e": reported failure
                        (an "r"/"e" frame may carry the task's last messages first)
    process.sentinel <--- ready when the child exits
    psutil.Process(pid): RSS and CPU samples; terminate/kill of the whole tree

A fresh process per child workflow is a worker given one task whose task pipe is
closed at once: it answers, sees EOF and exits. A reused worker keeps its task
pipe open and waits for the next task.

The parent never blocks on the task pipe: tasks are buffered and written as the
pipe takes them (the supervisor polls for writability while some are left), so a
big definition queued behind a running task cannot stall the supervising thread
while that task fills the channel.
"""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from typing import Any

import psutil

from gostage._exceptions import ChildProtocolError, SpawnError, StoreSerializationError
from gostage._spawn import _protocol as proto
from gostage._spawn._child import ChildLimits, worker_main
from gostage.store._serialization import decode_value

_READ_CHUNK = 1 << 20
SAMPLE_EVERY = 0.05  # seconds between psutil samples of a busy child
_PACE_WEIGHT = 0.3  # of the latest task in the moving average of task durations


@dataclass
class Finished:
    """A task that ended: its final frame (``None`` if the child never answered),
    the failure the parent decided (if any) and how long it ran."""

    job: Job
    final: dict[str, Any] | None
    failure: BaseException | None
    duration: float


@dataclass
class Job:
    """One child workflow to run: what to send, limits, and where its messages go."""

    index: int
    workflow_id: str
    task: bytes  # the definition as a task frame (_protocol.encode_task)
    timeout: float | None
    on_message: Callable[[str, Any], None]


def signal_group(pgid: int, signum: int) -> None:
    """Signal a process group, ignoring one that is already gone."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class Worker:
    """One child process. Owned by one supervising thread at a time, so it needs no lock."""

    def __init__(
        self, mp: SpawnContext, limits: ChildLimits, code: bytes, kill_grace: float
    ) -> None:
        self.limits = limits
        self.kill_grace = kill_grace
        reader, writer = mp.Pipe(duplex=False)
        task_reader, task_writer = mp.Pipe(duplex=False)
        alive_reader, alive_writer = mp.Pipe(duplex=False)
        self.process = mp.Process(
            target=worker_main,
            args=(limits, code, task_reader, writer, alive_reader),
            name="gostage-child",
        )
        self.started = time.monotonic()
        try:
            self.process.start()
        finally:
            # The child has its copies now; ours would keep the channel from
            # reaching EOF and the child from noticing our death.
            writer.close()
            task_reader.close()
            alive_reader.close()
        self.reader: Connection = reader
        self._task_writer: Connection | None = task_writer
        self.task_fd = task_writer.fileno()
        os.set_blocking(self.task_fd, False)
        self._out = bytearray()  # task frames not yet taken by the pipe
        self._retiring = False  # no more tasks: close the pipe once _out is written
        self._alive_writer: Connection | None = alive_writer
        self.pid: int = self.process.pid or 0
        self.decoder = proto.FrameDecoder(limits.max_frame)
        self.eof = False
        self.exit_code: int | None = None
        self.tasks_assigned = 0
        self.peak_rss: int | None = None
        self._next_sample = 0.0
        try:
            self.ps: psutil.Process | None = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            self.ps = None
        # Tasks sent and not yet answered, in order: the child runs queue[0] and
        # finds the others waiting in its task pipe (no round trip between tasks).
        self.queue: deque[Job] = deque()
        self.finished: list[Finished] = []
        self.finished_any = False
        # Seconds per task lately (a moving average; the first task, which includes
        # the process start, does not count): how deep to queue tasks for it.
        self.pace: float | None = None
        self.failure: BaseException | None = None  # decided by the parent; ends the child
        self._start_head()

    @property
    def job(self) -> Job | None:
        """The task the child is running now, if any."""
        return self.queue[0] if self.queue else None

    def _start_head(self) -> None:
        # A child's first task counts its time from process start, later ones from
        # when the previous one answered (the child starts them back to back).
        origin = time.monotonic() if self.finished_any else self.started
        self.task_started = origin
        head = self.job
        self.deadline = None if head is None or head.timeout is None else origin + head.timeout

    # -- tasks --------------------------------------------------------------------

    def assign(self, job: Job, *, last: bool) -> None:
        """Queue ``job`` for the child; with ``last`` the task pipe is closed after it,
        so the child exits once it has answered. Call :meth:`push` to send."""
        assert not self._retiring
        self._out += job.task
        self.queue.append(job)
        self.tasks_assigned += 1
        if len(self.queue) == 1:
            self._start_head()
        if last:
            self.retire()

    @property
    def wants_write(self) -> bool:
        """Whether task bytes wait for room in the task pipe."""
        return bool(self._out)

    def push(self) -> None:
        """Write what the task pipe takes now, without blocking."""
        out = self._out
        while out:
            try:
                written = os.write(self.task_fd, out)
            except BlockingIOError:
                return
            except OSError:  # the child is gone: its exit tells the rest
                out.clear()
                break
            del out[:written]
        if self._retiring:
            self._close_tasks()

    def _finish_head(self, final: dict[str, Any]) -> None:
        job = self.queue.popleft()
        duration = time.monotonic() - self.task_started
        self.finished.append(Finished(job, final, None, duration))
        if self.finished_any:
            pace = self.pace
            self.pace = duration if pace is None else pace + _PACE_WEIGHT * (duration - pace)
        self.finished_any = True
        self._start_head()

    def abandon(self) -> tuple[Finished | None, list[Job]]:
        """After the child died or was killed: the task it was running, and the unstarted ones."""
        if not self.queue:
            return None, []
        head = self.queue.popleft()
        rest = list(self.queue)
        self.queue.clear()
        return Finished(head, None, self.failure, time.monotonic() - self.task_started), rest

    def retire(self) -> None:
        """No more tasks: the task pipe is closed once what was assigned is written,
        and the child exits once it has answered it."""
        self._retiring = True
        if not self._out:
            self._close_tasks()

    def _close_tasks(self) -> None:
        self._out.clear()
        if self._task_writer is not None:
            self._task_writer.close()
            self._task_writer = None

    @property
    def retired(self) -> bool:
        return self._retiring

    # -- reading ------------------------------------------------------------------

    def read(self, allow_pickle: bool) -> None:
        """Read what the channel has (call when it is ready) and handle whole frames."""
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
                if not self._handle(frame, allow_pickle):
                    break  # condemned by a handler: the rest of the task does not count
        except proto.FrameError as exc:
            self.condemn(
                ChildProtocolError(f"{self.who} broke the channel protocol: {exc}", pid=self.pid)
            )

    def _handle(self, frame: dict[str, Any], allow_pickle: bool) -> bool:
        """Handle one frame; False once a handler's failure condemned the child."""
        job = self.job
        if job is None:
            raise proto.FrameError("frame outside a task")
        if frame["k"] == "m":
            messages = frame.get("m")
            if not isinstance(messages, list):
                raise proto.FrameError("message frame without a message list")
            return self._deliver(job, messages, allow_pickle)
        # A final report, maybe carrying the task's last messages: those first.
        messages = frame.pop("m", None)
        if messages is not None:
            if not isinstance(messages, list):
                raise proto.FrameError("report frame with a malformed message list")
            if not self._deliver(job, messages, allow_pickle):
                return False
        self._finish_head(frame)
        return True

    def _deliver(self, job: Job, messages: list[Any], allow_pickle: bool) -> bool:
        """Run the handlers of ``messages`` in order; False once one failed."""
        on_message = job.on_message
        for item in messages:
            if not (type(item) is list and len(item) == 2 and type(item[0]) is str):
                raise proto.FrameError(f"malformed message {str(item)[:80]!r}")
            msg_type, box = item
            if type(box) is dict and len(box) == 1 and "json" in box:
                # json.loads only ever builds plain JSON types: nothing to check or copy.
                payload = box["json"]
            else:
                try:
                    payload = decode_value(box, f"payload of message {msg_type!r}", allow_pickle)
                except StoreSerializationError as exc:
                    raise proto.FrameError(str(exc)) from None
            try:
                on_message(msg_type, payload)
            except Exception as exc:
                failure = SpawnError(
                    f"handling message {msg_type!r} from {self.who} raised "
                    f"{type(exc).__name__}: {exc}",
                    pid=self.pid,
                )
                failure.__cause__ = exc
                self.condemn(failure)
                return False
        return True

    def drain(self, allow_pickle: bool) -> None:
        """After exit: read what the child wrote before it died.

        Only what is already there: a grandchild that inherited the write end could
        keep the channel open forever, so EOF is not waited for.
        """
        while not self.eof and self.reader.poll(0):
            self.read(allow_pickle)

    # -- supervising ---------------------------------------------------------------

    def sample(self, now: float) -> None:
        """Record RSS and CPU time, at most every ``SAMPLE_EVERY`` seconds."""
        if self.ps is None or now < self._next_sample:
            return
        self._next_sample = now + SAMPLE_EVERY
        try:
            rss = self.ps.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return
        self.peak_rss = max(self.peak_rss or 0, rss)

    @property
    def who(self) -> str:
        """How errors name this child: its pid and the workflow it runs."""
        workflow = self.job.workflow_id if self.job is not None else None
        return f"child {self.pid}" + (f" of workflow {workflow!r}" if workflow else "")

    def condemn(self, failure: BaseException) -> None:
        """Decide the task's outcome now and kill the child's whole tree."""
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
        self._retiring = True
        self._close_tasks()
        if self.process.exitcode is not None:
            return
        descendants: list[psutil.Process] = []
        if self.ps is not None:
            try:
                descendants = self.ps.children(recursive=True)
            except psutil.NoSuchProcess:
                pass
        signal_group(self.pid, signal.SIGTERM)
        self.process.terminate()
        for proc in descendants:
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        give_up = time.monotonic() + self.kill_grace
        self.process.join(self.kill_grace)
        _, alive = psutil.wait_procs(descendants, timeout=max(0.0, give_up - time.monotonic()))
        if self.process.exitcode is None:
            self.process.kill()
        signal_group(self.pid, signal.SIGKILL)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        self.process.join(5)
        psutil.wait_procs(alive, timeout=5)

    def close(self) -> None:
        """Reap the process and release every descriptor (idempotent)."""
        self._retiring = True
        self._close_tasks()
        self.process.join(timeout=5)
        if self.process.exitcode is None:  # a retired child answers and exits; never hang
            self.kill()
        self.exit_code = self.process.exitcode
        # The process group may still hold descendants that outlived the child.
        signal_group(self.pid, signal.SIGKILL)
        self.reader.close()
        if self._alive_writer is not None:
            self._alive_writer.close()
            self._alive_writer = None
        self.process.close()
