"""gostage: multi-stage, stateful workflows whose child workflows run in supervised processes.

The public API is what ``__all__`` lists; everything in a module whose name starts
with an underscore is private and may change. ``import gostage`` stays cheap:
loguru, cloudpickle, psutil and multiprocessing are imported when first used.
"""

from gostage._broker import Broker, Handler, MessageType
from gostage._context import ActionContext, CancelEvent, RunContext, context_get_or_default
from gostage._defs import ActionDef, StageDef, SubWorkflowDef
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
from gostage._spawn._middleware import (
    IPCMiddleware,
    IPCMiddlewareFunc,
    SpawnMiddleware,
    SpawnMiddlewareFunc,
)
from gostage._spawn._options import Isolation, SpawnOptions, SpawnResult
from gostage.store import Metadata, Store

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
