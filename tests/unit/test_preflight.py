"""Preflight: what a configuration needs of the host, found before a worker would fail on it."""

from __future__ import annotations

import socket

from kafkapipe.config import from_mapping
from kafkapipe.preflight import preflight


def _config(tmp_path, **sections):
    base = {"storage": {"root": str(tmp_path / "store")}, "inventory": {"path": str(tmp_path / "inv.sqlite3")},
            "metrics": {"bind": "127.0.0.1:0"}}
    return from_mapping({**base, **sections})


def test_a_ready_host_has_no_problems(tmp_path):
    assert preflight(_config(tmp_path)) == []


def test_a_missing_secret_file_is_named_by_its_key(tmp_path):
    config = _config(tmp_path, storage={"backend": "azure_blob", "azure": {
        "account_url": "https://acct.blob.core.windows.net", "container": "c",
        "credential": {"kind": "shared_key", "account_key_file": str(tmp_path / "absent")}}})
    (problem,) = preflight(config, ["download"])
    assert problem.startswith("storage.azure.credential.account_key_file: file ")
    assert preflight(config, ["ingest"]) == []


def test_an_account_key_that_does_not_decode_is_refused(tmp_path):
    key = tmp_path / "key"
    key.write_text("not base64!")
    config = _config(tmp_path, storage={"backend": "azure_blob", "azure": {
        "account_url": "https://acct.blob.core.windows.net", "container": "c",
        "credential": {"kind": "shared_key", "account_key_file": str(key)}}})
    (problem,) = preflight(config, ["download"])
    assert "account key is not valid base64" in problem


def test_an_inventory_under_a_plain_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    config = _config(tmp_path, inventory={"path": str(tmp_path / "file" / "sub" / "inv.sqlite3")})
    assert preflight(config, ["results"]) == [f"inventory.path: {tmp_path / 'file'} is not a directory"]
    assert preflight(config, ["ingest"]) == []


def test_a_busy_metrics_port_is_refused_unless_told_the_supervisor_holds_it(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        bind = f"127.0.0.1:{busy.getsockname()[1]}"
        config = _config(tmp_path, metrics={"bind": bind})
        (problem,) = preflight(config, [])
        assert problem.startswith(f"metrics.bind: cannot listen on {bind}")
        assert preflight(config, [], ports=False) == []


def test_an_unreadable_kafka_certificate_override_is_named(tmp_path):
    config = _config(tmp_path, kafka={"consumer": {"ssl.ca.location": str(tmp_path / "ca.pem")}})
    (problem,) = preflight(config, [])
    assert problem.startswith("kafka.consumer.ssl.ca.location: file ")
