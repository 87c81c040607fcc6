"""The action registry: how a child process (or a resumed run) turns an id into an Action.

A child workflow is described by plain data (``SubWorkflowDef``); its actions are
looked up here by id. The registry itself travels to the child with cloudpickle,
so factories defined in ``__main__`` or inside a function work there too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import TypeVar

from gostage._exceptions import UnknownActionError
from gostage._model import Action, _Tagged

__all__ = ["ActionFactory", "ActionRegistry", "default_registry", "register", "register_action"]

ActionFactory = type[Action] | Callable[[], Action] | Action
"""An ``Action`` subclass, a zero-argument callable returning an ``Action``, or an
``Action`` instance (each ``get`` returns a shallow copy of it)."""

_F = TypeVar("_F", bound=ActionFactory)

# Attribute names set on the instances that ``get`` returns.
REGISTRY_ID_ATTR = "_gostage_registry_id"


class ActionRegistry:
    """Maps action ids to factories; ``get(id)`` returns a new Action each time."""

    def __init__(self) -> None:
        self._factories: dict[str, ActionFactory] = {}

    def register(self, id: str, factory: ActionFactory) -> None:
        """Register ``factory`` under ``id``. A second registration of an id is a ``ValueError``."""
        if not isinstance(id, str) or not id:
            raise ValueError(f"action id must be a non-empty string, got {id!r}")
        if id in self._factories:
            raise ValueError(f"an action is already registered under id {id!r}")
        if not (isinstance(factory, Action) or callable(factory)):
            raise TypeError(
                f"factory for {id!r} must be an Action subclass, an Action, or a "
                f"zero-argument callable returning an Action; got {factory!r}"
            )
        self._factories[id] = factory

    def get(self, id: str) -> Action:
        """A new Action for ``id``; :class:`UnknownActionError` naming it when unknown."""
        try:
            factory = self._factories[id]
        except KeyError:
            raise UnknownActionError(id, self.ids()) from None
        if isinstance(factory, Action):
            instance = copy.copy(factory)
            if isinstance(instance, _Tagged):  # tags are per instance, not shared
                instance._tags = list(instance._tags)
        else:
            instance = factory()
        if not isinstance(instance, Action):
            raise TypeError(
                f"factory for action id {id!r} returned {type(instance).__name__}, not an Action"
            )
        # Remembered so a workflow built from registered actions can describe itself.
        setattr(instance, REGISTRY_ID_ATTR, id)
        return instance

    def ids(self) -> list[str]:
        """Registered ids, in registration order."""
        return list(self._factories)

    def __contains__(self, id: object) -> bool:
        return id in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._factories))

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return f"<ActionRegistry ids={self.ids()!r}>"


default_registry = ActionRegistry()
"""The registry behind :func:`register_action` and :func:`register`."""


def register_action(id: str, factory: ActionFactory) -> None:
    """Register ``factory`` under ``id`` in the default registry."""
    default_registry.register(id, factory)


def register(id: str, registry: ActionRegistry | None = None) -> Callable[[_F], _F]:
    """Decorator: register the decorated Action class, factory or Action under ``id``.

    Returns what it decorates unchanged, so it stacks with ``@action``.
    """

    def decorate(factory: _F) -> _F:
        (registry if registry is not None else default_registry).register(id, factory)
        return factory

    return decorate
