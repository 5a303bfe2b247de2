"""``kafkapipe inventory import`` from a real Delta table (several versions, hostile rows), on both backends."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest
from inventoryhelpers import BACKENDS, T0, as_table, inventory_config
from migratehelpers import INVENTORY_SCHEMA, inventory_row, write_versions
from pipelinehelpers import ROOT, to_toml

from kafkapipe.inventory import open_inventory
from kafkapipe.messages import DownloadResult, make_task_id
from kafkapipe.paths import blob_path

SHA_A, SHA_B, SHA_G, SHA_OURS = "a" * 64, "b" * 64, "c" * 64, "d" * 64
URL = "https://legacy.example.com/claims/{}.pdf"
SECRET_URL = URL.format("a") + "?sv=2024&sig=SECRETSIGNATURE"


@pytest.fixture(params=BACKENDS)
def setup(request, tmp_path):
    inventory = inventory_config(request.param, tmp_path, request)
    config_path = tmp_path / "pipeline.toml"
    config_path.write_text(to_toml({"inventory": as_table(inventory)}))
    return inventory, config_path


def ours(task_id: str, status: str, sha256: str | None) -> DownloadResult:
    return DownloadResult(task_id=task_id, trace_id="x", attachment_url="u", blob_path="p", status=status,
                          attempt=1, completed_at=T0, duration_ms=1, sha256=sha256)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kafkapipe.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def summary(text: str) -> dict[str, str]:
    found = dict(line.rsplit(None, 1) for line in text.splitlines())
    found.pop("seconds")
    return found


def test_import_seeds_success_rows_and_keeps_ours(setup, tmp_path):
    inventory_cfg, config_path = setup
    table = tmp_path / "legacy_inventory"
    write_versions(table, [
        [
            inventory_row("a", "trace-a", SECRET_URL, "success", SHA_A, 1234, "legacy/2026/11/a.pdf"),
            inventory_row("b", "trace-b", URL.format("b"), "COMPLETED", SHA_B, 99),
            inventory_row("c", "trace-c", URL.format("c"), "failed", None, None),
            inventory_row("d", "trace-d", URL.format("d"), "success", SHA_A, 5, "../../etc/passwd"),
            inventory_row("e", "trace-e", URL.format("e"), "success", "zz\x1b[2J", 5),
        ],
        [
            inventory_row("g", "trace-g", URL.format("g"), "downloaded", SHA_G.upper(), 7),
            inventory_row("h", "trace-h", URL.format("h"), "success", SHA_G, 7),
        ],
    ], INVENTORY_SCHEMA, delete="id = 'h'")
    task = {k: make_task_id(f"trace-{k}", SECRET_URL if k == "a" else URL.format(k)) for k in "abcdegh"}
    before = open_inventory(inventory_cfg)
    try:
        before.upsert([ours(task["a"], "failed_transient", None), ours(task["b"], "success", SHA_OURS)])
    finally:
        before.close()

    run = cli("inventory", "import", "--config", str(config_path), "--legacy", str(table))
    assert run.returncode == 1, run.stdout + run.stderr  # two bad rows skipped
    bad = [line for line in run.stderr.splitlines() if line.startswith("row ")]
    assert len(bad) == 2 and "\x1b" not in run.stderr, run.stderr
    assert summary(run.stdout) == {"rows read": "6", "imported as success": "3", "not stored (status)": "1",
                                   "bad rows skipped": "2"}, run.stdout

    inventory = open_inventory(inventory_cfg)
    try:
        rows = {k: inventory.lookup(t) for k, t in task.items()}
    finally:
        inventory.close()
    assert rows["c"] is None and rows["d"] is None and rows["e"] is None and rows["h"] is None
    a, b, g = rows["a"], rows["b"], rows["g"]
    assert (a.status, a.sha256, a.bytes, a.blob_path) == ("success", SHA_A, 1234, "legacy/2026/11/a.pdf")
    assert "SECRET" not in a.attachment_url and "sig=" not in a.attachment_url
    assert (b.status, b.sha256) == ("success", SHA_OURS)  # a success of ours is never replaced
    assert (g.status, g.sha256, g.bytes) == ("success", SHA_G, 7)
    assert g.blob_path == blob_path(task["g"], "trace-g", URL.format("g"), "xact", T0 - timedelta(days=5, hours=4))

    again = cli("inventory", "import", "--config", str(config_path), "--legacy", str(table))
    assert summary(again.stdout)["imported as success"] == "3"
    inventory = open_inventory(inventory_cfg)
    try:
        assert inventory.count("success") == 3 and inventory.count() == 3
    finally:
        inventory.close()
