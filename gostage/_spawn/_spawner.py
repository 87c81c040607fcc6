"""From ``runner.spawn*`` calls to supervised jobs, and from child messages to handlers.

Spawn middleware: ``before_spawn`` runs for every definition when it is submitted
(for ``spawn_many``, all of them before the first process starts, so a bad
definition fails before anything runs); ``after_spawn`` runs as soon as that
child's outcome is known.

For every message a child sends, the parent runs, in this order: inbound IPC
middleware, each spawn middleware's ``on_child_message``, the built-in store sync
(``STORE_PUT`` / ``STORE_DELETE``, when the spawn was given a store), then the
broker (the handler for the type, else the default handler, else ``LOG`` re-emit).
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from gostage._broker import MessageType
from gostage._context import RunContext
from gostage._defs import SubWorkflowDef
from gostage._exceptions import UnknownActionError
from gostage._spawn._child import ChildLimits
from gostage._spawn._options import SpawnOptions, SpawnResult
from gostage._spawn._protocol import encode_task

if TYPE_CHECKING:
    from gostage._registry import ActionRegistry
    from gostage._runner import Runner
    from gostage.store import Store

_PUT = MessageType.STORE_PUT.value
_DELETE = MessageType.STORE_DELETE.value


@lru_cache(maxsize=1)
def _install_roots() -> tuple[str, ...]:
    """Directories whose modules a fresh interpreter can import by name."""
    roots = {
        p
        for k, p in sysconfig.get_paths().items()
        if k in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    roots.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # gostage itself
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


def _needs_by_value(module_name: str) -> bool:
    """Whether objects of this module must travel by value (see design.md §9).

    cloudpickle pickles functions and classes of importable modules by reference,
    and a child that cannot import the module fails. ``__main__`` is always by
    value already; any other module that is not installed (a script's sibling, a
    test module under any import mode) is sent by value too.
    """
    if module_name == "__main__" or module_name not in sys.modules:
        return False
    file = getattr(sys.modules[module_name], "__file__", None)
    if file is None:
        return False
    path = os.path.realpath(file)
    return not path.startswith(_install_roots())


def pickle_code(registry: ActionRegistry, ipc_middleware: Sequence[Any]) -> bytes:
    """cloudpickle the registry and IPC middleware for a child."""
    import cloudpickle

    objects: list[Any] = [registry._factories[i] for i in registry.ids()] + list(ipc_middleware)
    names = set()
    for obj in objects:
        for candidate in (getattr(obj, "__module__", None), type(obj).__module__):
            if isinstance(candidate, str) and _needs_by_value(candidate):
                names.add(candidate)
    modules = [sys.modules[n] for n in sorted(names)]
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        data: bytes = cloudpickle.dumps((registry, list(ipc_middleware)), protocol=5)
        return data
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def check_actions(defn: SubWorkflowDef, registry: ActionRegistry) -> None:
    """Raise UnknownActionError, before any process starts, for an unregistered id."""
    for action_id in defn.action_ids():
        if action_id not in registry:
            raise UnknownActionError(action_id, registry.ids())


def _limits(options: SpawnOptions, trust_child: bool, *, pdeathsig: bool) -> ChildLimits:
    # PR_SET_PDEATHSIG fires when the *thread* that started the child exits. A
    # fresh child lives inside the call that started it; a pooled worker may
    # outlive that thread, so it relies on its parent-alive pipe alone.
    return ChildLimits(
        memory_limit=options.memory_limit,
        cpu_time_limit=options.cpu_time_limit,
        env=tuple((options.env or {}).items()),
        cwd=options.cwd,
        max_frame=options.max_frame_size,
        allow_pickle=trust_child,
        pdeathsig=pdeathsig,
    )


def _encode(defn: SubWorkflowDef) -> bytes:
    """The task frame for ``defn``; its error names the workflow, before any process starts."""
    try:
        return encode_task(defn.to_dict())
    except (TypeError, ValueError) as exc:
        raise type(exc)(
            f"child workflow {defn.id!r} cannot be sent to a child process: its definition "
            f"(params, initial_store) must be JSON-serializable ({exc})"
        ) from exc


def _message_pipeline(runner: Runner, store: Store | None) -> Callable[[str, Any], None]:
    inbound = list(runner._ipc_middleware)
    spawn_mw = list(runner._spawn_middleware)
    broker = runner.broker

    def on_message(msg_type: str, payload: Any) -> None:
        for mw in inbound:
            msg_type, payload = mw.process_inbound(msg_type, payload)
        for smw in spawn_mw:
            smw.on_child_message(msg_type, payload)
        if store is not None and isinstance(payload, dict):
            if msg_type == _PUT and isinstance(payload.get("key"), str):
                store.put(payload["key"], payload.get("value"))
            elif msg_type == _DELETE and isinstance(payload.get("key"), str):
                store.delete(payload["key"])
        broker.dispatch(msg_type, payload)

    return on_message


def run_children(
    runner: Runner,
    defs: Iterable[SubWorkflowDef],
    *,
    store: Store | None = None,
    max_workers: int | None = None,
    options: SpawnOptions | None = None,
    timeout: float | None = None,
    trust_child: bool = False,
    ctx: RunContext | None = None,
    fail_fast: bool = False,
    isolation: str | None = None,
) -> list[SpawnResult | BaseException]:
    """Run child workflows; one outcome (result or exception) per definition, in order."""
    import multiprocessing

    from gostage._spawn._backends.base import Backend
    from gostage._spawn._backends.process import ProcessBackend
    from gostage._spawn._supervisor import supervise
    from gostage._spawn._worker import Job

    defs = list(defs)
    options = options or SpawnOptions()
    isolation = isolation or options.isolation
    if isolation not in ("process", "worker"):
        raise ValueError(f"isolation must be 'process' or 'worker', got {isolation!r}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    if max_workers is None:
        max_workers = os.cpu_count() or 1
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
    for defn in defs:
        if not isinstance(defn, SubWorkflowDef):
            raise TypeError(f"expected a SubWorkflowDef, got {type(defn).__name__}")
        check_actions(defn, runner.registry)
    base_ctx = ctx if ctx is not None else RunContext()
    contexts: list[RunContext] = []
    prepared: list[SubWorkflowDef] = []
    for original in defs:
        job_ctx, defn = base_ctx, original
        for smw in runner._spawn_middleware:
            job_ctx, defn = smw.before_spawn(job_ctx, defn)
        if defn is not original:  # a middleware replaced it: check the new one too
            check_actions(defn, runner.registry)
        contexts.append(job_ctx)
        prepared.append(defn)

    limits = _limits(options, trust_child, pdeathsig=isolation == "process")
    effective_timeout = timeout if timeout is not None else options.timeout
    on_message = _message_pipeline(runner, store)
    jobs = [
        Job(
            index=i,
            workflow_id=defn.id,
            task=_encode(defn),
            timeout=effective_timeout,
            on_message=on_message,
        )
        for i, defn in enumerate(prepared)
    ]
    code = pickle_code(runner.registry, runner._ipc_middleware)
    mp = multiprocessing.get_context("spawn")
    backend: Backend
    if isolation == "worker":
        backend = runner._worker_pool(mp, limits, code, options)
    else:
        backend = ProcessBackend(mp, limits, code, options.kill_grace)

    def after_spawn(index: int, outcome: SpawnResult | BaseException) -> None:
        err = outcome if isinstance(outcome, BaseException) else None
        for smw in reversed(runner._spawn_middleware):
            smw.after_spawn(contexts[index], prepared[index], err)

    return supervise(
        jobs,
        backend,
        allow_pickle=trust_child,
        max_workers=max_workers,
        cancel=base_ctx.cancel,
        deadline=base_ctx.deadline,
        fail_fast=fail_fast,
        on_outcome=after_spawn if runner._spawn_middleware else None,
    )
