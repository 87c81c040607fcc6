"""Options for spawning a child workflow, and what a spawn returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gostage._spawn._protocol import DEFAULT_MAX_FRAME

if TYPE_CHECKING:
    from gostage.store import Store

__all__ = ["Isolation", "SpawnOptions", "SpawnResult"]

Isolation = Literal["process", "worker"]


@dataclass(frozen=True, kw_only=True)
class SpawnOptions:
    """How to run a child workflow. Every field is optional.

    - ``timeout``: seconds from process start (from task start for a reused worker);
      then the child's whole process tree is
      terminated, killed after ``kill_grace`` seconds, and :class:`ChildTimeoutError` raised.
    - ``memory_limit``: bytes of address space (``RLIMIT_AS``); exceeding it raises
      ``MemoryError`` in the child, reported as :class:`ChildMemoryError`. With
      ``isolation="worker"`` the limits bind the worker process as a whole.
    - ``cpu_time_limit``: CPU seconds (``RLIMIT_CPU``, rounded up to whole seconds);
      exceeding it is a :class:`ChildTimeoutError`.
    - ``env``: variables set in the child before any user code runs (variables read
      at interpreter start-up, such as ``PYTHONPATH``, come too late to matter).
    - ``cwd``: the child's working directory, set before user code runs.
    - ``isolation``: ``"process"`` (default: a fresh process per child workflow, the
      strongest isolation) or ``"worker"`` (long-lived workers owned by the runner that
      run many child workflows each; see :meth:`Runner.spawn_many`).
    - ``max_tasks_per_worker``: with ``"worker"``, retire a worker after this many
      child workflows (``None``: never).
    - ``max_frame_size``: the largest frame, in bytes, a child may send.

    Resource limits use POSIX rlimits inside the child; where the ``resource``
    module does not exist (Windows) they are silently not applied.
    """

    timeout: float | None = None
    memory_limit: int | None = None
    cpu_time_limit: float | None = None
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    kill_grace: float = 1.0
    isolation: Isolation = "process"
    max_tasks_per_worker: int | None = None
    max_frame_size: int = DEFAULT_MAX_FRAME

    def __post_init__(self) -> None:
        for name in ("timeout", "cpu_time_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"SpawnOptions.{name} must be positive, got {value!r}")
        if self.memory_limit is not None and self.memory_limit <= 0:
            raise ValueError(
                f"SpawnOptions.memory_limit must be positive, got {self.memory_limit!r}"
            )
        if self.kill_grace < 0:
            raise ValueError(f"SpawnOptions.kill_grace must be >= 0, got {self.kill_grace!r}")
        if self.max_frame_size < 1024:
            raise ValueError("SpawnOptions.max_frame_size must be at least 1024 bytes")
        if self.isolation not in ("process", "worker"):
            raise ValueError(
                f"SpawnOptions.isolation must be 'process' or 'worker', got {self.isolation!r}"
            )
        if self.max_tasks_per_worker is not None and self.max_tasks_per_worker < 1:
            raise ValueError(
                "SpawnOptions.max_tasks_per_worker must be at least 1 (or None: never recycle)"
            )


@dataclass(frozen=True)
class SpawnResult:
    """The outcome of one child workflow.

    ``final_store`` is the child's store when it finished (``{}`` if it failed),
    ``exit_code`` the process exit code (negative: killed by that signal),
    ``duration`` seconds from process start to exit, ``peak_rss`` the largest
    resident set size seen, in bytes (``None`` if unknown), and ``cpu_time`` the
    child's user plus system CPU seconds.
    """

    success: bool
    error: BaseException | None
    final_store: dict[str, Any] = field(repr=False)
    pid: int | None
    exit_code: int | None
    duration: float
    peak_rss: int | None
    cpu_time: float | None = None
    workflow_id: str = ""
    store: Store | None = field(default=None, repr=False, compare=False)
