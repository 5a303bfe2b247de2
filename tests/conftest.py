"""Where the test services come from (Kafka broker, Azurite), session-scoped.

Kafka, in order:
  1. KAFKAPIPE_TEST_BOOTSTRAP (PLAINTEXT) and KAFKAPIPE_TEST_SASL_BOOTSTRAP (SASL_PLAINTEXT,
     OAUTHBEARER accepting unsecured tokens): an existing broker;
  2. Docker, when `docker info` answers and a compose tool is there: the images of
     tests/docker-compose.yml are built (bin/docker-images: official bases when they can be
     pulled, else a local Debian base), then pytest-docker runs them with host networking on
     free loopback ports. When the images cannot be pulled or built, one line says why and
     the next step is used;
  3. bin/kafka-local: a single-node KRaft broker from the cached Apache Kafka jars, on free
     ports in a temporary directory, stopped at the end of the session.
Azurite: KAFKAPIPE_TEST_AZURITE (blob endpoint URL), else Docker, else bin/azurite-local.
PostgreSQL: KAFKAPIPE_TEST_POSTGRES (a DSN whose user may CREATE DATABASE), else
bin/postgres-local (Debian's postgresql package; as root the server runs as user postgres).
Each test using it gets a database of its own.
KAFKAPIPE_TEST_NO_DOCKER=1 skips the Docker step even where an engine answers;
KAFKAPIPE_TEST_DOCKER=1 (bin/test --docker) requires it: no engine or no images fails the run.
The summary at the end of a run names where each service came from.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis' per-example deadline is a timing assertion: on a loaded machine the first example
# of a test (imports, caches) can take longer than 200 ms and fail a correct test. Speed is
# measured by bin/bench-*, never asserted here.
settings.register_profile("kafkapipe", deadline=None)
settings.load_profile("kafkapipe")

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(TESTS) not in sys.path:  # `import kafkahelpers` from any test module, any import mode
    sys.path.insert(0, str(TESTS))

from kafkahelpers import wait_for  # noqa: E402

START_TIMEOUT = 900  # a first run also fetches the Kafka jars / installs Azurite


DOCKER_REQUIRED = os.environ.get("KAFKAPIPE_TEST_DOCKER") == "1"
SERVICE_SOURCES: dict[str, str] = {}  # service -> where it came from, for the run's summary


def _run_quiet(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


@functools.cache
def _docker_state() -> tuple[str | None, str]:
    """(compose command, "") when a Docker engine and a compose tool answer, else (None, why)."""
    if os.environ.get("KAFKAPIPE_TEST_NO_DOCKER") and not DOCKER_REQUIRED:
        return None, "KAFKAPIPE_TEST_NO_DOCKER is set"
    if shutil.which("docker") is None:
        return None, "no docker command"
    info = _run_quiet(["docker", "info", "--format", "{{.ServerVersion}}"])
    if info is None or info.returncode != 0:
        return None, "no Docker engine answers (bin/docker-engine start)"
    for compose in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(compose[0]) and (proc := _run_quiet([*compose, "version"])) and proc.returncode == 0:
            return " ".join(compose), ""
    return None, "Docker answers but neither `docker compose` nor `docker-compose` is installed"


@functools.cache
def _docker_images() -> str:
    """Builds the compose file's images (bin/docker-images); "" when ready, else why not."""
    proc = _run_quiet([str(ROOT / "bin" / "docker-images"), "build"], timeout=START_TIMEOUT)
    if proc is None:
        return f"bin/docker-images build did not finish within {START_TIMEOUT}s"
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"bin/docker-images build exited {proc.returncode}"
    return ""


def _use_docker(request) -> bool:
    """True to take the services from Docker; else says once, in one line, why not."""
    compose, why = _docker_state()
    if compose is not None:
        why = _docker_images()
        if not why:
            return True
        why = f"Docker answers but the test images cannot be pulled or built: {why}"
    if DOCKER_REQUIRED:
        pytest.fail(f"KAFKAPIPE_TEST_DOCKER=1 (bin/test --docker), and {why[0].lower()}{why[1:]}", pytrace=False)
    if why.startswith("Docker answers") and not SERVICE_SOURCES.get("_said"):
        SERVICE_SOURCES["_said"] = why
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"\n{why}; using bin/kafka-local and bin/azurite-local instead")
    return False


def pytest_collection_modifyitems(config, items) -> None:
    """The systemd suite (marker `systemd`: a container with systemd as PID 1) is deselected
    unless asked for with `-m systemd` or KAFKAPIPE_TEST_SYSTEMD=1."""
    if "systemd" in (config.getoption("markexpr") or "") or os.environ.get("KAFKAPIPE_TEST_SYSTEMD") == "1":
        return
    deselected = [item for item in items if item.get_closest_marker("systemd")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("systemd")]


