"""``compare --since/--until``: legacy rows by event time, our rows found only on our side by completed_at."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from kafkapipe.config import Config, InventoryConfig
from kafkapipe.inventory import open_inventory
from kafkapipe.messages import DownloadResult, make_task_id
from kafkapipe.migrate.compare import compare

DAY = datetime(2026, 11, 20, tzinfo=UTC)


def legacy(name: str, day: int) -> dict:
    return {"trace_id": name, "attachment_url": f"https://x.example.com/{name}", "status": "success",
            "sha256": "a" * 64, "bytes": 1, "created_at": (DAY + timedelta(days=day)).isoformat()}


def ours(name: str, day: int) -> DownloadResult:
    url = f"https://x.example.com/{name}"
    return DownloadResult(task_id=make_task_id(name, url), trace_id=name, attachment_url=url, blob_path="p",
                          status="success", attempt=1, completed_at=DAY + timedelta(days=day), duration_ms=1,
                          sha256="a" * 64, bytes=1)


def test_the_window_selects_both_sides(tmp_path):
    source = tmp_path / "legacy.jsonl"
    source.write_text("".join(json.dumps(legacy(n, d)) + "\n" for n, d in
                              [("before", -2), ("inside", 0), ("gone", 0), ("after", 3)]))
    config = Config(inventory=InventoryConfig(path=str(tmp_path / "inventory.sqlite3")))
    inventory = open_inventory(config.inventory)
    try:
        inventory.upsert([ours("before", -2), ours("inside", 0), ours("new-inside", 1), ours("new-after", 3),
                          ours("after", 3)])
        result = compare(inventory, str(source), config, since=DAY - timedelta(hours=1), until=DAY + timedelta(days=2))
    finally:
        inventory.close()
    found = {kind: sorted(e["task_id"] for e in examples) for kind, examples in result.examples.items() if examples}
    assert found == {
        "equal": [make_task_id("inside", "https://x.example.com/inside")],
        "only legacy": [make_task_id("gone", "https://x.example.com/gone")],
        "only kafkapipe": [make_task_id("new-inside", "https://x.example.com/new-inside")],
    }
