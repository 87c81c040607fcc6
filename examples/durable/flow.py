"""The expense-report workflow of the durable example: actions, registry, definition.

A durable run is rebuilt from its stored definition, so every action is registered
in ``registry`` and the workflow is a ``SubWorkflowDef`` of registered ids, turned
into a ``Workflow`` with ``Workflow.from_def(expense_report(...), registry)``.

The command line can run it too: ``gostage run`` imports this file, calls
``expense_report()`` and builds its actions from the module's ``registry``::

    gostage run examples/durable/flow.py:expense_report \\
        --param 'claim={"employee": "bo", "amount": 80, "purpose": "taxi"}'

The payment gateway is a stand-in that is down for its next ``outages`` calls
(``$EXPENSES_GATEWAY_OUTAGES`` at import, 0 by default), to show a transient failure.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from gostage import (
    ActionContext,
    ActionDef,
    ActionRegistry,
    StageDef,
    SubWorkflowDef,
    action,
    register,
)

APPROVAL_LIMIT = 500.0  # claims above this wait for a manager

registry = ActionRegistry()

CALLS: Counter[str] = Counter()
"""How many times each action ran in this process: proof that resume skips work."""


def say(ctx: ActionContext, message: str) -> None:
    print(f"    {ctx.action.name}: {message}", flush=True)  # flush: a killed process loses none


class PaymentGateway:
    """A pretend payment service, down for its next ``outages`` calls."""

    def __init__(self, outages: int = 0) -> None:
        self.outages = outages
        self.payments = 0

    def pay(self, employee: str, amount: float) -> str:
        if self.outages > 0:
            self.outages -= 1
            raise ConnectionError("payment gateway timed out")
        self.payments += 1
        return f"tx-{self.payments:04d}"


gateway = PaymentGateway(int(os.environ.get("EXPENSES_GATEWAY_OUTAGES", "0")))


@register("load-claim", registry)
@action(name="load-claim")
def load_claim(ctx: ActionContext) -> None:
    CALLS[ctx.action.name] += 1
    claim = ctx.store.get("claim", dict)
    amount = round(float(claim["amount"]), 2)
    if amount <= 0:
        raise ValueError(f"a claim must be for a positive amount, got {amount}")
    ctx.store.put("employee", str(claim["employee"]))
    ctx.store.put("amount", amount)
    say(ctx, f"{claim['employee']} claims {amount:,.2f} for {claim['purpose']!r}")


@register("check-policy", registry)
@action(name="check-policy")
def check_policy(ctx: ActionContext) -> None:
    CALLS[ctx.action.name] += 1
    amount = ctx.store.get("amount", float)
    needs_manager = amount > APPROVAL_LIMIT
    ctx.store.put("needs_manager", needs_manager)
    say(ctx, f"{'over' if needs_manager else 'within'} the {APPROVAL_LIMIT:,.2f} limit")


@register("manager-approval", registry)
@action(name="manager-approval")
def manager_approval(ctx: ActionContext) -> None:
    """A human gate: suspend the run until it is resumed with a decision."""
    CALLS[ctx.action.name] += 1
    if not ctx.store.get("needs_manager", bool):
        ctx.store.put("approved_by", "policy")
        return
    decision: dict[str, Any] = ctx.resume_data  # {} unless this is the resumed action
    if "approved" not in decision:
        say(ctx, "no decision yet: suspending the run")
        # Ends the run as "suspended" (not an error); the data is stored with it.
        ctx.suspend(
            "manager approval needed",
            employee=ctx.store.get("employee", str),
            amount=ctx.store.get("amount", float),
        )
    say(ctx, f"resumed (ctx.is_resuming={ctx.is_resuming}) with {decision}")
    if not decision["approved"]:
        ctx.store.put("rejected_by", decision.get("approver", "?"))
        ctx.disable_stage("payment")  # the toggle is recorded too
        return
    ctx.store.put("approved_by", decision["approver"])


@register("pay-out", registry)
@action(name="pay-out")
def pay_out(ctx: ActionContext) -> None:
    # The action that was running when a run failed or its process died runs again on
    # resume: a real payment API would get ctx.run_id as its idempotency key.
    CALLS[ctx.action.name] += 1
    employee, amount = ctx.store.get("employee", str), ctx.store.get("amount", float)
    say(ctx, f"paying {amount:,.2f} to {employee}")
    ctx.store.put("transaction", gateway.pay(employee, amount))


@register("notify", registry)
@action(name="notify")
def notify(ctx: ActionContext) -> None:
    CALLS[ctx.action.name] += 1
    employee, transaction = ctx.store.get("employee", str), ctx.store.get("transaction", str)
    ctx.store.put("notified", employee)
    say(ctx, f"told {employee} about {transaction}")


def expense_report(
    employee: str = "ana", amount: float = 1200.0, purpose: str = "conference in Lisbon"
) -> SubWorkflowDef:
    """The workflow as plain data: registered action ids and a starting store."""
    return SubWorkflowDef(
        "expense-report",
        [
            StageDef("intake", [ActionDef("load-claim"), ActionDef("check-policy")]),
            StageDef("approval", [ActionDef("manager-approval")]),
            StageDef("payment", [ActionDef("pay-out"), ActionDef("notify")]),
        ],
        initial_store={"claim": {"employee": employee, "amount": amount, "purpose": purpose}},
    )
