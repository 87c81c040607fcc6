"""Plain-data definitions of child workflows: what a parent sends to describe one.

Definitions hold ids, not code: the actions are looked up in an
:class:`~gostage.ActionRegistry` on the side that runs them. They round-trip through
JSON with ``to_dict`` / ``from_dict``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gostage._model import Action, Stage, Workflow
    from gostage._registry import ActionRegistry

__all__ = ["ActionDef", "StageDef", "SubWorkflowDef"]


def _require(data: Mapping[str, Any], key: str, kind: str) -> Any:
    try:
        return data[key]
    except (KeyError, TypeError):
        raise ValueError(f"{kind} definition needs {key!r}: got {data!r}") from None


def _check_id(kind: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} id must be a non-empty string, got {value!r}")


@dataclass
class ActionDef:
    """One action by registry id. ``params`` reach the action as ``ctx.params``.

    ``name`` (default: the id), ``description`` and ``tags`` override the
    registered action's own, for actions derived from :class:`~gostage.BaseAction`.
    """

    id: str
    name: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    params: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_id("action", self.id)
        self.tags = tuple(self.tags)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "tags": list(self.tags),
            "params": dict(self.params) if self.params is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActionDef:
        """The inverse of :meth:`to_dict`."""
        return cls(
            id=_require(data, "id", "action"),
            name=data.get("name", ""),
            description=data.get("description", ""),
            tags=tuple(data.get("tags", ())),
            params=data.get("params"),
        )


@dataclass
class StageDef:
    """One stage: an id and its actions, in order.

    ``initial_data`` is put into the store before the stage's actions run (see
    :meth:`Stage.set_initial_data`).
    """

    id: str
    actions: list[ActionDef] = field(default_factory=list)
    name: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    initial_data: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_id("stage", self.id)
        self.actions = list(self.actions)
        self.tags = tuple(self.tags)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "id": self.id,
            "actions": [a.to_dict() for a in self.actions],
            "name": self.name,
            "description": self.description,
            "tags": list(self.tags),
            "initial_data": dict(self.initial_data) if self.initial_data is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StageDef:
        """The inverse of :meth:`to_dict`."""
        return cls(
            id=_require(data, "id", "stage"),
            actions=[ActionDef.from_dict(a) for a in data.get("actions", ())],
            name=data.get("name", ""),
            description=data.get("description", ""),
            tags=tuple(data.get("tags", ())),
            initial_data=data.get("initial_data"),
        )


@dataclass
class SubWorkflowDef:
    """A whole child workflow: stages of registered actions, and its starting store."""

    id: str
    stages: list[StageDef] = field(default_factory=list)
    name: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    initial_store: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_id("workflow", self.id)
        self.stages = list(self.stages)
        self.tags = tuple(self.tags)

    def action_ids(self) -> Iterable[str]:
        """Every action id the definition uses, in order (repeats included)."""
        for stage in self.stages:
            for action in stage.actions:
                yield action.id

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (as long as ``initial_store`` and params are)."""
        return {
            "id": self.id,
            "stages": [s.to_dict() for s in self.stages],
            "name": self.name,
            "description": self.description,
            "tags": list(self.tags),
            "initial_store": dict(self.initial_store) if self.initial_store is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubWorkflowDef:
        """The inverse of :meth:`to_dict`."""
        return cls(
            id=_require(data, "id", "workflow"),
            stages=[StageDef.from_dict(s) for s in data.get("stages", ())],
            name=data.get("name", ""),
            description=data.get("description", ""),
            tags=tuple(data.get("tags", ())),
            initial_store=data.get("initial_store"),
        )


PARAMS_ATTR = "_gostage_params"


def build_workflow(defn: SubWorkflowDef, registry: ActionRegistry) -> Workflow:
    """A :class:`~gostage.Workflow` from ``defn``, its actions made by ``registry``.

    Raises :class:`~gostage.UnknownActionError` naming the first unregistered id.
    """
    from gostage._model import BaseAction, Stage, Workflow
    from gostage.store import Store

    store = Store()
    for key, value in (defn.initial_store or {}).items():
        store.put(key, value)
    workflow = Workflow(defn.id, defn.name, defn.description, defn.tags, store=store)
    for sdef in defn.stages:
        stage = Stage(sdef.id, sdef.name, sdef.description, sdef.tags)
        for key, value in (sdef.initial_data or {}).items():
            stage.set_initial_data(key, value)
        for adef in sdef.actions:
            action = registry.get(adef.id)
            if isinstance(action, BaseAction):
                action._name = adef.name or action.name
                action._description = adef.description or action.description
                for tag in adef.tags:
                    action.add_tag(tag)
            setattr(action, PARAMS_ATTR, dict(adef.params or {}))
            stage.add_action(action)
        workflow.add_stage(stage)
    return workflow


def action_def(action: Action, stage_id: str) -> ActionDef:
    """The definition of an action made by a registry (``ValueError`` for any other)."""
    from gostage._registry import REGISTRY_ID_ATTR

    action_id = getattr(action, REGISTRY_ID_ATTR, None)
    if action_id is None:
        raise ValueError(
            f"action {action.name!r} in stage {stage_id!r} was not made by an ActionRegistry, "
            "so no definition can name it: register it (register_action / @register) and "
            "build the workflow with registry.get(id) or Workflow.from_def"
        )
    params = getattr(action, PARAMS_ATTR, None)
    return ActionDef(
        action_id,
        name=action.name,
        description=action.description,
        tags=action.tags,
        params=dict(params) if params else None,
    )


def stage_def(stage: Stage, actions: Iterable[Action]) -> StageDef:
    """The definition of ``stage`` with ``actions`` (its own, or a run's longer list)."""
    return StageDef(
        stage.id,
        [action_def(a, stage.id) for a in actions],
        name=stage.name,
        description=stage.description,
        tags=stage.tags,
        initial_data=stage.initial_data or None,
    )
