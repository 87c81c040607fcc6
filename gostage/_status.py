"""The life cycle of a run (its own module: the runner and the run stores both need it)."""

from __future__ import annotations

from enum import Enum

__all__ = ["RunStatus"]


class RunStatus(str, Enum):
    """Where a run is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUSPENDED = "suspended"

    def __str__(self) -> str:
        return self.value
