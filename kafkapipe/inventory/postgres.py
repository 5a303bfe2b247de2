"""PostgreSQL inventory: one table shared by results workers (and readers) on several VMs.

The upsert rule lives in the statement (``ON CONFLICT … DO UPDATE … WHERE``), so concurrent
writers need no read-then-write. Each batch sorts its rows by ``task_id``: writers then lock
rows in one order and two overlapping batches cannot deadlock. ``updated_at`` comes from the
server's clock, one clock for every writer (the export's watermark relies on it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from kafkapipe.inventory.base import InventoryUnavailable, mismatch
from kafkapipe.inventory.records import COLUMNS, InventoryRow, row_values
from kafkapipe.log import scrub
from kafkapipe.messages import DownloadResult

# Any fixed number: serialises concurrent `inventory migrate` runs.
MIGRATION_LOCK = 0x6B61666B61

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE attachments (
            task_id text PRIMARY KEY,
            trace_id text NOT NULL,
            attachment_url text NOT NULL,
            url_sha256 text NOT NULL,
            blob_path text NOT NULL,
            status text NOT NULL,
            attempt integer NOT NULL,
            http_status integer,
            bytes bigint,
            sha256 text,
            content_type text,
            file_type text,
            error_category text,
            error_message text,
            completed_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL
        )""",
        "CREATE INDEX attachments_trace ON attachments (trace_id)",
        "CREATE INDEX attachments_status ON attachments (status)",
        "CREATE INDEX attachments_url ON attachments (url_sha256)",
        "CREATE INDEX attachments_updated ON attachments (updated_at, task_id)",
    ],
}
LATEST = max(MIGRATIONS)

_WRITTEN = [c for c in COLUMNS if c != "updated_at"]
UPSERT = f"""
INSERT INTO attachments ({", ".join(_WRITTEN)}, updated_at) VALUES ({", ".join("%s" for _ in _WRITTEN)}, now())
ON CONFLICT (task_id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c != "task_id")}
WHERE attachments.status <> 'success'
  AND (EXCLUDED.status = 'success' OR EXCLUDED.completed_at >= attachments.completed_at)
"""
SELECT = f"SELECT {', '.join(COLUMNS)} FROM attachments"
_FAILURES = (psycopg.Error, PoolTimeout)
# SQLSTATEs that say the server or the connection cannot take the batch now, whatever it holds:
# class 08 (connection), 53 (insufficient resources), 57 (operator intervention: shutdown,
# cannot connect now, statement cancelled), 58 (the server's own I/O), serialization failure,
# deadlock, lock not available, a read-only server after a fail-over. Every other error (class
# 22 data, 23 integrity, 54 program limit such as an index row too large, ...) is about what a
# result holds and propagates, so the loop retries the batch one by one and dead-letters the
# culprit instead of holding every later batch behind it.
_UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})
_UNAVAILABLE_STATES = frozenset({"40001", "40P01", "55P03", "25006"})


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the inventory cannot answer now (retry the batch whole)."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:  # raised by libpq itself: only a failed or lost connection is unavailable
        return isinstance(exc, psycopg.OperationalError)
    return state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES


class PostgresInventory:
    backend = "postgresql"

    def __init__(self, conninfo: str, *, pool_min: int = 1, pool_max: int = 4, timeout: float = 10.0) -> None:
        self._pool = ConnectionPool(
            conninfo, min_size=pool_min, max_size=max(pool_min, pool_max), timeout=timeout,
            kwargs={"autocommit": True}, open=False, name="kafkapipe-inventory",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            self._pool.close()
            raise InventoryUnavailable(
                f"postgresql: no connection within {timeout:.0f}s (is the server up, the DSN right?)"
            ) from None

    # ------------------------------------------------------------------ schema
    def schema_version(self) -> int:
        with self._pool.connection() as conn:
            return _version(conn)

    def check_schema(self) -> None:
        found = self.schema_version()
        if found != LATEST:
            raise mismatch(self.backend, found, LATEST)

    def migrate(self) -> list[int]:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            found = _version(conn)
            if found > LATEST:
                raise mismatch(self.backend, found, LATEST)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS inventory_schema "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = []
            for version in range(found + 1, LATEST + 1):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO inventory_schema (version) VALUES (%s)", (version,))
                applied.append(version)
        return applied

    # ------------------------------------------------------------------ writing
    def upsert(self, results: Iterable[DownloadResult]) -> int:
        values = sorted((row_values(r) for r in results), key=lambda v: v["task_id"])
        if not values:
            return 0
        params = [tuple(v[c] for c in _WRITTEN) for v in values]
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                cur.executemany(UPSERT, params)
        except _FAILURES as exc:  # lost connection, fail-over, deadlock: the batch is retried whole
            if not is_unavailable(exc):
                raise  # about what a result holds: see _UNAVAILABLE_CLASSES
            raise _unavailable(exc) from None
        return len(params)

    # ------------------------------------------------------------------ reading
    def lookup(self, task_id: str) -> InventoryRow | None:
        row = self._fetch(f"{SELECT} WHERE task_id = %s", (task_id,))
        return _row(row[0]) if row else None

    def by_trace(self, trace_id: str) -> list[InventoryRow]:
        rows = self._fetch(f"{SELECT} WHERE trace_id = %s ORDER BY completed_at, task_id", (trace_id,))
        return [_row(r) for r in rows]

    def summary(self) -> dict[str, int]:
        return dict(self._fetch("SELECT status, COUNT(*) FROM attachments GROUP BY status"))

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._fetch("SELECT COUNT(*) FROM attachments")[0][0]
        return self._fetch("SELECT COUNT(*) FROM attachments WHERE status = %s", (status,))[0][0]

    def changed_since(self, since: datetime | None, after_task_id: str = "", limit: int = 10_000) -> list[InventoryRow]:
        rows = self._fetch(
            f"{SELECT} WHERE (updated_at, task_id) > (COALESCE(%s, '-infinity'::timestamptz), %s) "
            "ORDER BY updated_at, task_id LIMIT %s",
            (since, after_task_id, limit),
        )
        return [_row(r) for r in rows]

    def close(self) -> None:
        self._pool.close()

    def _fetch(self, query: str, params: tuple = ()) -> list[tuple]:
        try:
            with self._pool.connection() as conn:
                return conn.execute(query, params).fetchall()
        except _FAILURES as exc:
            if not is_unavailable(exc):
                raise
            raise _unavailable(exc) from None


def _one(conn: psycopg.Connection, query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None  # both queries always return one row
    return row[0]


def _version(conn: psycopg.Connection) -> int:
    if _one(conn, "SELECT to_regclass('inventory_schema')") is None:
        return 0
    return int(_one(conn, "SELECT COALESCE(MAX(version), 0) FROM inventory_schema"))


def _unavailable(exc: BaseException) -> InventoryUnavailable:
    # libpq's messages name host and user, never the password; scrubbed all the same.
    first = (str(exc).strip().splitlines() or [""])[0]
    return InventoryUnavailable(f"postgresql: {type(exc).__name__}: {scrub(first)}")


def _row(values: tuple) -> InventoryRow:
    return InventoryRow(**dict(zip(COLUMNS, values, strict=True)))
