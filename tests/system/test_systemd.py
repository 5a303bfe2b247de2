"""systemd/kafkapipe.service run by a real systemd, as an operator runs it on a VM.

A container with systemd as PID 1 (tests/docker/systemd/Dockerfile: the checkout in
/opt/kafkapipe, its venv, the units, and the container-only drop-in PrivateUsers=no), host
networking, so the service reaches the test broker and the test file server on loopback.
Marker `systemd`: selected only with `-m systemd` or KAFKAPIPE_TEST_SYSTEMD=1; it needs a Docker
engine (bin/docker-engine start) and fails, not skips, without one.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from kafkahelpers import wait_for
from pipelinehelpers import Pipeline, event

from tests.integration.httpfaults import FaultServer

# A cold first run also debootstraps the base and builds the image.
pytestmark = [pytest.mark.systemd, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "kafkapipe-test-systemd:latest"
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 16
STATE = "/var/lib/kafkapipe"


def run(*cmd: str, timeout: float = 120, check: bool = True, input: bytes | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)
    out = proc.stdout.decode(errors="replace")
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-3000:]}\n"
                    f"{proc.stderr.decode(errors='replace')[-3000:]}", pytrace=False)
    return out


@pytest.fixture(scope="module")
def systemd_image(tmp_path_factory) -> str:
    """Builds the image from the working tree (the layer with the venv's packages is cached)."""
    if shutil.which("docker") is None:
        pytest.fail("the systemd suite needs Docker (bin/docker-engine start)", pytrace=False)
    run(str(ROOT / "bin" / "docker-images"), "base", timeout=900)  # the local Debian base
    ctx = tmp_path_factory.mktemp("systemd-image")
    shutil.copytree(ROOT / "tests" / "docker" / "systemd", ctx, dirs_exist_ok=True)
    files = run("git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for rel in filter(None, files.split("\0")):
        src = ROOT / rel
        if src.is_file() and not rel.startswith("tests/docker/kafka/libs/"):
            dst = ctx / "checkout" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    wheels = ctx / "wheels"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--wheel-dir", str(wheels),
        str(ctx / "checkout"), timeout=600)
    (ctx / "app").mkdir()
    for whl in wheels.glob("kafkapipe-*.whl"):
        whl.rename(ctx / "app" / whl.name)
    run("docker", "build", "--quiet", "--network", "host", "--build-arg", "BASE=kafkapipe-base:bookworm",
        "-t", IMAGE, str(ctx), timeout=900)
    return IMAGE


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Machine:
    """One container: systemd as PID 1."""

    def __init__(self, image: str) -> None:
        self.name = f"kafkapipe-systemd-{uuid.uuid4().hex[:8]}"
        run("docker", "run", "-d", "--name", self.name, "--network", "host",
            "--cap-add", "SYS_ADMIN", "--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup",
            "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp", image)
        wait_for(self.booted, 120, f"systemd in {self.name} to finish booting")

    def booted(self) -> bool:
        state = self.sh("systemctl is-system-running || true", check=False).strip()
        return state in ("running", "degraded")

    def sh(self, script: str, timeout: float = 120, check: bool = True, input: bytes | None = None) -> str:
        cmd = ["docker", "exec"] + (["-i"] if input is not None else []) + [self.name, "sh", "-c", script]
        return run(*cmd, timeout=timeout, check=check, input=input)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str = "kafkapipe") -> str:
        return self.sh(f"journalctl -u {unit} --no-pager -n 60 -o cat", check=False)

    def workers(self, main_pid: str) -> set[int]:
        out = self.sh(f"ps -o pid= --ppid {main_pid} || true", check=False)
        return {int(p) for p in out.split()}

    def stored(self) -> list[str]:
        out = self.sh(f"find {STATE}/attachments -type f -not -path '*/.incoming/*' 2>/dev/null || true", check=False)
        return out.split()

    def remove(self) -> None:
        run("docker", "rm", "-f", self.name, check=False, timeout=60)


@pytest.fixture
def machine(systemd_image):
    m = Machine(systemd_image)
    try:
        yield m
    finally:
        m.remove()


