"""Workers are named in ps: `kafkapipe: <stage> worker <n>`, n being the log's `worker` field."""

from __future__ import annotations

import re
from pathlib import Path


def title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_supervised_workers_are_named_by_stage_and_number(supervised):
    sup = supervised()
    sup.start()
    sup.wait_ready()
    pids = sup.wait_stage("download", 2)
    titles = [title(pid) for pid in pids]
    numbers = []
    for text in titles:
        match = re.fullmatch(r"kafkapipe: download worker (\d+)", text)
        assert match, titles
        numbers.append(int(match.group(1)))
    assert len(set(numbers)) == 2
    (ingest,) = sup.wait_stage("ingest", 1)
    assert re.fullmatch(r"kafkapipe: ingest worker \d+", title(ingest))
    logged = {line.get("worker") for line in sup.log_lines() if line.get("stage") == "download"}
    assert set(numbers) <= logged


def test_a_foreground_worker_is_named_by_stage(supervised):
    sup = supervised()
    proc = sup.pipe.start_worker("ingest")
    try:
        sup.wait_until(lambda: title(proc.pid) == "kafkapipe: ingest worker", "the worker to name itself", 60)
    finally:
        sup.pipe.stop()
