"""A real pipeline for tests: a TOML config of its own, real topics, real worker processes.

Every test gets unique topic names, a unique consumer-group prefix, its own storage root and
inventory, so tests never see each other's messages.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tomli_w
from confluent_kafka import Consumer, Producer, TopicPartition
from kafkahelpers import create_topics, wait_for

ROOT = Path(__file__).resolve().parent.parent


def to_toml(data: dict[str, Any]) -> str:
    return tomli_w.dumps(data)


def unexpected_tracebacks(text: str, expected: Iterable[str] = ()) -> list[str]:
    """Log lines carrying a traceback, except JSON records whose message starts with one in ``expected``."""
    found = []
    for line in text.splitlines():
        if "Traceback (most recent call last)" not in line:
            continue
        try:
            msg = str(json.loads(line).get("msg", ""))
        except ValueError:  # not one of our records: a raw crash on stderr
            found.append(line)
            continue
        if not any(msg.startswith(prefix) for prefix in expected):
            found.append(line)
    return found


def deep_merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


class Pipeline:
    """Config, topics and stage processes of one test's pipeline."""

    def __init__(self, tmp_path: Path, bootstrap: str, name: str, server_port: int,
                 overrides: dict | None = None) -> None:
        self.tmp = tmp_path
        self.bootstrap = bootstrap
        self.data = deep_merge(self.base_config(tmp_path, bootstrap, name, server_port), overrides or {})
        self.config_path = tmp_path / "pipeline.toml"
        self.write_config()
        self.procs: list[subprocess.Popen] = []
        # Log messages a test provokes with a traceback on purpose; any other traceback fails it.
        self.expected_tracebacks: tuple[str, ...] = ()
        # Exit statuses a test provokes on purpose, besides 0 and the -9 of a worker it killed.
        self.expected_exits: set[int] = set()

    @staticmethod
    def base_config(tmp: Path, bootstrap: str, name: str, port: int) -> dict:
        return {
            "kafka": {"bootstrap_servers": bootstrap, "group_prefix": name},
            "topics": {
                "events": f"{name}.events", "pending": f"{name}.pending", "results": f"{name}.results",
                "dlq": f"{name}.dlq", "events_dlq": f"{name}.events.dlq", "retry_prefix": f"{name}.retry",
                "retry_delays": ["1s", "2s"], "partitions": 3,
            },
            "supervisor": {"shutdown_timeout": 15.0},
            "stages": {"download": {"processes": 1, "threads": 8}},
            "download": {
                "allowed_schemes": ["http", "https"], "allowed_ports": [port],
                "allow_cidrs": ["127.0.0.0/8"], "connect_timeout": 2.0, "read_timeout": 5.0,
            },
            "storage": {"root": str(tmp / "attachments")},
            "inventory": {"path": str(tmp / "inventory.sqlite3")},
            "logging": {"level": "INFO", "format": "json"},
        }

    def write_config(self) -> None:
        self.config_path.write_text(to_toml(self.data))

    @property
    def topics(self) -> dict:
        return self.data["topics"]

    @property
    def storage_root(self) -> Path:
        return Path(self.data["storage"]["root"])

    @property
    def inventory_path(self) -> Path:
        return Path(self.data["inventory"]["path"])

    def all_topics(self) -> list[str]:
        t = self.topics
        retry = [f"{t['retry_prefix']}.{d}" for d in t["retry_delays"]]
        return [t["events"], t["pending"], t["results"], t["dlq"], t["events_dlq"], *retry]

    def create_topics(self, admin) -> None:
        create_topics(admin, self.all_topics(), partitions=self.topics["partitions"])

    # ------------------------------------------------------------------ processes
    def cli(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "kafkapipe.cli", *args], capture_output=True, text=True,
            timeout=timeout, cwd=ROOT, env=self.env(),
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kafkapipe {' '.join(args)} exited {proc.returncode}: {proc.stderr[-3000:]}")
        return proc

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKAPIPE_")}
        env["PYTHONPATH"] = str(ROOT)
        return env

    def start_worker(self, stage: str) -> subprocess.Popen:
        log = open(self.tmp / f"{stage}-{len(self.procs)}.log", "ab")  # noqa: SIM115 - owned by the Popen
        proc = subprocess.Popen(
            [sys.executable, "-m", "kafkapipe.cli", "worker", "--config", str(self.config_path),
             "--stage", stage],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env(),
        )
        self.procs.append(proc)
        return proc

    def start(self, stages: Iterable[str] = ("ingest", "download", "results")) -> None:
        for stage in stages:
            self.start_worker(stage)

    def stop(self, timeout: float = 30) -> list[int]:
        """TERM every worker and wait; AssertionError on a worker that needed KILL, exited badly, or
        logged a traceback nobody expected (a test that fails here names the worker and the line)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes, stuck = [], []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
                stuck.append(proc.pid)
        self.procs = [p for p in self.procs if p.poll() is None]
        self.check_workers(codes, stuck)
        return codes

    def check_workers(self, codes: list[int], stuck: list[int]) -> None:
        allowed = {0, -signal.SIGKILL, *self.expected_exits}
        bad = [code for code in codes if code not in allowed]
        assert not stuck, f"worker(s) {stuck} did not stop within the timeout and were killed"
        assert not bad, f"worker exit codes {codes}\n--- logs ---\n{self.logs()[-3000:]}"
        unexpected = unexpected_tracebacks(self.logs(), self.expected_tracebacks)
        assert not unexpected, "traceback(s) in worker logs:\n" + "\n".join(unexpected)[-3000:]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("*.log")))

    # ------------------------------------------------------------------ messages
    def produce(self, values: Iterable[bytes | dict], topic: str | None = None) -> int:
        producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True})
        count = 0
        for value in values:
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            producer.produce(topic or self.topics["events"], value=raw)
            producer.poll(0)
            count += 1
        assert producer.flush(30) == 0, "events not acknowledged"
        return count

    def read_topic(self, topic: str, count: int, timeout: float = 60) -> list:
        """Reads ``count`` messages from the start of ``topic`` (fails on a shortfall)."""
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
        })
        consumer.subscribe([topic])
        got: list = []
        try:
            def enough() -> bool:
                for msg in consumer.consume(100, timeout=0.2):
                    if msg.error() is None:
                        got.append(msg)
                return len(got) >= count

            wait_for(enough, timeout, f"{count} messages on {topic} (have {len(got)})")
        finally:
            consumer.close()
        return got

    def lag(self, stage: str, topic: str) -> int:
        """Messages on ``topic`` not yet committed by the stage's consumer group."""
        group = f"{self.data['kafka']['group_prefix']}.{stage}"
        probe = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
            committed = probe.committed([TopicPartition(topic, p) for p in parts], timeout=10)
            total = 0
            for tp in committed:
                low, high = probe.get_watermark_offsets(tp, timeout=10)
                total += high - (tp.offset if tp.offset >= 0 else low)
            return total
        finally:
            probe.close()

    def count(self, topic: str) -> int:
        """Messages ever written to ``topic`` (sum of its partitions' high watermarks)."""
        probe = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"count-{time.monotonic_ns()}"})
        try:
            parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
            return sum(probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
        finally:
            probe.close()

    def wait_caught_up(self, stage: str, topic: str, timeout: float = 60) -> None:
        wait_for(lambda: self.lag(stage, topic) == 0, timeout, f"{stage} to commit all of {topic}", interval=0.3)

    # ------------------------------------------------------------------ inventory
    def rows(self) -> list[dict]:
        if self.data["inventory"].get("backend") == "postgresql":
            return self._rows_through_interface()
        if not self.inventory_path.exists():
            return []
        db = sqlite3.connect(self.inventory_path, timeout=10)
        try:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute("SELECT * FROM attachments")]
        except sqlite3.OperationalError:  # table not created yet by the results stage
            return []
        finally:
            db.close()

    def _rows_through_interface(self) -> list[dict]:
        from kafkapipe.config import load
        from kafkapipe.inventory import open_inventory

        inventory = open_inventory(load(self.config_path, environ={}).inventory)
        try:
            return [r.as_dict() for r in inventory.changed_since(None, limit=1_000_000)]
        finally:
            inventory.close()

    def wait_rows(self, count: int, timeout: float = 120, status: str | None = None) -> list[dict]:
        def done():
            rows = self.rows()
            matching = [r for r in rows if status is None or r["status"] == status]
            return rows if len(matching) >= count else None

        try:
            return wait_for(done, timeout, f"{count} inventory rows" + (f" with status {status}" if status else ""),
                            interval=0.2)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; have {len(self.rows())}\n--- logs ---\n{self.logs()[-6000:]}") from None

    def stored_files(self) -> list[Path]:
        return sorted(p for p in self.storage_root.rglob("*") if p.is_file())


def event(trace_id: str, urls: list[str], **extra: Any) -> dict:
    return {
        "trace_id": trace_id,
        "event_type": "xact.claims.documentsReceived",
        "timestamp": "2026-11-25T19:09:22.123+00:00",
        "source_system": "xact",
        "attachments": urls,
        **extra,
    }
