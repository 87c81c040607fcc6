"""The ``gostage`` command line: run workflows durably, list, show, resume and purge runs.

Exit status: 0 when the command did what was asked (a run completed or suspended),
1 when a workflow failed, 2 for a usage or input error (bad arguments, unknown run
id, a file that is not a run database, a run that cannot be resumed).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from gostage._context import RunContext
from gostage._defs import SubWorkflowDef
from gostage._exceptions import GostageError
from gostage._logging import Logger
from gostage._middleware import StageFunc
from gostage._model import Stage, Workflow
from gostage._registry import ActionRegistry, default_registry
from gostage._runner import Runner, RunResult
from gostage._status import RunStatus

SOURCE_ATTR = "_gostage_source"  # where `gostage run` loaded a workflow from, for resume

_EXIT_OK, _EXIT_FAILED, _EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A problem with what the user typed; printed, exit status 2."""


# -- loading workflows -----------------------------------------------------------------


def _import_source(source: str) -> tuple[Any, str]:
    """Import ``FILE.py:ATTR`` or ``package.module:ATTR``; the module and ATTR."""
    target, sep, attr = source.rpartition(":")
    if not sep or not target or not attr:
        raise UsageError(f"expected FILE_OR_MODULE:ATTR, got {source!r}")
    if target.endswith(".py") or os.path.sep in target:
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise UsageError(f"no such file: {target}")
        name = "_gostage_cli_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot import {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        sys.path.insert(0, os.path.dirname(path))  # its sibling modules import as in a script
        spec.loader.exec_module(module)
        return module, attr
    try:
        return importlib.import_module(target), attr
    except ImportError as exc:
        raise UsageError(f"cannot import module {target!r}: {exc}") from exc


def _registry_of(module: Any) -> ActionRegistry:
    registry = getattr(module, "registry", None)
    return registry if isinstance(registry, ActionRegistry) else default_registry


def _load_workflow(source: str) -> tuple[Workflow, ActionRegistry]:
    module, attr = _import_source(source)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise UsageError(f"{source!r}: the module has no attribute {attr!r}") from None
    if callable(obj) and not isinstance(obj, (Workflow, SubWorkflowDef)):
        obj = obj()
    registry = _registry_of(module)
    if isinstance(obj, SubWorkflowDef):
        obj = Workflow.from_def(obj, registry)
    if not isinstance(obj, Workflow):
        raise UsageError(
            f"{source!r} is a {type(obj).__name__}; expected a Workflow, a SubWorkflowDef, "
            "or a function returning one"
        )
    # Absolute, so that `gostage resume` finds it from any directory.
    target, _, attr = source.rpartition(":")
    if target.endswith(".py") or os.path.sep in target:
        source = f"{os.path.abspath(target)}:{attr}"
    setattr(obj, SOURCE_ATTR, source)
    return obj, registry


