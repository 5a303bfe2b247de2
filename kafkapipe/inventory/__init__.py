"""The results sink: one row per task (CONTRACT §4)."""

from __future__ import annotations

from kafkapipe.config import InventoryConfig
from kafkapipe.inventory.sqlite import SqliteInventory


def open_inventory(config: InventoryConfig) -> SqliteInventory:
    return SqliteInventory(config.path)


__all__ = ["SqliteInventory", "open_inventory"]
