"""Every exception gostage raises, in one place.

Hierarchy::

    GostageError
    ├── WorkflowError                 a run could not start or did not finish
    │   ├── ActionError               an action raised (chained to the original)
    │   ├── WorkflowTimeout           the run's deadline passed (also a TimeoutError)
    │   └── WorkflowCancelled         the run's cancel event was set
    ├── StoreError                    anything the Store refuses
    │   ├── KeyNotFoundError          no such key (also a KeyError)
    │   │   └── KeyExpiredError       the key existed but its TTL ran out
    │   ├── TypeMismatchError         value is not of the requested type (also a TypeError)
    │   ├── MergeConflictError        MergeStrategy.ERROR met a key present on both sides
    │   └── StoreSerializationError   a value cannot be exported or imported
    ├── UnknownActionError            no action registered under an id (also a KeyError)
    └── SpawnError                    a child workflow did not succeed
        ├── ChildActionError          an action raised in the child
        ├── ChildCrashedError         the child died without reporting (signal, os._exit)
        ├── ChildTimeoutError         timeout or CPU-time limit (also a TimeoutError)
        ├── ChildMemoryError          MemoryError in the child, or its memory limit hit
        ├── ChildSerializationError   a value the child sent cannot travel as JSON
        └── ChildProtocolError        the child broke the channel protocol

Catch ``GostageError`` to catch anything the library raises on purpose; catch the
leaf classes to react to one failure. The built-in bases (``KeyError``,
``TypeError``, ``TimeoutError``) are there so code written against plain dicts and
the standard library keeps working.
"""

from __future__ import annotations

__all__ = [
    "ActionError",
    "ChildActionError",
    "ChildCrashedError",
    "ChildMemoryError",
    "ChildProtocolError",
    "ChildSerializationError",
    "ChildTimeoutError",
    "GostageError",
    "KeyExpiredError",
    "KeyNotFoundError",
    "MergeConflictError",
    "SpawnError",
    "StoreError",
    "StoreSerializationError",
    "TypeMismatchError",
    "UnknownActionError",
    "WorkflowCancelled",
    "WorkflowError",
    "WorkflowTimeout",
]


class GostageError(Exception):
    """Base class of every error gostage raises on purpose.

    ``run_id`` is set on an error that ended a run (``None`` otherwise).
    """

    run_id: str | None = None


# --- running workflows -------------------------------------------------------


class WorkflowError(GostageError):
    """A workflow is invalid (e.g. it has no stages) or its run did not finish."""


class ActionError(WorkflowError):
    """An action raised while the workflow ran.

    The message names the workflow, stage and action and repeats the original
    exception's message; the original exception is ``__cause__``.
    """

    def __init__(self, message: str, *, workflow_id: str, stage_id: str, action_name: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id
        self.stage_id = stage_id
        self.action_name = action_name


class WorkflowTimeout(WorkflowError, TimeoutError):
    """The run's deadline (``timeout=`` or ``time_limit_middleware``) passed."""


class WorkflowCancelled(WorkflowError):
    """The run's cancel event was set."""


# --- the store ---------------------------------------------------------------


class StoreError(GostageError):
    """Base class of the errors raised by :class:`gostage.Store`."""


class KeyNotFoundError(StoreError, KeyError):
    """The key is not in the store."""

    def __init__(self, key: str, message: str | None = None) -> None:
        super().__init__(message or f"key {key!r} not found in store")
        self.key = key

    # KeyError.__str__ shows repr(args[0]); we want the sentence as written.
    def __str__(self) -> str:
        return str(self.args[0])


class KeyExpiredError(KeyNotFoundError):
    """The key was in the store but its time-to-live has run out; it is now gone."""

    def __init__(self, key: str) -> None:
        super().__init__(key, f"key {key!r} has expired (its TTL ran out) and was removed")


class TypeMismatchError(StoreError, TypeError):
    """The stored value is not an instance of the type the caller asked for."""

    def __init__(self, key: str, expected: type | tuple[type, ...], actual: type) -> None:
        wanted = (
            " | ".join(t.__name__ for t in expected)
            if isinstance(expected, tuple)
            else expected.__name__
        )
        super().__init__(f"key {key!r} holds a value of type {actual.__name__}, expected {wanted}")
        self.key = key
        self.expected = expected
        self.actual = actual


class MergeConflictError(StoreError, KeyError):
    """``merge(..., MergeStrategy.ERROR)`` found keys present in both stores."""

    def __init__(self, keys: list[str]) -> None:
        super().__init__(
            f"merge conflict: keys present in both stores: {', '.join(map(repr, keys))}"
        )
        self.keys = keys

    def __str__(self) -> str:
        return str(self.args[0])


class StoreSerializationError(StoreError):
    """A value cannot be exported to, or imported from, a store document.

    ``key`` names the store key concerned, when there is one.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


# --- actions registry --------------------------------------------------------


class UnknownActionError(GostageError, KeyError):
    """No action is registered under this id."""

    def __init__(self, action_id: str, known: list[str] | None = None) -> None:
        hint = ""
        if known is not None:
            shown = ", ".join(map(repr, known[:10])) + (", ..." if len(known) > 10 else "")
            hint = f" (registered: {shown})" if known else " (the registry is empty)"
        super().__init__(
            f"no action registered under id {action_id!r}{hint}; "
            "register it with register_action(id, factory) or @register(id)"
        )
        self.action_id = action_id

    def __str__(self) -> str:
        return str(self.args[0])


# --- child processes ---------------------------------------------------------


class SpawnError(GostageError):
    """A child workflow did not succeed. ``pid`` and ``exit_code`` are the child's, if known."""

    def __init__(
        self, message: str, *, pid: int | None = None, exit_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.exit_code = exit_code


class ChildActionError(SpawnError):
    """An action raised in the child.

    ``exc_type`` is the name of the child's exception type, ``traceback`` its
    formatted traceback (text: nothing the child sends is unpickled).
    """

    def __init__(
        self,
        message: str,
        *,
        exc_type: str,
        traceback: str,
        stage_id: str | None = None,
        action_name: str | None = None,
        pid: int | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message, pid=pid, exit_code=exit_code)
        self.exc_type = exc_type
        self.traceback = traceback
        self.stage_id = stage_id
        self.action_name = action_name


class ChildCrashedError(SpawnError):
    """The child died without reporting a result: a signal (``signal``) or an exit code."""

    def __init__(
        self,
        message: str,
        *,
        pid: int | None = None,
        exit_code: int | None = None,
        signal: int | None = None,
    ) -> None:
        super().__init__(message, pid=pid, exit_code=exit_code)
        self.signal = signal


class ChildTimeoutError(SpawnError, TimeoutError):
    """The child ran past its timeout or its CPU-time limit and was killed."""


class ChildMemoryError(SpawnError):
    """The child ran out of memory: a ``MemoryError`` or its memory limit."""


class ChildSerializationError(SpawnError):
    """A value the child sent (store write or final store) cannot travel as JSON.

    ``key`` names the store key. Make the value JSON-safe, or spawn with
    ``trust_child=True`` to allow a pickled fallback.
    """

    def __init__(self, message: str, *, key: str | None = None, pid: int | None = None) -> None:
        super().__init__(message, pid=pid)
        self.key = key


class ChildProtocolError(SpawnError):
    """The child broke the channel protocol (garbage, oversized or malformed frames)."""
