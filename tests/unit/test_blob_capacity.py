"""A download the stage accepts must fit in one block blob: checked when the configuration loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafkapipe import config as cfg
from kafkapipe.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def _azure(max_bytes: int, block_size: int, backend: str = "azure_blob") -> dict:
    return {
        "download": {"max_bytes": max_bytes},
        "storage": {"backend": backend, "azure": {
            "block_size": block_size, "account_url": "https://acct.blob.core.windows.net", "container": "claims",
            "credential": {"kind": "shared_key", "account_key_env": "KP_KEY"},
        }},
    }


def test_four_mib_blocks_cap_a_blob_at_195_gib():
    capacity = 4 * MIB * 50_000
    assert cfg.from_mapping(_azure(capacity, 4 * MIB)).download.max_bytes == capacity
    with pytest.raises(ConfigError) as info:
        cfg.from_mapping(_azure(capacity + 1, 4 * MIB), "p.toml")
    message = str(info.value)
    assert message.startswith("p.toml: invalid configuration: download.max_bytes (")
    assert "storage.azure.block_size (4194304)" in message and "at least 4194305 " in message


def test_local_storage_has_no_block_limit():
    assert cfg.from_mapping(_azure(10**15, 4 * MIB, backend="local")).download.max_bytes == 10**15


def test_block_size_above_azures_limit_is_refused():
    with pytest.raises(ConfigError, match=r"storage\.azure: 'block_size' must be <= 4194304000"):
        cfg.from_mapping(_azure(MIB, 4000 * MIB + 1))


@given(st.integers(1, 2**50), st.integers(1, 4000 * MIB))
def test_capacity_rule_holds_for_any_sizes(max_bytes, block_size):
    try:
        cfg.from_mapping(_azure(max_bytes, block_size))
    except ConfigError as exc:
        assert max_bytes > block_size * 50_000, str(exc)
    else:
        assert max_bytes <= block_size * 50_000


def test_config_check_exits_2_naming_both_keys(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(
        "[download]\nmax_bytes = 300000000000\n"
        '[storage]\nbackend = "azure_blob"\n[storage.azure]\nblock_size = 4194304\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "kafkapipe.cli", "config", "check", "--config", str(path)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "download.max_bytes" in proc.stderr and "storage.azure.block_size" in proc.stderr
    assert proc.stdout == ""
