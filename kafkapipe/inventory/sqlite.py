"""SQLite inventory: table ``attachments`` in one file, for a results stage on one VM.

WAL mode and a busy timeout let several results processes and readers share the file;
``BEGIN IMMEDIATE`` serialises the writers. One connection per object, shared by its threads
under a lock (a download thread pool asking :meth:`lookup` must not interleave with a batch's
transaction). ``secure_delete`` overwrites what an update
replaces, so a value removed by a migration does not linger in free pages.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from kafkapipe.inventory.base import InventoryUnavailable, mismatch
from kafkapipe.inventory.records import COLUMNS, InventoryRow, row_values, stored_url, url_sha256
from kafkapipe.log import scrub
from kafkapipe.messages import DownloadResult, format_ts, utcnow

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS inventory_schema (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)
"""

# Version 1 is the schema of files written before versioning: a file with the table and no
# version table is at version 1.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE attachments (
            task_id TEXT PRIMARY KEY,
            trace_id TEXT NOT NULL,
            attachment_url TEXT NOT NULL,
            blob_path TEXT NOT NULL,
            status TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            http_status INTEGER,
            bytes INTEGER,
            sha256 TEXT,
            content_type TEXT,
            file_type TEXT,
            error_category TEXT,
            error_message TEXT,
            completed_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX attachments_trace ON attachments (trace_id)",
        "CREATE INDEX attachments_status ON attachments (status)",
    ],
    # URLs without their query (presigned signatures are credentials) plus the full URL's hash.
    2: [
        "ALTER TABLE attachments ADD COLUMN url_sha256 TEXT NOT NULL DEFAULT ''",
        """UPDATE attachments SET url_sha256 = kp_url_sha256(attachment_url),
                                  attachment_url = kp_stored_url(attachment_url),
                                  error_message = kp_scrub(error_message)""",
        "CREATE INDEX attachments_url ON attachments (url_sha256)",
        "CREATE INDEX attachments_updated ON attachments (updated_at, task_id)",
    ],
}
LATEST = max(MIGRATIONS)

UPSERT = f"""
INSERT INTO attachments ({", ".join(COLUMNS)}) VALUES ({", ".join("?" for _ in COLUMNS)})
ON CONFLICT (task_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "task_id")}
WHERE attachments.status != 'success'
  AND (excluded.status = 'success' OR excluded.completed_at >= attachments.completed_at)
"""
SELECT = f"SELECT {', '.join(COLUMNS)} FROM attachments"


def _locked(method):
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return call


class SqliteInventory:
    backend = "sqlite"

    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.create_function("kp_url_sha256", 1, url_sha256, deterministic=True)
        self._db.create_function("kp_stored_url", 1, stored_url, deterministic=True)
        self._db.create_function("kp_scrub", 1, lambda t: scrub(t) if t else t, deterministic=True)
        if self.schema_version() == 0:  # a new file: nothing to coordinate with, create it
            self.migrate()

    # ------------------------------------------------------------------ schema
    @_locked
    def schema_version(self) -> int:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "inventory_schema" in tables:
            return self._db.execute("SELECT COALESCE(MAX(version), 0) FROM inventory_schema").fetchone()[0]
        return 1 if "attachments" in tables else 0

    @_locked
    def check_schema(self) -> None:
        found = self.schema_version()
        if found != LATEST:
            raise mismatch(self.backend, found, LATEST)

    @_locked
    def migrate(self) -> list[int]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            found = self.schema_version()
            if found > LATEST:
                raise mismatch(self.backend, found, LATEST)
            self._db.execute(VERSION_TABLE)
            applied = []
            for version in range(found + 1, LATEST + 1):
                for statement in MIGRATIONS[version]:
                    self._db.execute(statement)
                applied.append(version)
            for version in range(1, LATEST + 1):
                self._db.execute("INSERT OR IGNORE INTO inventory_schema VALUES (?, ?)", (version, _now()))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        if applied and found > 0:
            # Rewrite the file so nothing a migration replaced survives in it or in the WAL.
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return applied

    # ------------------------------------------------------------------ writing
    @_locked
    def upsert(self, results: Iterable[DownloadResult]) -> int:
        now = _now()
        rows = [_params(r, now) for r in results]
        if not rows:
            return 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # locked past the busy timeout
            raise InventoryUnavailable(f"sqlite: {exc}") from exc
        try:
            self._db.executemany(UPSERT, rows)
        except sqlite3.OperationalError as exc:  # disk full, I/O error: the batch is retried whole
            self._db.execute("ROLLBACK")
            raise InventoryUnavailable(f"sqlite: {exc}") from exc
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return len(rows)

    # ------------------------------------------------------------------ reading
    @_locked
    def lookup(self, task_id: str) -> InventoryRow | None:
        row = self._db.execute(f"{SELECT} WHERE task_id = ?", (task_id,)).fetchone()
        return _row(row) if row else None

    @_locked
    def by_trace(self, trace_id: str) -> list[InventoryRow]:
        cur = self._db.execute(f"{SELECT} WHERE trace_id = ? ORDER BY completed_at, task_id", (trace_id,))
        return [_row(r) for r in cur.fetchall()]

    @_locked
    def summary(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, COUNT(*) FROM attachments GROUP BY status").fetchall())

    @_locked
    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._db.execute("SELECT COUNT(*) FROM attachments").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM attachments WHERE status = ?", (status,)).fetchone()[0]

    @_locked
    def changed_since(self, since: datetime | None, after_task_id: str = "", limit: int = 10_000) -> list[InventoryRow]:
        key = (format_ts(since) if since else "", after_task_id)
        cur = self._db.execute(
            f"{SELECT} WHERE (updated_at, task_id) > (?, ?) ORDER BY updated_at, task_id LIMIT ?", (*key, limit)
        )
        return [_row(r) for r in cur.fetchall()]

    @_locked
    def close(self) -> None:
        self._db.close()


def _now() -> str:
    return format_ts(utcnow())


def _params(result: DownloadResult, now: str) -> tuple:
    values = row_values(result)
    values["completed_at"] = format_ts(values["completed_at"])
    values["updated_at"] = now
    return tuple(values[c] for c in COLUMNS)


def _row(values: tuple) -> InventoryRow:
    data = dict(zip(COLUMNS, values, strict=True))
    data["completed_at"] = datetime.fromisoformat(data["completed_at"])
    data["updated_at"] = datetime.fromisoformat(data["updated_at"])
    return InventoryRow(**data)
