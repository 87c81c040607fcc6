""":class:`SQLiteRunStore`: runs in one SQLite file, shared safely by threads and processes.

Layout (schema version 1)::

    schema_version(version)                      one row
    runs(run_id PK, workflow_id, status, error, created_at, updated_at, definition,
         owner_pid, owner_started, suspend_reason, suspend_data)
    actions(run_id, seq, stage_id, action_index, action_name, status, error, finished_at)
         primary key (run_id, seq)
    checkpoints(run_id PK, stage_index, action_index, plan, store)    latest one per run

JSON documents are TEXT (``json.dumps``). Checkpoints have their own table so that the
store document, the biggest thing kept, is not read by :meth:`~SQLiteRunStore.get_run` or
:meth:`~SQLiteRunStore.list_runs`. Child rows are deleted explicitly in the transaction
that deletes their run (no reliance on ``PRAGMA foreign_keys``, which every connection
would have to turn on, other tools included).

``sqlite3`` is imported when the first store is opened, not with the package: that keeps
``import gostage`` about 5 ms cheaper for programs that never persist a run.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ._base import (
    FINISHED_STATUSES,
    RunStore,
    check_action,
    check_checkpoint,
    check_page,
    check_record,
    check_suspend_args,
    check_transition,
    dumps,
    loads,
    older_than_seconds,
    status_set,
)
from ._errors import PersistenceError, RunNotFoundError
from ._records import ActionRecord, Checkpoint, RunRecord, to_run_status

if TYPE_CHECKING:
    import sqlite3
    from datetime import timedelta

    from gostage._runner import RunStatus

__all__ = ["SCHEMA_VERSION", "SQLiteRunStore"]

_T = TypeVar("_T")

SCHEMA_VERSION = 1
"""The schema version this gostage writes and reads."""

# "GSTG": written to the file header (PRAGMA application_id) so tools like `file` and
# gostage itself can tell a gostage run database from another application's.
_APPLICATION_ID = 0x47535447

_TABLES = ("schema_version", "runs", "actions", "checkpoints")

_SCHEMA = f"""
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES ({SCHEMA_VERSION});
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY NOT NULL,
    workflow_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    definition TEXT,
    owner_pid INTEGER,
    owner_started REAL,
    suspend_reason TEXT,
    suspend_data TEXT
);
CREATE INDEX runs_by_created ON runs (created_at DESC, run_id DESC);
CREATE INDEX runs_by_workflow ON runs (workflow_id, created_at DESC, run_id DESC);
CREATE INDEX runs_by_status ON runs (status, created_at DESC, run_id DESC);
CREATE INDEX runs_by_updated ON runs (updated_at);
CREATE TABLE actions (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    stage_id TEXT NOT NULL,
    action_index INTEGER NOT NULL,
    action_name TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    finished_at REAL NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE checkpoints (
    run_id TEXT PRIMARY KEY NOT NULL,
    stage_index INTEGER NOT NULL,
    action_index INTEGER NOT NULL,
    plan TEXT NOT NULL,
    store TEXT NOT NULL
);
PRAGMA application_id = {_APPLICATION_ID};
"""

_RUN_COLUMNS = (
    "run_id, workflow_id, status, error, created_at, updated_at, definition, "
    "owner_pid, owner_started, suspend_reason, suspend_data"
)
_ACTION_COLUMNS = "run_id, seq, stage_id, action_index, action_name, status, error, finished_at"

# Backstop for SQLITE_BUSY returned without waiting (busy_timeout covers ordinary lock
# waits): retry the whole transaction this many times, sleeping about 50 ms, 100 ms, ...
_ATTEMPTS = 6
_BACKOFF = 0.05

# Connections inherited over fork() are parked here and never used or closed: SQLite
# must not touch a connection opened by the parent (closing it could drop the parent's
# locks on the file).
_inherited: list[object] = []


def _row_to_run(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        workflow_id=row[1],
        status=row[2],
        error=row[3],
        created_at=row[4],
        updated_at=row[5],
        definition=loads(row[6]),
        owner_pid=row[7],
        owner_started=row[8],
        suspend_reason=row[9],
        suspend_data=loads(row[10]),
    )


def _row_to_action(row: tuple[Any, ...]) -> ActionRecord:
    return ActionRecord(*row)


def _is_busy(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class SQLiteRunStore(RunStore):
    """A :class:`RunStore` in an SQLite file that several threads and processes share.

    Opening a path that does not exist, or an empty SQLite file, creates the schema.
    Opening anything else checks it first and changes nothing if it is not a gostage run
    database (another application's SQLite file, or not SQLite at all) or was written by a
    newer gostage: :class:`PersistenceError`. The database runs in WAL mode (readers do
    not block the writer) with ``synchronous=NORMAL`` (a committed run survives a crash of
    the process; a power cut may lose the last transactions, never corrupt the file).

    Writes are ``BEGIN IMMEDIATE`` transactions, so concurrent writers from other
    processes queue for up to *timeout* seconds instead of failing with "database is
    locked"; a transaction that still meets a busy database is retried a few times with
    backoff. Every SQLite error comes out as :class:`PersistenceError` (chained), after
    its transaction was rolled back.

    Threads: the store holds one connection, used under a lock. SQLite lets one writer
    in at a time per file anyway, so a connection per thread would only let reads run
    side by side, and those are short here; one connection can be closed by
    :meth:`close` from any thread, where per-thread connections would linger until their
    threads end. After ``fork()`` the child opens its own connection on first use.

    :param path: the database file (``":memory:"`` for a private in-memory database).
    :param timeout: seconds a write waits for another writer before failing.
    :param clock: returns "now" in epoch seconds for ``updated_at`` and
        :meth:`purge_runs` (default ``time.time``); tests pass a fake one.
    :raises PersistenceError: the file cannot be opened or is not a gostage run database.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not timeout >= 0:
            raise ValueError(f"timeout must be >= 0 seconds, got {timeout!r}")
        self.path: str = os.fspath(path)
        """The database file, as given."""
        self._timeout = timeout
        self._clock: Callable[[], float] = clock if clock is not None else time.time
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = self._open()

    def __repr__(self) -> str:
        return f"SQLiteRunStore({self.path!r}){' (closed)' if self._closed else ''}"

    # --- connection and schema --------------------------------------------------------

    def _error(self, doing: str, exc: BaseException) -> PersistenceError:
        return PersistenceError(
            f"run database {self.path!r}: {doing} failed: {exc}", path=self.path
        )

    def _not_ours(self, why: str) -> PersistenceError:
        return PersistenceError(
            f"{self.path!r} is not a gostage run database ({why}); it was left unchanged. "
            "Pass the path of a gostage run database, or a new path to create one",
            path=self.path,
        )

    def _open(self) -> sqlite3.Connection:
        import sqlite3

        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._timeout,
                isolation_level=None,  # we issue BEGIN / COMMIT ourselves
                check_same_thread=False,  # used by any thread, under self._lock
            )
        except sqlite3.Error as exc:
            raise PersistenceError(
                f"cannot open run database {self.path!r}: {exc}; check that its directory "
                "exists and is writable",
                path=self.path,
            ) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            self._prepare(conn)
            # Only now, with the file known to be ours: these may write to it.
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
                exc, sqlite3.OperationalError
            ):
                raise self._not_ours(f"not an SQLite database, or a damaged one: {exc}") from exc
            if isinstance(exc, sqlite3.Error):
                raise self._error("opening", exc) from exc
            raise
        return conn

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Check the schema; create it if the database is empty. Reads before it writes."""
        names = self._retry(lambda: self._names(conn))
        if not names:
            self._transaction(conn, self._create_if_empty, write=True)
        else:
            self._transaction(conn, self._check_schema, write=False)

    @staticmethod
    def _names(conn: sqlite3.Connection) -> set[str]:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}

    def _create_if_empty(self, conn: sqlite3.Connection) -> None:
        if self._names(conn):  # another process created it between our look and our lock
            self._check_schema(conn)
            return
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        names = self._names(conn)
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if "schema_version" not in names or app_id not in (0, _APPLICATION_ID):
            tables = ", ".join(sorted(names)) or "none"
            raise self._not_ours(f"it holds other tables: {tables}")
        rows = conn.execute("SELECT version FROM schema_version").fetchall()
        if len(rows) != 1 or not isinstance(rows[0][0], int):
            raise self._not_ours("its schema_version table does not hold one version number")
        version = rows[0][0]
        if version > SCHEMA_VERSION:
            raise PersistenceError(
                f"run database {self.path!r} has schema version {version}, newer than the "
                f"{SCHEMA_VERSION} this gostage knows; upgrade gostage to open it "
                "(it was left unchanged)",
                path=self.path,
            )
        missing = [t for t in _TABLES if t not in names]
        if version < 1 or missing:
            raise PersistenceError(
                f"run database {self.path!r} is damaged (schema version {version}, missing "
                f"tables: {', '.join(missing) or 'none'}); it was left unchanged",
                path=self.path,
            )

    def _connection(self) -> sqlite3.Connection:
        """The open connection (call under ``self._lock``); a forked child opens its own."""
        if self._closed:
            raise PersistenceError(
                f"SQLiteRunStore({self.path!r}) is closed; open a new store", path=self.path
            )
        if os.getpid() != self._pid:
            if self._conn is not None:
                _inherited.append(self._conn)
            self._conn = None
            self._pid = os.getpid()
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    # --- transactions -----------------------------------------------------------------

    def _retry(self, fn: Callable[[], _T]) -> _T:
        """Call *fn*, again after a short sleep while SQLite reports the database busy."""
        import sqlite3

        for attempt in range(_ATTEMPTS):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if attempt == _ATTEMPTS - 1 or not _is_busy(exc):
                    raise
            time.sleep(_BACKOFF * 2**attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover

    def _transaction(
        self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], _T], *, write: bool
    ) -> _T:
        """Run *fn* in one transaction: all of it is committed, or none of it."""
        import sqlite3

        def attempt() -> _T:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the original error says more
                raise
            return result

        return self._retry(attempt)

    def _run(self, doing: str, fn: Callable[[sqlite3.Connection], _T], *, write: bool) -> _T:
        """Run *fn* in a transaction on the store's connection; SQLite errors become
        :class:`PersistenceError`."""
        import sqlite3

        with self._lock:
            conn = self._connection()
            try:
                return self._transaction(conn, fn, write=write)
            except sqlite3.Error as exc:
                raise self._error(doing, exc) from exc

    def _require_run(self, conn: sqlite3.Connection, run_id: str) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            raise RunNotFoundError(run_id, where=f"run database {self.path!r}", path=self.path)

    def _fetch_run(self, conn: sqlite3.Connection, run_id: str) -> RunRecord:
        row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,))
        found = row.fetchone()
        if found is None:
            raise RunNotFoundError(run_id, where=f"run database {self.path!r}", path=self.path)
        return _row_to_run(found)

    # --- the RunStore interface -------------------------------------------------------

    def create_run(self, record: RunRecord) -> None:
        """Store a new run as given. See :meth:`RunStore.create_run`."""
        import sqlite3

        check_record(record)
        values = (
            record.run_id,
            record.workflow_id,
            record.status.value,
            record.error,
            record.created_at,
            record.updated_at,
            dumps(record.definition, "definition", record.run_id),
            record.owner_pid,
            record.owner_started,
            record.suspend_reason,
            dumps(record.suspend_data, "suspend_data", record.run_id),
        )

        def insert(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({_marks(11)})", values)
            except sqlite3.IntegrityError as exc:
                if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (record.run_id,)).fetchone():
                    raise PersistenceError(
                        f"a run with id {record.run_id!r} already exists in run database "
                        f"{self.path!r}; give each run a new id",
                        path=self.path,
                    ) from exc
                raise

        self._run("creating run", insert, write=True)

    def set_status(
        self,
        run_id: str,
        status: RunStatus | str,
        *,
        error: str | None = None,
        owner_pid: int | None = None,
        owner_started: float | None = None,
        suspend_reason: str | None = None,
        suspend_data: dict[str, Any] | None = None,
        expect: RunStatus | str | Iterable[RunStatus | str] | None = None,
    ) -> RunRecord:
        """Change the run's status. See :meth:`RunStore.set_status`."""

        new = to_run_status(status)
        check_suspend_args(new, suspend_reason, suspend_data)
        encoded = dumps(suspend_data, "suspend_data", run_id)

        def update(conn: sqlite3.Connection) -> RunRecord:
            current = self._fetch_run(conn, run_id)
            check_transition(run_id, current.status, new, expect, self.path)
            now = self._clock()
            conn.execute(
                "UPDATE runs SET status = ?, error = ?, updated_at = ?, owner_pid = ?, "
                "owner_started = ?, suspend_reason = ?, suspend_data = ? WHERE run_id = ?",
                (new.value, error, now, owner_pid, owner_started, suspend_reason, encoded, run_id),
            )
            return self._fetch_run(conn, run_id)

        return self._run("setting run status", update, write=True)

    def record_action(
        self, run_id: str, action: ActionRecord, checkpoint: Checkpoint | None
    ) -> None:
        """Add an action record and checkpoint. See :meth:`RunStore.record_action`."""
        import sqlite3

        check_action(run_id, action)
        check_checkpoint(checkpoint)
        saved = None
        if checkpoint is not None:
            saved = (
                run_id,
                checkpoint.stage_index,
                checkpoint.action_index,
                dumps(checkpoint.plan, "checkpoint plan", run_id),
                dumps(checkpoint.store, "checkpoint store", run_id),
            )
        values = (
            action.run_id,
            action.seq,
            action.stage_id,
            action.action_index,
            action.action_name,
            action.status,
            action.error,
            action.finished_at,
        )

        def write(conn: sqlite3.Connection) -> None:
            self._require_run(conn, run_id)
            try:
                conn.execute(
                    f"INSERT INTO actions ({_ACTION_COLUMNS}) VALUES ({_marks(8)})", values
                )
            except sqlite3.IntegrityError as exc:
                raise PersistenceError(
                    f"run {run_id!r} already has an action record with seq {action.seq}; "
                    "number a run's action records 1, 2, 3... without repeats",
                    path=self.path,
                ) from exc
            if saved is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO checkpoints "
                    "(run_id, stage_index, action_index, plan, store) VALUES (?, ?, ?, ?, ?)",
                    saved,
                )
            conn.execute("UPDATE runs SET updated_at = ? WHERE run_id = ?", (self._clock(), run_id))

        self._run("recording an action", write, write=True)

    def get_run(self, run_id: str) -> RunRecord:
        """Return the run's record. See :meth:`RunStore.get_run`."""
        return self._run("reading a run", lambda conn: self._fetch_run(conn, run_id), write=False)

    def get_checkpoint(self, run_id: str) -> Checkpoint | None:
        """Return the run's latest checkpoint. See :meth:`RunStore.get_checkpoint`."""

        def read(conn: sqlite3.Connection) -> Checkpoint | None:
            self._require_run(conn, run_id)
            row = conn.execute(
                "SELECT stage_index, action_index, plan, store FROM checkpoints WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                return None
            return Checkpoint(row[0], row[1], loads(row[2]), loads(row[3]))

        return self._run("reading a checkpoint", read, write=False)

    def list_actions(self, run_id: str) -> list[ActionRecord]:
        """Return the run's action records by seq. See :meth:`RunStore.list_actions`."""

        def read(conn: sqlite3.Connection) -> list[ActionRecord]:
            self._require_run(conn, run_id)
            rows = conn.execute(
                f"SELECT {_ACTION_COLUMNS} FROM actions WHERE run_id = ? ORDER BY seq",
                (run_id,),
            )
            return [_row_to_action(row) for row in rows]

        return self._run("listing actions", read, write=False)

    def list_runs(
        self,
        status: RunStatus | str | None = None,
        workflow_id: str | None = None,
        limit: int | None = 50,
        offset: int = 0,
    ) -> list[RunRecord]:
        """Return runs newest first. See :meth:`RunStore.list_runs`."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(to_run_status(status).value)
        if workflow_id is not None:
            where.append("workflow_id = ?")
            params.append(workflow_id)
        check_page(limit, offset)
        params += [-1 if limit is None else limit, offset]
        sql = (
            f"SELECT {_RUN_COLUMNS} FROM runs"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY created_at DESC, run_id DESC LIMIT ? OFFSET ?"
        )
        return self._run(
            "listing runs",
            lambda conn: [_row_to_run(row) for row in conn.execute(sql, params)],
            write=False,
        )

    def delete_run(self, run_id: str) -> bool:
        """Delete the run. See :meth:`RunStore.delete_run`."""

        def delete(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM actions WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM checkpoints WHERE run_id = ?", (run_id,))
            return conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0

        return self._run("deleting a run", delete, write=True)

    def purge_runs(
        self,
        older_than: float | timedelta,
        *,
        statuses: Iterable[RunStatus | str] = FINISHED_STATUSES,
    ) -> int:
        """Delete old runs in the given statuses. See :meth:`RunStore.purge_runs`."""
        seconds = older_than_seconds(older_than)
        wanted = sorted(s.value for s in status_set(statuses))

        def purge(conn: sqlite3.Connection) -> int:
            cutoff = self._clock() - seconds
            doomed = (
                f"SELECT run_id FROM runs WHERE updated_at < ? "
                f"AND status IN ({_marks(len(wanted))})"
            )
            params = (cutoff, *wanted)
            conn.execute(f"DELETE FROM actions WHERE run_id IN ({doomed})", params)
            conn.execute(f"DELETE FROM checkpoints WHERE run_id IN ({doomed})", params)
            return conn.execute(f"DELETE FROM runs WHERE run_id IN ({doomed})", params).rowcount

        return self._run("purging runs", purge, write=True)

    def close(self) -> None:
        """Close the connection; later calls raise :class:`PersistenceError`. Idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            self._closed = True
            if conn is not None:
                if os.getpid() == self._pid:
                    conn.close()
                else:
                    _inherited.append(conn)  # the parent's: leave it alone


def _marks(n: int) -> str:
    return ", ".join("?" * n)
