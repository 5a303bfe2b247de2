"""Rows of a legacy table, in batches: a Delta table (local path or ``abfss://``/OneLake), Parquet, CSV or JSONL.

Every row comes out as ``(row_number, {column: value})``, numbered from 1 in reading order, so a
bad row can be named. Only the columns the ``[migrate]`` mapping names are read; memory is one
batch (``migrate.batch_size`` rows).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from kafkapipe.config import Config
from kafkapipe.log import scrub

Row = dict[str, Any]


class SourceError(Exception):
    """The source cannot be read at all (not there, not a table, a required column missing)."""


def source_kind(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    lowered = uri.lower().rstrip("/")
    if lowered.endswith(".parquet"):
        return "parquet"
    if lowered.endswith(".csv"):
        return "csv"
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if scheme in ("", "file", "abfss", "abfs", "az", "azure", "s3", "gs") or len(scheme) == 1:
        return "delta"
    raise SourceError(f"{shown(uri)}: not a Delta table path, .parquet, .csv or .jsonl")


def read_batches(uri: str, config: Config, wanted: Iterable[str], required: Iterable[str]) -> Iterator[pa.RecordBatch]:
    """Batches holding those of ``wanted`` the source has; SourceError if one of ``required`` is absent."""
    with _named(uri):
        dataset = _dataset(uri, config)
        present = set(dataset.schema.names)
        missing = [c for c in required if c not in present]
        if missing:
            raise SourceError(f"{shown(uri)}: no column(s) {', '.join(missing)} (see [migrate] in the configuration)")
        columns = [c for c in dict.fromkeys(wanted) if c in present]
        yield from dataset.to_batches(columns=columns, batch_size=config.migrate.batch_size)


def read_rows(uri: str, config: Config, wanted: Iterable[str], required: Iterable[str]) -> Iterator[tuple[int, Row]]:
    number = 0
    for batch in read_batches(uri, config, wanted, required):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _dataset(uri: str, config: Config):
    import pyarrow.dataset as ds

    kind = source_kind(uri)
    if kind == "delta":
        from deltalake import DeltaTable

        from kafkapipe.inventory.export import storage_options

        return DeltaTable(uri, storage_options=storage_options(uri, config)).to_pyarrow_dataset()
    if not Path(uri).exists():
        raise SourceError(f"{shown(uri)}: no such file")
    if kind == "parquet":
        return ds.dataset(uri, format="parquet")
    if kind == "csv":
        return ds.dataset(uri, format="csv")
    return ds.dataset(uri, format="json")


@contextlib.contextmanager
def _named(uri: str) -> Iterator[None]:
    """deltalake's, Arrow's and the OS's errors as SourceError naming the source, scrubbed."""
    from deltalake.exceptions import DeltaError

    try:
        yield
    except (OSError, DeltaError, pa.ArrowException) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise SourceError(f"{shown(uri)}: {type(exc).__name__}: {scrub(first)[:300]}") from None


def shown(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname}{parts.path}" if parts.scheme and len(parts.scheme) > 1 else uri
