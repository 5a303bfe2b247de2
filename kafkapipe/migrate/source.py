"""Rows of a legacy table, in batches: a Delta table (local path or ``abfss://``/OneLake), Parquet, CSV or JSONL.

Every row comes out as ``(row_number, {column: value})``, numbered from 1 in reading order, so a
bad row can be named; a line of a CSV or JSONL file that cannot be read at all comes out as a
:class:`BadRow` in place of the dict. Only the columns the ``[migrate]`` mapping names are kept;
memory is one batch (``migrate.batch_size`` rows). CSV and JSONL are read with the standard
library, line by line, so values keep their text (Arrow's type inference would turn a time with
an offset into one without) and one broken line does not sink the file.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pyarrow as pa

from kafkapipe.config import Config
from kafkapipe.log import scrub
from kafkapipe.migrate.legacy import BadRow

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
            raise missing_columns(uri, missing)
        columns = [c for c in dict.fromkeys(wanted) if c in present]
        # Arrow reads 4 files and 16 batches ahead by default: memory that grows with the table.
        yield from dataset.to_batches(columns=columns, batch_size=config.migrate.batch_size,
                                      batch_readahead=1, fragment_readahead=1)


def read_rows(uri: str, config: Config, wanted: Iterable[str], required: Iterable[str]
              ) -> Iterator[tuple[int, Row | BadRow]]:
    kind = source_kind(uri)
    if kind in ("csv", "jsonl"):
        if not Path(uri).is_file():
            raise SourceError(f"{shown(uri)}: no such file")
        with _named(uri):
            yield from (_csv_rows if kind == "csv" else _jsonl_rows)(Path(uri), list(wanted), list(required))
        return
    number = 0
    for batch in read_batches(uri, config, wanted, required):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _csv_rows(path: Path, wanted: list[str], required: list[str]) -> Iterator[tuple[int, Row | BadRow]]:
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise missing_columns(str(path), missing)
        for number, row in enumerate(reader, start=1):
            if None in row:
                yield number, BadRow("more fields than the header names")
                continue
            yield number, {c: (row.get(c) or None) for c in wanted}


def _jsonl_rows(path: Path, wanted: list[str], required: list[str]) -> Iterator[tuple[int, Row | BadRow]]:
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield number, BadRow("line is not JSON")
                continue
            if not isinstance(obj, dict):
                yield number, BadRow("line is not a JSON object")
                continue
            missing = [c for c in required if c not in obj]
            yield number, BadRow(f"no {', '.join(missing)}") if missing else {c: obj.get(c) for c in wanted}


def _dataset(uri: str, config: Config):
    import pyarrow.dataset as ds

    kind = source_kind(uri)
    if kind == "delta":
        from deltalake import DeltaTable

        from kafkapipe.inventory.export import storage_options

        return DeltaTable(uri, storage_options=storage_options(uri, config)).to_pyarrow_dataset()
    if not Path(uri).exists():
        raise SourceError(f"{shown(uri)}: no such file")
    return ds.dataset(uri, format="parquet")


@contextlib.contextmanager
def _named(uri: str) -> Iterator[None]:
    """deltalake's, Arrow's and the OS's errors as SourceError naming the source, scrubbed."""
    from deltalake.exceptions import DeltaError

    try:
        yield
    except (OSError, UnicodeError, csv.Error, DeltaError, pa.ArrowException) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise SourceError(f"{shown(uri)}: {type(exc).__name__}: {scrub(first)[:300]}") from None


def missing_columns(uri: str, missing: list[str]) -> SourceError:
    return SourceError(f"{shown(uri)}: no column(s) {', '.join(missing)} (see [migrate] in the configuration)")


def shown(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname}{parts.path}" if parts.scheme and len(parts.scheme) > 1 else uri
