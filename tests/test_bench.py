"""The benchmark script runs (quick mode) and writes the documented JSON rows.

No timing is asserted: speed is measured by tools/bench.py, not tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "tools" / "bench.py"


@pytest.mark.timeout(120)
def test_bench_quick_writes_rows(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert rows, "no benchmark rows"
    for row in rows:
        assert set(row) == {
            "case",
            "size",
            "gostage_s",
            "baseline_s",
            "ratio",
            "target",
            "gostage_cpu_s",
            "gostage_children_cpu_s",
            "baseline_cpu_s",
            "baseline_children_cpu_s",
        }
        assert row["gostage_s"] > 0 and row["baseline_s"] > 0
        assert all(row[k] >= 0 for k in row if k.endswith("cpu_s"))
        assert row["ratio"] == pytest.approx(row["gostage_s"] / row["baseline_s"])
        assert row["case"] in proc.stdout
