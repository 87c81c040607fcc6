"""Turning store contents into a JSON-compatible document and back.

Document layout (``FORMAT_VERSION`` 1)::

    {
      "format": "gostage.store",
      "version": 1,
      "entries": {
        "<key>": {
          "value": <box>,
          "expires_at": <float epoch seconds>,          # only when the key has a TTL
          "metadata": {                                  # only when the key has metadata
            "tags": ["<tag>", ...],
            "properties": {"<name>": <box>, ...},
            "description": "<text>",
            "created_at": <float epoch seconds>,
            "updated_at": <float epoch seconds>
          }
        }
      }
    }

A *box* holds one value and has exactly one field:

* ``{"json": <v>}`` -- *v* is plain JSON, stored verbatim: ``None``, ``bool``, ``str``,
  ``int`` (up to ``_MAX_JSON_INT_BITS`` bits), finite ``float``, ``list`` and ``dict`` with
  ``str`` keys, nested, of exactly those types (subclasses such as ``OrderedDict`` or an
  ``IntEnum`` member are not plain JSON).
* ``{"tagged": <t>}`` -- built-in values JSON cannot carry faithfully, encoded without
  pickle, so they survive ``allow_pickle=False``: ``tuple``, ``set``, ``frozenset``,
  ``bytes``, non-finite floats (NaN, +/-inf), ints too large for JSON text, and ``dict``
  with non-``str`` keys, nested in any way with the plain JSON types. In *t*, lists and
  scalars are themselves and every JSON object is a tag ``{"t": <kind>, "v": <payload>}``:
  ``tuple``/``set``/``frozenset`` (``v``: list of items), ``dict`` (``v``: list of
  ``[key, value]`` pairs), ``bytes`` (``v``: base64), ``float`` (``v``: ``"nan"``,
  ``"inf"`` or ``"-inf"``), ``int`` (``v``: hexadecimal). Decoding only ever builds
  these built-in types, so it is safe on untrusted input.
* ``{"pickle": "<base64>"}`` -- anything else that :mod:`pickle` can serialize; written
  and read only with ``allow_pickle=True``.

Values with reference cycles go to pickle. Shared references inside one value are not
preserved by the JSON or tagged forms (each occurrence becomes its own copy).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from .._exceptions import StoreSerializationError
from ._metadata import Metadata

FORMAT_NAME = "gostage.store"
FORMAT_VERSION = 1

# JSON numbers are text, and CPython refuses to convert ints with more than
# sys.get_int_max_str_digits() digits (default 4300, minimum 640) to or from text.
# 2000 bits is about 603 decimal digits: safe under any setting. Bigger ints are tagged.
_MAX_JSON_INT_BITS = 2000

_PICKLE_PROTOCOL = 5

# An exported entry, as handed over by the store: key, value, wall-clock deadline, metadata.
Entry = tuple[str, Any, float | None, Metadata | None]


class _Unsupported(Exception):
    """Internal: the value does not fit the encoding being tried."""


# --- encoding ------------------------------------------------------------------


def _copy_json(value: Any, active: set[int], strict: bool) -> Any:
    """Deep-copy a plain-JSON value, or raise _Unsupported if it is not plain JSON.

    ``strict`` (export) also rejects what JSON text cannot carry faithfully: non-finite
    floats and huge ints. Import is lenient about those since ``json.loads`` produces them.
    """
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if strict and value.bit_length() > _MAX_JSON_INT_BITS:
            raise _Unsupported
        return value
    if t is float:
        if strict and not math.isfinite(value):
            raise _Unsupported
        return value
    if t is list or t is dict:
        ident = id(value)
        if ident in active:  # reference cycle
            raise _Unsupported
        active.add(ident)
        try:
            if t is list:
                return [_copy_json(item, active, strict) for item in value]
            out: dict[str, Any] = {}
            for k, item in value.items():
                if type(k) is not str:
                    raise _Unsupported
                out[k] = _copy_json(item, active, strict)
            return out
        finally:
            active.discard(ident)
    raise _Unsupported


def _b64encode(raw: bytes) -> str:
    import binascii

    return binascii.b2a_base64(raw, newline=False).decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict base64 decoding; raises ValueError on anything but the base64 alphabet."""
    import base64

    return base64.b64decode(text.encode("ascii"), validate=True)


_SEQUENCE_TAGS: dict[type, str] = {tuple: "tuple", set: "set", frozenset: "frozenset"}


def _tag(value: Any, active: set[int]) -> Any:
    """Encode *value* in the tagged form, or raise _Unsupported."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if value.bit_length() > _MAX_JSON_INT_BITS:
            return {"t": "int", "v": format(value, "x")}
        return value
    if t is float:
        return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
    if t is bytes:
        return {"t": "bytes", "v": _b64encode(value)}
    if t is list or t is dict or t in _SEQUENCE_TAGS:
        ident = id(value)
        if ident in active:  # reference cycle
            raise _Unsupported
        active.add(ident)
        try:
            if t is list:
                return [_tag(item, active) for item in value]
            if t is dict:
                return {
                    "t": "dict",
                    "v": [[_tag(k, active), _tag(item, active)] for k, item in value.items()],
                }
            return {"t": _SEQUENCE_TAGS[t], "v": [_tag(item, active) for item in value]}
        finally:
            active.discard(ident)
    raise _Unsupported


pickle_dumps: Callable[[Any], bytes] | None = None
"""What pickles values when pickling is allowed (``None``: :func:`pickle.dumps`).

