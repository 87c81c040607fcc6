"""A thread-safe key-value store with per-key TTL, metadata, merging and JSON export.

::

    from gostage.store import Store, Metadata

    store = Store()
    store.put("user", {"name": "ada"})
    store.put_with_ttl("token", "abc", ttl=30)            # seconds or a timedelta
    store.put_with_metadata("report", b"...", Metadata(tags=["output"]))
    store.get("user", dict)                               # -> the stored dict itself
    store.find_keys_by_tag("output")                      # -> ["report"]
    doc = store.export_state(allow_pickle=False)          # JSON-compatible dict
    again = Store.import_state(doc, allow_pickle=False)

See :class:`Store` for the semantics (copies, TTL, ordering, threads) and
:mod:`gostage.store._serialization` for the export document format.
"""

from __future__ import annotations

from typing import Any

from .._exceptions import (
    KeyExpiredError,
    KeyNotFoundError,
    MergeConflictError,
    StoreError,
    StoreSerializationError,
    TypeMismatchError,
)
from ._metadata import Metadata
from ._store import MergeStrategy, Store, _TypeSpec

__all__ = [
    "KeyExpiredError",
    "KeyNotFoundError",
    "MergeConflictError",
    "MergeStrategy",
    "Metadata",
    "Store",
    "StoreError",
    "StoreSerializationError",
    "TypeMismatchError",
    "get",
]


def get(store: Store, key: str, type_: _TypeSpec | None = None) -> Any:
    """Return ``store.get(key, type_)``: the value under *key*, type-checked if *type_* given.

    :raises KeyNotFoundError: no such key. :raises KeyExpiredError: its TTL ran out.
    :raises TypeMismatchError: the value is not an instance of *type_*.
    """
    return store.get(key, type_)
