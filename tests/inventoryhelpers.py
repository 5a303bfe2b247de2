"""Inventory configurations for tests, one per backend, each on a store of its own."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from kafkapipe.config import InventoryConfig, PostgresInventoryConfig
from kafkapipe.inventory import open_inventory
from kafkapipe.messages import DownloadResult

BACKENDS = ("sqlite", "postgresql")
T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def inventory_config(backend: str, tmp_path: Path, request) -> InventoryConfig:
    """A migrated, empty inventory of ``backend``; the DSN is passed as a file, like a secret."""
    if backend == "sqlite":
        return InventoryConfig(backend="sqlite", path=str(tmp_path / "inventory.sqlite3"))
    dsn_file = tmp_path / "inventory.dsn"
    dsn_file.write_text(request.getfixturevalue("postgres_dsn"))
    config = InventoryConfig(backend="postgresql", postgresql=PostgresInventoryConfig(dsn_file=str(dsn_file)))
    inventory = open_inventory(config, check_schema=False)
    try:
        inventory.migrate()
    finally:
        inventory.close()
    return config


def as_table(config: InventoryConfig) -> dict:
    """The ``[inventory]`` table of a pipeline TOML for ``config``."""
    table: dict = {"backend": config.backend, "path": config.path}
    if config.backend == "postgresql":
        table["postgresql"] = {"dsn_file": config.postgresql.dsn_file}
    return table


def result(status: str, at: datetime, attempt: int = 1, task_id: str = "t1", url: str = "u") -> DownloadResult:
    return DownloadResult(task_id=task_id, trace_id="tr", attachment_url=url, blob_path="p", status=status,
                          attempt=attempt, completed_at=at, duration_ms=5)
