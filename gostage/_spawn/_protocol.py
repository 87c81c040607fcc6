"""The wire formats between parent and child: length-prefixed JSON frames.

A frame is a 4-byte big-endian unsigned length followed by that many bytes of
UTF-8 JSON. Both pipes of a child use it:

* the task pipe (parent to child) carries one workflow definition per frame;
  the parent may write several tasks at once, and the child reads them in order;
* the channel (child to parent) carries one object per frame. The parent decodes
  it with ``json.loads`` and nothing else: whatever a child sends, the parent
  never unpickles it, so a hostile child cannot run code in the parent through it.

Channel frame kinds (the ``"k"`` field)::

    {"k": "m", "m": [[type, box], ...]}      messages, in the order sent (a batch)
    {"k": "r", "store": doc, "rss": n, "cpu": s}           success: the final store
    {"k": "e", "kind": ..., "exc_type": ..., "message": ..., "traceback": ...,
     "stage": ..., "action": ..., "key": ...}                 failure, reported

An ``"r"`` or ``"e"`` frame may also carry ``"m"``: the task's messages not yet
sent when it ended, which the parent handles, in order, before the outcome. So a
short task costs one frame, while a long one still has its messages delivered as
they are sent (the child flushes them after a short linger).

A *box* is a value encoded by the store's value encoding (``{"json": v}``,
``{"tagged": v}``, or ``{"pickle": b64}`` only when the child is trusted).

This module is imported by the child: it must stay light (stdlib ``json``/``struct``).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Iterator
from json.decoder import JSONDecodeError
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FrameDecoder",
    "FrameError",
    "FrameTooLargeError",
    "TaskReader",
    "dumps",
    "encode_frame",
    "encode_task",
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
# encoder per call, which costs more than encoding a small message. The C encoder
# is called directly (JSONEncoder.encode adds a Python layer per call); it skips
# the cycle check, which no frame needs: boxes are fresh copies (encode_value).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _not_json(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


_c_encode: Any = None
if c_make_encoder is not None:  # pragma: no branch  (CPython always has it)
    _c_encode = c_make_encoder(
        None, _not_json, encode_basestring_ascii, None, ":", ",", False, False, False
    )


def dumps(obj: Any) -> str:
    """Compact ASCII JSON text; strict (no NaN/Infinity, which are not JSON)."""
    if _c_encode is not None and type(obj) in (dict, list):
        return "".join(_c_encode(obj, 0))
    return _ENCODER.encode(obj)


# Tasks keep json.dumps's leniency (NaN and infinities in params travel as the
# non-standard literals, which the child's json.loads reads back). No cycle check
# (the C encoder's markers would outlive a failed call): a cycle ends in RecursionError.
_TASK_ENCODER = json.JSONEncoder(separators=(",", ":"))
_c_encode_task: Any = None
if c_make_encoder is not None:  # pragma: no branch
    _c_encode_task = c_make_encoder(
        None, _not_json, encode_basestring_ascii, None, ":", ",", False, False, True
    )


def encode_task(defn: dict[str, Any]) -> bytes:
    """One task frame for the task pipe: header plus the JSON definition.

    Raises TypeError for a value JSON cannot hold, ValueError for a reference
    cycle or nesting too deep.
    """
    try:
        if _c_encode_task is not None:
            body = "".join(_c_encode_task(defn, 0)).encode()
        else:  # pragma: no cover
            body = _TASK_ENCODER.encode(defn).encode()
    except RecursionError:
        raise ValueError("circular reference or nesting too deep") from None
    return HEADER.pack(len(body)) + body


def too_large(size: int, max_frame: int) -> FrameTooLargeError:
    """The error for a frame body of ``size`` bytes over the limit."""
    return FrameTooLargeError(
        f"frame of {size} bytes exceeds the {max_frame}-byte limit; "
        "raise SpawnOptions.max_frame_size or send less"
    )


def encode_frame(obj: Any, max_frame: int) -> bytes:
    """Header plus JSON body; ``FrameError`` if the body exceeds ``max_frame`` bytes."""
    body = dumps(obj).encode()
    if len(body) > max_frame:
        raise too_large(len(body), max_frame)
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
            frame = _loads(body)
            if type(frame) is not dict or frame.get("k") not in ("m", "r", "e"):
                raise FrameError(f"frame has no valid kind: {body[:80]!r}")
            yield frame


# The C scanner behind json.loads, without the wrapper's whitespace regexes.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _loads(body: bytes) -> Any:
    """``json.loads(body)``, faster for the compact text our children write.

    The scanner reads one value from the start; anything else (leading or
    trailing whitespace, trailing garbage) goes through ``json.loads``, which
    accepts or rejects it exactly as the protocol says.
    """
    try:
        text = body.decode()
        try:
            value, end = _scan_once(text, 0)
        except StopIteration:
            return json.loads(text)
        if end != len(text):
            return json.loads(text)
        return value
    except (UnicodeDecodeError, JSONDecodeError) as exc:
        raise FrameError(f"frame is not valid JSON ({exc})") from None
    except RecursionError:
        raise FrameError("frame is nested too deeply") from None


class TaskReader:
    """The child's end of the task pipe: whole task bodies, in order, from any chunking."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()

    def next(self) -> bytes | None:
        """The next task's JSON body; ``None`` once the parent closed the pipe."""
        buffer = self._buffer
        while True:
            need = HEADER.size
            if len(buffer) >= need:
                (size,) = HEADER.unpack_from(buffer)
                need += size
                if len(buffer) >= need:
                    body = bytes(buffer[HEADER.size : need])
                    del buffer[:need]
                    return body
            try:
                data = os.read(self._fd, max(need - len(buffer), 1 << 16))
            except OSError:
                return None
            if not data:
                return None
            buffer += data