def _parse_pairs(pairs: Sequence[str], option: str) -> dict[str, Any]:
    """``key=value`` pairs; a value that parses as JSON is taken as JSON, else as text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} expects key=value, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``15m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds)."""
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(f"--older-than expects a duration like 30s, 15m, 12h or 7d; got {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


# -- output ------------------------------------------------------------------------


def _progress(out: TextIO) -> Any:
    """Workflow middleware: one live line per stage, with its outcome and duration."""

    def middleware(next_: StageFunc) -> StageFunc:
        def run(ctx: RunContext, stage: Stage, workflow: Workflow, logger: Logger) -> None:
            if not workflow.is_stage_enabled(stage.id):
                print(f"  stage {stage.id:<24} skipped (disabled)", file=out, flush=True)
                next_(ctx, stage, workflow, logger)
                return
            print(f"  stage {stage.id:<24} running ...", end="", file=out, flush=True)
            start = time.perf_counter()
            try:
                next_(ctx, stage, workflow, logger)
            except BaseException:
                print(f" stopped ({time.perf_counter() - start:.2f} s)", file=out, flush=True)
                raise
            print(f" ok ({time.perf_counter() - start:.2f} s)", file=out, flush=True)

        return run

    return middleware


def _record_dict(record: Any) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "workflow_id": record.workflow_id,
        "status": record.status.value,
        "error": record.error,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _summary(result: RunResult, runner: Runner, out: TextIO) -> int:
    record = runner.get_run(result.run_id)
    print(f"run {result.run_id}: {result.status.value} in {result.duration:.2f} s", file=out)
    if result.status is RunStatus.SUSPENDED:
        print(f"  suspended: {record.suspend_reason}", file=out)
        if record.suspend_data:
            print(f"  data: {json.dumps(record.suspend_data, sort_keys=True)}", file=out)
        print(f"  continue with: gostage resume {result.run_id} [--data key=value]", file=out)
    keys = sorted(result.final_store)
    print(f"  store: {len(keys)} key(s){': ' + ', '.join(keys[:10]) if keys else ''}", file=out)
    return _EXIT_OK


# -- commands ----------------------------------------------------------------------


def _open_runs(path: str, *, create: bool) -> Any:
    from gostage.persistence import SQLiteRunStore

    if not create and not os.path.exists(path):
        raise UsageError(f"no run database at {path} (set --db or $GOSTAGE_DB)")
    return SQLiteRunStore(path)


def _failed(exc: BaseException, run_id: str | None, err: TextIO) -> int:
    print(f"error: {exc}", file=err)
    if run_id:
        print(f"run {run_id} failed; after fixing the cause: gostage resume {run_id}", file=err)
    return _EXIT_FAILED


def cmd_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    workflow, registry = _load_workflow(args.target)
    for key, value in _parse_pairs(args.param, "--param").items():
        workflow.store.put(key, value)
    workflow.use(_progress(out))
    with _open_runs(args.db, create=True) as runs:
        runner = Runner(registry=registry, persistence=runs)
        print(f"workflow {workflow.id!r}: {len(workflow.stages)} stage(s)", file=out, flush=True)
        try:
            result = runner.execute(workflow)
        except (GostageError, Exception) as exc:
            return _failed(exc, getattr(exc, "run_id", None), err)
        return _summary(result, runner, out)


def cmd_resume(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _open_runs(args.db, create=False) as runs:
        record = runs.get_run(args.run_id)
        source = (record.definition or {}).get("source")
        registry = default_registry
        if source:
            module, _ = _import_source(source)
            registry = _registry_of(module)
        runner = Runner(registry=registry, persistence=runs)
        print(f"resuming run {args.run_id} of workflow {record.workflow_id!r}", file=out)
        try:
            result = runner.resume(args.run_id, _parse_pairs(args.data, "--data"))
        except (GostageError, Exception) as exc:
            from gostage.persistence import RunStateError

            if isinstance(exc, (RunStateError, KeyError)):
                raise
            return _failed(exc, args.run_id, err)
        return _summary(result, runner, out)


def cmd_runs(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    status = args.status
    if status is not None:
        valid = [s.value for s in RunStatus]
        if status not in valid:
            raise UsageError(f"--status must be one of {', '.join(valid)}; got {status!r}")
    with _open_runs(args.db, create=False) as runs:
        records = runs.list_runs(status, args.workflow, args.limit, 0)
    if args.json:
        print(json.dumps([_record_dict(r) for r in records], indent=2), file=out)
        return _EXIT_OK
    if not records:
        print("no runs", file=out)
        return _EXIT_OK
    print(f"{'run id':32}  {'workflow':16}  {'status':9}  {'updated':19}  error", file=out)
    for r in records:
        error = (r.error or "")[:60]
        print(
            f"{r.run_id:32}  {r.workflow_id[:16]:16}  {r.status.value:9}  "
            f"{_when(r.updated_at)}  {error}",
            file=out,
        )
    return _EXIT_OK


def cmd_show(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with _open_runs(args.db, create=False) as runs:
        record = runs.get_run(args.run_id)
        actions = runs.list_actions(args.run_id)
    print(f"run       {record.run_id}", file=out)
    print(f"workflow  {record.workflow_id}", file=out)
    print(f"status    {record.status.value}", file=out)
    print(f"created   {_when(record.created_at)}", file=out)
    print(f"updated   {_when(record.updated_at)}", file=out)
    if record.error:
        print(f"error     {record.error}", file=out)
    if record.suspend_reason:
        print(f"suspended {record.suspend_reason} {json.dumps(record.suspend_data)}", file=out)
    print(f"actions   {len(actions)}", file=out)
    for a in actions:
        tail = f"  {a.error}" if a.error else ""
        print(f"  {a.seq:>4}  {a.stage_id}/{a.action_name}  {a.status}{tail}", file=out)
    return _EXIT_OK


def cmd_purge(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    seconds = parse_duration(args.older_than)
    with _open_runs(args.db, create=False) as runs:
        count = runs.purge_runs(seconds)
    print(f"purged {count} run(s) finished more than {args.older_than} ago", file=out)
    return _EXIT_OK


def _parser() -> argparse.ArgumentParser:
    default_db = os.environ.get("GOSTAGE_DB", "gostage.db")
    parser = argparse.ArgumentParser(
        prog="gostage", description="Run durable workflows and inspect their history."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument(
            "--db", default=default_db, help="run database (default: $GOSTAGE_DB or ./gostage.db)"
        )
        return p

    run = command("run", "run a workflow and record it")
    run.add_argument(
        "target",
        metavar="FILE_OR_MODULE:ATTR",
        help="a Workflow, SubWorkflowDef, or a function returning one",
    )
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="put into the store first (JSON or text)",
    )
    run.set_defaults(handler=cmd_run)

    runs = command("runs", "list recorded runs, newest first")
    runs.add_argument("--status", help="only runs in this status")
    runs.add_argument("--workflow", help="only runs of this workflow id")
    runs.add_argument("--limit", type=int, default=50)
    runs.add_argument("--json", action="store_true", help="print a JSON list")
    runs.set_defaults(handler=cmd_runs)

    show = command("show", "show one run and its actions")
    show.add_argument("run_id", metavar="RUN_ID")
    show.set_defaults(handler=cmd_show)

    resume = command("resume", "continue a failed or suspended run")
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="resume data (JSON or text)",
    )
    resume.set_defaults(handler=cmd_resume)

    purge = command("purge", "delete finished runs older than a duration")
    purge.add_argument("--older-than", required=True, metavar="DURATION", help="e.g. 12h, 7d, 2w")
    purge.set_defaults(handler=cmd_purge)
    return parser


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Entry point of ``gostage`` and ``python -m gostage``; returns the exit status."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    from gostage.persistence import PersistenceError

    try:
        code: int = args.handler(args, out, err)
        return code
    except (UsageError, PersistenceError, KeyError, GostageError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=err)
        return _EXIT_USAGE
