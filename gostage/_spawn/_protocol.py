"""The child-to-parent wire format: length-prefixed JSON frames.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of
UTF-8 JSON holding one object. The parent decodes with ``json.loads`` and nothing
else: whatever a child sends, the parent never unpickles it, so a hostile child
cannot run code in the parent through this channel.

Frame kinds (the ``"k"`` field)::

    {"k": "m", "m": [[type, box], ...]}      messages, in the order sent (a batch)
    {"k": "r", "store": doc, "rss": n}      success: the final store (export_state doc)
    {"k": "e", "kind": ..., "exc_type": ..., "message": ..., "traceback": ...,
     "stage": ..., "action": ..., "key": ...}                 failure, reported

A *box* is a value encoded by the store's value encoding (``{"json": v}``,
``{"tagged": v}``, or ``{"pickle": b64}`` only when the child is trusted).

This module is imported by the child: it must stay light (stdlib ``json``/``struct``).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from typing import Any

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FrameDecoder",
    "FrameError",
    "FrameTooLargeError",
    "dumps",
    "encode_frame",
    "write_frame",
]

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct("!I")

# Failure kinds a child reports in an "e" frame.
KIND_ACTION = "action"
KIND_MEMORY = "memory"
KIND_SERIALIZATION = "serialization"
KIND_UNKNOWN_ACTION = "unknown_action"
KIND_FRAME = "frame"
KIND_INTERNAL = "internal"


class FrameError(Exception):
    """The byte stream is not a valid sequence of frames."""


class FrameTooLargeError(FrameError):
    """A message or result is bigger than the channel's frame limit."""


# One encoder for every frame: json.dumps with non-default options builds a new
# encoder per call, which costs more than encoding a small message.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def dumps(obj: Any) -> str:
    """Compact JSON text; strict (no NaN/Infinity, which are not JSON)."""
    return _ENCODER.encode(obj)


def encode_frame(obj: Any, max_frame: int) -> bytes:
    """Header plus JSON body; ``FrameError`` if the body exceeds ``max_frame`` bytes."""
    body = dumps(obj).encode()
    if len(body) > max_frame:
        raise FrameTooLargeError(
            f"frame of {len(body)} bytes exceeds the {max_frame}-byte limit; "
            "raise SpawnOptions.max_frame_size or send less"
        )
    return HEADER.pack(len(body)) + body


def write_frame(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (blocking: a slow parent slows the child down)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FrameDecoder:
    """Turns bytes read from the channel, in any chunking, into decoded frames."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> Iterator[dict[str, Any]]:
        """Add ``data``; yield every frame now complete. ``FrameError`` on bad input."""
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if size > self.max_frame:
                # Checked before waiting for the body: a lying header cannot make
                # the parent buffer gigabytes.
                raise FrameError(
                    f"child announced a frame of {size} bytes, over the {self.max_frame}-byte "
                    "limit (raise SpawnOptions.max_frame_size if this is legitimate)"
                )
            end = HEADER.size + size
            if len(self._buffer) < end:
                return
            body = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            try:
                frame = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise FrameError(f"frame is not valid JSON ({exc})") from None
            if not isinstance(frame, dict) or frame.get("k") not in ("m", "r", "e"):
                raise FrameError(f"frame has no valid kind: {body[:80]!r}")
            yield frame
