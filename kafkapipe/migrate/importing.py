"""``kafkapipe inventory import``: the legacy inventory's stored attachments as ``success`` rows.

Only rows whose legacy status is one of ``migrate.success_values`` are imported, each as the
result of one successful attempt of the task ingest would make for it (``docs/contract.md`` §4):
its sha256, size and path (the legacy ``blob_path`` when the row has a valid one, else the path
the task derives). The inventory's own upsert rule applies: a success is never replaced, and an
import over an earlier failure wins. Rows are written a batch (``migrate.batch_size``) at a time.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterator
from typing import Any, TextIO

from attrs import define, field

from kafkapipe.config import Config, MigrateConfig
from kafkapipe.inventory.base import Inventory
from kafkapipe.messages import STATUS_SUCCESS, DownloadResult, make_task_id, utcnow
from kafkapipe.migrate.legacy import MAX_TRACE_ID, MAX_URL, BadRow, moment, optional_text, text
from kafkapipe.migrate.source import read_rows
from kafkapipe.paths import blob_path, is_valid
from kafkapipe.printable import printable

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_BAD_SHOWN = 1000


@define
class ImportReport:
    rows: int = 0
    imported: int = 0
    not_stored: int = 0
    bad: int = 0
    bad_shown: list[tuple[int, str]] = field(factory=list)


def columns(mapping: MigrateConfig) -> list[str]:
    return [mapping.trace_id, mapping.attachment_url, mapping.status, mapping.sha256, mapping.bytes,
            mapping.blob_path, mapping.created_at, mapping.source_system]


def to_result(row: dict[str, Any], mapping: MigrateConfig) -> DownloadResult:
    trace_id = text(row.get(mapping.trace_id), mapping.trace_id, MAX_TRACE_ID)
    url = text(row.get(mapping.attachment_url), mapping.attachment_url, MAX_URL)
    task_id = make_task_id(trace_id, url)
    digest = optional_text(row.get(mapping.sha256), mapping.sha256)
    if digest is not None and not _SHA256.match(digest.lower()):
        raise BadRow(f"{mapping.sha256} is not a hex sha256")
    size = row.get(mapping.bytes)
    now = utcnow()
    return DownloadResult(
        task_id=task_id, trace_id=trace_id, attachment_url=url, blob_path=_path(row, mapping, task_id, trace_id, url),
        status=STATUS_SUCCESS, attempt=1, completed_at=now, duration_ms=0,
        bytes=None if size is None else count_bytes(size, mapping.bytes),
        sha256=digest.lower() if digest else None,
    )


def count_bytes(value: Any, column: str) -> int:
    """A size in bytes: an integer, or its digits as text (CSV)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise BadRow(f"{column} is not a size in bytes")
    return value


def _path(row: dict[str, Any], mapping: MigrateConfig, task_id: str, trace_id: str, url: str) -> str:
    legacy = optional_text(row.get(mapping.blob_path), mapping.blob_path)
    if legacy is not None:
        if not is_valid(legacy):
            raise BadRow(f"{mapping.blob_path} is not a relative storage path of [A-Za-z0-9._/-]")
        return legacy
    when = moment(row.get(mapping.created_at), mapping.created_at)
    if when is None:
        raise BadRow(f"neither {mapping.blob_path} nor {mapping.created_at} is set")
    source = optional_text(row.get(mapping.source_system), mapping.source_system) or "unknown"
    return blob_path(task_id, trace_id, url, source, when)


def stored(row: dict[str, Any], mapping: MigrateConfig) -> bool:
    status = row.get(mapping.status)
    return isinstance(status, str) and status.strip().lower() in _lowered(tuple(mapping.success_values))


@functools.cache
def _lowered(values: tuple[str, ...]) -> frozenset[str]:
    return frozenset(v.lower() for v in values)


def results(config: Config, uri: str, report: ImportReport) -> Iterator[DownloadResult]:
    mapping = config.migrate
    for number, row in read_rows(uri, config, columns(mapping),
                                 [mapping.trace_id, mapping.attachment_url, mapping.status]):
        report.rows = number
        if isinstance(row, dict) and not stored(row, mapping):
            report.not_stored += 1
            continue
        try:
            if isinstance(row, BadRow):
                raise row
            yield to_result(row, mapping)
        except BadRow as exc:
            report.bad += 1
            if len(report.bad_shown) < MAX_BAD_SHOWN:
                report.bad_shown.append((number, str(exc)))


def import_legacy(inventory: Inventory, uri: str, config: Config, out: TextIO, err: TextIO) -> ImportReport:
    report, batch = ImportReport(), []
    started = time.monotonic()
    for result in results(config, uri, report):
        batch.append(result)
        if len(batch) >= config.migrate.batch_size:
            report.imported += inventory.upsert(batch)
            batch = []
    if batch:
        report.imported += inventory.upsert(batch)
    for number, reason in report.bad_shown:
        print(f"row {number}: skipped: {printable(reason)}", file=err)
    print(f"{'rows read':22} {report.rows}\n{'imported as success':22} {report.imported}\n"
          f"{'not stored (status)':22} {report.not_stored}\n{'bad rows skipped':22} {report.bad}\n"
          f"{'seconds':22} {time.monotonic() - started:.1f}", file=out)
    return report
