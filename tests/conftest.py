"""Where the test services come from (Kafka broker, Azurite), session-scoped.

Kafka, in order:
  1. KAFKAPIPE_TEST_BOOTSTRAP (PLAINTEXT) and KAFKAPIPE_TEST_SASL_BOOTSTRAP (SASL_PLAINTEXT,
     OAUTHBEARER accepting unsecured tokens): an existing broker;
  2. Docker, when `docker info` answers: pytest-docker with tests/docker-compose.yml;
  3. bin/kafka-local: a single-node KRaft broker from the cached Apache Kafka jars, on free
     ports in a temporary directory, stopped at the end of the session.
Azurite: KAFKAPIPE_TEST_AZURITE (blob endpoint URL), else Docker, else bin/azurite-local.
PostgreSQL: KAFKAPIPE_TEST_POSTGRES (a DSN whose user may CREATE DATABASE), else
bin/postgres-local (Debian's postgresql package; as root the server runs as user postgres).
Each test using it gets a database of its own.
KAFKAPIPE_TEST_NO_DOCKER=1 skips the Docker step even where an engine answers.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(TESTS) not in sys.path:  # `import kafkahelpers` from any test module, any import mode
    sys.path.insert(0, str(TESTS))

from kafkahelpers import wait_for  # noqa: E402

START_TIMEOUT = 900  # a first run also fetches the Kafka jars / installs Azurite


@functools.cache
def docker_available() -> bool:
    if os.environ.get("KAFKAPIPE_TEST_NO_DOCKER") or shutil.which("docker") is None:
        return False
    try:
        for cmd in (["docker", "info"], ["docker", "compose", "version"]):
            if subprocess.run(cmd, capture_output=True, timeout=30).returncode != 0:
                return False
    except (OSError, subprocess.TimeoutExpired):
        return False
    return True


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
def _kafka_docker(request) -> dict[str, str]:
    services = request.getfixturevalue("docker_services")
    endpoints = {
        "bootstrap": f"127.0.0.1:{services.port_for('kafka', 9092)}",
        "sasl_bootstrap": f"127.0.0.1:{services.port_for('kafka', 9093)}",
    }
    services.wait_until_responsive(
        check=lambda: _kafka_answers(endpoints["bootstrap"]), timeout=120, pause=0.5
    )
    return endpoints


@pytest.fixture(scope="session")
def _azurite_docker(request) -> str:
    services = request.getfixturevalue("docker_services")
    url = f"http://127.0.0.1:{services.port_for('azurite', 10000)}/devstoreaccount1"
    services.wait_until_responsive(check=lambda: _http_answers(url), timeout=60, pause=0.2)
    return url


# ------------------------------------------------------------------------- scripts in bin/
@pytest.fixture(scope="session")
def _kafka_local(tmp_path_factory):
    state = tmp_path_factory.mktemp("kafka-local")
    port, sasl_port = _free_ports(2)
    out = _run_script(
        "kafka-local", "start", "--dir", str(state), "--port", str(port), "--sasl-port", str(sasl_port)
    )
    try:
        yield {"bootstrap": out["bootstrap"], "sasl_bootstrap": out["sasl_bootstrap"]}
    finally:
        _run_script("kafka-local", "stop", "--dir", str(state), timeout=60, check=False)


@pytest.fixture(scope="session")
def _azurite_local(tmp_path_factory):
    state = tmp_path_factory.mktemp("azurite-local")
    (port,) = _free_ports(1)
    out = _run_script("azurite-local", "start", "--dir", str(state), "--port", str(port))
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
        return {"bootstrap": env, "sasl_bootstrap": None}
    if docker_available():
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
        return env.rstrip("/")
    if docker_available():
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
