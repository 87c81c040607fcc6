"""The :class:`Store`: a thread-safe key-value store with TTLs, metadata and export."""

from __future__ import annotations

import math
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator
from enum import Enum
from typing import TYPE_CHECKING, Any

from .._exceptions import (
    KeyExpiredError,
    KeyNotFoundError,
    MergeConflictError,
    StoreError,
    TypeMismatchError,
)
from ._metadata import Metadata, _check_name

if TYPE_CHECKING:
    from datetime import timedelta

__all__ = ["MergeStrategy", "Store"]

# How many expired keys the store remembers so that ``get`` can still say "expired" rather
# than "not found" after the key was purged by some other call. Oldest forgotten first.
_TOMBSTONE_LIMIT = 4096

# The private write observer (see Store._set_observer): (key, value, deleted).
_Observer = Callable[[str, Any, bool], None]

# A type argument for get(): a class, a tuple of classes, or a union such as ``int | str``.
_TypeSpec = type | tuple[Any, ...] | types.UnionType


class MergeStrategy(Enum):
    """What :meth:`Store.merge` does with a key present in both stores."""

    OVERWRITE = "overwrite"
    """The other store's entry (value, TTL and metadata) replaces ours."""
    SKIP = "skip"
    """Our entry stays as it is."""
    ERROR = "error"
    """Raise :class:`MergeConflictError` listing every such key; nothing is changed."""


def _normalize_key(key: object) -> str:
    """Slow path of key checking: str subclasses become plain str; the rest is refused."""
    if not isinstance(key, str):
        raise TypeError(f"store keys must be str, got {type(key).__name__}")
    key = str.__str__(key)
    if not key:
        raise ValueError("store keys must be non-empty str")
    return key


def _ttl_seconds(ttl: float | timedelta) -> float | None:
    """Return the TTL in seconds, or ``None`` for "never expires" (``<= 0`` or infinite)."""
    if type(ttl) is bool:
        raise TypeError("ttl must be a number of seconds or a timedelta, not a bool")
    if isinstance(ttl, (int, float)):
        seconds = float(ttl)
    elif hasattr(ttl, "total_seconds"):
        import datetime  # already imported by whoever built the timedelta

        if not isinstance(ttl, datetime.timedelta):
            raise TypeError(f"ttl must be a number or a timedelta, got {type(ttl).__name__}")
        seconds = ttl.total_seconds()
    else:
        raise TypeError(f"ttl must be a number or a timedelta, got {type(ttl).__name__}")
    if math.isnan(seconds):
        raise ValueError("ttl must not be NaN")
    if seconds <= 0 or seconds == math.inf:
        return None
    return seconds


def _flatten_types(spec: Any) -> tuple[type, ...]:
    if isinstance(spec, tuple):
        return tuple(t for part in spec for t in _flatten_types(part))
    if isinstance(spec, types.UnionType):
        return _flatten_types(spec.__args__)
    return (spec,)


def _mismatch(key: str, type_: _TypeSpec, value: Any) -> TypeMismatchError:
    expected = type_ if isinstance(type_, type) else _flatten_types(type_)
    return TypeMismatchError(key, expected, type(value))


