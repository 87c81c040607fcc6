"""Every script in examples/ runs, exits 0 and prints what it is meant to show.

Examples are discovered by glob, so a new one is tested as soon as it exists; it
must also get an entry in ``EXPECTED`` (a few lines its output must contain), so a
broken example that still exits 0 cannot pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))

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
    names = {p.name for p in EXAMPLES}
    assert names, "no examples found"
    assert "basic_usage.py" in names  # ./tools/demo runs it
    assert names == set(EXPECTED), (
        f"examples without expected output: {sorted(names - set(EXPECTED))}; "
        f"expected output for missing examples: {sorted(set(EXPECTED) - names)}"
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        timeout=60,
        capture_output=True,
        text=True,
    )
    report = f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, f"{path.name} exited with {proc.returncode}\n{report}"
    assert "Traceback" not in proc.stderr, report
    missing = [line for line in EXPECTED.get(path.name, []) if line not in proc.stdout]
    assert not missing, f"{path.name} did not print {missing}\n{report}"
    assert list(tmp_path.iterdir()) == [], f"{path.name} left files in its working directory"
