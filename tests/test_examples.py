"""Every script in examples/ runs, exits 0 and prints what it is meant to show.

Examples are discovered by glob (``examples/*.py``, and ``examples/*/main.py`` for an
example that is a directory with helper modules), so a new one is tested as soon as it
exists; it must also get an entry in ``EXPECTED`` (a few lines its output must
contain), so a broken example that still exits 0 cannot pass. Examples that spawn
child processes are covered by the autouse fixture in conftest too: the test process
is a subreaper, so a child an example leaves behind is re-parented to it and fails
the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = ROOT / "examples"
EXAMPLES = sorted([*EXAMPLES_DIR.glob("*.py"), *EXAMPLES_DIR.glob("*/main.py")])


def example_id(path: Path) -> str:
    """``basic_usage.py`` for a script, ``batch/main.py`` for a directory example."""
    return path.relative_to(EXAMPLES_DIR).as_posix()


# Command-line arguments per example (the batch is smaller under test).
ARGS: dict[str, list[str]] = {"batch/main.py": ["--quick"]}

# The last line of durable/main.py: commands that test_durable_example_commands_work runs.
DURABLE_CLI = (
    "  gostage run examples/durable/flow.py:expense_report; gostage runs; gostage show RUN_ID; "
    "gostage resume RUN_ID --data approver=dana --data approved=true; "
    "gostage purge --older-than 7d"
)

EXPECTED: dict[str, list[str]] = {
    "action_wrapping.py": [
        "fetch-customers: attempt 2 failed (connection reset (call 2)); retrying",
        "fetch-customers: succeeded on attempt 3",
        "finders: Timed actions ['fetch-customers', 'normalize'], "
        "actions tagged 'retrying' ['fetch-customers']",
        "customers: ['Ada', 'Grace', 'Linus']",
        "fetch-customers: attempt 3 failed (connection reset (call 3)); giving up",
        "ActionError for action 'fetch-customers' in stage 'sync'",
        "caused by ConnectionError: connection reset (call 3)",
        "timing recorded despite the failure: True",
    ],
    "batch/main.py": [
        "Counting the primes below 200,000 in 8 child processes, at most",
        "slice 2/2,  2,762 primes so far",
        "/16]",
        "All 8 children finished in",
        "primes-07  [  175,000,   200,000)   2,068",
        "primes below 200,000: 17,984 (the largest is 199,999)",
        "an in-process sieve agrees on all 8 ranges: True",
        "8 children, 8 distinct PIDs, none of them the parent: True",
        "peak RSS per child: min",
        "  speedup  ",
    ],
    "basic_usage.py": [
        "log: workflow 'order-A-1001' started",
        "== stage 'price': compute the amounts",
        "log: VAT 13.84, total 79.77",
        "INVOICE A-1001 for ACME Corp (NL)",
        "  less 10% discount             7.32",
        "  total to pay                 79.77",
        "log: workflow 'order-A-1001' completed in",
        "  success     True",
        "  status      completed",
        "  money keys  price.discount, price.subtotal, price.total, price.vat",
        "the customer pays 79.77.",
    ],
    "conditional_execution.py": [
        "decide: slow tests off (2 actions tagged 'slow')",
        "log: skipping disabled stage 'build-docs' of workflow 'release'",
        "log: skipping disabled action 'post-to-chat' in stage 'notify'",
        "ran: lint, unit-tests, push-staging, smoke, write-changelog",
        "ran: lint, unit-tests, integration-tests, browser-tests, render-docs, push-staging, "
        "push-production, write-changelog, post-to-chat",
        "gate: 2 test(s) failed, deployment stages disabled: "
        "['deploy-staging', 'deploy-production']",
        "ran: lint, unit-tests, write-changelog, post-to-chat",
        "stages left disabled: build-docs, deploy-staging, smoke-tests, deploy-production",
    ],
    "durable/main.py": [
        "    manager-approval: no decision yet: suspending the run",
        "execute returned status=suspended, success=False",
        "get_run: status=suspended, reason='manager approval needed', "
        "data={'employee': 'ana', 'amount': 1200.0}",
        "    manager-approval: resumed (ctx.is_resuming=True) with "
        "{'approver': 'dana', 'approved': True}",
        "resume raised ActionError, caused by ConnectionError('payment gateway timed out')",
        "get_run: status=failed, error=\"ActionError: action 'pay-out' in stage 'payment' of "
        "workflow 'expense-report' failed: ConnectionError: payment gateway timed out\"",
        "resume returned status=completed; approved_by='dana', transaction='tx-0001'",
        "calls over execute + 2 resumes: "
        "load-claim 1, check-policy 1, manager-approval 2, pay-out 2, notify 1",
        "action records: load-claim completed, check-policy completed, manager-approval "
        "completed, pay-out failed, pay-out completed, notify completed",
        "    pay-out: paying 80.00 to bo",
        "a child process started a claim and was killed while paying: exit -9",
        "recover() marked it failed: error='abandoned'",
        "resume returned status=completed, paid 80.00",
        "calls in this process: pay-out 1, notify 1 (intake and approval ran in the dead one)",
        "recover() again: []",
        "list_runs(): 2 runs, newest first",
        "get_run(ana's run): workflow_id='expense-report', status=completed, error=None",
        "purge_runs(timedelta(days=7)) deleted 0",
        "delete_run(ana's run): True",
        "purge_runs(0) deleted 1: every finished run",
        "runs left: []",
        DURABLE_CLI,
    ],
    "dynamic_actions.py": [
        "  [process]       verify 4 tiles of panorama.jpg",
        "  [publish] upload 3 thumbnails: cat.jpg, panorama.jpg, dog.png",
        "  [report] summary: 3 thumbnail actions, 2 for large images",
        "Stage order of the run: process -> publish -> report -> archive",
        "The definition is unchanged: stages ['process', 'archive'], 3 actions.",
        "Run succeeded: True",
    ],
    "extended_runner.py": [
        "[inventory] loaded 3 rows on connection #1",
        "Totals: {'report-sales': 30, 'report-inventory': 54, 'report-signups': 42}",
        "Runs: 3; connections borrowed 6 times, created 1",
        "Pool left in any final_store: False",
        "pool closed=True, open connections=0",
        "Running on a closed runner fails: runner is closed; cannot run 'report-late'",
    ],
    "file_processing.py": [
        "discover: 5 files: empty.txt, notes.txt, sales-feb.csv, sales-jan.csv, server.log",
        "count: 13 lines, 30 words; empty files: ['file:empty.txt']",
        "sales: 600 in total over 2 CSV files",
        "reloaded 11 keys, 5 with file metadata",
        "cleanup: removed 6 files and the directory",
        "directory still exists: False",
        "file:sales-jan.csv   tags=file,csv,processed",
        "Cached summary right after the run: '5 files, 13 lines, sales 600'",
        "KeyExpiredError: key 'cache:summary' has expired",
        "get_or_default now gives: 'no summary'",
    ],
    "spawn_middleware/main.py": [
        "before_spawn: greenhouse gets trace-001",
        "  reading t2: 19.25 C (trace-001)",
        "after_spawn: greenhouse ok after",
        "envelope: 9 messages from greenhouse, all in sequence: True",
        "the parent store got the plain values: "
        "{'celsius.t0': 21.5, 'celsius.t1': 22.0, 'celsius.t2': 19.25}",
        "message type 'reading' travels in clear; payload keys ['body', 'hdr']",
        "pid is the child's: True",
        "body is a str of",
        "readable on the wire: False",
        "  reading t1: 11.75 C (trace-002)",
        "after_spawn: cellar failed with ChildActionError after",
        "envelope: 6 messages from cellar, all in sequence: True",
        "spawn raised ChildActionError: action 'read-sensors' in stage 'read' of workflow "
        "'cellar' failed: RuntimeError: sensor bus offline",
        "  reading              5    277",
        "  store_put            5    182",
        "every message passed the tap: True",
    ],
    "spawn_process/main.py": [
        "different processes: True",
        "the child's parent is this process: True",
        "the child saw SpawnOptions.env: GREETING='hello, child'",
        "  part-2.txt: part 2 written by pid <child pid>",
        "every file names the child's pid: True",
        "module global in the parent untouched: TOUCHED_BY=[]",
        "environment of the parent untouched: SET_BY_CHILD in os.environ = False",
        "store writes synced live, in order: "
        "['child.pid', 'child.parent_pid', 'child.greeting', 'files', 'files', 'files']",
        "parent store now: ['child.greeting', 'child.parent_pid', 'child.pid', 'files', 'owner']",
        "] wrote 3 files into gostage-spawn-",
        "log: WARNING [pid ",
        "] record 2 has no date; using today",
        "  error   record 3 rejected (from the child: True)",
        "12 words, longest 'quick', counted in another process: True",
        "run success=True; final store keys: "
        "['summary.longest', 'summary.pid', 'summary.words', 'text']",
        "ChildActionError: exc_type=ValueError, action='fail'",
        "the child's traceback ends with: ValueError: cannot parse record 17",
        "ChildCrashedError: exit_code=7, signal=None",
        "ChildTimeoutError after",
        ") carries on",
    ],
    "middleware_patterns.py": [
        "runner1> runner2> workflow1> workflow2> stage1> stage2> action "
        "<stage2 <stage1 <workflow2 <workflow1 <runner2 <runner1",
        "non-critical failure: success=True, status=completed; later actions ran: False",
        "critical failure still raises ActionError: action 'charge-card'",
        "retrying in 0.010 s",
        "retrying in 0.020 s",
        "succeeded after 3 tries",
        "a ValueError is not in retry_on: failed after 1 try (ValueError)",
        "complete order: shipped to ['1 Main St']",
        "PreconditionError: stage 'ship' needs parcel_id",
        "request_id=req-0042",
        "audit: transform: skipped (disabled)",
        "audit: notify: FAILED (non-critical: chat webhook returned 503)",
        "run success=True",
    ],
}


def test_every_example_has_expected_output() -> None:
    names = {example_id(p) for p in EXAMPLES}
    assert names, "no examples found"
    assert {"basic_usage.py", "batch/main.py"} <= names  # the flagships
    assert names == set(EXPECTED), (
        f"examples without expected output: {sorted(names - set(EXPECTED))}; "
        f"expected output for missing examples: {sorted(set(EXPECTED) - names)}"
    )


def test_every_example_directory_has_a_main() -> None:
    for sub in EXAMPLES_DIR.iterdir():
        if sub.is_dir() and sub.name != "__pycache__":
            assert (sub / "main.py").is_file(), f"examples/{sub.name}/ has no main.py"
    assert set(ARGS) <= set(EXPECTED)


@pytest.mark.parametrize("path", EXAMPLES, ids=[example_id(p) for p in EXAMPLES])
def test_example_runs(path: Path, tmp_path: Path) -> None:
    name = example_id(path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, str(path), *ARGS.get(name, [])],
        cwd=tmp_path,
        env=env,
        timeout=60,
        capture_output=True,
        text=True,
    )
    report = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}\n{report}"
    assert "Traceback" not in proc.stderr, report
    missing = [line for line in EXPECTED.get(name, []) if line not in proc.stdout]
    assert not missing, f"{name} did not print {missing}\n{report}"
    assert list(tmp_path.iterdir()) == [], f"{name} left files in its working directory"


def test_durable_example_commands_work(tmp_path: Path) -> None:
    """The shell commands durable/main.py ends with do what it says, on its flow.py."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["GOSTAGE_DB"] = str(tmp_path / "runs.db")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("EXPENSES_GATEWAY_OUTAGES", None)
    run_id = None
    outputs = []
    for command in DURABLE_CLI.strip().split("; "):
        argv = command.split()
        assert argv[0] == "gostage", command
        if run_id is not None:
            argv = [run_id if arg == "RUN_ID" else arg for arg in argv]
        proc = subprocess.run(
            [sys.executable, "-m", "gostage", *argv[1:]],
            cwd=ROOT,
            env=env,
            timeout=60,
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        outputs.append(proc.stdout)
        if run_id is None:
            run_id = proc.stdout.split("\nrun ", 1)[1].split(":", 1)[0]
    run, runs, show, resume, purge = outputs
    assert f"run {run_id}: suspended" in run and "suspended: manager approval needed" in run
    assert f"{run_id}  expense-report    suspended" in runs
    assert "status    suspended" in show and "intake/check-policy  completed" in show
    assert f"run {run_id}: completed" in resume
    assert "approver': 'dana', 'approved': True}" in resume
    assert "purged 0 run(s)" in purge
