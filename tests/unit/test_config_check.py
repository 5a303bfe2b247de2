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
