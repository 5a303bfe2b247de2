"""Legacy (Delta pipeline) tables for the migration tests, written with deltalake itself."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

RETRY_SCHEMA = pa.schema([
    ("id", pa.string()), ("trace_id", pa.string()), ("attachment_url", pa.string()),
    ("retry_count", pa.int64()), ("next_retry_at", pa.string()), ("last_error", pa.string()),
    ("created_at", pa.string()), ("event_type", pa.string()), ("source_system", pa.string()),
])


def retry_row(ident: str, trace_id: str | None, url: str | None, retry_count: int = 0,
              next_retry_at: str | None = None, last_error: str | None = None,
              created_at: str | None = "2026-11-20T08:00:00.000+00:00") -> dict:
    return {
        "id": ident, "trace_id": trace_id, "attachment_url": url, "retry_count": retry_count,
        "next_retry_at": next_retry_at, "last_error": last_error, "created_at": created_at,
        "event_type": "xact.claims.documentsReceived", "source_system": "xact",
    }


def write_versions(path: Path, versions: list[list[dict]], schema: pa.Schema, delete: str | None = None) -> int:
    """Appends each list of rows as a version of its own, then deletes rows matching ``delete``."""
    for rows in versions:
        write_deltalake(str(path), pa.Table.from_pylist(rows, schema=schema), mode="append")
    table = DeltaTable(str(path))
    if delete:
        table.delete(delete)
    return DeltaTable(str(path)).version()


INVENTORY_SCHEMA = pa.schema([
    ("id", pa.string()), ("trace_id", pa.string()), ("attachment_url", pa.string()), ("status", pa.string()),
    ("sha256", pa.string()), ("bytes", pa.int64()), ("blob_path", pa.string()), ("created_at", pa.string()),
    ("source_system", pa.string()),
])


def inventory_row(ident: str, trace_id: str, url: str, status: str = "success", sha256: str | None = None,
                  size: int | None = None, blob_path: str | None = None,
                  created_at: str | None = "2026-11-20T08:00:00.000+00:00") -> dict:
    return {
        "id": ident, "trace_id": trace_id, "attachment_url": url, "status": status, "sha256": sha256,
        "bytes": size, "blob_path": blob_path, "created_at": created_at, "source_system": "xact",
    }
