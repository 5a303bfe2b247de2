"""The one interface every inventory backend implements, and its errors.

The rule of an upsert, the same on every backend and enforced inside the database: one row
per ``task_id``; a ``success`` is never replaced; otherwise the row whose ``completed_at`` is
the latest wins (ties: the later write), so redeliveries and a replayed task's new attempt
land correctly in any order. A batch is one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol

from kafkapipe.errors import ConfigError
from kafkapipe.inventory.records import InventoryRow
from kafkapipe.messages import DownloadResult


class InventoryUnavailable(Exception):
    """The inventory cannot take or answer this now (locked, unreachable, failed over): retry."""


class SchemaMismatch(ConfigError):
    """The database's schema is not the one this version of kafkapipe writes (exit 2)."""


class Inventory(Protocol):
    backend: str

    def upsert(self, results: Iterable[DownloadResult]) -> int:
        """Write a batch in one transaction; returns the number of results given."""

    def lookup(self, task_id: str) -> InventoryRow | None:
        """The row of ``task_id``, e.g. to skip a download whose file is already stored."""

    def by_trace(self, trace_id: str) -> list[InventoryRow]:
        """Every row of one claim (``trace_id``), by ``completed_at`` then ``task_id``."""

    def summary(self) -> dict[str, int]:
        """Rows by status."""

    def count(self, status: str | None = None) -> int: ...

    def changed_since(self, since: datetime | None, after_task_id: str = "", limit: int = 10_000) -> list[InventoryRow]:
        """Up to ``limit`` rows after the key (``since``, ``after_task_id``) in (updated_at, task_id) order.

        ``since=None`` starts at the beginning. Paging on the pair, not the time alone, goes on
        past a batch whose rows all share one ``updated_at``.
        """

    def schema_version(self) -> int:
        """The version the database is at (0: no schema yet)."""

    def migrate(self) -> list[int]:
        """Apply the migrations the database lacks; returns the versions applied."""

    def check_schema(self) -> None:
        """Raise SchemaMismatch unless the database is at this version's schema."""

    def close(self) -> None: ...


def mismatch(backend: str, found: int, expected: int) -> SchemaMismatch:
    if found > expected:
        return SchemaMismatch(
            f"inventory ({backend}) schema is at version {found}, newer than this kafkapipe's {expected}: "
            "upgrade kafkapipe on this machine"
        )
    return SchemaMismatch(
        f"inventory ({backend}) schema is at version {found}, this kafkapipe needs {expected}: "
        "run `kafkapipe inventory migrate --config FILE`"
    )
