"""The results sink: one row per task, in SQLite (one VM) or PostgreSQL (shared by many).

Every reader and writer goes through :func:`open_inventory` and the :class:`Inventory`
interface; the backend is chosen by ``[inventory] backend`` and nowhere else.
"""

from __future__ import annotations

from kafkapipe.auth.credentials import SecretSource
from kafkapipe.config import InventoryConfig
from kafkapipe.errors import AuthError, ConfigError
from kafkapipe.inventory.base import Inventory, InventoryUnavailable, SchemaMismatch
from kafkapipe.inventory.records import COLUMNS, InventoryRow

WHERE = "inventory.postgresql"


def open_inventory(
    config: InventoryConfig, *, check_schema: bool = True, busy_wait: float | None = None
) -> Inventory:
    """The configured inventory; SchemaMismatch (a ConfigError) unless its schema is this version's.

    ``check_schema=False`` is for ``inventory migrate``, which brings the schema up to date.
    ``busy_wait`` bounds how long one SQLite write waits for another process's lock, so a
    stage that writes from its consume loop keeps heartbeating.
    """
    inventory: Inventory
    if config.backend == "postgresql":
        from kafkapipe.inventory.postgres import PostgresInventory

        pg = config.postgresql
        inventory = PostgresInventory(
            conninfo(config), pool_min=pg.pool_min, pool_max=pg.pool_max, timeout=pg.connect_timeout
        )
    else:
        from kafkapipe.inventory.sqlite import SqliteInventory

        inventory = SqliteInventory(config.path) if busy_wait is None else SqliteInventory(config.path, busy_wait)
    if check_schema:
        try:
            inventory.check_schema()
        except BaseException:
            inventory.close()
            raise
    return inventory


def conninfo(config: InventoryConfig) -> str:
    """The libpq connection string: the DSN from its secret source plus the TLS settings."""
    from psycopg.conninfo import make_conninfo

    pg = config.postgresql
    try:
        dsn = SecretSource(WHERE, "dsn", pg.dsn_env, pg.dsn_file).read()
    except AuthError as exc:
        raise ConfigError(exc.message) from None
    tls = {k: getattr(pg, k) for k in ("sslmode", "sslrootcert", "sslcert", "sslkey") if getattr(pg, k)}
    try:
        return make_conninfo(
            dsn, connect_timeout=max(1, round(pg.connect_timeout)), application_name="kafkapipe", **tls
        )
    except Exception:  # the message would quote the DSN, password included
        raise ConfigError(f"{WHERE}: the DSN from {pg.dsn_env or pg.dsn_file} is not a valid libpq DSN") from None


__all__ = [
    "COLUMNS",
    "Inventory",
    "InventoryRow",
    "InventoryUnavailable",
    "SchemaMismatch",
    "open_inventory",
]
