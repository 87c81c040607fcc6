"""The small logging protocol gostage writes through, and its two implementations.

Anything with ``debug/info/warning/error(message, *args)`` (``%``-style args, like
the standard ``logging`` module) is a :class:`Logger`, so a ``logging.Logger`` works
as it is. loguru is imported on the first message, not at ``import gostage``: a
process that never logs (most spawned children) never pays for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from loguru import Logger as _LoguruLogger

__all__ = ["DefaultLogger", "Logger", "NullLogger"]


@runtime_checkable
class Logger(Protocol):
    """What gostage needs from a logger: four levels, ``%``-style arguments."""

    def debug(self, message: str, *args: Any) -> None: ...

    def info(self, message: str, *args: Any) -> None: ...

    def warning(self, message: str, *args: Any) -> None: ...

    def error(self, message: str, *args: Any) -> None: ...


def _format(message: str, args: tuple[Any, ...]) -> str:
    # %-formatting only when there are args, so a literal "%" in a message is safe.
    return message % args if args else message


class DefaultLogger:
    """Writes through loguru's global logger, bound to ``name`` (default ``"gostage"``).

    Configure sinks and levels with loguru itself (``loguru.logger.add/remove``).
    """

    def __init__(self, name: str = "gostage") -> None:
        self.name = name
        self._logger: _LoguruLogger | None = None

    def _log(self, level: str, message: str, args: tuple[Any, ...]) -> None:
        if self._logger is None:
            from loguru import logger

            # depth=2 points loguru's caller info at whoever called debug/info/...
            self._logger = logger.bind(name=self.name).opt(depth=2)
        self._logger.log(level, "{}", _format(message, args))

    def debug(self, message: str, *args: Any) -> None:
        """Log at DEBUG."""
        self._log("DEBUG", message, args)

    def info(self, message: str, *args: Any) -> None:
        """Log at INFO."""
        self._log("INFO", message, args)

    def warning(self, message: str, *args: Any) -> None:
        """Log at WARNING."""
        self._log("WARNING", message, args)

    def error(self, message: str, *args: Any) -> None:
        """Log at ERROR."""
        self._log("ERROR", message, args)

    def __repr__(self) -> str:
        return f"DefaultLogger(name={self.name!r})"


class NullLogger:
    """Drops every message."""

    def debug(self, message: str, *args: Any) -> None:
        """Drop the message."""

    def info(self, message: str, *args: Any) -> None:
        """Drop the message."""

    def warning(self, message: str, *args: Any) -> None:
        """Drop the message."""

    def error(self, message: str, *args: Any) -> None:
        """Drop the message."""

    def __repr__(self) -> str:
        return "NullLogger()"