class Deployment:
    """A pipeline config installed as /etc/kafkapipe/pipeline.toml, its topics on the host's
    broker and a file server on the host's loopback."""

    def __init__(self, machine: Machine, server: FaultServer, pipe: Pipeline) -> None:
        self.machine, self.server, self.pipe = machine, server, pipe

    def publish(self, prefix: str, count: int) -> None:
        events = []
        for i in range(count):
            path = f"/claims/{prefix}/{i}/doc.pdf"
            self.server.add(path, PDF, content_type="application/pdf")
            events.append(event(f"trace-{prefix}-{i}", [self.server.url(path)]))
        self.pipe.produce(events)

    def start(self, unit: str = "kafkapipe") -> dict[str, str]:
        """`systemctl start` (Type=notify: returns once READY=1 came); the unit's state after it."""
        self.machine.sh(f"systemctl start {unit}", timeout=320, check=False)
        state = self.machine.show(unit, "ActiveState", "SubState", "StatusText", "MainPID", "NRestarts")
        assert state["ActiveState"] == "active" and state["SubState"] == "running", (state, self.machine.journal(unit))
        assert state["StatusText"].startswith("running"), (state, self.machine.journal(unit))
        return state


@pytest.fixture
def deployment(machine, tmp_path, kafka_bootstrap, kafka_admin, unique_name):
    with FaultServer() as server:
        pipe = Pipeline(tmp_path, kafka_bootstrap, unique_name("sd"), server.port, {
            # Relative paths: resolved against the unit's WorkingDirectory, /var/lib/kafkapipe.
            "storage": {"root": "attachments"},
            "inventory": {"path": "inventory.sqlite3"},
            "metrics": {"bind": f"127.0.0.1:{_free_port()}"},
        })
        pipe.create_topics(kafka_admin)
        machine.sh("mkdir -p /etc/kafkapipe && cat > /etc/kafkapipe/pipeline.toml"
                   " && chown root:kafkapipe /etc/kafkapipe/pipeline.toml && chmod 0640 /etc/kafkapipe/pipeline.toml",
                   input=pipe.config_path.read_bytes())
        yield Deployment(machine, server, pipe)


def test_service_starts_ready_stores_reloads_scales_and_stops(deployment):
    machine = deployment.machine
    main_pid = deployment.start()["MainPID"]

    # events produced on the host -> files stored under the StateDirectory
    deployment.publish("before", 20)
    wait_for(lambda: len(machine.stored()) >= 20, 120, "20 attachments stored in the container")
    stored = machine.stored()
    assert len(stored) == 20, stored
    assert machine.sh(f"sha256sum {stored[0]}").split()[0] == hashlib.sha256(PDF).hexdigest()
    assert machine.sh(f"stat -c %U {stored[0]}").strip() == "kafkapipe"

    # reload: same supervisor, every worker replaced, still storing
    old_workers = machine.workers(main_pid)
    assert old_workers, machine.journal()
    machine.sh("systemctl reload kafkapipe", timeout=120)

    def rolled() -> bool:
        now = machine.workers(main_pid)
        return len(now) == len(old_workers) and not now & old_workers

    wait_for(rolled, 120, f"the workers of {main_pid} replaced after reload")
    state = machine.show("kafkapipe", "ActiveState", "MainPID")
    assert state == {"ActiveState": "active", "MainPID": main_pid}, (state, machine.journal())
    deployment.publish("after", 10)
    wait_for(lambda: len(machine.stored()) >= 30, 120, "10 more attachments stored after the reload")

    # TTIN to the supervisor only (as the unit's header says): one more download worker
    before = machine.workers(main_pid)
    machine.sh("systemctl kill -s TTIN --kill-whom=main kafkapipe")
    wait_for(lambda: len(machine.workers(main_pid)) == len(before) + 1, 60, "one more worker after TTIN")

    # a rejected config: `systemctl reload` fails (ExecReload checks it first), the workers stay
    workers = machine.workers(main_pid)
    machine.sh("cp /etc/kafkapipe/pipeline.toml /tmp/good.toml"
               " && printf '\\n[stages.download]\\nthreads = 0\\n' >> /etc/kafkapipe/pipeline.toml")
    out = machine.sh("systemctl reload kafkapipe; echo rc=$?", check=False)
    assert "rc=0" not in out, (out, machine.journal())
    assert machine.workers(main_pid) == workers, machine.journal()
    assert machine.show("kafkapipe", "ActiveState")["ActiveState"] == "active", machine.journal()
    machine.sh("cp /tmp/good.toml /etc/kafkapipe/pipeline.toml")

    # the supervisor's warnings and errors reach journald at their priority
    victim = min(workers)
    machine.sh(f"kill -9 {victim}")
    wait_for(lambda: len(machine.workers(main_pid)) == len(workers) and victim not in machine.workers(main_pid),
             60, "the killed worker replaced")
    warnings = machine.sh("journalctl -u kafkapipe -p warning --no-pager -o cat", check=False)
    assert str(victim) in warnings, (warnings, machine.journal())

    # stop: exit 0 within TimeoutStopSec
    machine.sh("systemctl stop kafkapipe", timeout=60)
    state = machine.show("kafkapipe", "ActiveState", "Result", "ExecMainStatus")
    assert state["ActiveState"] == "inactive", (state, machine.journal())
    assert state["Result"] == "success" and state["ExecMainStatus"] == "0", (state, machine.journal())
    assert len(machine.stored()) == 30


