"""Shared fixtures.

``no_leftover_processes`` runs around every test: a test that leaves a process
behind fails, so a leak cannot hide in the suite. On Linux the test process makes
itself a child subreaper first, so a grandchild orphaned by a dead child is
re-parented to us (and seen here) instead of vanishing under init.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import psutil
import pytest


def _become_subreaper() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_child_subreaper = 36
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


_become_subreaper()


class RecordingLogger:
    """A Logger that keeps ``(level, formatted message)`` pairs."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def _add(self, level: str, message: str, args: tuple[Any, ...]) -> None:
        self.records.append((level, message % args if args else message))

    def debug(self, message: str, *args: Any) -> None:
        self._add("debug", message, args)

    def info(self, message: str, *args: Any) -> None:
        self._add("info", message, args)

    def warning(self, message: str, *args: Any) -> None:
        self._add("warning", message, args)

    def error(self, message: str, *args: Any) -> None:
        self._add("error", message, args)

    def messages(self, level: str | None = None) -> list[str]:
        return [m for lv, m in self.records if level is None or lv == level]


@pytest.fixture
def logger() -> RecordingLogger:
    return RecordingLogger()


def _is_resource_tracker(proc: psutil.Process) -> bool:
    # multiprocessing starts one tracker per interpreter, on first use, for good.
    try:
        return "resource_tracker" in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def _live_descendants(me: psutil.Process) -> list[psutil.Process]:
    out = []
    for proc in me.children(recursive=True):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                proc.wait(timeout=0)  # reap what died, so it is not counted later
                continue
        except (psutil.Error, psutil.TimeoutExpired):
            continue
        if not _is_resource_tracker(proc):
            out.append(proc)
    return out


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    me = psutil.Process()
    before = {p.pid for p in _live_descendants(me)}
    yield
    leftover = [p for p in _live_descendants(me) if p.pid not in before]
    if not leftover:
        return
    # Give processes that are already exiting a moment, then kill and fail loudly.
    _, alive = psutil.wait_procs(leftover, timeout=3)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=3)
    if alive:
        pytest.fail(
            "test left processes behind: "
            + ", ".join(f"pid {p.pid} ({' '.join(p.cmdline()[:3])})" for p in alive)
        )
