"""``kafkapipe inventory export``: the inventory merged into a Delta table (or a Parquet file).

Incremental: only rows changed since the last export's watermark are read (less
``[inventory.export] overlap``, which catches transactions that committed late), then merged by
``task_id``, so a timer can run it every few minutes and re-running adds no duplicate. The
watermark travels with the data it describes: in the Delta table, in the commit metadata of the
merge that wrote those rows; in a Parquet file, in the file's own key-value metadata. A crash
between two pages leaves a watermark that matches what was committed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
from attrs import frozen

from kafkapipe.config import Config
from kafkapipe.inventory.base import Inventory
from kafkapipe.inventory.records import InventoryRow
from kafkapipe.log import scrub

log = logging.getLogger(__name__)

WATERMARK_KEY = "kafkapipe.watermark"
PAGE = 50_000
HISTORY_SCAN = 200  # commits looked back through for the last watermark (others may optimise/vacuum)
REMOTE_SCHEMES = ("abfss", "abfs", "az", "adl")

SCHEMA = pa.schema([
    pa.field("task_id", pa.string(), nullable=False),
    pa.field("trace_id", pa.string()),
    pa.field("attachment_url", pa.string()),
    pa.field("url_sha256", pa.string()),
    pa.field("blob_path", pa.string()),
    pa.field("status", pa.string()),
    pa.field("attempt", pa.int32()),
    pa.field("http_status", pa.int32()),
    pa.field("bytes", pa.int64()),
    pa.field("sha256", pa.string()),
    pa.field("content_type", pa.string()),
    pa.field("file_type", pa.string()),
    pa.field("error_category", pa.string()),
    pa.field("error_message", pa.string()),
    pa.field("completed_at", pa.timestamp("us", tz="UTC")),
    pa.field("updated_at", pa.timestamp("us", tz="UTC")),
])


class ExportError(Exception):
    """The target could not be read or written; the text names it (never a credential)."""


@frozen
class Watermark:
    updated_at: datetime
    task_id: str

    def dumps(self) -> str:
        return json.dumps({"updated_at": self.updated_at.isoformat(), "task_id": self.task_id})

    @classmethod
    def loads(cls, text: str | bytes | None) -> Watermark | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(datetime.fromisoformat(data["updated_at"]), data["task_id"])

    def __str__(self) -> str:
        return f"{self.updated_at.isoformat()} {self.task_id}"


@frozen
class ExportReport:
    target: str
    rows: int
    watermark: Watermark | None


def export(inventory: Inventory, uri: str, fmt: str, config: Config) -> ExportReport:
    target = DeltaTarget(uri, config) if fmt == "delta" else ParquetTarget(uri)
    last = target.watermark()
    since, after = _start(last, config.inventory.export.overlap)
    total, mark = 0, last
    while page := inventory.changed_since(since, after, limit=PAGE):
        since, after = page[-1].updated_at, page[-1].task_id
        newest = Watermark(since, after)
        mark = newest if mark is None or (newest.updated_at, newest.task_id) > (mark.updated_at, mark.task_id) else mark
        target.merge(to_arrow(page), mark)
        total += len(page)
    return ExportReport(uri, total, mark)


def _start(last: Watermark | None, overlap: float) -> tuple[datetime | None, str]:
    """The (updated_at, task_id) key to read after: the watermark itself, or ``overlap`` before it."""
    if last is None:
        return None, ""
    if overlap:
        return last.updated_at - timedelta(seconds=overlap), ""
    return last.updated_at, last.task_id


_INT_RANGES = {
    f.name: (-(2 ** (f.type.bit_width - 1)), 2 ** (f.type.bit_width - 1) - 1)
    for f in SCHEMA if pa.types.is_integer(f.type)
}


def to_arrow(rows: list[InventoryRow]) -> pa.Table:
    """The rows as an Arrow table of :data:`SCHEMA`.

    A number its column cannot hold (written to the inventory by something other than the
    results stage) is exported as null, with a warning naming the task: one bad row must not
    stop this and every later export. Anything else Arrow refuses is an ExportError naming the
    row's task id.
    """
    columns = {name: [getattr(r, name) for r in rows] for name in SCHEMA.names}
    for name, (low, high) in _INT_RANGES.items():
        values = columns[name]
        for i, value in enumerate(values):
            if value is not None and not (isinstance(value, int) and low <= value <= high):
                log.warning("export: task %s has %s %s, out of the column's range; exported as null",
                            rows[i].task_id, name, str(value)[:32])
                values[i] = None
    try:
        return pa.table(columns, schema=SCHEMA)
    except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
        raise ExportError(f"row of task {_culprit(rows)} cannot be exported: {exc}") from None


def _culprit(rows: list[InventoryRow]) -> str:
    for row in rows:
        try:
            pa.table({name: [getattr(row, name)] for name in SCHEMA.names}, schema=SCHEMA)
        except (pa.ArrowException, OverflowError, TypeError, ValueError):
            return row.task_id
    return "(unknown)"


class DeltaTarget:
    def __init__(self, uri: str, config: Config) -> None:
        self.uri = uri
        self.options = storage_options(uri, config)

    def watermark(self) -> Watermark | None:
        from deltalake import DeltaTable

        with _failures_named(self.uri):
            if not DeltaTable.is_deltatable(self.uri, storage_options=self.options):
                return None
            for commit in DeltaTable(self.uri, storage_options=self.options).history(HISTORY_SCAN):
                if WATERMARK_KEY in commit:
                    return Watermark.loads(commit[WATERMARK_KEY])
        return None

    def merge(self, table: pa.Table, mark: Watermark) -> None:
        from deltalake import CommitProperties, DeltaTable, write_deltalake

        commit = CommitProperties(custom_metadata={WATERMARK_KEY: mark.dumps()})
        with _failures_named(self.uri):
            if not DeltaTable.is_deltatable(self.uri, storage_options=self.options):
                write_deltalake(self.uri, table, storage_options=self.options, commit_properties=commit)
                return
            (
                DeltaTable(self.uri, storage_options=self.options)
                .merge(table, predicate="t.task_id = s.task_id", source_alias="s", target_alias="t",
                       commit_properties=commit)
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )


class ParquetTarget:
    """One Parquet file on local disk, rewritten whole and replaced atomically on each merge."""

    def __init__(self, uri: str) -> None:
        if urlsplit(uri).scheme in REMOTE_SCHEMES:
            raise ExportError("Parquet export writes a local file; use --format delta for abfss:// targets")
        self.path = Path(uri)

    def watermark(self) -> Watermark | None:
        import pyarrow.parquet as pq

        if not self.path.exists():
            return None
        metadata = pq.read_schema(self.path).metadata or {}
        return Watermark.loads(metadata.get(WATERMARK_KEY.encode()))

    def merge(self, table: pa.Table, mark: Watermark) -> None:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        if self.path.exists():
            old = pq.read_table(self.path).cast(SCHEMA)
            kept = old.filter(pc.invert(pc.is_in(old["task_id"], value_set=table["task_id"])))
            table = pa.concat_tables([kept, table])
        table = table.replace_schema_metadata({WATERMARK_KEY: mark.dumps()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.path)


def storage_options(uri: str, config: Config) -> dict[str, str]:
    """object_store options for an ``abfss://`` (or OneLake) URI from the storage credential."""
    parts = urlsplit(uri)
    if parts.scheme not in REMOTE_SCHEMES:
        return {}
    from kafkapipe.auth.credentials import (
        STORAGE_SCOPE,
        SasCredential,
        SharedKeyCredential,
        credential_from_config,
        is_token_credential,
    )

    credential = credential_from_config(config.storage.azure.credential, "storage.azure.credential")
    options: dict[str, str] = {}
    if "fabric.microsoft.com" in (parts.hostname or ""):
        options["use_fabric_endpoint"] = "true"
    if isinstance(credential, SharedKeyCredential):
        credential.key()
        options.update(account_name=credential.account_name, account_key=credential.known_secrets()[0])
    elif isinstance(credential, SasCredential):
        options["sas_token"] = credential.token()
    elif is_token_credential(credential):
        options["bearer_token"] = credential.get_token(STORAGE_SCOPE).token
    else:
        raise ExportError(f"storage.azure.credential.kind {credential.kind} cannot authenticate an export")
    return options


@contextlib.contextmanager
def _failures_named(uri: str) -> Iterator[None]:
    """deltalake's and the OS's errors as ExportError: the target, the class, the first line scrubbed."""
    from deltalake.exceptions import DeltaError

    try:
        yield
    except (OSError, DeltaError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ExportError(f"{_shown(uri)}: {type(exc).__name__}: {scrub(first)}") from None


def _shown(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname}{parts.path}" if parts.scheme else uri
