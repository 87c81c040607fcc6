"""The ``gostage`` command line, end to end in real subprocesses (design.md §8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent

FLOW = """
from gostage import ActionDef, ActionRegistry, StageDef, SubWorkflowDef, action

registry = ActionRegistry()


@action
def add(ctx):
    ctx.store.put("total", ctx.store.get_or_default("total", 0) + ctx.params.get("n", 1))


@action
def flaky(ctx):
    if ctx.store.get_or_default("fail", False) and not ctx.resume_data.get("fixed"):
        raise RuntimeError("upstream is down")
    ctx.store.put("flaky", "ok")


@action
def approval(ctx):
    if not ctx.is_resuming:
        ctx.suspend("waiting for sign-off", ticket=7)
    ctx.store.put("approver", ctx.resume_data["approver"])


for fn in (add, flaky, approval):
    registry.register(fn.name, fn)


def pipeline():
    return SubWorkflowDef("pipeline", [
        StageDef("extract", [ActionDef("add", params={"n": 2})]),
        StageDef("check", [ActionDef("flaky")]),
        StageDef("load", [ActionDef("add", params={"n": 3})]),
    ])


gated = SubWorkflowDef("gated", [
    StageDef("prepare", [ActionDef("add")]),
    StageDef("approve", [ActionDef("approval"), ActionDef("add", params={"n": 10})]),
])
"""


def gostage(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "GOSTAGE_DB": str(tmp_path / "runs.db"),
    }
    return subprocess.run(
        [sys.executable, "-m", "gostage", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )


@pytest.fixture
def flow(tmp_path: Path) -> str:
    (tmp_path / "flow.py").write_text(FLOW)
    return str(tmp_path / "flow.py")


def test_run_list_show(tmp_path: Path, flow: str) -> None:
    done = gostage(tmp_path, "run", f"{flow}:pipeline")
    assert done.returncode == 0, done.stderr
    assert "stage extract" in done.stdout and "ok (" in done.stdout
    run_id = done.stdout.split("run ")[1].split(":")[0]
    assert f"run {run_id}: completed" in done.stdout

    listed = gostage(tmp_path, "runs", "--json")
    assert listed.returncode == 0
    (record,) = json.loads(listed.stdout)
    assert set(record) == {"run_id", "workflow_id", "status", "error", "created_at", "updated_at"}
    assert (record["run_id"], record["workflow_id"], record["status"]) == (
        run_id,
        "pipeline",
        "completed",
    )
    table = gostage(tmp_path, "runs", "--status", "completed")
    assert run_id in table.stdout

    shown = gostage(tmp_path, "show", run_id)
    assert shown.returncode == 0
    assert "status    completed" in shown.stdout
    assert "extract/add  completed" in shown.stdout and "load/add  completed" in shown.stdout


def test_failed_run_exits_1_and_resumes(tmp_path: Path, flow: str) -> None:
    failed = gostage(tmp_path, "run", f"{flow}:pipeline", "--param", "fail=true")
    assert failed.returncode == 1
    assert "upstream is down" in failed.stderr and "gostage resume" in failed.stderr
    (record,) = json.loads(gostage(tmp_path, "runs", "--json", "--status", "failed").stdout)

    resumed = gostage(tmp_path, "resume", record["run_id"], "--data", "fixed=true")
    assert resumed.returncode == 0, resumed.stderr
    assert f"run {record['run_id']}: completed" in resumed.stdout
    shown = gostage(tmp_path, "show", record["run_id"]).stdout
    # extract completed once; check failed, then completed; load once.
    assert shown.count("extract/add  completed") == 1
    assert "check/flaky  failed  RuntimeError: upstream is down" in shown
    assert "check/flaky  completed" in shown

    again = gostage(tmp_path, "resume", record["run_id"])
    assert again.returncode == 2 and "completed" in again.stderr


def test_suspend_and_resume_with_data(tmp_path: Path, flow: str) -> None:
    suspended = gostage(tmp_path, "run", f"{flow}:gated")
    assert suspended.returncode == 0, suspended.stderr
    assert "suspended: waiting for sign-off" in suspended.stdout
    run_id = suspended.stdout.split("run ")[1].split(":")[0]
    assert f"gostage resume {run_id}" in suspended.stdout

    resumed = gostage(tmp_path, "resume", run_id, "--data", "approver=ana")
    assert resumed.returncode == 0, resumed.stderr
    assert "completed" in resumed.stdout


def test_errors_exit_2_with_a_message(tmp_path: Path, flow: str) -> None:
    missing_db = gostage(tmp_path, "runs")
    assert missing_db.returncode == 2 and "no run database" in missing_db.stderr

    assert gostage(tmp_path, "run", f"{flow}:pipeline").returncode == 0
    unknown = gostage(tmp_path, "show", "deadbeef")
    assert unknown.returncode == 2 and "deadbeef" in unknown.stderr
    assert gostage(tmp_path, "resume", "deadbeef").returncode == 2

    bad_target = gostage(tmp_path, "run", f"{flow}:nothing_here")
    assert bad_target.returncode == 2 and "nothing_here" in bad_target.stderr
    assert gostage(tmp_path, "run", "no-colon").returncode == 2
    assert gostage(tmp_path, "runs", "--status", "sleeping").returncode == 2
    assert gostage(tmp_path, "purge", "--older-than", "soon").returncode == 2
    assert gostage(tmp_path).returncode == 2  # no subcommand


def test_corrupt_database_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    db.write_bytes(b"this is not a database" * 50)
    before = db.read_bytes()
    out = gostage(tmp_path, "runs")
    assert out.returncode == 2 and "not a gostage run database" in out.stderr
    assert db.read_bytes() == before


def test_purge(tmp_path: Path, flow: str) -> None:
    assert gostage(tmp_path, "run", f"{flow}:pipeline").returncode == 0
    kept = gostage(tmp_path, "purge", "--older-than", "7d")
    assert kept.returncode == 0 and "purged 0 run(s)" in kept.stdout
    purged = gostage(tmp_path, "purge", "--older-than", "0s")
    assert "purged 1 run(s)" in purged.stdout
    assert json.loads(gostage(tmp_path, "runs", "--json").stdout) == []
