"""Start an expense-report run and die in the middle of it, as a killed process would.

``python crash.py DB`` runs a small claim with ``Runner(persistence=SQLiteRunStore(DB))``
and kills itself (SIGKILL: no ``finally``, no ``atexit``, nothing gets to clean up)
while the payment call is in flight. The run stays ``running`` in the database, owned
by a process that no longer exists: what ``runner.recover()`` looks for.
"""

from __future__ import annotations

import os
import signal
import sys

import flow

from gostage import NullLogger, Runner, Workflow
from gostage.persistence import SQLiteRunStore


class DyingGateway(flow.PaymentGateway):
    def pay(self, employee: str, amount: float) -> str:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


if __name__ == "__main__":
    flow.gateway = DyingGateway()
    runs = SQLiteRunStore(sys.argv[1])
    runner = Runner(logger=NullLogger(), registry=flow.registry, persistence=runs)
    runner.execute(Workflow.from_def(flow.expense_report("bo", 80.0, "taxi"), flow.registry))
