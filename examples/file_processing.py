"""File processing with state in the store: discover, count, summarize, checkpoint, clean up.

The example creates its own temporary directory with a few input files, then runs
a workflow over it:

* ``discover`` records every file in the store under ``file:<name>``, with
  metadata: tags (``file`` plus its kind, ``csv``/``text``/``log``) and properties
  (size, suffix);
* ``process`` counts lines and words per file, tags empty files ``empty`` and
  processed ones ``processed``, totals the sales in the CSV files (found with
  ``find_keys_by_all_tags``) and caches a summary with a time-to-live
  (``put_with_ttl``);
* ``checkpoint`` saves the store to a JSON file with ``export_state()`` and reads it
  back with ``Store.import_state``: values, metadata and TTLs survive;
* ``cleanup`` deletes the directory.

After the run the cached summary expires and reading it raises ``KeyExpiredError``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import gostage
from gostage import ActionContext, KeyExpiredError, Metadata, Stage, Store, Workflow

INPUTS = {
    "sales-jan.csv": "day,amount\n1,120\n2,80\n3,200\n",
    "sales-feb.csv": "day,amount\n1,90\n2,110\n",
    "notes.txt": "remember to back up the sales files\nand rotate the server log\n",
    "server.log": "INFO start\nWARN disk 80% full\nINFO request ok\nERROR timeout\n",
    "empty.txt": "",
}
KINDS = {".csv": "csv", ".txt": "text", ".log": "log"}
SUMMARY_TTL = 0.5  # seconds the cached summary stays valid


@gostage.action(name="discover-files", tags=("io",))
def discover_files(ctx: ActionContext) -> None:
    """Record every file of the work directory in the store, with tags and properties."""
    workdir = Path(ctx.store.get("workdir", str))
    for path in sorted(workdir.iterdir()):
        kind = KINDS.get(path.suffix, "other")
        meta = Metadata(
            tags=("file", kind),
            properties={"bytes": path.stat().st_size, "suffix": path.suffix},
            description=f"input file {path.name}",
        )
        ctx.store.put_with_metadata(f"file:{path.name}", str(path), meta)
    found = ctx.store.find_keys_by_tag("file")
    ctx.store.put("files.found", len(found))
    print(f"  discover: {len(found)} files: {', '.join(k.removeprefix('file:') for k in found)}")


@gostage.action(name="count-lines", tags=("io",))
def count_lines(ctx: ActionContext) -> None:
    """Count lines and words of each file; tag the key ``processed`` or ``empty``."""
    store = ctx.store
    for key in store.find_keys_by_tag("file"):
        text = Path(store.get(key, str)).read_text()
        lines, words = len(text.splitlines()), len(text.split())
        store.set_property(key, "lines", lines)
        store.set_property(key, "words", words)
        store.add_tag(key, "processed" if lines else "empty")
        store.put("count.lines", store.get_or_default("count.lines", 0) + lines)
        store.put("count.words", store.get_or_default("count.words", 0) + words)
    print(
        f"  count: {store.get('count.lines', int)} lines, {store.get('count.words', int)} words; "
        f"empty files: {store.find_keys_by_tag('empty')}"
    )


@gostage.action(name="total-sales", tags=("io", "csv"))
def total_sales(ctx: ActionContext) -> None:
    """Sum the amount column of every CSV file."""
    store = ctx.store
    total = 0
    csv_keys = store.find_keys_by_all_tags(["file", "csv"])
    for key in csv_keys:
        rows = Path(store.get(key, str)).read_text().splitlines()[1:]
        total += sum(int(row.split(",")[1]) for row in rows)
    store.put("sales.total", total)
    print(f"  sales: {total} in total over {len(csv_keys)} CSV files")


@gostage.action(name="cache-summary")
def cache_summary(ctx: ActionContext) -> None:
    """Cache a summary line for a short while (a TTL'd entry)."""
    store = ctx.store
    summary = (
        f"{store.get('files.found', int)} files, {store.get('count.lines', int)} lines, "
        f"sales {store.get('sales.total', int)}"
    )
    store.put_with_ttl("cache:summary", summary, SUMMARY_TTL)
    print(f"  cache: {summary!r} cached for {SUMMARY_TTL} s")


@gostage.action(name="checkpoint")
def checkpoint(ctx: ActionContext) -> None:
    """Save the store to JSON and load it back: values, metadata and TTLs round-trip."""
    state_file = Path(ctx.store.get("workdir", str)) / "state.json"
    state_file.write_text(json.dumps(ctx.store.export_state()))
    restored = Store.import_state(json.loads(state_file.read_text()))
    assert restored.to_dict() == ctx.store.to_dict()
    assert restored.find_keys_by_tag("processed") == ctx.store.find_keys_by_tag("processed")
    print(
        f"  checkpoint: {state_file.stat().st_size} bytes of JSON; reloaded "
        f"{restored.count()} keys, {len(restored.find_keys_by_tag('file'))} with file metadata"
    )


@gostage.action(name="remove-workdir", tags=("cleanup",))
def remove_workdir(ctx: ActionContext) -> None:
    workdir = Path(ctx.store.get("workdir", str))
    files = len(list(workdir.iterdir()))
    shutil.rmtree(workdir)
    ctx.store.put("cleanup.removed_files", files)
    print(f"  cleanup: removed {files} files and the directory")


def build_workflow(workdir: Path) -> Workflow:
    workflow = Workflow("file-processing", description="count and summarize files")
    workflow.store.put("workdir", str(workdir))
    workflow.add_stage(Stage("discover").add_action(discover_files))
    workflow.add_stage(
        Stage("process").add_action(count_lines).add_action(total_sales).add_action(cache_summary)
    )
    workflow.add_stage(Stage("checkpoint").add_action(checkpoint))
    workflow.add_stage(Stage("cleanup", tags=("cleanup",)).add_action(remove_workdir))
    return workflow


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="gostage-files-"))
    try:
        for name, text in INPUTS.items():
            (workdir / name).write_text(text)
        print(f"Created {len(INPUTS)} input files in a temporary directory.")
        workflow = build_workflow(workdir)
        result = gostage.Runner(logger=gostage.NullLogger()).execute(workflow)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # in case the workflow failed early

    store = workflow.store
    print(f"Run finished: success={result.success}, directory still exists: {workdir.exists()}")
    print("Per-file metadata kept in the store:")
    for key in store.find_keys_by_tag("file"):
        meta = store.get_metadata(key)
        print(f"  {key:<20} tags={','.join(meta.tags):<22} lines={meta.get_property('lines')}")
    print(f"Cached summary right after the run: {store.get('cache:summary', str)!r}")
    time.sleep(SUMMARY_TTL + 0.05)
    try:
        store.get("cache:summary")
    except KeyExpiredError as exc:
        print(f"After {SUMMARY_TTL} s: KeyExpiredError: {exc}")
    print(f"get_or_default now gives: {store.get_or_default('cache:summary', 'no summary')!r}")


if __name__ == "__main__":
    main()
