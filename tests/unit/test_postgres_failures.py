"""Which PostgreSQL errors hold the results stage (the inventory is unavailable) and which are
about one result (they propagate: the loop retries one by one and dead-letters the culprit)."""

from __future__ import annotations

import pytest
from psycopg import errors
from psycopg_pool import PoolTimeout

from kafkapipe.inventory.postgres import is_unavailable


@pytest.mark.parametrize("exc", [
    PoolTimeout("no connection"),
    errors.OperationalError("server closed the connection unexpectedly"),  # libpq: no SQLSTATE
    errors.ConnectionFailure("08006"),
    errors.AdminShutdown("57P01"),
    errors.CrashShutdown("57P02"),
    errors.CannotConnectNow("57P03"),
    errors.SerializationFailure("40001"),
    errors.DeadlockDetected("40P01"),
    errors.TooManyConnections("53300"),
    errors.ReadOnlySqlTransaction("25006"),
])
def test_connection_and_server_state_errors_are_unavailable(exc: Exception) -> None:
    assert is_unavailable(exc)


@pytest.mark.parametrize("exc", [
    errors.ProgramLimitExceeded("index row size exceeds btree version 4 maximum"),  # 54000
    errors.NumericValueOutOfRange("22003"),
    errors.CharacterNotInRepertoire("22021"),
    errors.UniqueViolation("23505"),
    errors.NotNullViolation("23502"),
    ValueError("not a database error"),
])
def test_errors_caused_by_what_a_result_holds_are_not(exc: Exception) -> None:
    assert not is_unavailable(exc)
