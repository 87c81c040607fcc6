"""What runs inside a spawned child process.

Start-up order matters, and each step is there for a reason::

    1. watchdog thread on the parent-alive pipe   the child must never outlive its parent
    2. PR_SET_PDEATHSIG (Linux)                   second line of that defence
    3. own process group                          so the parent can kill the whole tree
    4. channel flusher thread                     threads need address space: before limits
    5. cwd, env, rlimits                          before any user code runs
    6. unpickle the job (cloudpickle payload)     first user code: module imports
    7. for each task: build the workflow, run it, report one "r" or "e" frame
    8. when the parent closes the task pipe: os._exit

The child reports through the channel in ``_protocol``; the parent decides what
a failure means. A child that dies before reporting is judged by its exit status.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from gostage._broker import message_key
from gostage._defs import SubWorkflowDef, build_workflow
from gostage._exceptions import ActionError, StoreSerializationError, UnknownActionError
from gostage._runner import Runner
from gostage._spawn import _protocol as proto
from gostage.store._serialization import encode_value

# Exit statuses the parent understands (anything else from a child that did not
# report is a crash). Chosen away from 0-2 and from shell signal codes.
EXIT_OK = 0
EXIT_PARENT_GONE = 3
EXIT_UNREPORTED_MEMORY = 86

_LINGER = 0.002  # seconds the flusher waits for a burst of messages to gather
_MAX_BATCH = 1024  # messages per frame before the sender flushes itself


@dataclass(frozen=True)
class ChildLimits:
    """What the child applies to itself before any user code (plain data, plain pickle)."""

    memory_limit: int | None = None
    cpu_time_limit: float | None = None
    env: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    max_frame: int = proto.DEFAULT_MAX_FRAME
    allow_pickle: bool = False
    pdeathsig: bool = True


class ChildChannel:
    """The child's end of the channel: batches messages, writes frames in order.

    ``send`` encodes at once (so an unsendable value fails in the action that sent
    it) and queues. A task's final report carries what is still queued in its own
    frame, so a short task costs one write. For longer tasks a flusher thread
    writes batches, waiting ``_LINGER`` so that a burst travels in one frame.

    The flusher is only woken when it is idle: while messages keep coming it
    checks the queue every ``_LINGER`` by itself, and goes idle once a whole
    linger passed without a message. A stream of short tasks therefore does not
    pay a thread wake-up (and two GIL hand-offs) per task.
    """

    def __init__(self, fd: int, max_frame: int, allow_pickle: bool) -> None:
        self._fd = fd
        self._max_frame = max_frame
        self._allow_pickle = allow_pickle
        self._outbound: list[Any] = []
        self._pending: list[str] = []
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._closed = False
        self._idle = False  # the flusher waits for a notify (guarded by _cond)
        self._recent = False  # a message was queued since the flusher last looked
        self._thread = threading.Thread(
            target=self._flush_loop, name="gostage-channel", daemon=True
        )
        self._thread.start()

    def set_outbound_middleware(self, middleware: list[Any]) -> None:
        self._outbound = middleware

    def encode(self, value: Any, where: str) -> Any:
        """Box ``value`` for the wire (raises StoreSerializationError naming ``where``)."""
        return encode_value(value, where, self._allow_pickle)

    def send(self, msg_type: str, payload: Any) -> None:
        for mw in self._outbound:
            msg_type, payload = mw.process_outbound(msg_type, payload)
        key = message_key(msg_type)
        self._queue(key, proto.dumps([key, self.encode(payload, f"payload of message {key!r}")]))

    def send_plain(self, key: str, payload: dict[str, Any]) -> None:
        """``send`` for gostage's own messages, whose payloads are plain JSON already."""
        if self._outbound:
            self.send(key, payload)
        else:
            self._queue(key, proto.dumps([key, {"json": payload}]))

    def _queue(self, key: str, part: str) -> None:
        if len(part) + 16 > self._max_frame:
            raise proto.FrameTooLargeError(
                f"message {key!r} is {len(part)} bytes, over the {self._max_frame}-byte frame "
                "limit; send smaller messages or raise SpawnOptions.max_frame_size"
            )
        with self._cond:
            self._pending.append(part)
            self._recent = True
            if self._idle:
                self._idle = False
                self._cond.notify()
            full = len(self._pending) >= _MAX_BATCH
        if full:
            self._flush()

    def _take(self) -> list[str]:
        with self._cond:
            batch, self._pending = self._pending, []
        return batch

    def _flush(self) -> None:
        # Taking the batch under the write lock keeps frames in send order.
        with self._write_lock:
            self._write_batches(self._take())

    def _write_batches(self, batch: list[str]) -> None:
        start, size = 0, 0
        for i, part in enumerate(batch):
            if size + len(part) + 16 > self._max_frame and i > start:
                self._write_batch(batch[start:i])
                start, size = i, 0
            size += len(part) + 1
        if start < len(batch):
            self._write_batch(batch[start:])

    def _write_batch(self, parts: list[str]) -> None:
        body = ('{"k":"m","m":[' + ",".join(parts) + "]}").encode()
        proto.write_frame(self._fd, proto.HEADER.pack(len(body)) + body)

    def _flush_loop(self) -> None:
        while self._wait_for_messages():
            # Busy: flush every linger until a whole linger passes without a message.
            while True:
                time.sleep(_LINGER)
                try:
                    self._flush()
                except OSError:
                    return  # parent gone; the watchdog ends the process
                if not self._still_busy():
                    break

    def _wait_for_messages(self) -> bool:
        """Sleep until a message is queued (True) or the channel is closed (False)."""
        with self._cond:
            while not self._pending and not self._closed:
                self._idle = True
                self._cond.wait()
            self._idle = False
            self._recent = False
            return not self._closed

    def _still_busy(self) -> bool:
        """After a flush: whether messages came during the last linger (and not closed)."""
        with self._cond:
            if self._closed or not (self._recent or self._pending):
                return False
            self._recent = False
            return True

    def report(self, frame: dict[str, Any]) -> None:
        """Write everything queued, then ``frame`` (a task's final report).

        Queued messages travel inside the report's frame (its ``"m"``) when they
        fit in one frame; otherwise as message frames before it.
        """
        body = proto.dumps(frame)
        with self._write_lock:
            batch = self._take()
            if batch:
                messages = ",".join(batch)
                if len(body) + len(messages) + 7 <= self._max_frame:
                    body = '{"m":[' + messages + "]," + body[1:]
                else:
                    self._write_batches(batch)
            if len(body) > self._max_frame:
                raise proto.too_large(len(body), self._max_frame)
            data = body.encode()
            proto.write_frame(self._fd, proto.HEADER.pack(len(data)) + data)

    def close(self) -> None:
        """Stop the flusher thread (after the last report)."""
        with self._cond:
            self._closed = True
            self._cond.notify()


