"""``kafkapipe compare``: the legacy inventory against ours, task by task, in bounded memory.

Both sides are spooled, a batch at a time, into a scratch SQLite file keyed by ``task_id`` (the
legacy row's computed with ``messages.make_task_id``), then classified with joins there, so memory
stays one batch whatever the row count. Statuses are compared as classes: ``success`` (ours; the
legacy ``migrate.success_values``) or ``failed`` (anything else). Content (sha256, bytes) is
compared only where both sides are ``success``.

Windows: ``--since``/``--until`` select legacy rows by their event time (``created_at`` column)
and our rows found only on our side by ``completed_at``.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from attrs import define, field

from kafkapipe.config import Config
from kafkapipe.inventory.base import Inventory
from kafkapipe.log import redact_url
from kafkapipe.messages import format_ts, make_task_id
from kafkapipe.migrate.importing import count_bytes, stored
from kafkapipe.migrate.legacy import BadRow, moment, optional_text, text
from kafkapipe.migrate.source import read_rows

EQUAL, STATUS, CONTENT, ONLY_LEGACY, ONLY_OURS = "equal", "status differs", "content differs", "only legacy", \
    "only kafkapipe"
KINDS = (EQUAL, STATUS, CONTENT, ONLY_LEGACY, ONLY_OURS)
MISMATCHES = KINDS[1:]
PAGE = 10_000

# A scratch file: nothing to recover after a crash; a page cache that stays small whatever the rows.
_PRAGMAS = "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16384; PRAGMA temp_store=FILE;"
_SCHEMA = """
CREATE TABLE legacy (task_id TEXT PRIMARY KEY, url TEXT, status TEXT, sha256 TEXT, bytes INTEGER) WITHOUT ROWID;
CREATE TABLE ours (task_id TEXT PRIMARY KEY, url TEXT, status TEXT, sha256 TEXT, bytes INTEGER,
                   completed_at TEXT) WITHOUT ROWID;
"""
_JOINED = "SELECT l.task_id, l.url, l.status, l.sha256, l.bytes, o.status, o.sha256, o.bytes " \
          "FROM legacy l JOIN ours o USING (task_id)"
_SAME_CONTENT = "(l.status <> 'success' OR (l.sha256 IS o.sha256 AND l.bytes IS o.bytes))"
QUERIES = {
    EQUAL: f"{_JOINED} WHERE l.status = o.status AND {_SAME_CONTENT}",
    STATUS: f"{_JOINED} WHERE l.status <> o.status",
    CONTENT: f"{_JOINED} WHERE l.status = o.status AND NOT {_SAME_CONTENT}",
    ONLY_LEGACY: "SELECT l.task_id, l.url, l.status, l.sha256, l.bytes, NULL, NULL, NULL FROM legacy l "
                 "WHERE NOT EXISTS (SELECT 1 FROM ours o WHERE o.task_id = l.task_id)",
    ONLY_OURS: "SELECT o.task_id, o.url, NULL, NULL, NULL, o.status, o.sha256, o.bytes FROM ours o "
               "WHERE NOT EXISTS (SELECT 1 FROM legacy l WHERE l.task_id = o.task_id) "
               "AND (:since IS NULL OR o.completed_at >= :since) AND (:until IS NULL OR o.completed_at < :until)",
}
FIELDS = ("task_id", "url", "legacy_status", "legacy_sha256", "legacy_bytes", "status", "sha256", "bytes")


@define
class Comparison:
    counts: dict[str, int]
    examples: dict[str, list[dict[str, Any]]]
    bad_rows: int = 0
    bad_shown: list[tuple[int, str]] = field(factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def mismatches(self) -> int:
        return sum(self.counts[k] for k in MISMATCHES)

    def rate(self, kind: str | None = None) -> float:
        count = self.mismatches if kind is None else self.counts[kind]
        return count / self.total if self.total else 0.0


def compare(inventory: Inventory, uri: str, config: Config, *, since: datetime | None = None,
            until: datetime | None = None, show: int = 10) -> Comparison:
    with tempfile.TemporaryDirectory(prefix="kafkapipe-compare-") as scratch:
        db = sqlite3.connect(Path(scratch) / "compare.sqlite3")
        try:
            db.executescript(_PRAGMAS + _SCHEMA)
            bad = _load_legacy(db, uri, config, since, until)
            _load_ours(db, inventory)
            return _classify(db, since, until, show, bad)
        finally:
            db.close()


def _load_legacy(db: sqlite3.Connection, uri: str, config: Config, since, until) -> list[tuple[int, str]]:
    bad: list[tuple[int, str]] = []
    batch: list[tuple] = []
    for item in _legacy(uri, config, since, until, bad):
        batch.append(item)
        if len(batch) >= PAGE:
            db.executemany("INSERT OR REPLACE INTO legacy VALUES (?, ?, ?, ?, ?)", batch)
            batch = []
    db.executemany("INSERT OR REPLACE INTO legacy VALUES (?, ?, ?, ?, ?)", batch)
    return bad


def _legacy(uri: str, config: Config, since, until, bad: list) -> Iterator[tuple]:
    m = config.migrate
    wanted = [m.trace_id, m.attachment_url, m.status, m.sha256, m.bytes, m.created_at]
    for number, row in read_rows(uri, config, wanted, [m.trace_id, m.attachment_url, m.status]):
        try:
            if isinstance(row, BadRow):
                raise row
            trace_id, url = text(row.get(m.trace_id), m.trace_id, 256), text(row.get(m.attachment_url),
                                                                                m.attachment_url, 8192)
            if since is not None or until is not None:
                when = moment(row.get(m.created_at), m.created_at)
                if when is None or (since and when < since) or (until and when >= until):
                    continue
            digest = optional_text(row.get(m.sha256), m.sha256)
            size = None if row.get(m.bytes) is None else count_bytes(row.get(m.bytes), m.bytes)
        except BadRow as exc:
            bad.append((number, str(exc)))
            continue
        yield (make_task_id(trace_id, url), shown_url(url), "success" if stored(row, m) else "failed",
               digest.lower() if digest else None, size)


def shown_url(url: str) -> str:
    """The URL without query and fragment (a presigned signature never reaches the scratch file or
    the report); :func:`redact_url`, which costs half the run, only where userinfo may remain."""
    return redact_url(url) if "@" in url else url.partition("?")[0].partition("#")[0]


def _load_ours(db: sqlite3.Connection, inventory: Inventory) -> None:
    since, after = None, ""
    while True:
        page = inventory.changed_since(since, after, limit=PAGE)
        if not page:
            return
        db.executemany("INSERT OR REPLACE INTO ours VALUES (?, ?, ?, ?, ?, ?)", [
            (r.task_id, r.attachment_url, "success" if r.status == "success" else "failed", r.sha256, r.bytes,
             format_ts(r.completed_at)) for r in page
        ])
        since, after = page[-1].updated_at, page[-1].task_id


def _classify(db: sqlite3.Connection, since, until, show: int, bad: list) -> Comparison:
    window = {"since": format_ts(since) if since else None, "until": format_ts(until) if until else None}
    counts, examples = {}, {}
    for kind, query in QUERIES.items():
        counts[kind] = db.execute(f"SELECT count(*) FROM ({query})", window).fetchone()[0]
        rows = db.execute(f"{query} ORDER BY 1 LIMIT :show", {**window, "show": show}).fetchall()
        examples[kind] = [dict(zip(FIELDS, row, strict=True)) for row in rows]
    return Comparison(counts, examples, len(bad), bad[:1000])
