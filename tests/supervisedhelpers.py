"""The real supervisor (``bin/kafkapipe-supervisor``) in a subprocess, as tests and ``bin/chaos`` drive it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from kafkahelpers import wait_for
from pipelinehelpers import Pipeline, event
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from tests.integration.httpfaults import FaultServer

ROOT = Path(__file__).resolve().parent.parent
SUPERVISOR = ROOT / "bin" / "kafkapipe-supervisor"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 16


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper has stopped running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def worker_pids(supervisor_pid: int) -> set[int]:
    """Living children of the supervisor according to /proc, whatever its endpoints say."""
    children = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == supervisor_pid and fields[0] != "Z":
            children.add(int(entry))
    return children


class Supervised:
    """One test's pipeline run by the real supervisor."""

    def __init__(self, pipe: Pipeline, server: FaultServer) -> None:
        self.pipe = pipe
        self.server = server
        self.proc: subprocess.Popen | None = None
        self.log_path = pipe.tmp / "supervisor.log"
        self.starts = 0
        # Log messages a test provokes with a traceback on purpose; any other fails it at teardown.
        self.expected_tracebacks: tuple[str, ...] = ()

    # ------------------------------------------------------------------ process
    @property
    def port(self) -> int:
        return int(self.pipe.data["metrics"]["bind"].rsplit(":", 1)[1])

    @property
    def metrics_dir(self) -> Path:
        return Path(self.pipe.data["metrics"]["multiproc_dir"])

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the Popen
        self.proc = subprocess.Popen(
            [sys.executable, str(SUPERVISOR), "--config", str(self.pipe.config_path), *args],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.pipe.tmp, env={**self.pipe.env(), **(env or {})},
        )
        log.close()
        return self.proc

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"supervisor still running after {timeout:g}s\n{self.tail()}") from None

    def stop(self, timeout: float = 60) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # its workers die with it (PR_SET_PDEATHSIG)
            return self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self) -> list[dict]:
        lines = []
        for line in self.log().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                lines.append({"msg": line, "not_json": True})
        return lines

    def tail(self, chars: int = 6000) -> str:
        return "--- supervisor log ---\n" + self.log()[-chars:]

    def wait_log(self, text: str, timeout: float = 60) -> None:
        try:
            wait_for(lambda: text in self.log(), timeout, f"{text!r} in the supervisor log", interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    # ------------------------------------------------------------------ HTTP
    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError):
            return 0, b""

    def health(self) -> dict:
        status, body = self.get("/healthz")
        return json.loads(body) if status in (200, 503) else {}

    def stages(self) -> dict:
        return self.health().get("stages", {})

    def wait_until(self, predicate, what: str, timeout: float = 90):
        try:
            return wait_for(predicate, timeout, what, interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\nlast /healthz: {self.health()}\n{self.tail()}") from None

    def wait_ready(self, timeout: float = 90) -> dict:
        self.wait_until(lambda: self.get("/readyz")[0] == 200, "/readyz to answer 200", timeout)
        return self.stages()

    def wait_stage(self, stage: str, count: int, timeout: float = 90, exclude: set[int] = frozenset()) -> list[int]:
        """Waits until ``stage`` has ``count`` expected, alive and ready workers, none in ``exclude``."""

        def settled():
            info = self.stages().get(stage, {})
            pids = info.get("pids", [])
            ok = info.get("expected") == info.get("alive") == info.get("ready") == count == len(pids)
            return pids if ok and not set(pids) & set(exclude) else None

        return self.wait_until(settled, f"{stage} to run {count} ready worker(s)", timeout)

    def scrape(self) -> list:
        status, body = self.get("/metrics")
        assert status == 200, f"/metrics answered {status}"
        return list(text_string_to_metric_families(body.decode()))

    def metric(self, name: str, **labels: str) -> float:
        """Sum of every sample called ``name`` whose labels include ``labels``."""
        total = 0.0
        for family in self.scrape():
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    # ------------------------------------------------------------------ work
    def publish(self, count: int, prefix: str, stall: float = 0.0, query: str = "") -> list[str]:
        """``count`` events with one PDF attachment each; returns the attachment URLs."""
        urls = []
        events = []
        for i in range(count):
            path = f"/claims/{prefix}/{i}/doc.pdf"
            behaviour = {"stall": stall} if stall else {}
            self.server.add(path, PDF, content_type="application/pdf", **behaviour)
            url = self.server.url(path, query=query)
            urls.append(url)
            events.append(event(f"trace-{prefix}-{i}", [url]))
        self.pipe.produce(events)
        return urls

    def wait_rows(self, count: int, timeout: float = 120) -> list[dict]:
        try:
            return self.pipe.wait_rows(count, timeout=timeout, status="success")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail()}") from None


class NotifyListener:
    """A systemd notify socket (abstract AF_UNIX datagram) collecting every message, as ``KEY=value`` dicts.

    ``with NotifyListener() as notify: sup.start(env=notify.env)``.
    """

    def __init__(self) -> None:
        self.name = f"kafkapipe-test-{uuid.uuid4().hex}"
        self.received: list[dict[str, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.name)
        self._sock.settimeout(0.2)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="notify-listener", daemon=True)

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": "@" + self.name}

    def statuses(self) -> list[str]:
        return [m["STATUS"] for m in list(self.received) if "STATUS" in m]

    def _listen(self) -> None:
        while not self._done.is_set():
            try:
                data = self._sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.received.append(dict(line.split("=", 1) for line in data.splitlines()))

    def __enter__(self) -> NotifyListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._sock.close()