_active: ChildChannel | None = None


def active_channel() -> ChildChannel | None:
    """The channel of this child process (``None`` outside a spawned child)."""
    return _active


class ChannelLogger:
    """The child's ``ctx.logger``: every message travels to the parent as ``LOG``."""

    def __init__(self, channel: ChildChannel) -> None:
        self._channel = channel
        self._pid = os.getpid()

    def _log(self, level: str, message: str, args: tuple[Any, ...]) -> None:
        text = message % args if args else message
        self._channel.send("log", {"level": level, "message": text, "pid": self._pid})

    def debug(self, message: str, *args: Any) -> None:
        self._log("debug", message, args)

    def info(self, message: str, *args: Any) -> None:
        self._log("info", message, args)

    def warning(self, message: str, *args: Any) -> None:
        self._log("warning", message, args)

    def error(self, message: str, *args: Any) -> None:
        self._log("error", message, args)


# -- start-up steps ------------------------------------------------------------


def _watch_parent(alive: Connection) -> None:
    def watch() -> None:
        try:
            alive.recv_bytes()
        except (EOFError, OSError):
            pass
        # The parent closed its end (it died, or gave up on us): leave at once,
        # without running atexit handlers or waiting for other threads.
        os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="gostage-parent-watchdog", daemon=True).start()


def _set_pdeathsig() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watchdog thread still covers parent death


def _apply_limits(limits: ChildLimits) -> None:
    if limits.cwd is not None:
        os.chdir(limits.cwd)
    for name, value in limits.env:
        os.environ[name] = value
    if limits.memory_limit is None and limits.cpu_time_limit is None:
        return
    try:
        import resource
    except ImportError:  # not POSIX: limits are documented as no-ops there
        return
    if limits.memory_limit is not None:
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_limit, limits.memory_limit))
    if limits.cpu_time_limit is not None:
        soft = max(1, int(limits.cpu_time_limit + 0.999))
        # SIGXCPU at the soft limit; the kernel's SIGKILL one second later if ignored.
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))


def _peak_rss() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * (1 if sys.platform == "darwin" else 1024)


def _failure_frame(exc: BaseException) -> dict[str, Any]:
    """Classify a failure for the parent, naming the action when it was one."""
    frame: dict[str, Any] = {"k": "e", "kind": proto.KIND_INTERNAL}
    root = exc
    if isinstance(exc, ActionError):
        frame["stage"], frame["action"] = exc.stage_id, exc.action_name
        frame["kind"] = proto.KIND_ACTION
        if exc.__cause__ is not None:
            root = exc.__cause__
    if isinstance(root, MemoryError) or isinstance(exc, MemoryError):
        frame["kind"] = proto.KIND_MEMORY
    elif isinstance(root, StoreSerializationError):
        frame["kind"] = proto.KIND_SERIALIZATION
        frame["key"] = getattr(root, "key", None)
    elif isinstance(root, proto.FrameTooLargeError):
        frame["kind"] = proto.KIND_FRAME
    elif isinstance(exc, UnknownActionError):
        frame["kind"] = proto.KIND_UNKNOWN_ACTION
    frame["exc_type"] = type(root).__name__
    frame["message"] = str(exc)
    frame["traceback"] = "".join(traceback.format_exception(root))
    return frame


