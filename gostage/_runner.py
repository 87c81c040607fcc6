"""The Runner: runs a workflow's stages and actions in order, through middleware.

One run, from the outside in::

    Runner.execute
      runner middleware ...           (ctx, workflow, logger)
        _run_stages                   builds the run plan, walks its stages
          workflow middleware ...     (ctx, stage, workflow, logger), every stage
            _run_stage                skips a disabled stage, applies initial data
              stage middleware ...    (ctx, stage, workflow, logger)
                _run_actions          walks the stage's actions, checks cancel/deadline

The plan is rebuilt on each call of ``_run_stages``, so a retry starts from the
workflow's definition, not from the dynamic additions of the failed attempt.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from gostage._broker import Broker
from gostage._context import ActionContext, CancelEvent, RunContext, RunState, RunSuspended
from gostage._exceptions import (
    ActionError,
    GostageError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowTimeout,
)
from gostage._logging import DefaultLogger, Logger
from gostage._middleware import Middleware, RunnerFunc, StageFunc, compose
from gostage._model import Stage, Workflow
from gostage._registry import ActionRegistry, default_registry
from gostage._status import RunStatus

if TYPE_CHECKING:
    from datetime import timedelta
    from multiprocessing.context import SpawnContext

    from gostage._defs import SubWorkflowDef
    from gostage._durable import RunRecorder
    from gostage._spawn._backends.pool import WorkerPool
    from gostage._spawn._child import ChildLimits
    from gostage._spawn._middleware import IPCMiddleware, SpawnMiddleware
    from gostage._spawn._options import Isolation, SpawnOptions, SpawnResult
    from gostage.persistence import RunRecord, RunStore
    from gostage.store import Store

__all__ = ["RunResult", "RunStatus", "Runner"]


_run_ids = itertools.count()
_run_id_state: tuple[int, str, int] | None = None  # pid, random prefix, random mask


def new_run_id() -> str:
    """A 32-hex-digit run id, unique across processes and time.

    64 random bits drawn once per process, then a counter (scrambled by a random
    mask, a bijection, so ids stay unique but do not look sequential): random ids
    (uuid4) cost a system call each, more than running a small child workflow.
    """
    global _run_id_state
    pid = os.getpid()
    if _run_id_state is None or _run_id_state[0] != pid:  # new process (fork) too
        raw = os.urandom(16)
        _run_id_state = (pid, raw[:8].hex(), int.from_bytes(raw[8:], "big"))
    _, prefix, mask = _run_id_state
    return prefix + format((next(_run_ids) ^ mask) & 0xFFFFFFFFFFFFFFFF, "016x")


class RunResult(NamedTuple):
    """The outcome of one run.

    ``final_store`` maps each key of the workflow's store to its value when the run
    ended (the stored objects themselves, as ``store.items()`` gives them); ``error``
    is the exception of a failed run (only :meth:`Runner.execute_all` with
    ``ignore_errors=True`` returns failed results: ``execute`` raises instead). A
    suspended run has ``status`` ``SUSPENDED`` and ``success`` false.
    """

    workflow_id: str
    success: bool
    error: BaseException | None
    duration: float
    final_store: dict[str, Any]
    run_id: str
    status: RunStatus

    def __repr__(self) -> str:  # the store can be large: leave it out
        return (
            f"RunResult(workflow_id={self.workflow_id!r}, success={self.success}, "
            f"status={self.status.value!r}, run_id={self.run_id!r}, "
            f"duration={self.duration:.3f}, error={self.error!r})"
        )


class Runner:
    """Runs workflows in this process and child workflows in supervised child processes.

    Holds runner middleware, the default logger, the IPC broker, the action
    registry that child workflows are built from, and IPC / spawn middleware.
    """

    def __init__(
        self,
        middleware: Iterable[Middleware] = (),
        logger: Logger | None = None,
        *,
        registry: ActionRegistry | None = None,
        persistence: RunStore | None = None,
    ) -> None:
        self._middleware: list[Middleware] = list(middleware)
        self.logger: Logger = logger if logger is not None else DefaultLogger()
        self.broker = Broker(self.logger)
        self.registry: ActionRegistry = registry if registry is not None else default_registry
        self.persistence: RunStore | None = persistence
        self._ipc_middleware: list[IPCMiddleware] = []
        self._spawn_middleware: list[SpawnMiddleware] = []
        self._pool: WorkerPool | None = None
        self._pool_key: tuple[Any, ...] | None = None
        self._pool_lock = threading.Lock()

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        """Runner middleware, outermost first."""
        return tuple(self._middleware)

    def use(self, *middleware: Middleware) -> Runner:
        """Add runner middleware (first registered is outermost); returns the runner."""
        self._middleware.extend(middleware)
        return self

    def execute(
        self,
        workflow: Workflow,
        logger: Logger | None = None,
        *,
        timeout: float | None = None,
        cancel: CancelEvent | None = None,
    ) -> RunResult:
        """Run ``workflow`` to the end and return its :class:`RunResult`.

        Raises :class:`ActionError` when an action fails, :class:`WorkflowTimeout`
        after ``timeout`` seconds, :class:`WorkflowCancelled` once ``cancel`` is set
        (both checked between actions, and visible to actions as ``ctx.cancelled``),
        and :class:`WorkflowError` for a workflow with no stages. An exception
        raised by a middleware propagates unchanged.
        """
        if not workflow.stages:
            raise WorkflowError(f"workflow {workflow.id!r} has no stages; add one with add_stage")
        run_id = new_run_id()
        recorder = None
        if self.persistence is not None:
            from gostage._durable import RunRecorder

            recorder = RunRecorder(self.persistence, run_id)
            recorder.create(workflow)  # raises before anything runs if not describable
        return self._run(workflow, logger, timeout, cancel, run_id, recorder, _Start())

    def _run(
        self,
        workflow: Workflow,
        logger: Logger | None,
        timeout: float | None,
        cancel: CancelEvent | None,
        run_id: str,
        recorder: RunRecorder | None,
        start_at: _Start,
    ) -> RunResult:
        log = logger if logger is not None else self.logger
        ctx = RunContext(cancel=cancel)
        if timeout is not None:
            ctx = ctx.with_timeout(timeout)
        started = time.perf_counter()

        def run_stages(ctx: RunContext, workflow: Workflow, logger: Logger) -> None:
            self._run_stages(ctx, workflow, logger, run_id, recorder, start_at)

        chain: RunnerFunc = compose(self._middleware, run_stages)
        status = RunStatus.COMPLETED
        try:
            chain(ctx, workflow, log)
        except RunSuspended as suspended:
            status = RunStatus.SUSPENDED
            if recorder is not None:
                try:
                    recorder.suspend(suspended.reason, suspended.data)
                except BaseException as exc:  # e.g. data that is not JSON: never stay "running"
                    recorder.finish(RunStatus.FAILED, f"could not suspend: {exc}")
                    if isinstance(exc, GostageError):
                        exc.run_id = run_id
                    raise
        except BaseException as exc:
            if isinstance(exc, GostageError):
                exc.run_id = run_id
            if recorder is not None:
                cancelled = isinstance(exc, WorkflowCancelled)
                recorder.finish(
                    RunStatus.CANCELLED if cancelled else RunStatus.FAILED,
                    f"{type(exc).__name__}: {exc}",
                )
            raise
        else:
            if recorder is not None:
                recorder.finish(RunStatus.COMPLETED)
        return RunResult(
            workflow_id=workflow.id,
            success=status is RunStatus.COMPLETED,
            error=None,
            duration=time.perf_counter() - started,
            final_store=dict(workflow.store.items()),
            run_id=run_id,
            status=status,
        )

    def execute_all(
        self, workflows: Iterable[Workflow], ignore_errors: bool = False
    ) -> list[RunResult]:
        """Run each workflow in turn; results in the same order.

        A failure raises at once unless ``ignore_errors`` is true, in which case it
        becomes a failed :class:`RunResult` (status ``FAILED``, or ``CANCELLED``)
        and the next workflow runs.
        """
        results: list[RunResult] = []
        for workflow in workflows:
            start = time.perf_counter()
            try:
                results.append(self.execute(workflow))
            except Exception as exc:
                if not ignore_errors:
                    raise
                status = (
                    RunStatus.CANCELLED if isinstance(exc, WorkflowCancelled) else RunStatus.FAILED
                )
                results.append(
                    RunResult(
                        workflow_id=workflow.id,
                        success=False,
                        error=exc,
                        duration=time.perf_counter() - start,
                        final_store=dict(workflow.store.items()),
                        run_id=getattr(exc, "run_id", None) or new_run_id(),
                        status=status,
                    )
                )
        return results

    # -- durable runs (design.md §8; see gostage._durable) ------------------------------

    def _runs(self) -> RunStore:
        if self.persistence is None:
            from gostage.persistence import PersistenceError

            raise PersistenceError(
                "this runner keeps no run history: create it with "
                "Runner(persistence=SQLiteRunStore(path)) to resume, list or recover runs"
            )
        return self.persistence

    def resume(self, run_id: str, data: dict[str, Any] | None = None) -> RunResult:
        """Continue a ``failed`` or ``suspended`` run after its last completed action.

        The workflow is rebuilt from the stored plan (actions made again by this
        runner's registry), with the store and toggles of the last checkpoint. No
        completed action runs again; the first action to run sees ``data`` as
        ``ctx.resume_data`` and ``ctx.is_resuming`` true. Raises
        :class:`~gostage.persistence.RunNotFoundError`,
        :class:`~gostage.persistence.RunStateError` for a completed or cancelled run
        (or one another process is resuming), and :class:`UnknownActionError` for an
        action id the registry no longer has; none of them changes anything stored.
        """
        from gostage._durable import RunRecorder, workflow_from_plan
        from gostage.persistence import RunStateError

        runs = self._runs()
        record = runs.get_run(run_id)
        resumable = (RunStatus.FAILED, RunStatus.SUSPENDED)
        if record.status not in resumable:
            raise RunStateError(
                f"run {run_id!r} is {record.status.value}: only failed or suspended runs can "
                "be resumed"
            )
        checkpoint = runs.get_checkpoint(run_id)
        definition = record.definition or {}
        if checkpoint is not None:
            workflow = workflow_from_plan(
                checkpoint.plan, checkpoint.store, self.registry, definition.get("plan")
            )
            start = _Start(
                checkpoint.stage_index,
                checkpoint.action_index + 1,
                checkpoint.plan.get("stage_insert_at"),
                dict(data or {}),
                grown="stages" in checkpoint.plan,
            )
        else:
            workflow = workflow_from_plan(definition["plan"], definition["store"], self.registry)
            start = _Start(resume_data=dict(data or {}))
        seq = len(runs.list_actions(run_id))
        pid, started = RunRecorder.owner()
        # Compare-and-set: of two processes resuming this run, one wins.
        runs.set_status(
            run_id, RunStatus.RUNNING, owner_pid=pid, owner_started=started, expect=resumable
        )
        recorder = RunRecorder(runs, run_id, seq)
        return self._run(workflow, None, None, None, run_id, recorder, start)

    def recover(self) -> list[RunRecord]:
        """Mark runs left ``running`` by a process that is gone as ``failed`` ("abandoned").

        Returns their records; each can then be continued with :meth:`resume`.
        """
        from gostage._durable import owner_alive
        from gostage.persistence import RunStateError

        runs = self._runs()
        recovered = []
        for record in runs.list_runs(status=RunStatus.RUNNING, limit=None):
            if owner_alive(record):
                continue
            try:
                recovered.append(
                    runs.set_status(
                        record.run_id, RunStatus.FAILED, error="abandoned", expect=RunStatus.RUNNING
                    )
                )
            except RunStateError:
                continue  # it moved on meanwhile (finished, or recovered by another process)
        return recovered

    def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Stored runs, newest first, optionally filtered by status and workflow id."""
        return self._runs().list_runs(status, workflow_id, limit, offset)

    def get_run(self, run_id: str) -> RunRecord:
        """The stored record of one run (``RunNotFoundError`` naming it if there is none)."""
        return self._runs().get_run(run_id)

    def delete_run(self, run_id: str) -> bool:
        """Forget a run and its history; ``False`` if there was no such run."""
        return self._runs().delete_run(run_id)

    def purge_runs(self, older_than: float | timedelta) -> int:
        """Forget finished runs last updated more than ``older_than`` ago; how many."""
        return self._runs().purge_runs(older_than)

    # -- child processes ---------------------------------------------------------

    def add_ipc_middleware(self, middleware: IPCMiddleware) -> Runner:
        """Transform messages crossing the process boundary (see ``IPCMiddleware``)."""
        self._ipc_middleware.append(middleware)
        return self

    def use_spawn_middleware(self, middleware: SpawnMiddleware) -> Runner:
        """Hook into each child's lifecycle and messages (see ``SpawnMiddleware``)."""
        self._spawn_middleware.append(middleware)
        return self

    def spawn(
        self,
        defn: SubWorkflowDef,
        *,
        store: Store | None = None,
        timeout: float | None = None,
        options: SpawnOptions | None = None,
        trust_child: bool = False,
    ) -> SpawnResult:
        """Run ``defn`` in a fresh child process and wait for it.

        Messages the child sends are handled live, in order, before this returns.
        Given a ``store``, the child's store writes are applied to it as they
        arrive. ``timeout`` (seconds from process start) overrides
        ``options.timeout``. Raises :class:`UnknownActionError` before starting
        anything if an action id is not registered, and a :class:`SpawnError`
        subclass saying what went wrong if the child did not succeed. With
        ``trust_child=True`` values that JSON cannot carry travel pickled; never
        set it for a child running untrusted code.
        """
        from gostage._spawn._spawner import run_children

        (outcome,) = run_children(
            self, [defn], store=store, options=options, timeout=timeout, trust_child=trust_child
        )
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def spawn_many(
        self,
        defs: Iterable[SubWorkflowDef],
        *,
        max_workers: int | None = None,
        return_exceptions: bool = False,
        isolation: Isolation | None = None,
        options: SpawnOptions | None = None,
        timeout: float | None = None,
        trust_child: bool = False,
        fail_fast: bool = False,
    ) -> list[SpawnResult | BaseException]:
        """Run child workflows concurrently; one entry per definition, in input order.

        At most ``max_workers`` (default: CPU count) children are alive at once.
        A failing child does not stop the others: with ``return_exceptions`` its
        exception takes its place in the list; without, every child still runs to
        its end and then the first failure (in input order) is raised. With
        ``fail_fast`` the first failure kills the children still running and
        cancels those not started.

        ``isolation`` (default: ``options.isolation``, itself ``"process"`` by
        default) picks a fresh process per child workflow, or ``"worker"``:
        long-lived workers kept by this runner between calls, which receive the
        registry once and then only definitions, queued a few milliseconds' worth
        at a time, so small child workflows share a pipe write rather than each
        starting a process. Crash detection, timeouts and
        typed errors are the same in both modes; a worker that dies mid-task fails
        only that task and is replaced. Workers stay until :meth:`close` (or the
        end of a ``with Runner() as runner:`` block, or interpreter exit), and exit
        by themselves if this process dies.
        """
        from gostage._spawn._spawner import run_children

        outcomes = run_children(
            self,
            defs,
            max_workers=max_workers,
            options=options,
            timeout=timeout,
            trust_child=trust_child,
            fail_fast=fail_fast,
            isolation=isolation,
        )
        if not return_exceptions:
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        return outcomes

    def close(self) -> None:
        """Stop the reused workers (``isolation="worker"``) this runner keeps. Idempotent."""
        with self._pool_lock:
            pool, self._pool, self._pool_key = self._pool, None, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _worker_pool(
        self, mp: SpawnContext, limits: ChildLimits, code: bytes, options: SpawnOptions
    ) -> WorkerPool:
        """The runner's pool for these settings, replacing one made for other settings."""
        from gostage._spawn._backends.pool import WorkerPool, close_at_exit

        key = (limits, code, options.kill_grace, options.max_tasks_per_worker)
        with self._pool_lock:
            if self._pool is not None and self._pool_key == key:
                return self._pool
            old = self._pool
            self._pool = WorkerPool(
                mp, limits, code, options.kill_grace, options.max_tasks_per_worker
            )
            self._pool_key = key
            close_at_exit(self._pool)
            pool = self._pool
        if old is not None:
            old.close()
        return pool

    def _spawn_for_action(
        self,
        actx: ActionContext,
        defn: SubWorkflowDef,
        *,
        timeout: float | None,
        options: SpawnOptions | None,
        trust_child: bool,
    ) -> SpawnResult:
        from gostage._spawn._spawner import run_children

        (outcome,) = run_children(
            self,
            [defn],
            store=actx.store,
            options=options,
            timeout=timeout,
            trust_child=trust_child,
            ctx=actx.run_context,
        )
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome.store is not None:
            actx.store.merge(outcome.store)
        return outcome

    # -- the inner layers (see the module docstring) ----------------------------

    def _send(self, msg_type: str, payload: Any) -> None:
        # In-process, a message still crosses every IPC layer, out and back in,
        # so handlers see the same thing whether or not a process boundary was there.
        for mw in reversed(self._ipc_middleware):
            msg_type, payload = mw.process_outbound(msg_type, payload)
        for mw in self._ipc_middleware:
            msg_type, payload = mw.process_inbound(msg_type, payload)
        self.broker.dispatch(msg_type, payload)

    def _run_stages(
        self,
        ctx: RunContext,
        workflow: Workflow,
        logger: Logger,
        run_id: str,
        recorder: RunRecorder | None,
        start_at: _Start,
    ) -> None:
        run = RunState(workflow, logger, run_id, self)
        run.recorder = recorder
        run.resume_data = start_at.resume_data
        run.plan_changes = int(start_at.grown)

        def run_stage(ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger) -> None:
            self._run_stage(ctx, stage, workflow, logger, run)

        chain: StageFunc = compose(workflow.middleware, run_stage)
        # The plan grows while we walk it (dynamic stages), hence the index loop.
        index = start_at.stage
        run.first_action = start_at.action
        while index < len(run.plan):
            run.stage_index = index
            if start_at.stage_insert_at is not None and index == start_at.stage:
                run.stage_insert_at = start_at.stage_insert_at
            else:
                run.stage_insert_at = index + 1
            stage = run.plan[index].stage
            ctx.check(f"before stage {stage.id!r} of workflow {workflow.id!r}")
            chain(ctx, stage, workflow, logger)
            run.first_action = 0
            index += 1

    def _run_stage(
        self, ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger, run: RunState
    ) -> None:
        if stage.id in workflow._disabled_stages:
            logger.info("skipping disabled stage %r of workflow %r", stage.id, workflow.id)
            return
        if run.first_action == 0:  # a run resumed mid-stage applied it the first time
            for key, value in stage.initial_data.items():
                workflow.store.put(key, value)

        def run_actions(ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger) -> None:
            self._run_actions(ctx, workflow, logger, run)

        chain: StageFunc = compose(stage.middleware, run_actions)
        chain(ctx, stage, workflow, logger)

    def _run_actions(
        self, ctx: RunContext, workflow: Workflow, logger: Logger, run: RunState
    ) -> None:
        stage_index = run.stage_index
        entry = run.plan[stage_index]
        stage = entry.stage
        actions = entry.actions  # grows while we walk it (dynamic actions)
        disabled = workflow._disabled_actions
        watch = ctx.deadline is not None or ctx.cancel is not None
        recorder = run.recorder
        actx = ActionContext(run, entry, ctx)
        index = run.first_action
        while index < len(actions):
            action = actions[index]
            if watch:
                ctx.check(f"before action {action.name!r} in stage {stage.id!r}")
            if disabled and action.name in disabled:
                logger.info("skipping disabled action %r in stage %r", action.name, stage.id)
                index += 1
                continue
            # One context serves every action of the stage (building one per action
            # would cost more than a small action); point it at this one. Dynamic
            # actions go right after it, after any it already added.
            actx.action = action
            actx.action_index = index
            actx._insert_at = index + 1
            if run.resume_data is not None:  # the first action of a resumed run
                actx._resume, run.resume_data = run.resume_data, None
            elif actx._resume is not None:
                actx._resume = None
            try:
                action.execute(actx)
            except (WorkflowCancelled, WorkflowTimeout):
                raise
            except Exception as exc:
                if recorder is not None:
                    recorder.failed(stage.id, index, action, f"{type(exc).__name__}: {exc}")
                raise ActionError(
                    f"action {action.name!r} in stage {stage.id!r} of workflow "
                    f"{workflow.id!r} failed: {type(exc).__name__}: {exc}",
                    workflow_id=workflow.id,
                    stage_id=stage.id,
                    action_name=action.name,
                ) from exc
            if recorder is not None:
                recorder.completed(run, stage_index, index, action)
            index += 1
        # An action that stopped early because ctx.cancelled turned true must not
        # let the run count as complete.
        ctx.check(f"after the actions of stage {stage.id!r}")


class _Start:
    """Where a run starts: the beginning, or (resume) just after its last checkpoint."""

    __slots__ = ("action", "grown", "resume_data", "stage", "stage_insert_at")

    def __init__(
        self,
        stage: int = 0,
        action: int = 0,
        stage_insert_at: int | None = None,
        resume_data: dict[str, Any] | None = None,
        *,
        grown: bool = False,
    ) -> None:
        self.stage = stage
        self.action = action
        self.stage_insert_at = stage_insert_at
        self.resume_data = resume_data
        # The plan differs from the definition's (dynamic additions before the
        # checkpoint), so every later checkpoint must carry it too.
        self.grown = grown
