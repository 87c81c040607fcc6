"""In-process messages: ctx.send and the broker's dispatch rules (design.md §3, §6)."""

from __future__ import annotations

from typing import Any

from gostage import ActionContext, MessageType, Runner, Stage, Workflow, action


def run_sending(runner: Runner, *messages: tuple[str, Any]) -> None:
    @action
    def sender(ctx: ActionContext) -> None:
        for msg_type, payload in messages:
            ctx.send(msg_type, payload)

    runner.execute(Workflow("wf").add_stage(Stage("s").add_action(sender)))


def test_handlers_receive_messages_in_order_and_reregistering_replaces(logger: Any) -> None:
    runner = Runner(logger=logger)
    got: list[tuple[str, Any]] = []
    runner.broker.register_handler("progress", lambda t, p: got.append(("old", p)))
    runner.broker.register_handler("progress", lambda t, p: got.append((t, p)))
    run_sending(runner, ("progress", 1), ("progress", {"pct": 50}))
    assert got == [("progress", 1), ("progress", {"pct": 50})]


def test_enum_and_string_types_are_the_same_key(logger: Any) -> None:
    runner = Runner(logger=logger)
    got: list[str] = []
    runner.broker.register_handler(MessageType.STORE_PUT, lambda t, p: got.append(t))
    run_sending(runner, ("store_put", {}), (MessageType.STORE_PUT, {}))
    assert got == ["store_put", "store_put"]


def test_default_handler_then_log_reemit_then_drop(logger: Any) -> None:
    runner = Runner(logger=logger)
    run_sending(
        runner,
        (MessageType.LOG, {"level": "warning", "message": "disk low", "pid": 7}),
        ("unhandled", "dropped"),
    )
    assert logger.records == [("warning", "[pid 7] disk low")]

    seen: list[str] = []
    runner.broker.set_default_handler(lambda t, p: seen.append(t))
    run_sending(runner, (MessageType.LOG, {"message": "x"}), ("custom", None))
    assert seen == ["log", "custom"]
    assert len(logger.records) == 1
