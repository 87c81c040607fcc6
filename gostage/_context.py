"""What middleware and actions see of a run.

``RunContext`` is what middleware passes down the chain: immutable values, a
deadline and a cancel event. Deriving one (``with_value``, ``with_timeout``) returns
a new context, so a middleware changes only what runs inside it.

``ActionContext`` is what one action sees: the store, logger, its position, and the
finders and toggles over the whole run plan (every stage, dynamic ones included).
The plan itself (``RunState``/``StageRun``) is private: it belongs to one run, so
dynamic additions never leak into the ``Workflow`` definition or into a retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

from gostage._exceptions import WorkflowCancelled, WorkflowTimeout

if TYPE_CHECKING:
    from gostage._defs import SubWorkflowDef
    from gostage._durable import RunRecorder
    from gostage._logging import Logger
    from gostage._model import Action, Stage, Workflow
    from gostage._runner import Runner
    from gostage._spawn._options import SpawnOptions, SpawnResult
    from gostage.store import Store

__all__ = ["ActionContext", "CancelEvent", "RunContext", "context_get_or_default"]

_T = TypeVar("_T")
_A = TypeVar("_A")


class CancelEvent(Protocol):
    """Anything with ``is_set()``, such as ``threading.Event``."""

    def is_set(self) -> bool: ...


class RunContext:
    """Values, deadline and cancel event of a run, passed down the middleware chain.

    ``deadline`` is a :func:`time.monotonic` timestamp (``None``: no deadline).
    """

    __slots__ = ("_values", "cancel", "deadline")

    def __init__(
        self,
        *,
        deadline: float | None = None,
        cancel: CancelEvent | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> None:
        self.deadline = deadline
        self.cancel = cancel
        self._values: Mapping[str, Any] = dict(values) if values else {}

    def _derive(self, deadline: float | None, values: Mapping[str, Any]) -> RunContext:
        ctx = RunContext.__new__(RunContext)
        ctx.deadline = deadline
        ctx.cancel = self.cancel
        ctx._values = values
        return ctx

    def with_value(self, key: str, value: Any) -> RunContext:
        """A new context with ``key`` set to ``value``; this one is unchanged."""
        return self._derive(self.deadline, {**self._values, key: value})

    def value(self, key: str, default: Any = None) -> Any:
        """The value set for ``key`` by an outer middleware, else ``default``."""
        return self._values.get(key, default)

    def with_deadline(self, deadline: float) -> RunContext:
        """A new context whose deadline is the earlier of ``deadline`` and this one's."""
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        return self._derive(deadline, self._values)

    def with_timeout(self, seconds: float) -> RunContext:
        """A new context that expires ``seconds`` from now (or earlier, if this one does)."""
        return self.with_deadline(time.monotonic() + seconds)

    def remaining(self) -> float | None:
        """Seconds left before the deadline (may be negative), or ``None``."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    @property
    def cancelled(self) -> bool:
        """True once the cancel event is set or the deadline has passed."""
        return (self.cancel is not None and self.cancel.is_set()) or (
            self.deadline is not None and time.monotonic() >= self.deadline
        )

    def check(self, where: str = "") -> None:
        """Raise :class:`WorkflowCancelled` or :class:`WorkflowTimeout` if the run must stop.

        ``where`` (e.g. ``"before action 'x' in stage 's'"``) goes into the message.
        """
        if self.cancel is not None and self.cancel.is_set():
            raise WorkflowCancelled(f"run cancelled{' ' + where if where else ''}")
        if self.deadline is not None:
            late = time.monotonic() - self.deadline
            if late >= 0:
                raise WorkflowTimeout(
                    f"run deadline passed{' ' + where if where else ''} "
                    f"({late:.3f} s late); raise the timeout or make the slow action "
                    "check ctx.cancelled"
                )


class RunSuspended(BaseException):
    """Raised by ``ctx.suspend``; ends the run as ``suspended``.

    A ``BaseException``, like ``KeyboardInterrupt``, so that ``except Exception``
    in actions and middleware (retry, error handling) lets it through.
    """

    def __init__(self, reason: str, data: dict[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data


class StageRun:
    """One stage in a run plan, with the run's own copy of its action list."""

    __slots__ = ("actions", "stage")

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.actions: list[Action] = stage.actions


