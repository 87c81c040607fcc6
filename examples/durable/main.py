"""Durable runs: suspend for a human, resume after a failure, recover after a crash.

An expense report (``flow.py``: load the claim, check the policy, wait for a manager
over 500, pay, notify) runs with ``Runner(persistence=SQLiteRunStore(path))``, which
records every run in one SQLite file: its definition when it starts, a checkpoint (the
store and where the run is) after every completed action, in the same transaction as
the action's record, and how it ended. Five scenes, each with a fresh ``Runner`` and
``SQLiteRunStore`` on the same file, as separate processes would have:

1. A claim over the limit reaches the manager's gate, which calls ``ctx.suspend``:
   ``execute`` returns a ``RunResult`` with status ``suspended`` (not an error).
2. ``runner.resume(run_id, data={...})`` rebuilds the workflow from the stored
   definition and runs the gate again, which reads the decision from
   ``ctx.resume_data``. Then the payment gateway times out: the run fails.
3. ``runner.resume(run_id)`` again: only the failed action and those after it run.
   A counter per action proves it.
4. A child process starts a run and is killed (SIGKILL) mid-action. ``runner.recover()``
   finds the run left ``running`` by a dead process and marks it ``failed``
   ("abandoned"); ``resume`` finishes it without repeating what the dead process did.
5. The history: ``list_runs``, ``get_run``, the action records, ``delete_run`` and
   ``purge_runs``; and the same from a shell with the ``gostage`` command.

The database lives in a temporary directory that is removed at the end.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import flow  # a sibling module: the crashing child process imports it too

from gostage import ActionError, NullLogger, Runner, RunStatus, Workflow
from gostage.persistence import SQLiteRunStore

HERE = Path(__file__).resolve().parent


def open_runner(db: Path) -> tuple[Runner, SQLiteRunStore]:
    """What each process would do: open the run database, make a runner on it."""
    runs = SQLiteRunStore(db)
    return Runner(logger=NullLogger(), registry=flow.registry, persistence=runs), runs


def when(epoch: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def calls() -> str:
    return ", ".join(f"{name} {count}" for name, count in flow.CALLS.items())


def main(db: Path) -> None:
    print("== 1. A claim over the limit waits for a manager")
    runner, runs = open_runner(db)
    with runs:
        workflow = Workflow.from_def(flow.expense_report("ana", 1200.0), flow.registry)
        result = runner.execute(workflow)
        run_id = result.run_id
        print(f"execute returned status={result.status.value}, success={result.success}")
        record = runner.get_run(run_id)
        print(
            f"get_run: status={record.status.value}, reason={record.suspend_reason!r}, "
            f"data={record.suspend_data}"
        )

    print("\n== 2. Later, a new Runner on the same file: resume with the manager's decision")
    flow.gateway.outages = 1  # the payment gateway is down for one call
    runner, runs = open_runner(db)
    with runs:
        try:
            runner.resume(run_id, data={"approver": "dana", "approved": True})
        except ActionError as exc:  # a failed run raises, as execute does
            print(f"resume raised ActionError, caused by {exc.__cause__!r}")
        record = runner.get_run(run_id)
        print(f"get_run: status={record.status.value}, error={record.error!r}")

    print("\n== 3. The gateway is back: resume the failed run")
    runner, runs = open_runner(db)
    with runs:
        result = runner.resume(run_id)
        print(
            f"resume returned status={result.status.value}; approved_by="
            f"{result.final_store['approved_by']!r}, transaction="
            f"{result.final_store['transaction']!r}"
        )
        print(f"calls over execute + 2 resumes: {calls()}")
        actions = runs.list_actions(run_id)  # the store's records: one per finished action
        print(f"action records: {', '.join(f'{a.action_name} {a.status}' for a in actions)}")

    print("\n== 4. A process killed in the middle of a run")
    sys.stdout.flush()  # the child writes to the same stdout
    child = subprocess.run([sys.executable, str(HERE / "crash.py"), str(db)], check=False)
    print(f"a child process started a claim and was killed while paying: exit {child.returncode}")
    runner, runs = open_runner(db)
    with runs:
        (stuck,) = runner.list_runs(status=RunStatus.RUNNING)
        print(f"list_runs(status='running'): 1 run, its owner process ({stuck.owner_pid}) gone")
        recovered = runner.recover()
        print(f"recover() marked it {recovered[0].status.value}: error={recovered[0].error!r}")
        flow.CALLS.clear()
        result = runner.resume(stuck.run_id)
        print(
            f"resume returned status={result.status.value}, paid {result.final_store['amount']:.2f}"
        )
        print(f"calls in this process: {calls()} (intake and approval ran in the dead one)")
        print(f"recover() again: {runner.recover()}")

    print("\n== 5. The run history")
    runner, runs = open_runner(db)
    with runs:
        records = runner.list_runs()  # newest first; filters: status=, workflow_id=
        print(f"list_runs(): {len(records)} runs, newest first")
        for r in records:
            who = "ana" if r.run_id == run_id else "bo"
            print(f"  {r.run_id}  {r.workflow_id}  {r.status.value}  {when(r.created_at)}  {who}")
        record = runner.get_run(run_id)
        print(
            f"get_run(ana's run): workflow_id={record.workflow_id!r}, "
            f"status={record.status.value}, error={record.error}, "
            f"updated {when(record.updated_at)}"
        )
        print(f"purge_runs(timedelta(days=7)) deleted {runner.purge_runs(timedelta(days=7))}")
        print(f"delete_run(ana's run): {runner.delete_run(run_id)}")
        print(f"purge_runs(0) deleted {runner.purge_runs(0)}: every finished run")
        print(f"runs left: {runner.list_runs()}")

    print(
        "\nThe same from a shell (each command takes --db PATH; default $GOSTAGE_DB, ./gostage.db):"
    )
    print(
        "  gostage run examples/durable/flow.py:expense_report; gostage runs; "
        "gostage show RUN_ID; gostage resume RUN_ID --data approver=dana --data approved=true; "
        "gostage purge --older-than 7d"
    )


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="gostage-durable-") as tmp:
        main(Path(tmp) / "runs.db")
