"""Message types and the broker that dispatches messages to handlers.

In the parent, ``ctx.send`` hands a message straight to the runner's broker; a
spawned child's messages reach the same broker through the process channel. Either
way one rule holds: the handler registered for the type, else the default handler,
else (for ``LOG`` only) the runner's logger, else the message is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum
from typing import Any

from gostage._logging import Logger

__all__ = ["Broker", "Handler", "MessageType"]


class MessageType(str, Enum):
    """The message types gostage itself sends; any other string is a custom type."""

    LOG = "log"
    STORE_PUT = "store_put"
    STORE_DELETE = "store_delete"
    WORKFLOW_START = "workflow_start"
    WORKFLOW_RESULT = "workflow_result"

    def __str__(self) -> str:
        return self.value


Handler = Callable[[str, Any], None]
"""A message handler: ``fn(msg_type, payload)``."""

_LOG_LEVELS = ("debug", "info", "warning", "error")


def message_key(msg_type: str) -> str:
    """The plain string a message type is registered and sent under."""
    # A (str, Enum) member hashes by name, not value: normalise before dict lookups.
    return msg_type.value if isinstance(msg_type, MessageType) else str(msg_type)


class Broker:
    """Routes messages to handlers, one handler per message type."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger
        self._handlers: dict[str, Handler] = {}
        self._default: Handler | None = None
        self._lock = threading.Lock()

    def register_handler(self, msg_type: str, handler: Handler) -> None:
        """Handle ``msg_type`` with ``handler(msg_type, payload)``, replacing any earlier one."""
        with self._lock:
            self._handlers[message_key(msg_type)] = handler

    def unregister_handler(self, msg_type: str) -> None:
        """Remove the handler for ``msg_type``, if any."""
        with self._lock:
            self._handlers.pop(message_key(msg_type), None)

    def set_default_handler(self, handler: Handler | None) -> None:
        """Handle every type without its own handler (``None`` removes it)."""
        self._default = handler

    def dispatch(self, msg_type: str, payload: Any) -> None:
        """Deliver one message by the rule in this module's docstring."""
        key = message_key(msg_type)
        handler = self._handlers.get(key) or self._default
        if handler is not None:
            handler(key, payload)
        elif key == MessageType.LOG.value:
            self._reemit(payload)

    def _reemit(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            self.logger.info("%s", payload)
            return
        level = str(payload.get("level", "info")).lower()
        log = getattr(self.logger, level if level in _LOG_LEVELS else "info")
        pid = payload.get("pid")
        message = str(payload.get("message", ""))
        if pid is not None:
            log("[pid %s] %s", pid, message)
        else:
            log("%s", message)
