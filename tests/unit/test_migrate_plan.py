"""The retry-queue plan from Parquet, CSV and JSONL files: one mapping for every format, typed
timestamps as well as text, and --since, --limit, the migration log and duplicate rows applied."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kafkapipe.config import Config, MigrateConfig
from kafkapipe.messages import make_task_id
from kafkapipe.migrate.retryqueue import make_plan
from kafkapipe.migrate.routing import PENDING, RETRY
from kafkapipe.migrate.source import SourceError

NOW = datetime.now(UTC)
MAPPING = MigrateConfig(attachment_url="doc_url", next_retry_at="due")


def rows():
    return [
        {"trace_id": f"t{i}", "doc_url": f"https://files.example.com/{i}.pdf", "retry_count": i % 2,
         "due": (NOW + timedelta(hours=1 if i % 2 else -1)).isoformat(), "created_at": f"2026-11-{10 + i}T00:00:00Z"}
        for i in range(6)
    ] + [{"trace_id": "t0", "doc_url": "https://files.example.com/0.pdf", "retry_count": 0, "due": None,
          "created_at": "2026-11-10T00:00:00Z"}]  # the same task again


def write(kind: str, path):
    data = rows()
    if kind == "csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(data[0]))
            writer.writeheader()
            writer.writerows(data)
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    else:  # parquet, with real timestamp columns
        for r in data:
            r["due"] = datetime.fromisoformat(r["due"]) if r["due"] else None
            r["created_at"] = datetime.fromisoformat(r["created_at"])
        pq.write_table(pa.Table.from_pylist(data), path)
    return str(path)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_every_format_plans_the_same(tmp_path, kind):
    uri = write(kind, tmp_path / f"queue.{kind}")
    plan = make_plan(Config(migrate=MAPPING), uri, set(), None, None)
    assert plan.bad_count == 0, plan.bad
    assert plan.rows == 7 and plan.duplicates == 1
    assert plan.counts() == {PENDING: 3, RETRY: 3}
    assert {p.legacy.task.retry_count for p in plan.planned if p.route == RETRY} == {1}


def test_since_limit_and_the_log(tmp_path):
    uri = write("jsonl", tmp_path / "queue.jsonl")
    config = Config(migrate=MAPPING)
    since = datetime(2026, 11, 13, tzinfo=UTC)
    plan = make_plan(config, uri, {make_task_id("t3", "https://files.example.com/3.pdf")}, since, 1)
    assert plan.before_since == 4 and plan.already == 1
    assert [p.legacy.task.trace_id for p in plan.planned] == ["t4"]


def test_a_required_column_missing_is_an_error_naming_it(tmp_path):
    uri = write("csv", tmp_path / "queue.csv")
    with pytest.raises(SourceError, match="no column.*attachment_url"):
        make_plan(Config(), uri, set(), None, None)


def test_broken_lines_are_bad_rows_with_their_numbers(tmp_path):
    good = json.dumps(rows()[1])
    path = tmp_path / "queue.jsonl"
    path.write_bytes(b"\n".join([good.encode(), b"{not json", b"[1, 2]", b'{"trace_id": "x"}', b"\xff\xfe",
                                  good.replace("t1", "t9").encode()]) + b"\n")
    plan = make_plan(Config(migrate=MAPPING), str(path), set(), None, None)
    assert [row for row, _ in plan.bad] == [2, 3, 4, 5]
    assert [p.legacy.row for p in plan.planned] == [1, 6]
