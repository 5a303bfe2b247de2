"""Inventory logic without a server: what a row keeps of a URL, and the SQLite file's migration.

The upsert rules are tested on both backends in tests/integration/test_inventory_backends.py.
"""

import hashlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafkapipe.config import InventoryConfig
from kafkapipe.inventory import SchemaMismatch, open_inventory
from kafkapipe.inventory.records import row_values, stored_url
from kafkapipe.inventory.sqlite import MIGRATIONS, SqliteInventory
from kafkapipe.messages import DownloadResult, format_ts

SIG = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
PRESIGNED = f"https://b.s3.amazonaws.com/c/1.pdf?X-Amz-Security-Token=SESSIONCANARY&X-Amz-Signature={SIG}"

_query_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@given(
    host=st.sampled_from(["h.example", "127.0.0.1", "[::1]", "xn--bcher-kva.example"]),
    path=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="?#"), max_size=40),
    query=_query_text,
    fragment=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
    userinfo=st.sampled_from(["", "user:pa55word@"]),
)
def test_a_stored_url_keeps_no_query_fragment_or_userinfo(host, path, query, fragment, userinfo):
    url = f"https://{userinfo}{host}/{path}?secret={query}#{fragment}"
    kept = stored_url(url)
    assert "?" not in kept and "#" not in kept and "pa55word" not in kept
    assert f"secret={query}" not in kept


@given(st.text(max_size=200))
def test_any_url_text_gives_a_row_with_its_full_hash(text):
    result = DownloadResult(task_id="t", trace_id="tr", attachment_url=text, blob_path="p", status="success",
                            attempt=1, completed_at=datetime.now(UTC), duration_ms=1)
    values = row_values(result)
    assert values["url_sha256"] == hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    assert "?" not in values["attachment_url"]


def _write_version_1_file(path: Path) -> None:
    """A file as the inventory wrote it before versioning, holding a full presigned URL."""
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[1]:
        db.execute(statement)
    now = format_ts(datetime(2026, 11, 1, tzinfo=UTC))
    db.execute(
        "INSERT INTO attachments VALUES (?, 'tr', ?, 'p', 'failed_transient', 1, 503, NULL, NULL, NULL, NULL,"
        " 'transient', ?, ?, ?)",
        ("old", PRESIGNED, f"HTTP 503 from {PRESIGNED}", now, now),
    )
    db.commit()
    db.close()


def test_an_old_sqlite_file_is_refused_until_migrated_and_then_holds_no_signature(tmp_path):
    path = tmp_path / "inventory.sqlite3"
    _write_version_1_file(path)
    assert SIG.encode() in path.read_bytes()
    config = InventoryConfig(backend="sqlite", path=str(path))
    with pytest.raises(SchemaMismatch, match="inventory migrate"):
        open_inventory(config)

    inventory = open_inventory(config, check_schema=False)
    assert inventory.migrate() == [2]
    inventory.close()

    inventory = open_inventory(config)
    row = inventory.lookup("old")
    inventory.close()
    assert row.attachment_url == "https://b.s3.amazonaws.com/c/1.pdf"
    assert row.url_sha256 == hashlib.sha256(PRESIGNED.encode()).hexdigest()
    assert SIG not in row.error_message
    for file in tmp_path.glob("inventory.sqlite3*"):
        data = file.read_bytes()
        assert SIG.encode() not in data and b"SESSIONCANARY" not in data, file.name


def test_a_new_sqlite_file_is_created_at_the_latest_version(tmp_path):
    inventory = SqliteInventory(tmp_path / "new.sqlite3")
    assert inventory.schema_version() == max(MIGRATIONS)
    inventory.check_schema()
    inventory.close()


def test_the_dsn_comes_from_its_env_var_with_tls_settings_passed_through(monkeypatch):
    from psycopg.conninfo import conninfo_to_dict

    from kafkapipe.config import PostgresInventoryConfig
    from kafkapipe.errors import ConfigError
    from kafkapipe.inventory import conninfo

    pg = PostgresInventoryConfig(dsn_env="INV_DSN", sslmode="verify-full", sslrootcert="/etc/ca.pem",
                                 connect_timeout=7.0)
    config = InventoryConfig(backend="postgresql", postgresql=pg)
    monkeypatch.delenv("INV_DSN", raising=False)
    with pytest.raises(ConfigError, match=r"inventory\.postgresql\.dsn_env: environment variable INV_DSN"):
        conninfo(config)
    monkeypatch.setenv("INV_DSN", "postgresql://app:pw@db.internal:5432/claims")
    params = conninfo_to_dict(conninfo(config))
    assert params["sslmode"] == "verify-full" and params["sslrootcert"] == "/etc/ca.pem"
    assert params["host"] == "db.internal" and params["dbname"] == "claims" and params["connect_timeout"] == "7"