def worker_main(
    limits: ChildLimits,
    code: bytes,
    tasks: Connection,
    channel: Connection,
    alive: Connection,
) -> None:
    """Entry point of a spawned child (the ``target`` of its ``Process``).

    Runs the tasks (JSON workflow definitions) it receives on ``tasks``, one at a
    time, answering each with one report frame, until the parent closes ``tasks``.
    A fresh process per child workflow is the same loop with a single task.
    """
    _watch_parent(alive)
    if limits.pdeathsig:
        _set_pdeathsig()
    os.setpgrp()
    global _active
    out = _active = ChildChannel(channel.fileno(), limits.max_frame, limits.allow_pickle)
    runner: ChildRunner | BaseException
    try:
        _apply_limits(limits)
        import pickle

        registry, ipc_middleware = pickle.loads(code)
        runner = ChildRunner(out, limits, registry, ipc_middleware)
    except BaseException as exc:
        runner = exc  # reported as the outcome of the first task
    code_ = EXIT_OK
    reader = proto.TaskReader(tasks.fileno())
    while True:
        task = reader.next()
        if task is None:
            break
        code_ = _serve(task, out, runner)
        if code_ != EXIT_OK or isinstance(runner, BaseException):
            break
    out.close()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    # os._exit: a thread the user's code left running must not keep the child alive.
    os._exit(code_)


class ChildRunner(Runner):
    """The child's runner: ``ctx.send`` and store writes travel to the parent.

    One per child process, reused for every task it runs.
    """

    def __init__(
        self,
        channel: ChildChannel,
        limits: ChildLimits,
        registry: Any,
        ipc_middleware: list[Any],
    ) -> None:
        super().__init__(logger=ChannelLogger(channel), registry=registry)
        self.channel = channel
        self.limits = limits
        if limits.allow_pickle:
            import cloudpickle

            from gostage.store import _serialization

            _serialization.pickle_dumps = cloudpickle.dumps
        # Outbound, messages pass the IPC layers innermost (last registered) first.
        channel.set_outbound_middleware(list(reversed(ipc_middleware)))
        for mw in ipc_middleware:  # for this child's own children
            self.add_ipc_middleware(mw)
        self._pid = os.getpid()

    def _send(self, msg_type: str, payload: Any) -> None:
        self.channel.send(msg_type, payload)

    def _forward(self, key: str, value: Any, deleted: bool) -> None:
        if deleted:
            self.channel.send("store_delete", {"key": key})
            return
        try:
            self.channel.send("store_put", {"key": key, "value": value})
        except StoreSerializationError as exc:
            raise StoreSerializationError(
                f"store key {key!r} holds a {type(value).__name__}, which cannot travel to "
                f"the parent ({exc})",
                key=key,
            ) from exc

    def run_task(self, defn_data: dict[str, Any]) -> dict[str, Any]:
        """Build and run one child workflow; its success frame."""
        cpu_before = _cpu_time()
        workflow = build_workflow(SubWorkflowDef.from_dict(defn_data), self.registry)
        workflow.store._set_observer(self._forward)
        send = self.channel.send_plain
        send("workflow_start", {"workflow_id": workflow.id, "pid": self._pid})
        self.execute(workflow)
        send("workflow_result", {"workflow_id": workflow.id, "success": True})
        document = workflow.store.export_state(allow_pickle=self.limits.allow_pickle)
        return {"k": "r", "store": document, "rss": _peak_rss(), "cpu": _cpu_time() - cpu_before}


def _serve(task: bytes, out: ChildChannel, runner: ChildRunner | BaseException) -> int:
    """Run one task and report it; the exit status to use if the child must stop now."""
    try:
        if isinstance(runner, BaseException):
            raise runner
        frame = runner.run_task(json.loads(task))
    except MemoryError:
        # Under a memory limit even classifying may fail: keep this path allocation-light.
        frame = {
            "k": "e",
            "kind": proto.KIND_MEMORY,
            "exc_type": "MemoryError",
            "message": "MemoryError in the child",
            "traceback": "",
        }
    except BaseException as exc:
        frame = _failure_frame(exc)
    try:
        out.report(frame)
    except MemoryError:
        return EXIT_UNREPORTED_MEMORY
    except proto.FrameTooLargeError as exc:
        out.report(
            {
                "k": "e",
                "kind": proto.KIND_FRAME,
                "exc_type": "FrameTooLargeError",
                "message": str(exc),
                "traceback": "",
            }
        )
    except OSError:
        return EXIT_PARENT_GONE  # the parent is gone; nobody to tell
    return EXIT_OK


def _cpu_time() -> float:
    times = os.times()
    return times.user + times.system