class RunState:
    """The mutable plan of one run: which stages and actions, and where we are."""

    def __init__(self, workflow: Workflow, logger: Logger, run_id: str, runner: Runner) -> None:
        self.workflow = workflow
        self.logger = logger
        self.run_id = run_id
        self.runner = runner
        self.plan = [StageRun(s) for s in workflow.stages]
        self.recorder: RunRecorder | None = None
        self.resume_data: dict[str, Any] | None = None  # for the first action of a resumed run
        self.first_action = 0  # index to start at in the current stage (resume: > 0)
        self.plan_changes = 0  # dynamic additions so far (a checkpoint must then carry them)
        self.stage_index = 0
        # Where the next dynamic stage goes: right after the current stage, after
        # any that the current stage's actions have already added.
        self.stage_insert_at = 1

    def iter_actions(self) -> Iterator[Action]:
        for entry in self.plan:
            yield from entry.actions

    def stages(self) -> Iterator[Stage]:
        for entry in self.plan:
            yield entry.stage


def _matches(text: str, needle: str) -> bool:
    return needle.casefold() in text.casefold()


class ActionContext:
    """What an action's ``execute(ctx)`` receives.

    Finders and toggles cover the whole run (every stage, including dynamic stages
    and actions already added), and finders return lists in run order. Toggles act
    by action name and stage id and persist for the rest of the run.

    A context is valid while its action runs: the runner moves it on to the next
    action afterwards, so keep values, not the context, for later.
    """

    action: Action
    """The action being run."""

    __slots__ = (
        "_insert_at",
        "_resume",
        "_run",
        "_stage_run",
        "action",
        "action_index",
        "logger",
        "run_context",
        "store",
    )

    def __init__(self, run: RunState, stage_run: StageRun, run_context: RunContext) -> None:
        self._run = run
        self._stage_run = stage_run
        self.run_context = run_context
        self.store: Store = run.workflow.store
        """The workflow's store, shared by every action of the run."""
        self.logger: Logger = run.logger
        """The run's logger."""
        self.action_index = -1
        self._insert_at = 0
        self._resume: dict[str, Any] | None = None

    # -- what the action works with --------------------------------------------

    @property
    def workflow(self) -> Workflow:
        """The workflow being run."""
        return self._run.workflow

    @property
    def stage(self) -> Stage:
        """The stage this action belongs to in this run."""
        return self._stage_run.stage

    @property
    def run_id(self) -> str:
        """The id of this run."""
        return self._run.run_id

    @property
    def params(self) -> dict[str, Any]:
        """Parameters given to this action by its ``ActionDef`` (empty when none)."""
        params: dict[str, Any] = getattr(self.action, "_gostage_params", None) or {}
        return params

    @property
    def is_last_action(self) -> bool:
        """Whether no action (static or dynamic) follows this one in its stage."""
        return self.action_index == len(self._stage_run.actions) - 1

    @property
    def deadline(self) -> float | None:
        """The run's deadline as a :func:`time.monotonic` timestamp, or ``None``."""
        return self.run_context.deadline

    @property
    def cancelled(self) -> bool:
        """True once the run is cancelled or past its deadline: long actions should stop."""
        return self.run_context.cancelled

    @property
    def is_resuming(self) -> bool:
        """True for the first action run by :meth:`Runner.resume`."""
        return self._resume is not None

    @property
    def resume_data(self) -> dict[str, Any]:
        """What :meth:`Runner.resume` was given, for the first action it runs; else ``{}``."""
        return self._resume if self._resume is not None else {}

    def suspend(self, reason: str, **data: Any) -> NoReturn:
        """End the run as ``suspended`` (not an error); :meth:`Runner.resume` continues it.

        The run ends at once; on resume this action runs again, with
        ``ctx.is_resuming`` true and the resume data in ``ctx.resume_data``. ``data``
        is stored with the run, so it must be JSON-safe when the runner persists runs.
        """
        raise RunSuspended(reason, data)

    def send(self, msg_type: str, payload: Any) -> None:
        """Send an IPC message: to the runner's broker here, to the parent in a child."""
        self._run.runner._send(msg_type, payload)

    def spawn(
        self,
        defn: SubWorkflowDef,
        *,
        timeout: float | None = None,
        options: SpawnOptions | None = None,
        trust_child: bool = False,
    ) -> SpawnResult:
        """Run ``defn`` in a child process and merge its final store into this run's store.

        The child's store writes also reach this store while it runs. The child is
        killed if this run is cancelled or reaches its deadline. Raises the
        :class:`~gostage.SpawnError` family like :meth:`Runner.spawn`.
        """
        return self._run.runner._spawn_for_action(
            self, defn, timeout=timeout, options=options, trust_child=trust_child
        )

    # -- dynamic components ---------------------------------------------------

    def add_dynamic_action(self, action: Action) -> None:
        """Run ``action`` in this stage right after the current action.

        Several run in the order added; a dynamic action may add more (cascade).
        """
        from gostage._model import Action

        if not isinstance(action, Action):
            raise TypeError(f"expected an Action, got {type(action).__name__}")
        if self._run.recorder is not None:
            from gostage._defs import action_def

            action_def(action, self.stage.id)  # a persisted run must be able to name it
        self._stage_run.actions.insert(self._insert_at, action)
        self._insert_at += 1
        self._run.plan_changes += 1

    def add_dynamic_stage(self, stage: Stage) -> None:
        """Run ``stage`` right after the current stage (several: in the order added)."""
        from gostage._model import Stage

        if not isinstance(stage, Stage):
            raise TypeError(f"expected a Stage, got {type(stage).__name__}")
        run = self._run
        if any(s.id == stage.id for s in run.stages()):
            raise ValueError(
                f"workflow {run.workflow.id!r} already has a stage with id {stage.id!r}"
            )
        if run.recorder is not None:
            from gostage._defs import stage_def

            stage_def(stage, stage.actions)  # a persisted run must be able to name them
        run.plan.insert(run.stage_insert_at, StageRun(stage))
        run.stage_insert_at += 1
        run.plan_changes += 1

    # -- toggles ------------------------------------------------------------

    def _action_names(self) -> set[str]:
        return {a.name for a in self._run.iter_actions()}

    def _require_action(self, name: str) -> None:
        if name not in self._action_names():
            raise KeyError(f"workflow {self._run.workflow.id!r} has no action named {name!r}")

    def _require_stage(self, id: str) -> None:
        if self.find_stage(id) is None:
            raise KeyError(f"workflow {self._run.workflow.id!r} has no stage {id!r}")

    def enable_action(self, name: str) -> None:
        """Run the actions named ``name`` when they are reached."""
        self._require_action(name)
        self._run.workflow._disabled_actions.discard(name)

    def disable_action(self, name: str) -> None:
        """Skip the actions named ``name`` for the rest of the run."""
        self._require_action(name)
        self._run.workflow._disabled_actions.add(name)

    def is_action_enabled(self, name: str) -> bool:
        """Whether actions named ``name`` will run."""
        return name not in self._run.workflow._disabled_actions

    def enable_stage(self, id: str) -> None:
        """Run stage ``id`` when it is reached."""
        self._require_stage(id)
        self._run.workflow._disabled_stages.discard(id)

    def disable_stage(self, id: str) -> None:
        """Skip stage ``id`` for the rest of the run."""
        self._require_stage(id)
        self._run.workflow._disabled_stages.add(id)

    def is_stage_enabled(self, id: str) -> bool:
        """Whether stage ``id`` will run."""
        return id not in self._run.workflow._disabled_stages

    def enable_actions_by_tag(self, tag: str) -> int:
        """Enable every action tagged ``tag``; returns how many actions matched."""
        names = [a.name for a in self.find_actions_by_tag(tag)]
        self._run.workflow._disabled_actions.difference_update(names)
        return len(names)

    def disable_actions_by_tag(self, tag: str) -> int:
        """Disable every action tagged ``tag``; returns how many actions matched."""
        names = [a.name for a in self.find_actions_by_tag(tag)]
        self._run.workflow._disabled_actions.update(names)
        return len(names)

    def enable_stages_by_tag(self, tag: str) -> int:
        """Enable every stage tagged ``tag``; returns how many stages matched."""
        ids = [s.id for s in self.find_stages_by_tag(tag)]
        self._run.workflow._disabled_stages.difference_update(ids)
        return len(ids)

    def disable_stages_by_tag(self, tag: str) -> int:
        """Disable every stage tagged ``tag``; returns how many stages matched."""
        ids = [s.id for s in self.find_stages_by_tag(tag)]
        self._run.workflow._disabled_stages.update(ids)
        return len(ids)

    # -- finders (whole run, run order) --------------------------------------

    def filter_actions(self, predicate: Callable[[Action], bool]) -> list[Action]:
        """Every action for which ``predicate(action)`` is true."""
        return [a for a in self._run.iter_actions() if predicate(a)]

    def find_actions_by_tag(self, tag: str) -> list[Action]:
        """Actions tagged ``tag``."""
        return self.filter_actions(lambda a: tag in a.tags)

    def find_actions_by_tags(self, tags: Iterable[str]) -> list[Action]:
        """Actions carrying all of ``tags``."""
        wanted = set(tags)
        return self.filter_actions(lambda a: wanted.issubset(a.tags))

    def find_actions_by_any_tag(self, tags: Iterable[str]) -> list[Action]:
        """Actions carrying at least one of ``tags``."""
        wanted = set(tags)
        return self.filter_actions(lambda a: not wanted.isdisjoint(a.tags))

    def find_actions_by_name(self, substring: str) -> list[Action]:
        """Actions whose name contains ``substring`` (case-insensitive)."""
        return self.filter_actions(lambda a: _matches(a.name, substring))

    def find_actions_by_description(self, substring: str) -> list[Action]:
        """Actions whose description contains ``substring`` (case-insensitive)."""
        return self.filter_actions(lambda a: _matches(a.description, substring))

    def find_actions_by_type(self, cls: type[_A]) -> list[_A]:
        """Actions that are instances of ``cls``."""
        return [a for a in self._run.iter_actions() if isinstance(a, cls)]

    def filter_stages(self, predicate: Callable[[Stage], bool]) -> list[Stage]:
        """Every stage for which ``predicate(stage)`` is true."""
        return [s for s in self._run.stages() if predicate(s)]

    def find_stages_by_tag(self, tag: str) -> list[Stage]:
        """Stages tagged ``tag``."""
        return self.filter_stages(lambda s: s.has_tag(tag))

    def find_stages_by_name(self, substring: str) -> list[Stage]:
        """Stages whose name contains ``substring`` (case-insensitive)."""
        return self.filter_stages(lambda s: _matches(s.name, substring))

    def find_stages_by_description(self, substring: str) -> list[Stage]:
        """Stages whose description contains ``substring`` (case-insensitive)."""
        return self.filter_stages(lambda s: _matches(s.description, substring))

    def find_stage(self, id: str) -> Stage | None:
        """The stage with this id in the run, or ``None``."""
        return next((s for s in self._run.stages() if s.id == id), None)

    def __repr__(self) -> str:
        return (
            f"<ActionContext workflow={self.workflow.id!r} stage={self.stage.id!r} "
            f"action={self.action.name!r} index={self.action_index}>"
        )


def context_get_or_default(ctx: ActionContext, key: str, default: _T) -> Any | _T:
    """``ctx.store.get_or_default(key, default)``, as a function."""
    return ctx.store.get_or_default(key, default)
