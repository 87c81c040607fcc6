"""An order pipeline: the flagship gostage example (``./tools/demo`` runs it).

One order goes through three stages, validate -> price -> invoice, and the example
shows the core pieces working together:

* a ``Workflow`` of ``Stage`` objects holding actions written with ``@gostage.action``;
* the workflow's ``Store``, shared by every action, with tags and metadata on keys
  (the invoice stage finds every money amount by its ``money`` tag);
* stage initial data (VAT rates, the discount rule) copied into the store when a
  stage starts;
* a stage middleware that frames each stage in the output;
* runner middleware: ``logging_middleware()`` and ``timing_middleware()``;
* the ``RunResult`` that ``Runner.execute`` returns.

Logs go through a standard-library ``logging.Logger`` printing to stdout (anything
with ``debug/info/warning/error(message, *args)`` is a gostage logger); by default a
runner logs through loguru with ``gostage.DefaultLogger()``.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from typing import Any

import gostage
from gostage import ActionContext, Logger, Metadata, RunContext, Stage, StageFunc, Workflow

ORDER: dict[str, Any] = {
    "id": "A-1001",
    "customer": "ACME Corp",
    "country": "NL",
    "lines": [
        {"sku": "WIDGET-S", "qty": 4, "unit_cents": 250},
        {"sku": "GADGET-XL", "qty": 1, "unit_cents": 4900},
        {"sku": "CABLE-2M", "qty": 3, "unit_cents": 475},
    ],
}


def money(cents: int) -> str:
    return f"{cents / 100:,.2f}"


def put_money(ctx: ActionContext, key: str, cents: int, description: str, line: int) -> None:
    """Store an amount tagged ``money``, with its invoice line number as a property."""
    meta = Metadata(tags=("money",), properties={"line": line}, description=description)
    ctx.store.put_with_metadata(key, cents, meta)


# -- stage 1: validate -------------------------------------------------------------


@gostage.action(name="check-lines", tags=("validation",))
def check_lines(ctx: ActionContext) -> None:
    """Every order line needs a positive quantity and price."""
    order = ctx.store.get("order", dict)
    for line in order["lines"]:
        if line["qty"] <= 0 or line["unit_cents"] <= 0:
            raise ValueError(f"order line {line['sku']} has no quantity or price")
    ctx.store.put("order.line_count", len(order["lines"]))
    ctx.logger.info("%d order lines look fine", len(order["lines"]))


@gostage.action(name="check-customer", tags=("validation",))
def check_customer(ctx: ActionContext) -> None:
    """We must know the customer and the VAT rate of their country."""
    order = ctx.store.get("order", dict)
    vat_rates = ctx.store.get("vat_rates", dict)
    if order["country"] not in vat_rates:
        raise ValueError(f"no VAT rate for country {order['country']!r}")
    ctx.store.put("order.vat_percent", vat_rates[order["country"]])
    ctx.logger.info(
        "customer %s in %s pays %d%% VAT",
        order["customer"],
        order["country"],
        vat_rates[order["country"]],
    )


# -- stage 2: price ----------------------------------------------------------------


@gostage.action(name="subtotal", tags=("pricing",))
def subtotal(ctx: ActionContext) -> None:
    """Sum the order lines."""
    order = ctx.store.get("order", dict)
    cents = sum(line["qty"] * line["unit_cents"] for line in order["lines"])
    put_money(ctx, "price.subtotal", cents, "subtotal", line=1)
    ctx.logger.info("subtotal %s", money(cents))


@gostage.action(name="discount", tags=("pricing",))
def discount(ctx: ActionContext) -> None:
    """Large orders get a discount (the rule is this stage's initial data)."""
    sub = ctx.store.get("price.subtotal", int)
    threshold = ctx.store.get("discount.threshold_cents", int)
    percent = ctx.store.get("discount.percent", int)
    cents = sub * percent // 100 if sub >= threshold else 0
    put_money(ctx, "price.discount", cents, f"less {percent}% discount", line=2)
    ctx.logger.info(
        "discount %s (orders from %s get %d%%)", money(cents), money(threshold), percent
    )


@gostage.action(name="vat-and-total", tags=("pricing",))
def vat_and_total(ctx: ActionContext) -> None:
    """Add VAT to the discounted amount."""
    net = ctx.store.get("price.subtotal", int) - ctx.store.get("price.discount", int)
    vat = net * ctx.store.get("order.vat_percent", int) // 100
    put_money(ctx, "price.vat", vat, f"VAT {ctx.store.get('order.vat_percent', int)}%", line=3)
    put_money(ctx, "price.total", net + vat, "total to pay", line=4)
    ctx.logger.info("VAT %s, total %s", money(vat), money(net + vat))


# -- stage 3: invoice --------------------------------------------------------------


@gostage.action(name="render-invoice", tags=("documents",))
def render_invoice(ctx: ActionContext) -> None:
    """Render a plain-text invoice from the order and every amount tagged ``money``."""
    store = ctx.store
    order = store.get("order", dict)
    lines = [f"INVOICE {order['id']} for {order['customer']} ({order['country']})"]
    for line in order["lines"]:
        amount = line["qty"] * line["unit_cents"]
        lines.append(
            f"  {line['qty']:>2} x {line['sku']:<10} @ {money(line['unit_cents']):>6}"
            f" = {money(amount):>7}"
        )
    lines.append("  " + "-" * 34)
    money_keys = store.find_keys_by_tag("money")  # sorted by key; order by invoice line
    for key in sorted(money_keys, key=lambda k: store.get_property(k, "line")):
        label = store.get_metadata(key).description
        lines.append(f"  {label:<26} {money(store.get(key, int)):>7}")
    store.put_with_metadata(
        "invoice.text",
        "\n".join(lines),
        Metadata(tags=("document",), properties={"format": "text/plain"}),
    )
    ctx.logger.info("invoice rendered (%d lines)", len(lines))


# -- a stage middleware: wraps all the actions of one stage ------------------------


def announce_stage(next_: StageFunc) -> StageFunc:
    def run(ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger) -> None:
        print(f"\n== stage {stage.id!r}: {stage.description}")
        next_(ctx, stage, workflow, logger)
        print(f"== stage {stage.id!r} done; the store holds {workflow.store.count()} keys")

    return run


def build_workflow() -> Workflow:
    workflow = Workflow(
        "order-A-1001",
        name="Order pipeline",
        description="validate, price and invoice",
        tags=("orders",),
    )
    workflow.store.put_with_metadata(
        "order", ORDER, Metadata(tags=("input",), description="the order as received")
    )

    validate = Stage("validate", description="check the order before we touch money")
    validate.set_initial_data("vat_rates", {"NL": 21, "DE": 19, "FR": 20})
    validate.add_action(check_lines).add_action(check_customer)

    price = Stage("price", description="compute the amounts", tags=("money",))
    price.set_initial_data("discount.threshold_cents", 5000)
    price.set_initial_data("discount.percent", 10)
    price.add_action(subtotal).add_action(discount).add_action(vat_and_total)

    invoice = Stage("invoice", description="write the invoice")
    invoice.add_action(render_invoice)

    for stage in (validate, price, invoice):
        stage.use(announce_stage)
        workflow.add_stage(stage)
    return workflow


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="   log: %(message)s", stream=sys.stdout)
    logger = logging.getLogger("orders")

    timings: dict[str, float] = {}
    runner = gostage.Runner(
        middleware=[
            gostage.logging_middleware(),  # registered first: outermost
            gostage.timing_middleware(on_timing=timings.__setitem__),
        ],
        logger=logger,
    )
    workflow = build_workflow()
    print(f"gostage {gostage.__version__}: workflow {workflow.id!r} ({workflow.description})")
    result = runner.execute(workflow)

    print()
    print(result.final_store["invoice.text"])
    print()
    print("RunResult")
    print(f"  success     {result.success}")
    print(f"  status      {result.status}")
    print(f"  workflow_id {result.workflow_id}")
    print(
        f"  duration    {result.duration * 1000:.1f} ms (timing_middleware saw "
        f"{timings[workflow.id] * 1000:.1f} ms)"
    )
    keys = f"  final_store {len(result.final_store)} keys: {', '.join(sorted(result.final_store))}"
    print(textwrap.fill(keys, width=88, subsequent_indent=" " * 14))
    print(f"  money keys  {', '.join(workflow.store.find_keys_by_tag('money'))}")
    print(
        f"Order {ORDER['id']} is invoiced: the customer pays "
        f"{money(result.final_store['price.total'])}."
    )


if __name__ == "__main__":
    main()
