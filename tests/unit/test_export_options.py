"""Where `inventory export` may write and with which credentials (no remote store involved)."""

import base64

import pytest

from kafkapipe.config import from_mapping
from kafkapipe.inventory.export import ExportError, ParquetTarget, storage_options

KEY = base64.b64encode(b"k" * 32).decode()


def config(credential: dict):
    return from_mapping({"storage": {"backend": "azure_blob", "azure": {
        "account_url": "https://acct.blob.core.windows.net", "container": "c", "credential": credential}}})


def test_a_local_target_gets_no_credentials(monkeypatch):
    monkeypatch.setenv("EXPORT_KEY", KEY)
    cfg = config({"kind": "shared_key", "account_name": "acct", "account_key_env": "EXPORT_KEY"})
    assert storage_options("/var/lib/kafkapipe/export/inventory", cfg) == {}


def test_abfss_with_a_shared_key(monkeypatch):
    monkeypatch.setenv("EXPORT_KEY", KEY)
    cfg = config({"kind": "shared_key", "account_name": "acct", "account_key_env": "EXPORT_KEY"})
    options = storage_options("abfss://lake@acct.dfs.core.windows.net/inventory", cfg)
    assert options == {"account_name": "acct", "account_key": KEY}


def test_onelake_with_a_sas_uses_the_fabric_endpoint(monkeypatch):
    monkeypatch.setenv("EXPORT_SAS", "?sv=2024&sig=abc")
    cfg = config({"kind": "sas", "sas_token_env": "EXPORT_SAS"})
    options = storage_options("abfss://ws@onelake.dfs.fabric.microsoft.com/item.Lakehouse/Tables/inv", cfg)
    assert options == {"use_fabric_endpoint": "true", "sas_token": "sv=2024&sig=abc"}


def test_parquet_refuses_a_remote_target():
    with pytest.raises(ExportError, match="local file"):
        ParquetTarget("abfss://lake@acct.dfs.core.windows.net/inventory.parquet")
