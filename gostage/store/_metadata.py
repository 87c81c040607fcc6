"""The :class:`Metadata` attached to store keys: tags, properties, a description, timestamps."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Metadata"]


def _check_name(value: object, what: str) -> str:
    """Return *value* as a plain ``str`` or raise: tags and property names are non-empty str."""
    if type(value) is not str:
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a str, got {type(value).__name__}")
        value = str.__str__(value)  # str subclass (e.g. a str Enum) -> its plain text
    if not value:
        raise ValueError(f"{what} must be a non-empty str")
    return value


class Metadata:
    """Tags, properties and a description describing one store key.

    * ``tags``: a tuple of distinct non-empty strings, in the order they were first added.
    * ``properties``: a mapping of non-empty string names to arbitrary values; the
      :attr:`properties` attribute returns a fresh (shallow) ``dict`` copy.
    * ``description``: free text (settable).
    * ``created_at`` / ``updated_at``: wall-clock timestamps as ``float`` seconds since the
      epoch (:func:`time.time`). Every change made through this object (tag, property,
      description) moves ``updated_at``. When the object lives inside a
      :class:`~gostage.store.Store`, the store also moves ``updated_at`` whenever the key's
      value is put again, and stamps both timestamps itself when metadata is attached.

    A ``Metadata`` is mutable and unhashable. ``==`` compares tags (as a set), properties and
    description; the timestamps are not compared. :meth:`Store.get_metadata
    <gostage.store.Store.get_metadata>` returns a deep copy, so changing it never changes
    the store: use the store's ``add_tag`` / ``set_property`` methods, or ``put_with_metadata``.
    """

    __slots__ = ("_created_at", "_description", "_properties", "_tags", "_updated_at")

    def __init__(
        self,
        tags: Iterable[str] = (),
        properties: Mapping[str, Any] | None = None,
        description: str = "",
    ) -> None:
        if isinstance(tags, str):
            raise TypeError("tags must be an iterable of str, not a single str")
        if not isinstance(description, str):
            raise TypeError(f"description must be a str, got {type(description).__name__}")
        self._tags: dict[str, None] = {_check_name(tag, "tag"): None for tag in tags}
        self._properties: dict[str, Any] = {}
        if properties is not None:
            for name, value in properties.items():
                self._properties[_check_name(name, "property name")] = value
        self._description = description
        now = time.time()
        self._created_at = now
        self._updated_at = now

    # --- tags ---------------------------------------------------------------

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags, without duplicates, in the order they were first added."""
        return tuple(self._tags)

    def add_tag(self, tag: str) -> None:
        """Add *tag* (a non-empty str); adding a tag that is already there changes nothing."""
        tag = _check_name(tag, "tag")
        if tag not in self._tags:
            self._tags[tag] = None
            self._updated_at = time.time()

    def remove_tag(self, tag: str) -> bool:
        """Remove *tag*; return ``True`` if it was there, ``False`` if not."""
        if tag in self._tags:
            del self._tags[tag]
            self._updated_at = time.time()
            return True
        return False

    def has_tag(self, tag: str) -> bool:
        """Return whether *tag* is one of the tags."""
        return tag in self._tags

    # --- properties ---------------------------------------------------------

    @property
    def properties(self) -> dict[str, Any]:
        """A new ``dict`` of the properties (the values themselves are not copied)."""
        return dict(self._properties)

    def set_property(self, name: str, value: Any) -> None:
        """Set property *name* (a non-empty str) to *value*."""
        self._properties[_check_name(name, "property name")] = value
        self._updated_at = time.time()

    def get_property(self, name: str, default: Any = None) -> Any:
        """Return property *name*, or *default* when it is not set."""
        return self._properties.get(name, default)

    def remove_property(self, name: str) -> bool:
        """Remove property *name*; return ``True`` if it was set, ``False`` if not."""
        if name in self._properties:
            del self._properties[name]
            self._updated_at = time.time()
            return True
        return False

    # --- description and timestamps ------------------------------------------

    @property
    def description(self) -> str:
        """Free-text description of the key (settable)."""
        return self._description

    @description.setter
    def description(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"description must be a str, got {type(value).__name__}")
        self._description = value
        self._updated_at = time.time()

    @property
    def created_at(self) -> float:
        """When this metadata was created (or attached to its key): epoch seconds."""
        return self._created_at

    @property
    def updated_at(self) -> float:
        """When the metadata, or the key's value in a store, last changed: epoch seconds."""
        return self._updated_at

    # --- copying and comparison ---------------------------------------------

    def copy(self) -> Metadata:
        """Return a deep copy (property values are deep-copied; timestamps are kept)."""
        import copy

        new = Metadata.__new__(Metadata)
        new._tags = dict(self._tags)
        new._properties = copy.deepcopy(self._properties)
        new._description = self._description
        new._created_at = self._created_at
        new._updated_at = self._updated_at
        return new

    def __copy__(self) -> Metadata:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Metadata:
        return self.copy()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Metadata):
            return NotImplemented
        return (
            self._tags.keys() == other._tags.keys()
            and self._properties == other._properties
            and self._description == other._description
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        parts = [f"tags={self.tags!r}"]
        if self._properties:
            parts.append(f"properties={self._properties!r}")
        if self._description:
            parts.append(f"description={self._description!r}")
        return f"Metadata({', '.join(parts)})"

    # --- used by the store (not public) --------------------------------------

    def _stamp(self, created_at: float, updated_at: float) -> None:
        self._created_at = created_at
        self._updated_at = updated_at

    def _touch(self, now: float) -> None:
        self._updated_at = now

    def _properties_view(self) -> dict[str, Any]:
        return self._properties
