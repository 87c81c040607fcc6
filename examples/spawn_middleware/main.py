"""IPC and spawn middleware: what crosses the process boundary, and around each child.

A child workflow reads some (simulated) sensors and sends each reading to the parent
with ``ctx.send("reading", ...)``, logs, and writes to its store. Every one of those
messages crosses the process boundary through three IPC middleware, and the parent
watches each child with spawn middleware:

* ``WireTap`` (an ``IPCMiddlewareFunc`` with only ``process_inbound``), registered
  first, so it is the outermost layer: it sees messages exactly as they came off the
  wire, before any other layer touched them.
* ``Envelope``, one object that is both an ``IPCMiddleware`` and a ``SpawnMiddleware``:
  in the child it wraps each payload in a header (sequence number, sender pid, send
  time); in the parent it takes the header off again, and its ``before_spawn`` /
  ``after_spawn`` report, per child, whether every message arrived in sequence.
* ``XorCipher``, registered last, so it is the innermost layer: in the child it turns
  the payload into XOR-scrambled, base64-encoded JSON (a ``str``, so the result is
  still JSON-safe), in the parent it turns it back. XOR is a stand-in for a real
  cipher (e.g. Fernet from the ``cryptography`` package), not cryptography.

Outbound, layers run in reverse registration order (cipher, envelope, tap), inbound in
registration order (tap, envelope, cipher), so each inbound layer undoes its own
outbound step. Handlers, spawn middleware and the store sync all see the plain payload.

Spawn middleware, in the parent:

* ``MessageMetrics`` (a ``SpawnMiddleware`` subclass) counts messages and payload bytes
  per message type in ``on_child_message``;
* a ``SpawnMiddlewareFunc`` times each child: ``before_spawn`` puts the start time into
  the ``RunContext`` with ``ctx.with_value`` and gives the child a trace id by replacing
  its definition; ``after_spawn`` reads the start time back and reports the outcome
  (``err`` is ``None`` on success).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from collections import Counter
from typing import Any

import gostage
from gostage import (
    ActionContext,
    ActionDef,
    ActionRegistry,
    IPCMiddleware,
    IPCMiddlewareFunc,
    MessageType,
    RunContext,
    Runner,
    SpawnError,
    SpawnMiddleware,
    SpawnMiddlewareFunc,
    StageDef,
    Store,
    SubWorkflowDef,
)

# -- actions that run in the child ------------------------------------------------


@gostage.action(name="read-sensors")
def read_sensors(ctx: ActionContext) -> None:
    trace = ctx.store.get("trace_id", str)
    for i, celsius in enumerate(ctx.params["values"]):
        ctx.send("reading", {"sensor": f"t{i}", "celsius": celsius, "trace": trace})
        ctx.store.put(f"celsius.t{i}", celsius)
    ctx.logger.info("read %d sensors", len(ctx.params["values"]))
    if ctx.params.get("fail"):
        raise RuntimeError("sensor bus offline")


# -- IPC middleware: layers around the channel ---------------------------------------


class Envelope(IPCMiddleware, SpawnMiddleware):
    """Adds a header in the sender, checks and removes it in the receiver.

    The same object is registered twice: ``add_ipc_middleware`` (its copy in each
    child runs ``process_outbound``) and ``use_spawn_middleware`` (the parent's).
    """

    def __init__(self) -> None:
        self.sent = 0  # in the child: its own copy, starting from 0
        self.arrived: list[tuple[int, float]] = []  # in the parent: (seq, seconds in transit)

    def process_outbound(self, msg_type: str, payload: Any) -> tuple[str, Any]:
        self.sent += 1
        header = {"seq": self.sent, "pid": os.getpid(), "sent": time.time()}
        return msg_type, {"hdr": header, "body": payload}

    def process_inbound(self, msg_type: str, payload: Any) -> tuple[str, Any]:
        header = payload["hdr"]
        self.arrived.append((header["seq"], time.time() - header["sent"]))
        return msg_type, payload["body"]

    def before_spawn(
        self, ctx: RunContext, defn: SubWorkflowDef
    ) -> tuple[RunContext, SubWorkflowDef]:
        self.arrived.clear()
        return ctx, defn

    def after_spawn(self, ctx: RunContext, defn: SubWorkflowDef, err: BaseException | None) -> None:
        seqs = [seq for seq, _ in self.arrived]
        slowest = max((t for _, t in self.arrived), default=0.0)
        print(
            f"envelope: {len(seqs)} messages from {defn.id}, all in sequence: "
            f"{seqs == list(range(1, len(seqs) + 1))}, slowest in transit {slowest * 1000:.1f} ms"
        )


class XorCipher(IPCMiddleware):
    """Scrambles the JSON of each payload; the result travels as a base64 ``str``."""

    def __init__(self, key: bytes) -> None:
        self.key = key  # travels to the child with the middleware (cloudpickle)

    def _xor(self, data: bytes) -> bytes:
        key = self.key
        return bytes(b ^ key[i % len(key)] for i, b in enumerate(data))

    def process_outbound(self, msg_type: str, payload: Any) -> tuple[str, Any]:
        scrambled = self._xor(json.dumps(payload).encode())
        return msg_type, base64.b64encode(scrambled).decode("ascii")

    def process_inbound(self, msg_type: str, payload: Any) -> tuple[str, Any]:
        return msg_type, json.loads(self._xor(base64.b64decode(payload)))


# -- spawn middleware: around each child, in the parent -------------------------------


class MessageMetrics(SpawnMiddleware):
    """Messages and payload bytes (of their JSON) per message type, over all children."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.size: Counter[str] = Counter()

    def on_child_message(self, msg_type: str, payload: Any) -> None:
        self.count[msg_type] += 1
        self.size[msg_type] += len(json.dumps(payload))


def lifecycle_timer() -> SpawnMiddlewareFunc:
    traces = iter(range(1, 1000))

    def before(ctx: RunContext, defn: SubWorkflowDef) -> tuple[RunContext, SubWorkflowDef]:
        trace_id = f"trace-{next(traces):03d}"
        print(f"before_spawn: {defn.id} gets {trace_id}")
        # Definitions are dataclasses: replace() gives the child a changed copy.
        defn = dataclasses.replace(
            defn, initial_store={**(defn.initial_store or {}), "trace_id": trace_id}
        )
        return ctx.with_value("started", time.perf_counter()), defn

    def after(ctx: RunContext, defn: SubWorkflowDef, err: BaseException | None) -> None:
        took = time.perf_counter() - ctx.value("started")
        outcome = "ok" if err is None else f"failed with {type(err).__name__}"
        print(f"after_spawn: {defn.id} {outcome} after {took:.2f} s")

    return SpawnMiddlewareFunc(before_spawn=before, after_spawn=after)


def main() -> None:
    registry = ActionRegistry()
    registry.register("read-sensors", read_sensors)
    runner = Runner(logger=gostage.NullLogger(), registry=registry)

    wire: list[tuple[str, Any]] = []

    def tap(msg_type: str, payload: Any) -> tuple[str, Any]:
        wire.append((msg_type, payload))
        return msg_type, payload

    envelope = Envelope()
    metrics = MessageMetrics()
    runner.add_ipc_middleware(IPCMiddlewareFunc(process_inbound=tap))  # outermost
    runner.add_ipc_middleware(envelope)
    runner.add_ipc_middleware(XorCipher(b"not-a-real-key"))  # innermost
    runner.use_spawn_middleware(envelope)
    runner.use_spawn_middleware(metrics)
    runner.use_spawn_middleware(lifecycle_timer())

    def on_reading(msg_type: str, payload: Any) -> None:
        print(f"  reading {payload['sensor']}: {payload['celsius']} C ({payload['trace']})")

    runner.broker.register_handler("reading", on_reading)
    runner.broker.register_handler(
        MessageType.LOG, lambda msg_type, payload: print(f"  child log: {payload['message']}")
    )

    def sensors(workflow_id: str, values: list[float], fail: bool = False) -> SubWorkflowDef:
        params = {"values": values, "fail": fail}
        return SubWorkflowDef(
            workflow_id, [StageDef("read", [ActionDef("read-sensors", params=params)])]
        )

    print("== a child whose messages pass tap, envelope and cipher")
    store = Store()
    result = runner.spawn(sensors("greenhouse", [21.5, 22.0, 19.25]), store=store)
    print(f"the parent store got the plain values: {store.to_dict()}")
    print(f"child pid {result.pid}, success {result.success}")

    print("\n== what the tap saw on the wire (before any inbound layer)")
    msg_type, raw = next((t, p) for t, p in wire if t == "reading")
    print(f"message type {msg_type!r} travels in clear; payload keys {sorted(raw)}")
    print(f"header: seq={raw['hdr']['seq']}, pid is the child's: {raw['hdr']['pid'] == result.pid}")
    body = raw["body"]
    print(f"body is a {type(body).__name__} of {len(body)} characters: {body[:24]}...")
    print(f"readable on the wire: {'celsius' in json.dumps(raw)}")

    print("\n== a child that fails after sending some messages")
    try:
        runner.spawn(sensors("cellar", [12.5, 11.75], fail=True))
    except SpawnError as exc:
        print(f"spawn raised {type(exc).__name__}: {str(exc).split(': ', 1)[1]}")

    print("\n== metrics over both children (bytes of each payload's JSON, after decryption)")
    print(f"  {'message type':<16}{'count':>6}{'bytes':>7}")
    for msg_type in sorted(metrics.count):
        print(f"  {msg_type:<16}{metrics.count[msg_type]:>6}{metrics.size[msg_type]:>7}")
    print(f"every message passed the tap: {len(wire) == sum(metrics.count.values())}")


if __name__ == "__main__":  # required: each child re-imports this module
    main()
