"""journald: `<N>` syslog priority prefixes when stderr is the journal's stream ($JOURNAL_STREAM)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kafkapipe import log as klog

ROOT = Path(__file__).resolve().parents[2]


def stream_id(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], level = saved
    root.setLevel(level)


@pytest.mark.parametrize(("level", "prio"), [
    (logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3), (logging.CRITICAL, 2),
    (logging.INFO + 5, 6), (logging.WARNING + 1, 4), (5, 7),
])
def test_priority_of_each_level(level, prio):
    assert klog.priority(level) == prio


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_lines_get_the_prefix_only_when_the_stream_is_the_journal(tmp_path, monkeypatch, restore_logging, fmt):
    path = tmp_path / "stderr"
    with open(path, "w") as stream:
        monkeypatch.setenv("JOURNAL_STREAM", stream_id(path))
        klog.setup("DEBUG", fmt, stream)
        logger = logging.getLogger("kafkapipe.test")
        logger.info("started")
        logger.warning("slow host")
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("failed")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("<6>") and lines[1].startswith("<4>")
    if fmt == "text":  # the traceback spans lines, each its own journal entry at the record's priority
        assert len(lines) > 3 and all(line.startswith("<3>") for line in lines[2:])
    else:
        assert len(lines) == 3 and lines[2].startswith("<3>")
        assert json.loads(lines[2][3:])["level"] == "ERROR"


def test_no_prefix_for_another_stream_or_a_bad_variable(tmp_path, monkeypatch, restore_logging):
    journal, other = tmp_path / "journal", tmp_path / "other"
    journal.write_text("")
    for value in (stream_id(journal), "", "garbage", "1:", ":2"):
        monkeypatch.setenv("JOURNAL_STREAM", value)
        with open(other, "w") as stream:
            assert not klog.writes_to_journal(stream)
    with open(journal, "a") as stream:
        assert klog.writes_to_journal(stream, {"JOURNAL_STREAM": stream_id(journal)})
        assert not klog.writes_to_journal(stream, {})


def test_a_real_worker_that_cannot_boot_logs_at_priority_3(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = tmp_path / "pipeline.toml"
    config.write_text(f'[inventory]\npath = "{blocker}/inventory.sqlite3"\n[logging]\nformat = "json"\n')
    err = tmp_path / "stderr"
    with open(err, "w") as stream:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKAPIPE_")}
        env["JOURNAL_STREAM"] = stream_id(err)
        proc = subprocess.run(
            [sys.executable, "-m", "kafkapipe", "worker", "--stage", "results", "--config", str(config)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stream, timeout=120,
        )
    assert proc.returncode == 3
    lines = err.read_text().splitlines()
    failed = [line for line in lines if "failed to boot" in line]
    assert len(failed) == 1 and failed[0].startswith("<3>{")
    assert all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines)