def pytest_terminal_summary(terminalreporter) -> None:
    said = {k: v for k, v in SERVICE_SOURCES.items() if not k.startswith("_")}
    if said:
        terminalreporter.write_line(
            "test services: " + ", ".join(f"{k} from {v}" for k, v in sorted(said.items()))
        )
    if SERVICE_SOURCES.get("_said"):
        terminalreporter.write_line(f"not from Docker: {SERVICE_SOURCES['_said']}")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run_script(*args: str, timeout: float = START_TIMEOUT, check: bool = True) -> dict[str, str]:
    """Runs bin/<script> and returns the `key=value` lines it printed."""
    cmd = [str(ROOT / "bin" / args[0]), *args[1:]]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        if check:
            pytest.fail(f"{' '.join(cmd)} did not finish within {timeout}s", pytrace=False)
        return {}
    if proc.returncode != 0 and check:
        pytest.fail(
            f"{' '.join(cmd)} failed with exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}",
            pytrace=False,
        )
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def _kafka_answers(bootstrap: str, conf: dict | None = None) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "log_level": 0, "error_cb": lambda e: None, **(conf or {})}
    )
    try:
        return bool(admin.list_topics(timeout=2).brokers)
    except KafkaException:
        return False


def _http_answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}?comp=list", timeout=2).close()
    except urllib.error.HTTPError:  # 403 without credentials: the server is up
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


# ------------------------------------------------------------------------------------- Docker
@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(TESTS / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    """`docker compose` (v2) where installed, else `docker-compose` (Debian's package)."""
    return _docker_state()[0] or "docker compose"


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    # The images are built by bin/docker-images beforehand; the containers have no health check
    # (the fixtures below wait until each service answers), so no --build and no --wait.
    return ["up -d"]


@pytest.fixture(scope="session")
def _docker_ports() -> dict[str, int]:
    """Free loopback ports for the host-networked containers, passed through the environment."""
    names = ("KAFKA_PORT", "KAFKA_SASL_PORT", "KAFKA_CONTROLLER_PORT", "AZURITE_PORT")
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    for name, port in ports.items():
        os.environ[f"KAFKAPIPE_DOCKER_{name}"] = str(port)
    return ports


class _ContainerExited(Exception):
    pass


def _wait_for_container(services, service: str, check, timeout: float) -> None:
    """Waits until `check()` holds; fails at once, with the container's log, when it exited."""

    def answers_or_exited() -> bool:
        if check():
            return True
        cid = services._docker_compose.execute(f"ps -q {service}").decode().strip()
        status = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", cid],
                                capture_output=True, text=True).stdout.strip() if cid else "missing"
        if not status.startswith(("running", "created")):
            raise _ContainerExited(f"the {service} container is {status}")
        return False

    try:
        services.wait_until_responsive(check=answers_or_exited, timeout=timeout, pause=0.5)
        return
    except Exception as exc:
        why = str(exc)
    try:
        lines = services._docker_compose.execute(f"logs --no-color {service}").decode(errors="replace").splitlines()
        errors = [line for line in lines if re.search(r"\b(ERROR|FATAL|Exception|[Ee]rror:)", line)]
        logs = "\n".join(["first errors:", *errors[:10], "last lines:", *lines[-15:]])
    except Exception as logs_exc:
        logs = f"(no logs: {logs_exc})"
    pytest.fail(f"the {service} container did not answer: {why}\n{logs}", pytrace=False)


@pytest.fixture(scope="session")
def _kafka_docker(request, _docker_ports) -> dict[str, str]:
    services = request.getfixturevalue("docker_services")
    endpoints = {
        "bootstrap": f"127.0.0.1:{_docker_ports['KAFKA_PORT']}",
        "sasl_bootstrap": f"127.0.0.1:{_docker_ports['KAFKA_SASL_PORT']}",
    }
    _wait_for_container(services, "kafka", lambda: _kafka_answers(endpoints["bootstrap"]), 120)
    SERVICE_SOURCES["kafka"] = "Docker (pytest-docker, tests/docker-compose.yml)"
    return endpoints


@pytest.fixture(scope="session")
def _azurite_docker(request, _docker_ports) -> str:
    services = request.getfixturevalue("docker_services")
    url = f"http://127.0.0.1:{_docker_ports['AZURITE_PORT']}/devstoreaccount1"
    _wait_for_container(services, "azurite", lambda: _http_answers(url), 60)
    SERVICE_SOURCES["azurite"] = "Docker (pytest-docker, tests/docker-compose.yml)"
    return url


