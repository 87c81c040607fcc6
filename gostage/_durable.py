"""Durable runs: what a Runner with ``persistence=`` writes, and how a run comes back.

What is written, all JSON (see ``gostage.persistence`` for where)::

    run record    definition = {"plan": PLAN, "store": STORE, ["source": "FILE:ATTR"]}
    per action    ActionRecord + Checkpoint(stage, action, PLAN, STORE)   one transaction
    at the end    status (completed / failed / cancelled / suspended + reason, data)

    PLAN  = {"workflow": {id, name, description, tags},
             "stages": [StageDef.to_dict(), ...],   every stage and action of the run
                                                    plan, dynamic additions included
             "disabled_stages": [...], "disabled_actions": [...], "stage_insert_at": n}
    STORE = Store.export_state() of the workflow store

A checkpoint whose run added nothing dynamic leaves "stages" out (the
definition's stages still hold): describing every action after every action
would make a long workflow's checkpoints cost O(actions) each.

A checkpoint is taken after every completed action, so a crash loses at most the
action that was running. ``resume`` rebuilds the workflow from the last
checkpoint's plan (actions made again by the runner's registry), restores the
store and the toggles, and continues with the action after the checkpoint: a
completed action never runs again; the one that failed, crashed or suspended
runs again, and sees ``ctx.is_resuming`` and ``ctx.resume_data``.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gostage._context import RunState
    from gostage._model import Action, Workflow
    from gostage._registry import ActionRegistry
    from gostage.persistence import RunRecord, RunStore

__all__ = ["RunRecorder", "owner_alive", "plan_document", "workflow_from_plan"]


def plan_document(
    workflow: Workflow,
    stages: list[tuple[Any, list[Action]]] | None,
    stage_insert_at: int = 0,
) -> dict[str, Any]:
    """PLAN (see the module docstring) for ``stages``: ``(stage, actions)`` pairs.

    ``stages=None`` leaves them out: the run's stages are still the definition's.
    """
    from gostage._defs import stage_def

    plan: dict[str, Any] = {
        "workflow": {
            "id": workflow.id,
            "name": workflow.name,
            "description": workflow.description,
            "tags": list(workflow.tags),
        },
        "disabled_stages": sorted(workflow._disabled_stages),
        "disabled_actions": sorted(workflow._disabled_actions),
        "stage_insert_at": stage_insert_at,
    }
    if stages is not None:
        plan["stages"] = [stage_def(stage, actions).to_dict() for stage, actions in stages]
    return plan


def workflow_from_plan(
    plan: dict[str, Any],
    store_doc: dict[str, Any],
    registry: ActionRegistry,
    definition_plan: dict[str, Any] | None = None,
) -> Workflow:
    """Rebuild a workflow (every plan stage, toggles, store) from PLAN and STORE.

    A PLAN without stages takes them from ``definition_plan``. Raises
    :class:`UnknownActionError` for an id the registry no longer has.
    """
    if "stages" not in plan:
        assert definition_plan is not None
        plan = {**plan, "stages": definition_plan["stages"]}
    from gostage._defs import StageDef, SubWorkflowDef, build_workflow
    from gostage.store import Store

    info = plan["workflow"]
    defn = SubWorkflowDef(
        info["id"],
        [StageDef.from_dict(s) for s in plan["stages"]],
        name=info.get("name", ""),
        description=info.get("description", ""),
        tags=tuple(info.get("tags", ())),
    )
    workflow = build_workflow(defn, registry)
    workflow._store = Store.import_state(store_doc)
    workflow._disabled_stages.update(plan.get("disabled_stages", ()))
    workflow._disabled_actions.update(plan.get("disabled_actions", ()))
    return workflow


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def owner_alive(record: RunRecord) -> bool:
    """Whether the process recorded as running ``record`` still exists (same pid *and* start)."""
    if record.owner_pid is None:
        return False
    started = _process_started(record.owner_pid)
    if started is None or record.owner_started is None:
        return started is not None
    # A recycled pid belongs to a process that started later.
    return abs(started - record.owner_started) < 0.01


class RunRecorder:
    """Writes the records of one run to a :class:`RunStore`."""

    def __init__(self, store: RunStore, run_id: str, seq: int = 0) -> None:
        self.store = store
        self.run_id = run_id
        self.seq = seq

    @staticmethod
    def owner() -> tuple[int, float | None]:
        """This process: pid and start time, so a later ``recover`` can tell it is gone."""
        pid = os.getpid()
        return pid, _process_started(pid)

    def create(self, workflow: Workflow) -> None:
        """Record a new run of ``workflow`` as running, with its definition."""
        from gostage._status import RunStatus
        from gostage.persistence import RunRecord

        plan = plan_document(workflow, [(s, s._actions) for s in workflow._stages])
        definition: dict[str, Any] = {"plan": plan, "store": workflow.store.export_state()}
        source = getattr(workflow, "_gostage_source", None)
        if source is not None:  # set by `gostage run`, so that `gostage resume` can import it
            definition["source"] = source
        now = time.time()
        pid, started = self.owner()
        self.store.create_run(
            RunRecord(
                self.run_id,
                workflow.id,
                RunStatus.RUNNING,
                None,
                now,
                now,
                definition=definition,
                owner_pid=pid,
                owner_started=started,
            )
        )

    def completed(self, run: RunState, stage_index: int, action_index: int, action: Action) -> None:
        """Record a completed action and the checkpoint after it, in one transaction."""
        from gostage.persistence import ActionRecord, Checkpoint

        self.seq += 1
        grown = run.plan_changes > 0
        plan = plan_document(
            run.workflow,
            [(e.stage, e.actions) for e in run.plan] if grown else None,
            run.stage_insert_at,
        )
        self.store.record_action(
            self.run_id,
            ActionRecord(
                self.run_id,
                self.seq,
                run.plan[stage_index].stage.id,
                action_index,
                action.name,
                "completed",
                None,
                time.time(),
            ),
            Checkpoint(stage_index, action_index, plan, run.workflow.store.export_state()),
        )

    def failed(self, stage_id: str, action_index: int, action: Action, error: str) -> None:
        """Record an action that raised (no checkpoint: the store is not saved)."""
        from gostage.persistence import ActionRecord

        self.seq += 1
        self.store.record_action(
            self.run_id,
            ActionRecord(
                self.run_id,
                self.seq,
                stage_id,
                action_index,
                action.name,
                "failed",
                error,
                time.time(),
            ),
            None,
        )

    def finish(self, status: str, error: str | None = None) -> None:
        """Record how the run ended."""
        self.store.set_status(self.run_id, status, error=error)

    def suspend(self, reason: str, data: dict[str, Any]) -> None:
        """Record the run as suspended, with what ``ctx.suspend`` gave."""
        self.store.set_status(
            self.run_id, "suspended", suspend_reason=reason, suspend_data=dict(data)
        )