A spawned child sets cloudpickle here: its classes defined in ``__main__`` arrived
by value and plain pickle cannot find them by name."""


def _default_dumps(value: Any) -> bytes:
    import pickle

    return pickle.dumps(value, protocol=_PICKLE_PROTOCOL)


def encode_value(value: Any, where: str, allow_pickle: bool) -> dict[str, Any]:
    """Return the box for *value*; *where* names it in error messages (e.g. ``key 'x'``)."""
    try:
        return {"json": _copy_json(value, set(), True)}
    except (_Unsupported, RecursionError):
        pass
    try:
        return {"tagged": _tag(value, set())}
    except (_Unsupported, RecursionError):
        pass
    kind = type(value).__qualname__
    if not allow_pickle:
        raise StoreSerializationError(
            f"{where}: a {kind} value is not JSON-representable and allow_pickle=False"
        )
    try:
        raw = (pickle_dumps or _default_dumps)(value)
    except Exception as exc:
        raise StoreSerializationError(
            f"{where}: a {kind} value is neither JSON-representable nor picklable ({exc})"
        ) from exc
    return {"pickle": _b64encode(raw)}


def _encode_metadata(meta: Metadata, key: str, allow_pickle: bool) -> dict[str, Any]:
    return {
        "tags": list(meta.tags),
        "properties": {
            name: encode_value(value, f"key {key!r} property {name!r}", allow_pickle)
            for name, value in meta._properties_view().items()
        },
        "description": meta.description,
        "created_at": meta.created_at,
        "updated_at": meta.updated_at,
    }


def build_document(entries: Iterable[Entry], allow_pickle: bool) -> dict[str, Any]:
    """Build the export document from ``(key, value, expires_at, metadata)`` entries."""
    out: dict[str, Any] = {}
    for key, value, expires_at, meta in entries:
        try:
            entry: dict[str, Any] = {"value": encode_value(value, f"key {key!r}", allow_pickle)}
        except StoreSerializationError as exc:
            exc.key = key
            raise
        if expires_at is not None:
            entry["expires_at"] = expires_at
        if meta is not None:
            entry["metadata"] = _encode_metadata(meta, key, allow_pickle)
        out[key] = entry
    return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "entries": out}


# --- decoding ------------------------------------------------------------------


def _malformed(message: str) -> StoreSerializationError:
    return StoreSerializationError(f"malformed store document: {message}")


def _untag(node: Any, where: str) -> Any:
    t = type(node)
    if t is str or t is bool or t is int or t is float or node is None:
        return node
    if t is list:
        return [_untag(item, where) for item in node]
    if t is not dict:
        raise _malformed(f"{where}: unexpected {t.__name__} in a tagged value")
    if node.keys() != {"t", "v"}:
        raise _malformed(f"{where}: a tagged object must have exactly the fields 't' and 'v'")
    kind, payload = node["t"], node["v"]
    if kind in ("tuple", "set", "frozenset", "dict"):
        if type(payload) is not list:
            raise _malformed(f"{where}: tagged {kind!r} needs a list payload")
        if kind == "tuple":
            return tuple(_untag(item, where) for item in payload)
        try:
            if kind == "set":
                return {_untag(item, where) for item in payload}
            if kind == "frozenset":
                return frozenset(_untag(item, where) for item in payload)
            pairs = []
            for pair in payload:
                if type(pair) is not list or len(pair) != 2:
                    raise _malformed(f"{where}: tagged 'dict' items must be [key, value] pairs")
                pairs.append((_untag(pair[0], where), _untag(pair[1], where)))
            return dict(pairs)
        except TypeError as exc:  # unhashable set item or dict key
            raise _malformed(f"{where}: {exc}") from exc
    if type(payload) is not str:
        raise _malformed(f"{where}: tagged {kind!r} needs a str payload")
    if kind == "bytes":
        try:
            return _b64decode(payload)
        except ValueError as exc:  # binascii.Error is a ValueError; so is non-ASCII text
            raise _malformed(f"{where}: bad base64 in tagged 'bytes' ({exc})") from exc
    if kind == "float":
        if payload not in ("nan", "inf", "-inf"):
            raise _malformed(f"{where}: tagged 'float' must be 'nan', 'inf' or '-inf'")
        return float(payload)
    if kind == "int":
        try:
            return int(payload, 16)
        except ValueError as exc:
            raise _malformed(f"{where}: bad hexadecimal in tagged 'int'") from exc
    raise _malformed(f"{where}: unknown tag {kind!r}")


def decode_value(box: Any, where: str, allow_pickle: bool) -> Any:
    """Return the value held by *box* (see the module docstring)."""
    if type(box) is not dict or len(box) != 1:
        raise _malformed(f"{where}: a value must be an object with exactly one field")
    ((kind, payload),) = box.items()
    if kind == "json":
        try:
            return _copy_json(payload, set(), False)
        except _Unsupported:
            raise _malformed(f"{where}: 'json' value holds non-JSON data") from None
        except RecursionError:
            raise _malformed(f"{where}: 'json' value is nested too deeply") from None
    if kind == "tagged":
        try:
            return _untag(payload, where)
        except RecursionError:
            raise _malformed(f"{where}: 'tagged' value is nested too deeply") from None
    if kind == "pickle":
        if not allow_pickle:
            raise StoreSerializationError(
                f"{where}: the document holds a pickled value and allow_pickle=False"
            )
        if type(payload) is not str:
            raise _malformed(f"{where}: 'pickle' must be a base64 str")
        try:
            raw = _b64decode(payload)
        except ValueError as exc:
            raise _malformed(f"{where}: bad base64 in 'pickle' ({exc})") from exc
        import pickle

        try:
            return pickle.loads(raw)
        except Exception as exc:
            raise StoreSerializationError(f"{where}: cannot unpickle the value ({exc})") from exc
    raise _malformed(f"{where}: unknown value encoding {kind!r}")


def _number(value: Any, where: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _malformed(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _check_fields(obj: Any, where: str, required: set[str], optional: set[str]) -> None:
    if type(obj) is not dict:
        raise _malformed(f"{where} must be an object, got {type(obj).__name__}")
    missing = required - obj.keys()
    if missing:
        raise _malformed(f"{where} lacks field(s) {', '.join(sorted(missing))}")
    unknown = obj.keys() - required - optional
    if unknown:
        raise _malformed(f"{where} has unknown field(s) {', '.join(sorted(map(str, unknown)))}")


_META_FIELDS = {"tags", "properties", "description", "created_at", "updated_at"}


def _decode_metadata(obj: Any, key: str, allow_pickle: bool) -> Metadata:
    where = f"entry {key!r} metadata"
    _check_fields(obj, where, _META_FIELDS, set())
    tags, props, description = obj["tags"], obj["properties"], obj["description"]
    if type(tags) is not list or not all(type(t) is str and t for t in tags):
        raise _malformed(f"{where}: 'tags' must be a list of non-empty str")
    if type(props) is not dict or not all(type(n) is str and n for n in props):
        raise _malformed(f"{where}: 'properties' must be an object with non-empty names")
    if type(description) is not str:
        raise _malformed(f"{where}: 'description' must be a str")
    properties = {
        name: decode_value(box, f"key {key!r} property {name!r}", allow_pickle)
        for name, box in props.items()
    }
    meta = Metadata(tags, properties, description)
    meta._stamp(
        _number(obj["created_at"], f"{where}: 'created_at'"),
        _number(obj["updated_at"], f"{where}: 'updated_at'"),
    )
    return meta


def parse_document(data: Any, allow_pickle: bool, *, owned: bool = False) -> list[Entry]:
    """Validate an export document and return its ``(key, value, expires_at, metadata)``.

    ``owned``: the caller built *data* with :func:`json.loads` (no hooks) and hands it
    over. ``json.loads`` only ever builds plain JSON types, so the values of ``"json"``
    boxes need no check and, since nobody else holds them, no copy: they are used
    as they are. Everything else is validated as usual.
    """
    _check_fields(data, "the document", {"format", "version", "entries"}, set())
    if data["format"] != FORMAT_NAME:
        raise _malformed(f"'format' must be {FORMAT_NAME!r}, got {data['format']!r}")
    version = data["version"]
    if type(version) is not int:
        raise _malformed(f"'version' must be an int, got {version!r}")
    if version != FORMAT_VERSION:
        raise StoreSerializationError(
            f"unsupported store document version {version} (this gostage reads version "
            f"{FORMAT_VERSION})"
        )
    entries = data["entries"]
    if type(entries) is not dict:
        raise _malformed(f"'entries' must be an object, got {type(entries).__name__}")
    out: list[Entry] = []
    for key, entry in entries.items():
        if type(key) is not str or not key:
            raise _malformed(f"entry keys must be non-empty str, got {key!r}")
        if owned and type(entry) is dict and len(entry) == 1:
            box = entry.get("value")
            if type(box) is dict and len(box) == 1 and "json" in box:
                out.append((key, box["json"], None, None))  # the common case: no TTL, no metadata
                continue
        where = f"entry {key!r}"
        _check_fields(entry, where, {"value"}, {"expires_at", "metadata"})
        expires_at = entry.get("expires_at")
        if expires_at is not None:
            expires_at = _number(expires_at, f"{where}: 'expires_at'")
        meta_obj = entry.get("metadata")
        meta = None if meta_obj is None else _decode_metadata(meta_obj, key, allow_pickle)
        value = decode_value(entry["value"], f"key {key!r}", allow_pickle)
        out.append((key, value, expires_at, meta))
    return out