# ------------------------------------------------------------------------- scripts in bin/
@pytest.fixture(scope="session")
def _kafka_local(tmp_path_factory):
    state = tmp_path_factory.mktemp("kafka-local")
    port, sasl_port = _free_ports(2)
    out = _run_script(
        "kafka-local", "start", "--dir", str(state), "--port", str(port), "--sasl-port", str(sasl_port)
    )
    SERVICE_SOURCES["kafka"] = "bin/kafka-local"
    try:
        yield {"bootstrap": out["bootstrap"], "sasl_bootstrap": out["sasl_bootstrap"]}
    finally:
        _run_script("kafka-local", "stop", "--dir", str(state), timeout=60, check=False)


@pytest.fixture(scope="session")
def _azurite_local(tmp_path_factory):
    state = tmp_path_factory.mktemp("azurite-local")
    (port,) = _free_ports(1)
    out = _run_script("azurite-local", "start", "--dir", str(state), "--port", str(port))
    SERVICE_SOURCES["azurite"] = "bin/azurite-local"
    try:
        yield out["blob_endpoint"]
    finally:
        _run_script("azurite-local", "stop", "--dir", str(state), timeout=30, check=False)


# ----------------------------------------------------------------------------- public fixtures
@pytest.fixture(scope="session")
def _kafka_endpoints(request) -> dict[str, str | None]:
    env = os.environ.get("KAFKAPIPE_TEST_BOOTSTRAP")
    if env:
        try:
            wait_for(lambda: _kafka_answers(env), 30, f"KAFKAPIPE_TEST_BOOTSTRAP={env} to answer")
        except TimeoutError as exc:
            pytest.fail(str(exc), pytrace=False)
        SERVICE_SOURCES["kafka"] = "KAFKAPIPE_TEST_BOOTSTRAP"
        return {"bootstrap": env, "sasl_bootstrap": None}
    if _use_docker(request):
        return request.getfixturevalue("_kafka_docker")
    return request.getfixturevalue("_kafka_local")


@pytest.fixture(scope="session")
def kafka_bootstrap(_kafka_endpoints) -> str:
    """`host:port` of the test broker's PLAINTEXT listener."""
    return _kafka_endpoints["bootstrap"]


@pytest.fixture(scope="session")
def kafka_sasl_bootstrap(request) -> str:
    """`host:port` of the broker's SASL_PLAINTEXT listener (OAUTHBEARER, unsecured JWS tokens)."""
    env = os.environ.get("KAFKAPIPE_TEST_SASL_BOOTSTRAP")
    if env:
        return env
    sasl = request.getfixturevalue("_kafka_endpoints")["sasl_bootstrap"]
    if not sasl:
        pytest.fail(
            "KAFKAPIPE_TEST_BOOTSTRAP is set but KAFKAPIPE_TEST_SASL_BOOTSTRAP is not: set it to the "
            "broker's SASL_PLAINTEXT listener with OAUTHBEARER and Kafka's unsecured token validator "
            "(or unset both to let the tests start a broker)",
            pytrace=False,
        )
    return sasl


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture(scope="session")
def azurite_endpoint(request) -> str:
    """Blob endpoint of the Azurite dev account, `http://127.0.0.1:PORT/devstoreaccount1`."""
    env = os.environ.get("KAFKAPIPE_TEST_AZURITE")
    if env:
        SERVICE_SOURCES["azurite"] = "KAFKAPIPE_TEST_AZURITE"
        return env.rstrip("/")
    if _use_docker(request):
        return request.getfixturevalue("_azurite_docker")
    return request.getfixturevalue("_azurite_local")


@pytest.fixture
def unique_name():
    """Factory for unique topic / group names: unique_name("events") -> "events-1a2b3c4d5e"."""

    def make(prefix: str = "kp") -> str:
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    return make


# -------------------------------------------------------------------------------- PostgreSQL
def _postgres_answers(dsn: str) -> bool:
    import psycopg

    try:
        psycopg.connect(dsn, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


@pytest.fixture(scope="session")
def _postgres_local(tmp_path_factory):
    state = tmp_path_factory.mktemp("postgres-local")
    (port,) = _free_ports(1)
    out = _run_script("postgres-local", "start", "--dir", str(state), "--port", str(port), timeout=120)
    try:
        yield out["dsn"]
    finally:
        _run_script("postgres-local", "stop", "--dir", str(state), "--purge", timeout=60, check=False)


@pytest.fixture(scope="session")
def postgres_server(request) -> str:
    """DSN of the test PostgreSQL server's maintenance database."""
    env = os.environ.get("KAFKAPIPE_TEST_POSTGRES")
    if env:
        try:
            wait_for(lambda: _postgres_answers(env), 30, "KAFKAPIPE_TEST_POSTGRES to answer")
        except TimeoutError as exc:
            pytest.fail(str(exc), pytrace=False)
        return env
    return request.getfixturevalue("_postgres_local")


@pytest.fixture
def postgres_dsn(postgres_server) -> str:
    """DSN of a new, empty database on the test server, dropped after the test."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"kp_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(postgres_server, dbname=name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
