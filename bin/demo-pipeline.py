#!/usr/bin/env python3
"""Runs the pipeline against a broker and shows sample attachments arriving (see bin/kafkapipe-demo)."""

from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "demo"
PY = sys.executable

# Small but real files: the download stage checks types from the first bytes.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ffff3f0005fe02fe"
    "a7d6a48f0000000049454e44ae426082"
)
SAMPLES = {
    "estimate.pdf": b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n",
    "photo-front.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    + bytes(2048)
    + b"\xff\xd9",
    "roof.png": PNG,
    "adjuster-notes.txt": b"Roof damage on the north side. Hail, 2 cm. Photos attached.\n" * 40,
}


def say(text: str) -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_samples(files: Path, claims: int) -> None:
    files.mkdir(parents=True, exist_ok=True)
    for claim in range(claims):
        for name, body in SAMPLES.items():
            (files / f"CLM-{claim:04d}-{name}").write_bytes(body + f"\nclaim {claim}\n".encode() * (name != "roof.png"))


def write_config(port: int, bootstrap: str) -> Path:
    metrics_port = free_port()
    config = f"""# written by bin/demo-pipeline.py
[kafka]
bootstrap_servers = "{bootstrap}"
group_prefix = "kafkapipe-demo"
[topics]
retry_delays = ["5s", "10s", "20s", "40s"]
[supervisor]
shutdown_timeout = 10.0
[download]
allowed_schemes = ["http"]
allowed_ports = [{port}]
allow_cidrs = ["127.0.0.0/8"]
[storage]
root = "{VAR / 'attachments'}"
[inventory]
path = "{VAR / 'inventory.sqlite3'}"
[metrics]
bind = "127.0.0.1:{metrics_port}"
[logging]
format = "text"
"""
    path = VAR / "pipeline.toml"
    path.write_text(config)
    return path


def write_events(port: int, claims: int) -> tuple[Path, Path, int]:
    rng = random.Random(1)
    lines, expected = [], 0
    run = time.strftime("%Y%m%d%H%M%S")
    for claim in range(claims):
        names = rng.sample(sorted(SAMPLES), rng.randint(1, 3))
        urls = [f"http://127.0.0.1:{port}/CLM-{claim:04d}-{n}" for n in names]
        if claim == claims - 1:
            urls.append(f"http://127.0.0.1:{port}/CLM-{claim:04d}-missing.pdf")  # → 404 → DLQ
        expected += len(urls)
        lines.append(json.dumps({
            "trace_id": f"demo-{run}-{claim:04d}", "event_type": "xact.claims.documentsReceived",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "source_system": "xact",
            "assignment_id": f"A-{claim:04d}", "attachments": urls,
        }))
    good = VAR / "events.jsonl"
    good.write_text("\n".join(lines) + "\n")
    bad = VAR / "malformed.jsonl"
    bad.write_text('{"trace_id": "demo-bad", "event_type": "x", "timestamp": "yesterday"}\nnot json at all\n')
    return good, bad, expected


def kafkapipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "kafkapipe.cli", *args], cwd=ROOT, text=True, capture_output=True)


def inventory_rows(path: Path) -> int:
    try:
        db = sqlite3.connect(path, timeout=5)
        try:
            return db.execute("SELECT COUNT(*) FROM attachments").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:
        return 0


def watch(storage: Path, inventory: Path, expected: int, timeout: float) -> None:
    seen: set[Path] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in sorted(storage.rglob("*")) if storage.exists() else []:
            if path.is_file() and not path.name.startswith(".tmp-") and path not in seen:
                seen.add(path)
                say(f"  stored  {path.relative_to(storage)}  ({path.stat().st_size} bytes)")
        if inventory_rows(inventory) >= expected:
            return
        time.sleep(0.3)
    say(f"  (stopped waiting after {timeout:.0f}s: {inventory_rows(inventory)} of {expected} results in)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--events", type=int, default=12, help="number of sample claim events")
    parser.add_argument("--keep-running", action="store_true", help="leave the supervisor running until Ctrl-C")
    args = parser.parse_args()

    VAR.mkdir(parents=True, exist_ok=True)
    files = VAR / "files"
    write_samples(files, args.events)
    port = free_port()
    server = subprocess.Popen(
        [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(files)],
        stdout=subprocess.DEVNULL, stderr=open(VAR / "fileserver.log", "ab"),  # noqa: SIM115 - lives as long as the server
    )
    config = write_config(port, args.bootstrap)
    say(f"kafkapipe demo: broker {args.bootstrap}, sample files on http://127.0.0.1:{port}/, config {config}")
    created = kafkapipe("topics", "create", "--config", str(config))
    if created.returncode:
        say(created.stderr)
        return 1
    log = open(VAR / "supervisor.log", "ab")  # noqa: SIM115 - lives as long as the supervisor
    supervisor = subprocess.Popen([PY, str(ROOT / "bin" / "kafkapipe-supervisor"), "--config", str(config)],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        good, bad, expected = write_events(port, args.events)
        say(kafkapipe("produce", "--config", str(config), str(good)).stdout.strip())
        say(kafkapipe("produce", "--config", str(config), "--allow-invalid", str(bad)).stdout.strip()
            + " (malformed on purpose: they go to the events DLQ)")
        say(f"waiting for {expected} attachments (one is missing on purpose: 404 → DLQ) …")
        watch(VAR / "attachments", VAR / "inventory.sqlite3", expected, timeout=180)
        say("\ninventory (" + str(VAR / "inventory.sqlite3") + "):")
        say(kafkapipe("inventory", "summary", "--config", str(config)).stdout.rstrip())
        say("\ndead letters (kafkapipe dlq list):")
        say(kafkapipe("dlq", "list", "--config", str(config)).stdout.rstrip())
        last_claim = json.loads(good.read_text().splitlines()[-1])["trace_id"]  # the one with the 404
        for command in (["status"], ["dlq", "stats"], ["trace", last_claim]):
            say(f"\n$ kafkapipe {' '.join(command)}")
            say(kafkapipe(*command, "--config", str(config)).stdout.rstrip())
        if args.keep_running:
            say("\nsupervisor running; metrics at http://" + config.read_text().split('bind = "')[1].split('"')[0]
                + "/metrics — Ctrl-C to stop")
            supervisor.wait()
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.send_signal(signal.SIGTERM)
        code = supervisor.wait(60)
        server.terminate()
        server.wait(10)
        say(f"\nsupervisor stopped (exit {code}); logs in {VAR}. Broker still up: bin/kafka-local stop --dir var/kafka")
    return 0


if __name__ == "__main__":
    sys.exit(main())
