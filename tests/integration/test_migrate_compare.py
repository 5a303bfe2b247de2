"""``kafkapipe compare``: each planted difference between a real Delta table and a real inventory, and nothing else."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from inventoryhelpers import BACKENDS, T0, as_table, inventory_config
from migratehelpers import INVENTORY_SCHEMA, inventory_row, write_versions
from pipelinehelpers import ROOT, to_toml

from kafkapipe.inventory import open_inventory
from kafkapipe.messages import DownloadResult, make_task_id

URL = "https://legacy.example.com/c/{}.pdf"


def tid(name: str) -> str:
    return make_task_id(f"trace-{name}", URL.format(name))


def ours(name: str, status: str = "success", sha256: str | None = None, size: int | None = 10) -> DownloadResult:
    return DownloadResult(task_id=tid(name), trace_id=f"trace-{name}", attachment_url=URL.format(name),
                          blob_path="p", status=status, attempt=1, completed_at=T0, duration_ms=1,
                          sha256=sha256 if sha256 is not None else name[0] * 64 if status == "success" else None,
                          bytes=size if status == "success" else None)


@pytest.fixture(params=BACKENDS)
def planted(request, tmp_path):
    inventory = inventory_config(request.param, tmp_path, request)
    config_path = tmp_path / "pipeline.toml"
    config_path.write_text(to_toml({"inventory": as_table(inventory)}))
    equal = [f"e{i}" for i in range(5)]
    table = tmp_path / "legacy_inventory"
    write_versions(table, [
        [inventory_row(n, f"trace-{n}", URL.format(n), "success", "e" * 64, 10) for n in equal] + [
            inventory_row("failedboth", "trace-failedboth", URL.format("failedboth"), "failed"),
            inventory_row("status", "trace-status", URL.format("status"), "success", "s" * 64, 10),
            inventory_row("sha", "trace-sha", URL.format("sha"), "success", "1" * 64, 10),
        ],
        [
            inventory_row("size", "trace-size", URL.format("size"), "Completed", "s" * 64, 11),
            inventory_row("legacyonly", "trace-legacyonly", URL.format("legacyonly"), "success", "l" * 64, 10),
            inventory_row("bad", None, URL.format("bad"), "success", "b" * 64, 10),          # hostile: no trace id
            inventory_row("deleted", "trace-deleted", URL.format("deleted"), "success", "d" * 64, 10),
        ],
    ], INVENTORY_SCHEMA, delete="id = 'deleted'")
    store = open_inventory(inventory)
    try:
        store.upsert([ours(n) for n in equal] + [
            ours("failedboth", "failed_permanent"), ours("status", "failed_permanent"), ours("sha", sha256="2" * 64),
            ours("size", sha256="s" * 64, size=10), ours("ouronly"), ours("deleted", sha256="d" * 64),
        ])
    finally:
        store.close()
    return config_path, table


def compare(config_path, table, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kafkapipe.cli", "compare", "--config", str(config_path), "--legacy", str(table),
         *extra], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_compare_finds_each_planted_difference_and_nothing_else(planted):
    run = compare(*planted, "--format", "json")
    assert run.returncode == 1, run.stderr  # default --max-mismatch 0
    report = json.loads(run.stdout)
    assert report["counts"] == {"equal": 6, "status differs": 1, "content differs": 2, "only legacy": 1,
                                "only kafkapipe": 2}
    found = {kind: {e["task_id"] for e in examples} for kind, examples in report["examples"].items()}
    assert found == {
        "equal": {tid(n) for n in ("e0", "e1", "e2", "e3", "e4", "failedboth")},
        "status differs": {tid("status")}, "content differs": {tid("sha"), tid("size")},
        "only legacy": {tid("legacyonly")}, "only kafkapipe": {tid("ouronly"), tid("deleted")},
    }
    assert report["bad_legacy_rows"] == 1 and report["mismatch_rate"] == pytest.approx(6 / 12)

    assert compare(*planted, "--max-mismatch", "0.5").returncode == 0
    table_run = compare(*planted, "--max-mismatch", "0.49")
    assert table_run.returncode == 1 and "FAIL" in table_run.stdout
    rows = list(csv.reader(io.StringIO(compare(*planted, "--format", "csv", "--show", "1").stdout)))
    counts = {r[0]: int(r[1]) for r in rows[1:] if r[1]}
    assert counts["content differs"] == 2 and sum(1 for r in rows[1:] if not r[1]) == 5  # one example per kind
