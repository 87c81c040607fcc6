"""gostage: multi-stage, stateful workflows whose child workflows run in supervised processes.

The public API is what ``__all__`` lists; everything in a module whose name starts
with an underscore is private and may change. ``import gostage`` stays cheap:
loguru, cloudpickle, psutil and multiprocessing are imported when first used, and
so are the names for spawning and definitions (``_LAZY`` below: they need
``dataclasses``, which costs more to import than the rest of the package).
"""

from typing import TYPE_CHECKING, Any

from gostage._broker import Broker, Handler, MessageType
from gostage._context import ActionContext, CancelEvent, RunContext, context_get_or_default
from gostage._exceptions import (
    ActionError,
    ChildActionError,
    ChildCrashedError,
    ChildMemoryError,
    ChildProtocolError,
    ChildSerializationError,
    ChildTimeoutError,
    GostageError,
    KeyExpiredError,
    KeyNotFoundError,
    MergeConflictError,
    SpawnError,
    StoreError,
    StoreSerializationError,
    TypeMismatchError,
    UnknownActionError,
    WorkflowCancelled,
    WorkflowError,
    WorkflowTimeout,
)
from gostage._logging import DefaultLogger, Logger, NullLogger
from gostage._middleware import (
    Middleware,
    RunnerFunc,
    StageFunc,
    StageMiddleware,
    WorkflowMiddleware,
    error_handling_middleware,
    logging_middleware,
    retry_middleware,
    stage_logging_middleware,
    store_injection_middleware,
    time_limit_middleware,
    timing_middleware,
)
from gostage._model import Action, BaseAction, Stage, Workflow, action
from gostage._registry import ActionFactory, ActionRegistry, register, register_action
from gostage._runner import Runner, RunResult, RunStatus
from gostage.store import Metadata, Store

if TYPE_CHECKING:
    from gostage._defs import ActionDef, StageDef, SubWorkflowDef
    from gostage._spawn._middleware import (
        IPCMiddleware,
        IPCMiddlewareFunc,
        SpawnMiddleware,
        SpawnMiddlewareFunc,
    )
    from gostage._spawn._options import Isolation, SpawnOptions, SpawnResult

_LAZY = {
    "ActionDef": "gostage._defs",
    "StageDef": "gostage._defs",
    "SubWorkflowDef": "gostage._defs",
    "IPCMiddleware": "gostage._spawn._middleware",
    "IPCMiddlewareFunc": "gostage._spawn._middleware",
    "SpawnMiddleware": "gostage._spawn._middleware",
    "SpawnMiddlewareFunc": "gostage._spawn._middleware",
    "Isolation": "gostage._spawn._options",
    "SpawnOptions": "gostage._spawn._options",
    "SpawnResult": "gostage._spawn._options",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gostage' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Action",
    "ActionContext",
    "ActionDef",
    "ActionError",
    "ActionFactory",
    "ActionRegistry",
    "BaseAction",
    "Broker",
    "CancelEvent",
    "ChildActionError",
    "ChildCrashedError",
    "ChildMemoryError",
    "ChildProtocolError",
    "ChildSerializationError",
    "ChildTimeoutError",
    "DefaultLogger",
    "GostageError",
    "Handler",
    "IPCMiddleware",
    "IPCMiddlewareFunc",
    "Isolation",
    "KeyExpiredError",
    "KeyNotFoundError",
    "Logger",
    "MergeConflictError",
    "MessageType",
    "Metadata",
    "Middleware",
    "NullLogger",
    "RunContext",
    "RunResult",
    "RunStatus",
    "Runner",
    "RunnerFunc",
    "SpawnError",
    "SpawnMiddleware",
    "SpawnMiddlewareFunc",
    "SpawnOptions",
    "SpawnResult",
    "Stage",
    "StageDef",
    "StageFunc",
    "StageMiddleware",
    "Store",
    "StoreError",
    "StoreSerializationError",
    "SubWorkflowDef",
    "TypeMismatchError",
    "UnknownActionError",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowError",
    "WorkflowMiddleware",
    "WorkflowTimeout",
    "__version__",
    "action",
    "context_get_or_default",
    "error_handling_middleware",
    "logging_middleware",
    "register",
    "register_action",
    "retry_middleware",
    "stage_logging_middleware",
    "store_injection_middleware",
    "time_limit_middleware",
    "timing_middleware",
]
