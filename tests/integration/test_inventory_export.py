"""`kafkapipe inventory export`: the inventory merged into a Delta table / Parquet file, read back."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from inventoryhelpers import BACKENDS, T0, as_table, inventory_config, result
from pipelinehelpers import ROOT, to_toml

from kafkapipe.inventory import open_inventory

PRESIGNED = "https://b.s3.amazonaws.com/claims/{i}.pdf?X-Amz-Signature=SIGCANARY{i}"


@pytest.fixture(params=BACKENDS)
def setup(request, tmp_path):
    inventory = inventory_config(request.param, tmp_path, request)
    config_path = tmp_path / "pipeline.toml"
    # overlap 0: a re-run reads only what changed, which this test can then count exactly
    config_path.write_text(to_toml({"inventory": {**as_table(inventory), "export": {"overlap": 0.0}}}))
    return inventory, config_path


def export(config_path, target, fmt):
    proc = subprocess.run(
        [sys.executable, "-m", "kafkapipe.cli", "inventory", "export", "--config", str(config_path),
         "--to", str(target), "--format", fmt],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return int(proc.stdout.split("merged ")[1].split()[0])


def read_back(target, fmt) -> dict:
    table = DeltaTable(str(target)).to_pyarrow_table() if fmt == "delta" else pq.read_table(target)
    rows = table.to_pylist()
    assert len({r["task_id"] for r in rows}) == len(rows), "one row per task_id"
    return {r["task_id"]: r for r in rows}


def write(inventory, results):
    store = open_inventory(inventory)
    try:
        store.upsert(results)
    finally:
        store.close()


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_export_merges_incrementally_and_a_rerun_adds_no_duplicate(setup, tmp_path, fmt):
    inventory, config_path = setup
    target = tmp_path / ("table" if fmt == "delta" else "inventory.parquet")
    write(inventory, [
        result("success" if i % 3 else "failed_transient", T0 + timedelta(seconds=i), 1, f"t{i:03}",
               url=PRESIGNED.format(i=i))
        for i in range(30)
    ])
    assert export(config_path, target, fmt) == 30
    rows = read_back(target, fmt)
    assert len(rows) == 30
    assert rows["t001"]["status"] == "success" and rows["t003"]["status"] == "failed_transient"
    assert rows["t007"]["attachment_url"] == "https://b.s3.amazonaws.com/claims/7.pdf"
    assert rows["t007"]["completed_at"] == T0 + timedelta(seconds=7)

    assert export(config_path, target, fmt) == 0, "nothing changed: nothing read"
    assert len(read_back(target, fmt)) == 30

    write(inventory, [result("success", T0 + timedelta(minutes=5), 2, "t003")]
          + [result("failed_permanent", T0, 1, f"new{i}") for i in range(5)])
    assert export(config_path, target, fmt) == 6
    rows = read_back(target, fmt)
    assert len(rows) == 35
    assert rows["t003"]["status"] == "success" and rows["t003"]["attempt"] == 2
    assert rows["new4"]["status"] == "failed_permanent"
    stored = b"".join(p.read_bytes() for p in target.parent.rglob("*") if p.is_file() and p.suffix == ".parquet")
    assert b"SIGCANARY" not in stored


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_rows_read_again_within_the_overlap_are_merged_not_appended(setup, tmp_path, fmt):
    inventory, config_path = setup
    config_path.write_text(to_toml({"inventory": as_table(inventory)}))  # default overlap: 2 minutes
    target = tmp_path / ("table" if fmt == "delta" else "inventory.parquet")
    write(inventory, [result("success", T0, 1, f"t{i}") for i in range(12)])
    assert export(config_path, target, fmt) == 12
    assert export(config_path, target, fmt) == 12, "the overlap reads the recent rows again"
    assert len(read_back(target, fmt)) == 12


def test_an_unwritable_target_fails_with_exit_1_naming_it(setup, tmp_path):
    inventory, config_path = setup
    write(inventory, [result("success", T0, 1, "t1")])
    (tmp_path / "blocker").write_text("a file where the table's parent directory should be")
    proc = subprocess.run(
        [sys.executable, "-m", "kafkapipe.cli", "inventory", "export", "--config", str(config_path),
         "--to", str(tmp_path / "blocker" / "table")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert proc.returncode == 1
    assert "export failed" in proc.stderr and "blocker" in proc.stderr and "Traceback" not in proc.stderr
