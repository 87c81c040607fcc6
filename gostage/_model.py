"""The static model: a Workflow holds Stages, a Stage holds Actions.

These objects describe *what* to run. Everything that changes while a run is in
progress (dynamic additions, the current position) lives in the runner's private
run plan, so one Workflow can be run again, or retried, without accumulating the
dynamic components of an earlier attempt. The one piece of run state kept here is
which stages and actions are disabled: design.md §2 says it lives on the workflow,
so a caller can read what a run left behind.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, overload

from gostage.store import Store

if TYPE_CHECKING:
    from gostage._context import ActionContext
    from gostage._defs import SubWorkflowDef
    from gostage._middleware import StageMiddleware, WorkflowMiddleware
    from gostage._registry import ActionRegistry

__all__ = ["Action", "BaseAction", "Stage", "Workflow", "action"]


def _check_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{kind} must be a non-empty string, got {value!r}")
    return value


class _Tagged:
    """Ordered, duplicate-free tags shared by actions, stages and workflows."""

    _tags: list[str]

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags, in the order they were added."""
        return tuple(self._tags)

    def add_tag(self, tag: str) -> None:
        """Add ``tag`` unless it is already there."""
        if tag not in self._tags:
            self._tags.append(tag)

    def has_tag(self, tag: str) -> bool:
        """Whether ``tag`` is one of the tags."""
        return tag in self._tags


class Action(abc.ABC):
    """One step of a stage. Subclass it (or :class:`BaseAction`) and implement :meth:`execute`.

    ``execute`` signals failure by raising; the runner stops the workflow and raises
    :class:`~gostage.ActionError` naming the stage and the action.
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The action's name; toggles such as ``ctx.disable_action(name)`` use it."""

    @property
    def description(self) -> str:
        """A human-readable description (empty by default)."""
        return ""

    @property
    def tags(self) -> tuple[str, ...]:
        """Tags used by the ``*_by_tag`` finders and toggles (none by default)."""
        return ()

    def has_tag(self, tag: str) -> bool:
        """Whether ``tag`` is one of :attr:`tags`."""
        return tag in self.tags

    @abc.abstractmethod
    def execute(self, ctx: ActionContext) -> None:
        """Do the work. ``ctx`` gives the store, logger, finders, toggles and more."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class BaseAction(_Tagged, Action):
    """An :class:`Action` with its name, description and tags given to the constructor."""

    def __init__(self, name: str, description: str = "", tags: Iterable[str] = ()) -> None:
        self._name = _check_id("action name", name)
        self._description = description
        self._tags = list(dict.fromkeys(tags))

    @property
    def name(self) -> str:
        """The action's name."""
        return self._name

    @property
    def description(self) -> str:
        """The action's description."""
        return self._description


class _FunctionAction(BaseAction):
    """What ``@action`` returns: an Action whose ``execute`` calls the function."""

    def __init__(
        self,
        fn: Callable[[ActionContext], object],
        name: str,
        description: str,
        tags: Iterable[str],
    ) -> None:
        super().__init__(name, description, tags)
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        # The function itself answers action.execute(ctx): one call less per action.
        self.execute = fn  # type: ignore[method-assign, assignment]

    def execute(self, ctx: ActionContext) -> None:
        self.fn(ctx)


@overload
def action(fn: Callable[[ActionContext], object], /) -> BaseAction: ...


@overload
def action(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    description: str = "",
    tags: Iterable[str] = (),
) -> Callable[[Callable[[ActionContext], object]], BaseAction]: ...


def action(
    fn: Callable[[ActionContext], object] | None = None,
    /,
    *,
    name: str | None = None,
    description: str = "",
    tags: Iterable[str] = (),
) -> BaseAction | Callable[[Callable[[ActionContext], object]], BaseAction]:
    """Turn ``def fn(ctx): ...`` into an :class:`Action` instance.

    Usable bare (``@action``) or with arguments (``@action(name="load", tags=["io"])``).
    The name defaults to the function's name; the description to its docstring's
    first line.
    """

    def wrap(f: Callable[[ActionContext], object]) -> BaseAction:
        doc_line = (f.__doc__ or "").strip().partition("\n")[0]
        return _FunctionAction(f, name or f.__name__, description or doc_line, tags)

    if fn is not None:
        return wrap(fn)
    return wrap


class Stage(_Tagged):
    """An ordered list of actions, with optional stage middleware and initial data."""

    def __init__(
        self, id: str, name: str = "", description: str = "", tags: Iterable[str] = ()
    ) -> None:
        self.id = _check_id("stage id", id)
        self.name = name or id
        self.description = description
        self._tags = list(dict.fromkeys(tags))
        self._actions: list[Action] = []
        self._middleware: list[StageMiddleware] = []
        self._initial_data: dict[str, Any] = {}

    @property
    def actions(self) -> list[Action]:
        """A copy of the stage's actions, in order (add with :meth:`add_action`)."""
        return list(self._actions)

    @property
    def middleware(self) -> tuple[StageMiddleware, ...]:
        """Stage middleware, outermost first."""
        return tuple(self._middleware)

    @property
    def initial_data(self) -> dict[str, Any]:
        """A copy of the data copied into the workflow store before the stage runs."""
        return dict(self._initial_data)

    def add_action(self, action: Action) -> Stage:
        """Append ``action``; returns the stage so calls can be chained."""
        if not isinstance(action, Action):
            raise TypeError(f"expected an Action, got {type(action).__name__}")
        self._actions.append(action)
        return self

    def use(self, *middleware: StageMiddleware) -> Stage:
        """Wrap all of this stage's actions in ``middleware`` (first given is outermost)."""
        self._middleware.extend(middleware)
        return self

    def set_initial_data(self, key: str, value: Any) -> Stage:
        """Put ``key = value`` into the workflow store before this stage's actions run.

        Stage data wins: it overwrites whatever the store holds under ``key``.
        """
        self._initial_data[_check_id("key", key)] = value
        return self

    def __repr__(self) -> str:
        return f"<Stage {self.id!r} actions={len(self._actions)}>"