class Store:
    """A thread-safe key-value store with optional per-key TTL and metadata.

    Keys are non-empty ``str`` (a ``str`` subclass, e.g. a string enum member, is stored as
    its plain text). Values are any Python objects.

    **Reading returns the stored object itself**, not a copy: mutating a list you got from
    :meth:`get` mutates the stored list. The operations that *copy* (:meth:`to_dict`,
    :meth:`clone`, :meth:`merge`, :meth:`copy_from`, :meth:`get_metadata`, export/import)
    copy deeply. :meth:`put` stores the object you pass, not a copy.

    **TTL.** :meth:`put_with_ttl` makes a key expire *ttl* seconds later, measured with the
    store's ``clock`` (default :func:`time.monotonic`; inject a fake clock in tests). A key
    is expired once ``clock() >= deadline``. Expired keys never show up in any result; they
    are removed lazily, when something looks at them. Reading an expired key raises
    :class:`KeyExpiredError` (a :class:`KeyNotFoundError`): this holds until the key is put
    or deleted again, even if another call already swept it away (the store remembers the
    last 4096 expired key names for that; older ones then read as plain "not found").

    **Metadata** (:class:`Metadata`: tags, properties, description, timestamps) is created
    lazily, only for keys that get some; a plain :meth:`put` of a key without metadata
    records no timestamp. A key's ``created_at`` is when its metadata was first attached or
    materialised (``put_with_metadata``, ``add_tag``, ``set_property`` or
    ``get_metadata``); ``updated_at`` moves on every later put of the key and every
    metadata change.

    **Order.** :meth:`keys` lists keys in insertion order: putting an existing key again
    keeps its place; a key deleted (or expired) and put again goes to the end. The
    ``find_keys_*`` methods return sorted lists.

    **Threads.** Every operation is atomic with respect to the others. Writes and all
    multi-step operations take one re-entrant lock; the plain :meth:`put` / :meth:`get`
    paths avoid it for keys without TTL or metadata (single dict operations are atomic)
    and fall back to the lock otherwise.

    An empty store is falsy (``len(store) == 0``), like a dict. Stores cannot be pickled
    (they hold a lock); use :meth:`export_state` / :meth:`import_state`. ``copy.copy`` and
    ``copy.deepcopy`` both return :meth:`clone`.
    """

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        """Create an empty store.

        :param clock: zero-argument callable returning monotonic seconds, used for TTLs.
            Defaults to :func:`time.monotonic`.
        """
        self._data: dict[str, Any] = {}
        self._expiry: dict[str, float] = {}  # key -> clock() deadline; only keys with a TTL
        self._meta: dict[str, Metadata] = {}  # only keys that have metadata
        self._expired: dict[str, None] = {}  # recently expired keys (ordered set), bounded
        self._next_deadline = math.inf  # <= every deadline in _expiry
        # True only while _expiry, _meta and _expired are empty and there is no observer
        # (lets the lock-free put skip its checks)
        self._plain = True
        self._observer: _Observer | None = None
        self._clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self._lock = threading.RLock()

    # How the lock-free put stays correct: ``put`` writes ``_data[key]`` first and *then*
    # checks whether ``_expiry``, ``_meta`` or ``_expired`` hold anything for that key
    # (skipped while ``_plain``: set False, under the lock, before anything is added to
    # them; set True again only under the lock once all three are seen empty). If
    # any does, it repeats the whole put under the lock, which is then the put's
    # linearization point. If none did at the check, the key has no TTL, metadata or
    # tombstone, so "value without TTL or metadata" is exactly the right state: every locked
    # writer adds to those side tables *before* touching ``_data`` (and expiring a key records
    # its tombstone before dropping its deadline), so a locked operation on the key that
    # started earlier is always visible to the check, and one that starts later is simply
    # ordered after the put. Because of that, holding the lock does not freeze ``_data``'s
    # key set: code under the lock iterates over ``_data`` only through an atomic copy
    # (``dict.copy``, ``list(dict)``, ``sorted(dict)``), never directly.

    # --- writing -------------------------------------------------------------

    def put(self, key: str, value: Any) -> None:
        """Store *value* under *key* (no copy is made).

        An existing key keeps its metadata (its ``updated_at`` moves) but loses any TTL.

        :raises TypeError: *key* is not a str.
        :raises ValueError: *key* is empty.
        """
        if type(key) is not str or not key:
            key = _normalize_key(key)
        self._data[key] = value
        if not self._plain and (
            key in self._expiry
            or key in self._meta
            or key in self._expired
            or self._observer is not None
        ):
            self._put_locked(key, value, None, None)
            self._notify(key, value, False)

    def put_with_ttl(self, key: str, value: Any, ttl: float | timedelta) -> None:
        """Store *value* under *key*, to expire *ttl* from now.

        *ttl* is in seconds (int or float) or a :class:`datetime.timedelta`; ``ttl <= 0``
        (or infinite) means the key never expires. Existing metadata is kept; any previous
        TTL is replaced.

        :raises TypeError: *key* is not a str, or *ttl* is not a number or timedelta.
        :raises ValueError: *key* is empty, or *ttl* is NaN.
        """
        if type(key) is not str or not key:
            key = _normalize_key(key)
        seconds = _ttl_seconds(ttl)
        with self._lock:
            deadline = None if seconds is None else self._clock() + seconds
            self._put_locked(key, value, deadline, None)
        self._notify(key, value, False)

    def put_with_metadata(
        self,
        key: str,
        value: Any,
        metadata: Metadata,
        *,
        ttl: float | timedelta | None = None,
    ) -> None:
        """Store *value* under *key* with a (deep) copy of *metadata*, replacing any metadata.

        The store stamps the copy: ``updated_at`` is now, ``created_at`` is kept from the
        key's previous metadata if it had some, else now. Like :meth:`put`, this removes any
        TTL unless *ttl* is given (same meaning as in :meth:`put_with_ttl`).

        :raises TypeError: *key* is not a str, or *metadata* is not a :class:`Metadata`.
        :raises ValueError: *key* is empty.
        """
        if type(key) is not str or not key:
            key = _normalize_key(key)
        if not isinstance(metadata, Metadata):
            raise TypeError(f"metadata must be a Metadata, got {type(metadata).__name__}")
        seconds = None if ttl is None else _ttl_seconds(ttl)
        meta = metadata.copy()
        with self._lock:
            deadline = None if seconds is None else self._clock() + seconds
            self._put_locked(key, value, deadline, meta)
        self._notify(key, value, False)

    def _put_locked(
        self, key: str, value: Any, deadline: float | None, meta: Metadata | None
    ) -> None:
        with self._lock:
            if self._expiry and self._is_expired_locked(key):
                self._drop_locked(key)  # an expired entry's metadata does not carry over
            if deadline is not None or meta is not None:
                self._plain = False
            if deadline is None:
                self._expiry.pop(key, None)
            else:
                self._expiry[key] = deadline
                if deadline < self._next_deadline:
                    self._next_deadline = deadline
            if self._expired:
                self._expired.pop(key, None)
            old = self._meta.get(key)
            if meta is not None:
                now = time.time()
                if old is not None:
                    meta._stamp(old.created_at, now)
                else:
                    meta._stamp(now, now)
                self._meta[key] = meta
            elif old is not None:
                old._touch(time.time())
            self._data[key] = value
            self._refresh_plain_locked()

    def delete(self, key: str) -> bool:
        """Remove *key*; return ``True`` if it was there (and not expired), else ``False``."""
        with self._lock:
            self._expired.pop(key, None)
            if key not in self._data:
                self._refresh_plain_locked()
                return False
            expired = self._is_expired_locked(key)
            self._drop_locked(key)
            self._refresh_plain_locked()
        if not expired:
            self._notify(key, None, True)
        return not expired

    def clear(self) -> None:
        """Remove every key (with its TTL and metadata)."""
        with self._lock:
            self._purge_locked()
            removed = list(self._data) if self._observer is not None else []
            self._expired.clear()
            self._expiry.clear()
            self._meta.clear()
            self._data.clear()
            self._next_deadline = math.inf
            self._plain = self._observer is None
        for key in removed:
            self._notify(key, None, True)

    # --- reading -------------------------------------------------------------

    def get(self, key: str, type_: _TypeSpec | None = None) -> Any:
        """Return the value stored under *key* (the object itself, not a copy).

        If *type_* is given (a class, a tuple of classes or a union like ``int | str``) the
        value must pass ``isinstance(value, type_)``. That is plain isinstance: ``True``
        passes for ``int`` (``bool`` is a subclass of ``int``), ``1`` does not pass for
        ``float``, and a subclass instance passes for its base class.

        :raises KeyNotFoundError: no such key (a :class:`KeyError`).
        :raises KeyExpiredError: the key's TTL ran out; the key is removed.
        :raises TypeMismatchError: the value is not an instance of *type_* (a TypeError).
        """
        try:
            value = self._data[key]
        except KeyError:
            raise self._missing(key) from None
        if self._expiry:
            deadline = self._expiry.get(key)
            if deadline is not None and self._clock() >= deadline:
                value = self._get_locked(key)
        if type_ is not None and not isinstance(value, type_):
            raise _mismatch(key, type_, value)
        return value

    def get_or_default(self, key: str, default: Any, type_: _TypeSpec | None = None) -> Any:
        """Like :meth:`get`, but return *default* when the key is missing or expired.

        A value of the wrong type still raises :class:`TypeMismatchError`; *default* itself
        is returned as given, unchecked.
        """
        try:
            value = self._data[key]
        except KeyError:
            return default
        if self._expiry:
            deadline = self._expiry.get(key)
            if deadline is not None and self._clock() >= deadline:
                try:
                    value = self._get_locked(key)
                except KeyNotFoundError:
                    return default
        if type_ is not None and not isinstance(value, type_):
            raise _mismatch(key, type_, value)
        return value

    def get_ttl(self, key: str) -> float | None:
        """Return the seconds *key* has left to live, or ``None`` if it never expires.

        :raises KeyNotFoundError: no such key. :raises KeyExpiredError: it has expired.
        """
        with self._lock:
            self._check_live_locked(key)
            deadline = self._expiry.get(key)
            return None if deadline is None else deadline - self._clock()

    def has(self, key: str) -> bool:
        """Return whether *key* is present and not expired."""
        if key not in self._data:
            return False
        if self._expiry:
            deadline = self._expiry.get(key)
            if deadline is not None and self._clock() >= deadline:
                try:
                    self._get_locked(key)
                except KeyNotFoundError:
                    return False
        return True

    def __contains__(self, key: object) -> bool:
        """``key in store`` is :meth:`has`; a non-str *key* is simply not there."""
        return isinstance(key, str) and self.has(key)

    def keys(self) -> list[str]:
        """Return the live keys in insertion order (see the class docstring)."""
        with self._lock:
            self._purge_locked()
            return list(self._data)

    def items(self) -> list[tuple[str, Any]]:
        """Return ``(key, value)`` pairs of the live keys, in insertion order.

        The values are the stored objects themselves, as :meth:`get` returns them;
        use :meth:`to_dict` for deep copies.
        """
        with self._lock:
            self._purge_locked()
            return list(self._data.copy().items())

    def __iter__(self) -> Iterator[str]:
        """Iterate over a snapshot of :meth:`keys` (later changes do not affect it)."""
        return iter(self.keys())

    def count(self) -> int:
        """Return the number of live keys (``len(store)`` is the same)."""
        if not self._expiry:
            return len(self._data)
        with self._lock:
            self._purge_locked()
            return len(self._data)

    def __len__(self) -> int:
        """The number of live keys."""
        return self.count()

    def to_dict(self) -> dict[str, Any]:
        """Return a new plain dict of the live keys and deep copies of their values.

        :raises StoreError: a value cannot be deep-copied (e.g. it holds a lock).
        """
        with self._lock:
            self._purge_locked()
            return self._copy_values_locked()

    # --- metadata ------------------------------------------------------------

    def get_metadata(self, key: str) -> Metadata:
        """Return a deep copy of *key*'s metadata (empty metadata if it had none yet).

        Asking materialises the metadata, so its timestamps stay stable from then on.

        :raises KeyNotFoundError: no such key. :raises KeyExpiredError: it has expired.
        """
        with self._lock:
            return self._meta_locked(key).copy()

    def add_tag(self, key: str, tag: str) -> None:
        """Add *tag* to *key*'s metadata.

        :raises KeyNotFoundError: no such key (or :class:`KeyExpiredError`).
        :raises TypeError, ValueError: *tag* is not a non-empty str.
        """
        tag = _check_name(tag, "tag")
        with self._lock:
            self._meta_locked(key).add_tag(tag)

    def remove_tag(self, key: str, tag: str) -> bool:
        """Remove *tag* from *key*; return whether it was there.

        :raises KeyNotFoundError: no such key (or :class:`KeyExpiredError`).
        """
        with self._lock:
            self._check_live_locked(key)
            meta = self._meta.get(key)
            return meta is not None and meta.remove_tag(tag)

    def has_tag(self, key: str, tag: str) -> bool:
        """Return whether *key* carries *tag*.

        :raises KeyNotFoundError: no such key (or :class:`KeyExpiredError`).
        """
        with self._lock:
            self._check_live_locked(key)
            meta = self._meta.get(key)
            return meta is not None and meta.has_tag(tag)

    def set_property(self, key: str, name: str, value: Any) -> None:
        """Set metadata property *name* of *key* to *value* (stored as is, not copied).

        :raises KeyNotFoundError: no such key (or :class:`KeyExpiredError`).
        :raises TypeError, ValueError: *name* is not a non-empty str.
        """
        name = _check_name(name, "property name")
        with self._lock:
            self._meta_locked(key).set_property(name, value)

    def get_property(self, key: str, name: str, default: Any = None) -> Any:
        """Return metadata property *name* of *key* (the object itself), or *default*.

        :raises KeyNotFoundError: no such key (or :class:`KeyExpiredError`).
        """
        with self._lock:
            self._check_live_locked(key)
            meta = self._meta.get(key)
            return default if meta is None else meta.get_property(name, default)

    def find_keys_by_tag(self, tag: str) -> list[str]:
        """Return the sorted live keys that carry *tag*."""
        with self._lock:
            self._purge_locked()
            return sorted(k for k, m in self._meta.items() if m.has_tag(tag))

    def find_keys_by_all_tags(self, tags: Iterable[str]) -> list[str]:
        """Return the sorted live keys that carry every one of *tags*.

        With no tags at all every live key matches (each has all of none).
        """
        wanted = _tag_set(tags)
        with self._lock:
            self._purge_locked()
            if not wanted:
                return sorted(self._data)
            return sorted(k for k, m in self._meta.items() if wanted <= m._tags.keys())

    def find_keys_by_any_tag(self, tags: Iterable[str]) -> list[str]:
        """Return the sorted live keys that carry at least one of *tags* (none for no tags)."""
        wanted = _tag_set(tags)
        with self._lock:
            self._purge_locked()
            return sorted(k for k, m in self._meta.items() if not wanted.isdisjoint(m._tags))

    def find_keys_by_property(self, name: str, value: Any) -> list[str]:
        """Return the sorted live keys whose property *name* is set and ``== value``."""
        missing = object()
        with self._lock:
            self._purge_locked()
            return sorted(
                k
                for k, m in self._meta.items()
                if (found := m.get_property(name, missing)) is not missing and found == value
            )

    # --- combining stores ----------------------------------------------------

    def merge(self, other: Store, strategy: MergeStrategy = MergeStrategy.OVERWRITE) -> None:
        """Copy every live entry of *other* into this store.

        Entries travel whole and deep-copied: value, remaining TTL and metadata. For a key
        present (and live) in both stores, *strategy* decides: ``OVERWRITE`` replaces our
        entry with theirs (also their TTL and metadata, or lack of them), ``SKIP`` keeps
        ours, ``ERROR`` raises :class:`MergeConflictError` listing all such keys (sorted)
        and changes nothing.

        :raises TypeError: *other* is not a Store or *strategy* not a MergeStrategy.
        :raises StoreError: a value of *other* cannot be deep-copied (nothing is changed).
        """
        if not isinstance(other, Store):
            raise TypeError(f"can only merge a Store, got {type(other).__name__}")
        if not isinstance(strategy, MergeStrategy):
            raise TypeError(f"strategy must be a MergeStrategy, got {strategy!r}")
        entries = other._snapshot()
        with self._lock:
            self._purge_locked()
            if strategy is MergeStrategy.ERROR:
                conflicts = sorted(k for k, _, _, _ in entries if k in self._data)
                if conflicts:
                    raise MergeConflictError(conflicts)
            now = self._clock()
            written = []
            for key, value, remaining, meta in entries:
                if strategy is MergeStrategy.SKIP and key in self._data:
                    continue
                deadline = None if remaining is None else now + remaining
                self._install_locked(key, value, deadline, meta)
                written.append((key, value))
        for key, value in written:
            self._notify(key, value, False)

    def copy_from(self, other: Store, overwrite: bool = False) -> None:
        """Copy *other*'s live entries in; keys we already have are kept unless *overwrite*.

        Same as ``merge(other, MergeStrategy.OVERWRITE if overwrite else MergeStrategy.SKIP)``.
        """
        self.merge(other, MergeStrategy.OVERWRITE if overwrite else MergeStrategy.SKIP)

    def clone(self) -> Store:
        """Return an independent deep copy: same clock, values, TTL deadlines and metadata.

        :raises StoreError: a value cannot be deep-copied.
        """
        new = Store(clock=self._clock)
        with self._lock:
            self._purge_locked()
            new._data = self._copy_values_locked()
            new._expiry = dict(self._expiry)
            new._meta = {k: m.copy() for k, m in self._meta.items()}
            new._next_deadline = self._next_deadline
            new._plain = not (new._expiry or new._meta)
        return new

    def __copy__(self) -> Store:
        return self.clone()

    def __deepcopy__(self, memo: dict[int, Any]) -> Store:
        return self.clone()

    # --- export / import -----------------------------------------------------

    def export_state(self, allow_pickle: bool = True) -> dict[str, Any]:
        """Return a JSON-compatible document of the live entries, TTLs and metadata.

        ``json.loads(json.dumps(doc)) == doc`` holds, and :meth:`import_state` rebuilds an
        equal store, also in another process: TTLs are written as wall-clock deadlines
        (``expires_at``, epoch seconds). Plain JSON values are written as they are; tuples,
        sets, frozensets, bytes, NaN/infinities, huge ints and dicts with non-str keys use a
        pickle-free tagged form; anything else is pickled (base64) -- unless
        *allow_pickle* is false, then it is refused. The layout is described in
        :mod:`gostage.store._serialization`. The document shares no objects with the store.

        :raises StoreSerializationError: naming the key (and property) of a value that
            cannot be written: not JSON-representable and not picklable, or not
            JSON-representable while ``allow_pickle=False``.
        """
        from ._serialization import build_document

        with self._lock:
            self._purge_locked()
            now, wall = self._clock(), time.time()
            expiry, meta = self._expiry, self._meta
            entries = [
                (k, v, None if (d := expiry.get(k)) is None else wall + (d - now), meta.get(k))
                for k, v in self._data.copy().items()  # copy: see _copy_values_locked
            ]
            return build_document(entries, allow_pickle)

    @classmethod
    def import_state(
        cls,
        data: object,
        allow_pickle: bool = True,
        *,
        clock: Callable[[], float] | None = None,
    ) -> Store:
        """Build a new store from an :meth:`export_state` document.

        Keys whose ``expires_at`` has already passed are not imported (reading them raises
        :class:`KeyExpiredError`). With ``allow_pickle=False`` a document holding a pickled
        value is refused before anything is unpickled: use that for documents from a
        source you do not trust, since unpickling can run arbitrary code.

        :param clock: the new store's clock (see :class:`Store`).
        :raises StoreSerializationError: the document is malformed (wrong format or
            version, missing or unknown fields, wrong types), holds a pickled value while
            ``allow_pickle=False``, or a value cannot be unpickled.
        """
        from ._serialization import parse_document

        return cls._from_entries(parse_document(data, allow_pickle), clock)

    @classmethod
    def _import_owned(cls, data: object, allow_pickle: bool) -> Store:
        """:meth:`import_state` of a document fresh from ``json.loads`` that nobody else
        holds (a spawned child's final store): its plain JSON values are taken over
        as they are instead of being checked and copied. Private to gostage."""
        from ._serialization import parse_document

        return cls._from_entries(parse_document(data, allow_pickle, owned=True), None)

    @classmethod
    def _from_entries(
        cls,
        entries: list[tuple[str, Any, float | None, Metadata | None]],
        clock: Callable[[], float] | None,
    ) -> Store:
        store = cls(clock=clock)
        if all(expires_at is None and meta is None for _, _, expires_at, meta in entries):
            store._data = {key: value for key, value, _, _ in entries}  # a plain store
            return store
        with store._lock:
            wall, now = time.time(), store._clock()
            for key, value, expires_at, meta in entries:
                if expires_at is not None:
                    remaining = expires_at - wall
                    if remaining <= 0:
                        store._remember_expired_locked(key)
                        continue
                    store._install_locked(key, value, now + remaining, meta)
                else:
                    store._install_locked(key, value, None, meta)
        return store

    def __repr__(self) -> str:
        keys = self.keys()
        shown = ", ".join(repr(k) for k in keys[:5])
        more = ", ..." if len(keys) > 5 else ""
        return f"<Store {len(keys)} key{'' if len(keys) == 1 else 's'}: [{shown}{more}]>"

    # --- internals (call with the lock held) -----------------------------------

    def _missing(self, key: str) -> KeyNotFoundError:
        if key in self._expired:
            return KeyExpiredError(key)
        return KeyNotFoundError(key)

    def _is_expired_locked(self, key: str) -> bool:
        deadline = self._expiry.get(key)
        return deadline is not None and self._clock() >= deadline

    def _check_live_locked(self, key: str) -> None:
        """Raise KeyNotFoundError / KeyExpiredError unless *key* is live (expiring it)."""
        if key not in self._data:
            raise self._missing(key)
        if self._expiry and self._is_expired_locked(key):
            self._expire_locked(key)
            raise KeyExpiredError(key)

    def _get_locked(self, key: str) -> Any:
        """The slow path of ``get``: re-check under the lock; the key may have been re-put."""
        with self._lock:
            self._check_live_locked(key)
            return self._data[key]

    def _meta_locked(self, key: str) -> Metadata:
        """Return *key*'s stored metadata, creating it if needed; the key must be live."""
        self._check_live_locked(key)
        meta = self._meta.get(key)
        if meta is None:
            self._plain = False
            meta = self._meta[key] = Metadata()
        return meta

    def _drop_locked(self, key: str) -> None:
        self._expiry.pop(key, None)
        self._meta.pop(key, None)
        self._data.pop(key, None)

    def _refresh_plain_locked(self) -> None:
        if not self._plain and not (
            self._expiry or self._meta or self._expired or self._observer is not None
        ):
            self._plain = True

    def _set_observer(self, observer: _Observer | None) -> None:
        """Private hook for gostage itself (the spawn child mirrors its store to the parent).

        After every put (``put``, ``put_with_ttl``, ``put_with_metadata``, and each key
        written by ``merge`` / ``copy_from``) the store calls ``observer(key, value, False)``;
        after ``delete`` removed a live key, and for each key ``clear`` removed, it calls
        ``observer(key, None, True)``. Calls happen after the change, outside the lock, in
        the writing thread. Keys that expire, metadata changes and ``import_state`` are not
        reported. ``None`` removes the observer. Setting one makes every put take the locked
        path, so plain stores pay nothing for this.
        """
        with self._lock:
            self._observer = observer
            if observer is not None:
                self._plain = False
            else:
                self._refresh_plain_locked()

    def _notify(self, key: str, value: Any, deleted: bool) -> None:
        observer = self._observer
        if observer is not None:
            observer(key, value, deleted)

    def _remember_expired_locked(self, key: str) -> None:
        self._plain = False
        expired = self._expired
        expired[key] = None
        if len(expired) > _TOMBSTONE_LIMIT:
            del expired[next(iter(expired))]

    def _expire_locked(self, key: str) -> None:
        self._remember_expired_locked(key)  # first: see the note on the lock-free put
        self._drop_locked(key)

    def _purge_locked(self) -> None:
        """Remove every expired key (cheap when nothing can have expired yet)."""
        if not self._expiry:
            return
        now = self._clock()
        if now < self._next_deadline:
            return
        for key in [k for k, d in self._expiry.items() if d <= now]:
            self._expire_locked(key)
        self._next_deadline = min(self._expiry.values(), default=math.inf)
        self._refresh_plain_locked()

    def _install_locked(
        self, key: str, value: Any, deadline: float | None, meta: Metadata | None
    ) -> None:
        """Put a whole entry as given (merge/import): TTL and metadata replace ours."""
        if deadline is not None or meta is not None:
            self._plain = False
        if deadline is None:
            self._expiry.pop(key, None)
        else:
            self._expiry[key] = deadline
            if deadline < self._next_deadline:
                self._next_deadline = deadline
        self._expired.pop(key, None)
        if meta is None:
            self._meta.pop(key, None)
        else:
            self._meta[key] = meta
        self._data[key] = value

    def _copy_values_locked(self) -> dict[str, Any]:
        """Deep-copy ``_data`` in one go (keeps aliasing between values)."""
        import copy

        data = self._data.copy()  # atomic: lock-free puts may add keys while we iterate
        try:
            return copy.deepcopy(data)
        except Exception as exc:
            for key, value in data.items():  # name the culprit
                try:
                    copy.deepcopy(value)
                except Exception:
                    raise StoreError(
                        f"cannot copy the value of key {key!r} ({type(value).__qualname__}): {exc}"
                    ) from exc
            raise StoreError(f"cannot copy the store's values: {exc}") from exc

    def _snapshot(self) -> list[tuple[str, Any, float | None, Metadata | None]]:
        """Deep copies of the live entries with their remaining TTL in seconds."""
        with self._lock:
            self._purge_locked()
            values = self._copy_values_locked()
            now = self._clock()
            return [
                (
                    k,
                    v,
                    None if (d := self._expiry.get(k)) is None else d - now,
                    None if (m := self._meta.get(k)) is None else m.copy(),
                )
                for k, v in values.items()
            ]


def _tag_set(tags: Iterable[str]) -> set[str]:
    if isinstance(tags, str):
        raise TypeError("tags must be an iterable of str, not a single str")
    return set(tags)
