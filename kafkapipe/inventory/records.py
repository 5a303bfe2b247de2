"""What one inventory row holds, and how a DownloadResult becomes one.

The attachment URL is kept without its userinfo, query and fragment: a presigned URL's
signature and session token are credentials, and the inventory is read by many. The sha256 of
the full URL, as the task carried it, keeps rows matchable against events and tasks.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

import attrs
from attrs import frozen

from kafkapipe.log import redact_url, scrub
from kafkapipe.messages import DownloadResult

COLUMNS = (
    "task_id", "trace_id", "attachment_url", "url_sha256", "blob_path", "status", "attempt", "http_status",
    "bytes", "sha256", "content_type", "file_type", "error_category", "error_message", "completed_at",
    "updated_at",
)


@frozen
class InventoryRow:
    task_id: str
    trace_id: str
    attachment_url: str
    url_sha256: str
    blob_path: str
    status: str
    attempt: int
    http_status: int | None
    bytes: int | None
    sha256: str | None
    content_type: str | None
    file_type: str | None
    error_category: str | None
    error_message: str | None
    completed_at: datetime
    updated_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def url_sha256(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


def stored_url(url: str) -> str:
    """The URL as the inventory keeps it: scheme, host, port and path only."""
    return redact_url(url)


def row_values(result: DownloadResult) -> dict[str, Any]:
    """Column → value for ``result``, all but ``updated_at`` (the backend's clock sets it)."""
    return {
        "task_id": result.task_id,
        "trace_id": result.trace_id,
        "attachment_url": stored_url(result.attachment_url),
        "url_sha256": url_sha256(result.attachment_url),
        "blob_path": result.blob_path,
        "status": result.status,
        "attempt": result.attempt,
        "http_status": result.http_status,
        "bytes": result.bytes,
        "sha256": result.sha256,
        "content_type": result.content_type,
        "file_type": result.file_type,
        "error_category": result.error_category,
        # Error texts quote URLs and server answers; the same scrub as the log's.
        "error_message": scrub(result.error_message) if result.error_message else result.error_message,
        "completed_at": result.completed_at,
    }