class Workflow(_Tagged):
    """An ordered list of stages sharing one :class:`~gostage.Store`.

    Which stages and actions are disabled is recorded here (by stage id and by
    action name), so it persists across stages of a run and remains readable after it.
    """

    def __init__(
        self,
        id: str,
        name: str = "",
        description: str = "",
        tags: Iterable[str] = (),
        *,
        store: Store | None = None,
    ) -> None:
        self.id = _check_id("workflow id", id)
        self.name = name or id
        self.description = description
        self._tags = list(dict.fromkeys(tags))
        self._stages: list[Stage] = []
        self._middleware: list[WorkflowMiddleware] = []
        self._store = store if store is not None else Store()
        self._disabled_stages: set[str] = set()
        self._disabled_actions: set[str] = set()

    @property
    def store(self) -> Store:
        """The key-value store shared by every action of a run."""
        return self._store

    @property
    def stages(self) -> list[Stage]:
        """A copy of the workflow's stages, in order (add with :meth:`add_stage`)."""
        return list(self._stages)

    @property
    def middleware(self) -> tuple[WorkflowMiddleware, ...]:
        """Workflow middleware (each wraps every stage), outermost first."""
        return tuple(self._middleware)

    def add_stage(self, stage: Stage) -> Workflow:
        """Append ``stage``. A second stage with the same id is a ``ValueError``."""
        if not isinstance(stage, Stage):
            raise TypeError(f"expected a Stage, got {type(stage).__name__}")
        if any(s.id == stage.id for s in self._stages):
            raise ValueError(f"workflow {self.id!r} already has a stage with id {stage.id!r}")
        self._stages.append(stage)
        return self

    def use(self, *middleware: WorkflowMiddleware) -> Workflow:
        """Wrap each stage of this workflow in ``middleware`` (first given is outermost)."""
        self._middleware.extend(middleware)
        return self

    def get_stage(self, id: str) -> Stage:
        """The stage with this id; ``KeyError`` naming it when there is none."""
        for stage in self._stages:
            if stage.id == id:
                return stage
        raise KeyError(f"workflow {self.id!r} has no stage {id!r}")

    def enable_stage(self, id: str) -> None:
        """Run stage ``id`` again when it is reached."""
        self.get_stage(id)
        self._disabled_stages.discard(id)

    def disable_stage(self, id: str) -> None:
        """Skip stage ``id`` when it is reached."""
        self.get_stage(id)
        self._disabled_stages.add(id)

    def is_stage_enabled(self, id: str) -> bool:
        """Whether stage ``id`` will run (stages are enabled unless disabled)."""
        return id not in self._disabled_stages

    def _check_action_name(self, name: str) -> None:
        if not any(a.name == name for s in self._stages for a in s._actions):
            raise KeyError(f"workflow {self.id!r} has no action named {name!r}")

    def enable_action(self, name: str) -> None:
        """Run the actions named ``name`` again when they are reached."""
        self._check_action_name(name)
        self._disabled_actions.discard(name)

    def disable_action(self, name: str) -> None:
        """Skip every action named ``name`` when it is reached."""
        self._check_action_name(name)
        self._disabled_actions.add(name)

    def is_action_enabled(self, name: str) -> bool:
        """Whether actions named ``name`` will run."""
        return name not in self._disabled_actions

    def to_def(self) -> SubWorkflowDef:
        """This workflow as plain data, for workflows built from registered actions.

        Each action must have been made by an :class:`~gostage.ActionRegistry` (it
        remembers its id); any other raises ``ValueError`` naming it. The store's
        contents become ``initial_store``; middleware and toggles are not part of a
        definition.
        """
        from gostage._defs import SubWorkflowDef, stage_def

        return SubWorkflowDef(
            self.id,
            [stage_def(s, s._actions) for s in self._stages],
            name=self.name,
            description=self.description,
            tags=self.tags,
            initial_store=dict(self._store.items()) or None,
        )

    @classmethod
    def from_def(cls, defn: SubWorkflowDef, registry: ActionRegistry | None = None) -> Workflow:
        """Build a workflow from a definition, each action made by ``registry``.

        ``registry`` defaults to the default registry. Raises
        :class:`~gostage.UnknownActionError` naming the first id it does not know.
        """
        from gostage._defs import build_workflow
        from gostage._registry import default_registry

        return build_workflow(defn, registry if registry is not None else default_registry)

    def __repr__(self) -> str:
        return f"<Workflow {self.id!r} stages={len(self._stages)}>"