def test_frozen_supervisor_is_restarted_by_the_watchdog(deployment):
    machine = deployment.machine
    # The unit's watchdog (60 s), abort timeout (TimeoutStopSec, 45 s) and restart pause (10 s)
    # shortened for the test; what is tested is that the supervisor's pings are what keeps it up.
    machine.sh("mkdir -p /etc/systemd/system/kafkapipe.service.d && printf '[Service]\\nWatchdogSec=4s\\n"
               "TimeoutAbortSec=5s\\nRestartSec=1s\\n' > /etc/systemd/system/kafkapipe.service.d/watchdog.conf"
               " && systemctl daemon-reload")
    first = deployment.start()
    # Up for three watchdog intervals: the supervisor's pings keep it from being killed.
    entered = int(machine.show("kafkapipe", "ActiveEnterTimestampMonotonic")["ActiveEnterTimestampMonotonic"])
    wait_for(lambda: time.monotonic() * 1e6 - entered > 12e6, 30, "12 s of the service up")
    state = machine.show("kafkapipe", "ActiveState", "MainPID", "NRestarts")
    assert state == {"ActiveState": "active", "MainPID": first["MainPID"], "NRestarts": first["NRestarts"]}, (
        state, machine.journal())
    machine.sh(f"kill -STOP {first['MainPID']}")

    def restarted() -> bool:
        state = machine.show("kafkapipe", "ActiveState", "SubState", "MainPID", "NRestarts")
        return (state["ActiveState"] == "active" and state["SubState"] == "running"
                and state["MainPID"] not in ("0", first["MainPID"])
                and int(state["NRestarts"]) > int(first["NRestarts"]))

    wait_for(restarted, 90, "the frozen supervisor killed by the watchdog and the service back")
    assert "Watchdog timeout" in machine.sh("journalctl -u kafkapipe --no-pager -o cat"), machine.journal()
    deployment.publish("after-watchdog", 5)
    wait_for(lambda: len(machine.stored()) >= 5, 120, "attachments stored by the restarted service")


def test_stage_instances_run_side_by_side_with_their_own_metrics(deployment):
    machine = deployment.machine
    ports = {stage: _free_port() for stage in ("ingest", "download", "results")}
    for stage, port in ports.items():
        machine.sh(f"echo KAFKAPIPE_METRICS__BIND=127.0.0.1:{port} > /etc/kafkapipe/{stage}.env")
    for stage in ports:
        deployment.start(f"kafkapipe@{stage}")
    for stage, port in ports.items():  # host networking: the host reaches each instance's port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            assert resp.status == 200, stage
    deployment.publish("instances", 10)
    wait_for(lambda: len(machine.stored()) >= 10, 120, "attachments stored by the three instances")
    for stage in ports:
        machine.sh(f"systemctl stop kafkapipe@{stage}", timeout=60)
        state = machine.show(f"kafkapipe@{stage}", "Result", "ExecMainStatus")
        assert state == {"Result": "success", "ExecMainStatus": "0"}, (
            stage, state, machine.journal(f"kafkapipe@{stage}"))
