"""`kafkapipe config check` masks credentials by what they look like, not only by their key's name."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_KEY = base64.b64encode(b"K" * 40 + bytes(range(26))).decode()  # an Azure account key's shape


def test_config_check_masks_credentials_wherever_they_sit(tmp_path):
    config = tmp_path / "pipeline.toml"
    config.write_text(
        '[kafka.producer]\n'
        f'"client.rack" = "{ACCOUNT_KEY}"\n'
        '"client.id" = "kafkapipe-producer"\n'
        '[storage.azure]\n'
        'account_url = "https://acct.blob.core.windows.net/?sv=2023-11-03&ss=b&sig=CANARY-SIG%3D"\n'
        'container = "claims"\n'
        '[download]\n'
        'user_agent = "kafkapipe/1 x-api-key: CANARY-HDR"\n'
        'allowed_hosts = ["files.example.com"]\n'
        '[metrics]\nbind = "127.0.0.1:0"\n'  # config check also checks the port is free
        f'[storage]\nroot = "{tmp_path}/store"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kafkapipe.cli", "config", "check", "--config", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=True,
    )
    out = proc.stdout
    assert "CANARY" not in out and ACCOUNT_KEY not in out
    shown = json.loads(out)  # nothing but JSON on stdout
    assert "effective configuration from" in proc.stderr
    assert shown["storage"]["azure"]["account_url"] == "https://acct.blob.core.windows.net/?<redacted>"
    assert shown["kafka"]["producer"]["client.rack"] == "***"
    assert shown["kafka"]["producer"]["client.id"] == "kafkapipe-producer"
    assert shown["storage"]["azure"]["container"] == "claims"
    assert shown["download"]["allowed_hosts"] == ["files.example.com"]
    assert shown["download"]["user_agent"].startswith("kafkapipe/1 x-api-key:")


def _check(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kafkapipe.cli", "config", "check", "--config", str(config), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )


def test_a_missing_backend_setting_fails_config_check_with_exit_2_naming_the_key(tmp_path):
    config = tmp_path / "pipeline.toml"
    config.write_text('[storage]\nbackend = "azure_blob"\n[storage.azure]\ncontainer = "claims"\n')
    proc = _check(config)
    assert proc.returncode == 2, proc.stderr
    assert "storage.azure.account_url: required for backend azure_blob" in proc.stderr
    assert str(config) in proc.stderr
    assert proc.stdout == ""


def test_config_check_runs_the_preflight_for_the_stages_named(tmp_path):
    config = tmp_path / "pipeline.toml"
    config.write_text(
        f'[storage]\nroot = "{tmp_path}/plain-file/attachments"\n'
        f'[metrics]\nbind = "127.0.0.1:0"\n'
    )
    (tmp_path / "plain-file").write_text("not a directory")
    proc = _check(config)
    assert proc.returncode == 2, proc.stderr
    assert f"storage.root: {tmp_path}/plain-file is not a directory" in proc.stderr
    # The ingest stage stores nothing: its instance does not need the storage root.
    ingest_only = _check(config, "--stages", "ingest", "--reload")
    assert ingest_only.returncode == 0, ingest_only.stderr
    assert ingest_only.stdout.strip() == f"{config}: configuration OK"
