"""Middleware for messages crossing the process boundary, and for spawn lifecycles.

IPC middleware are layers around the channel, the first registered outermost:
outbound, a message passes them in reverse registration order (in the sender);
inbound, in registration order (in the receiver). So a pair of transforms, such as
compress/decompress and encrypt/decrypt, undo each other in the right order
whatever order they were registered in. IPC middleware travel to the child with
cloudpickle, so their ``process_outbound`` runs there.

Spawn middleware run in the parent: ``before_spawn`` in registration order,
``after_spawn`` in reverse, and ``on_child_message`` for every message a child
sends (after inbound IPC middleware, before the handler).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gostage._context import RunContext
from gostage._defs import SubWorkflowDef

__all__ = ["IPCMiddleware", "IPCMiddlewareFunc", "SpawnMiddleware", "SpawnMiddlewareFunc"]

Transform = Callable[[str, Any], "tuple[str, Any]"]


class IPCMiddleware:
    """Transforms messages on their way out of (and into) a process. Override either method."""

    def process_outbound(self, msg_type: str, payload: Any) -> tuple[str, Any]:
        """Runs in the sender before the message is encoded; returns the new pair."""
        return msg_type, payload

    def process_inbound(self, msg_type: str, payload: Any) -> tuple[str, Any]:
        """Runs in the receiver after the message is decoded; returns the new pair."""
        return msg_type, payload


class IPCMiddlewareFunc(IPCMiddleware):
    """An :class:`IPCMiddleware` from plain functions (either may be omitted)."""

    def __init__(
        self,
        process_outbound: Transform | None = None,
        process_inbound: Transform | None = None,
    ) -> None:
        self._outbound = process_outbound
        self._inbound = process_inbound

    def process_outbound(self, msg_type: str, payload: Any) -> tuple[str, Any]:
        """Apply the outbound function, if any."""
        if self._outbound is None:
            return msg_type, payload
        return self._outbound(msg_type, payload)

    def process_inbound(self, msg_type: str, payload: Any) -> tuple[str, Any]:
        """Apply the inbound function, if any."""
        if self._inbound is None:
            return msg_type, payload
        return self._inbound(msg_type, payload)


class SpawnMiddleware:
    """Hooks around each spawned child, in the parent. Override what you need."""

    def before_spawn(
        self, ctx: RunContext, defn: SubWorkflowDef
    ) -> tuple[RunContext, SubWorkflowDef]:
        """Before the process starts: may derive the context or replace the definition."""
        return ctx, defn

    def after_spawn(self, ctx: RunContext, defn: SubWorkflowDef, err: BaseException | None) -> None:
        """After the child ended; ``err`` is ``None`` on success."""

    def on_child_message(self, msg_type: str, payload: Any) -> None:
        """Every message the child sends, after inbound IPC middleware."""


class SpawnMiddlewareFunc(SpawnMiddleware):
    """A :class:`SpawnMiddleware` from plain functions, each optional."""

    def __init__(
        self,
        *,
        before_spawn: Callable[[RunContext, SubWorkflowDef], tuple[RunContext, SubWorkflowDef]]
        | None = None,
        after_spawn: Callable[[RunContext, SubWorkflowDef, BaseException | None], None]
        | None = None,
        on_child_message: Callable[[str, Any], None] | None = None,
    ) -> None:
        self._before = before_spawn
        self._after = after_spawn
        self._on_message = on_child_message

    def before_spawn(
        self, ctx: RunContext, defn: SubWorkflowDef
    ) -> tuple[RunContext, SubWorkflowDef]:
        """Apply the ``before_spawn`` function, if any."""
        return (ctx, defn) if self._before is None else self._before(ctx, defn)

    def after_spawn(self, ctx: RunContext, defn: SubWorkflowDef, err: BaseException | None) -> None:
        """Call the ``after_spawn`` function, if any."""
        if self._after is not None:
            self._after(ctx, defn, err)

    def on_child_message(self, msg_type: str, payload: Any) -> None:
        """Call the ``on_child_message`` function, if any."""
        if self._on_message is not None:
            self._on_message(msg_type, payload)
