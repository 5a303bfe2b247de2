"""The ``[migrate]`` column mapping: documented defaults, and ``config check`` refusing a bad one (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def check(tmp_path, text: str) -> subprocess.CompletedProcess:
    config = tmp_path / "pipeline.toml"
    config.write_text(text)
    return subprocess.run([sys.executable, "-m", "kafkapipe.cli", "config", "check", "--config", str(config)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_a_custom_mapping_is_accepted_and_shown(tmp_path):
    run = check(tmp_path, '[migrate]\nattachment_url = "doc_uri"\nnext_retry_at = "due_ts"\n')
    assert run.returncode == 0, run.stderr
    assert '"attachment_url": "doc_uri"' in run.stdout and '"trace_id": "trace_id"' in run.stdout


@pytest.mark.parametrize("text, named", [
    ('[migrate]\ncreated_at = ""\n', "created_at"),
    ('[migrate]\nnext_retry_at = "created_at"\n', "created_at"),
    ('[migrate]\nbatch_size = 0\n', "batch_size"),
    ('[migrate]\nsha = "x"\n', "sha"),
    ('[migrate]\ntrace_id = "a\\u0007b"\n', "trace_id"),
])
def test_config_check_refuses_a_bad_mapping_naming_the_key(tmp_path, text, named):
    run = check(tmp_path, text)
    assert run.returncode == 2 and "migrate" in run.stderr and named in run.stderr, run.stderr
