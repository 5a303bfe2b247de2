"""SQLite inventory: table ``attachments``, one row per task_id, upserted in batches.

Upserts are idempotent and order-tolerant: a ``success`` row is never
replaced by a failure (a duplicate delivery of an earlier attempt), and
among failures the most recently completed one wins. WAL mode and a busy
timeout let several results processes and readers share the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

from kafkapipe.messages import DownloadResult, format_ts, utcnow

COLUMNS = (
    "task_id", "trace_id", "attachment_url", "blob_path", "status", "attempt", "http_status", "bytes",
    "sha256", "content_type", "file_type", "error_category", "error_message", "completed_at", "updated_at",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS attachments (
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
);
CREATE INDEX IF NOT EXISTS attachments_trace ON attachments (trace_id);
CREATE INDEX IF NOT EXISTS attachments_status ON attachments (status);
"""

UPSERT = f"""
INSERT INTO attachments ({", ".join(COLUMNS)}) VALUES ({", ".join("?" for _ in COLUMNS)})
ON CONFLICT (task_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c != "task_id")}
WHERE attachments.status != 'success'
  AND (excluded.status = 'success' OR excluded.completed_at >= attachments.completed_at)
"""


class SqliteInventory:
    def __init__(self, path: str | Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def upsert(self, results: Iterable[DownloadResult]) -> int:
        """Write a batch in one transaction; returns the number of rows given."""
        now = format_ts(utcnow())
        rows = [_row(r, now) for r in results]
        if not rows:
            return 0
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(UPSERT, rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return len(rows)

    def get(self, task_id: str) -> dict | None:
        cur = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM attachments WHERE task_id = ?", (task_id,))
        row = cur.fetchone()
        return dict(zip(COLUMNS, row, strict=True)) if row else None

    def summary(self) -> dict[str, int]:
        cur = self._db.execute("SELECT status, COUNT(*) FROM attachments GROUP BY status")
        return dict(cur.fetchall())

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._db.execute("SELECT COUNT(*) FROM attachments").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM attachments WHERE status = ?", (status,)).fetchone()[0]

    def rows(self) -> list[dict]:
        cur = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM attachments ORDER BY completed_at")
        return [dict(zip(COLUMNS, row, strict=True)) for row in cur.fetchall()]

    def close(self) -> None:
        self._db.close()


def _row(result: DownloadResult, now: str) -> tuple:
    values = {
        "task_id": result.task_id,
        "trace_id": result.trace_id,
        "attachment_url": result.attachment_url,
        "blob_path": result.blob_path,
        "status": result.status,
        "attempt": result.attempt,
        "http_status": result.http_status,
        "bytes": result.bytes,
        "sha256": result.sha256,
        "content_type": result.content_type,
        "file_type": result.file_type,
        "error_category": result.error_category,
        "error_message": result.error_message,
        "completed_at": format_ts(result.completed_at),
        "updated_at": now,
    }
    return tuple(values[c] for c in COLUMNS)
