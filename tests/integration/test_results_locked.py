"""The results stage holds, heartbeating, while another process keeps the inventory locked.

A real second process takes SQLite's exclusive lock on the inventory; the results stage — built
as a worker builds it, on the real broker — must keep calling ``heartbeat()`` well within the
supervisor's ``heartbeat_timeout`` (so it is never killed as stale) and hold the batch with
``Again``; once the lock goes, every result is written.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time

from kafkahelpers import wait_for
from pipelinehelpers import Pipeline

from kafkapipe import metrics
from kafkapipe.config import from_mapping
from kafkapipe.inventory.sqlite import SqliteInventory
from kafkapipe.messages import DownloadResult, dumps, utcnow
from kafkapipe.stages.building import build_stage
from kafkapipe.worker import WorkerControl

HEARTBEAT_TIMEOUT = 4.0
LOCKER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
db.execute("ROLLBACK")
"""


def result(n: int) -> bytes:
    return dumps(DownloadResult(task_id=f"{n:032d}", trace_id="T", attachment_url="https://h/a.pdf",
                                blob_path=f"p/{n}.pdf", status="success", attempt=1, completed_at=utcnow(),
                                duration_ms=1))


def test_results_stage_keeps_heartbeating_and_holds_while_the_inventory_is_locked(
        tmp_path, kafka_bootstrap, kafka_admin, unique_name):
    pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name("locked"), 443,
                    {"supervisor": {"heartbeat_timeout": HEARTBEAT_TIMEOUT}, "topics": {"partitions": 1}})
    pipe.create_topics(kafka_admin)
    config = from_mapping(pipe.data, source="test")
    SqliteInventory(pipe.inventory_path).close()  # schema in place before the lock is taken
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(pipe.inventory_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert locker.stdout.readline().strip() == "locked"

    beats: list[float] = []
    control = WorkerControl(on_heartbeat=lambda: beats.append(time.monotonic()))
    runner = threading.Thread(target=lambda: build_stage(config, "results", control).run(), name="results-loop")
    runner.start()
    try:
        pipe.produce([result(n) for n in range(3)], topic=pipe.topics["results"])
        held = metrics.AUTH_PAUSES.labels("results")
        before = held._value.get()
        # The batch met the lock, was held, and met it again twice more.
        wait_for(lambda: held._value.get() - before >= 3, 60, "the results stage to hold three times")
        locked_until = time.monotonic()
        assert pipe.rows() == []
        locker.stdin.close()
        locker.wait(10)
        pipe.wait_rows(3, timeout=60)
    finally:
        control.stop.set()
        runner.join(30)
        if locker.poll() is None:
            locker.kill()
    assert not runner.is_alive()
    during = [b for b in beats if b <= locked_until]
    gaps = [b - a for a, b in itertools.pairwise(during)]
    assert len(during) >= 3 and max(gaps) < HEARTBEAT_TIMEOUT, gaps
