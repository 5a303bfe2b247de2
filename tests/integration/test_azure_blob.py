"""AzureBlobStorage against a real Azurite (Shared Key and SAS over the Blob REST API).

This module starts its own Azurite in strict mode (``bin/azurite-local start --strict``): the
x-ms-version of every request is checked and unknown headers or parameters are refused, as
Azure does, so drift in what the client sends fails here rather than in production.

Uploads run in child processes where the test needs a process of its own: to measure the peak
memory of a 200 MiB upload, and to SIGKILL a writer between its Put Blocks and its Put Block
List.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import attrs
import pytest

from kafkapipe.config import AzureBlobConfig, CredentialConfig
from kafkapipe.errors import AuthError, ErrorCategory, PermanentError, category_of
from kafkapipe.storage.azure_blob import AzureBlobStorage
from tests.integration.httpfaults import TestCA

ROOT = Path(__file__).resolve().parents[2]
# Azurite's development account key, published in Azurite's README (not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
MIB = 1024 * 1024
PEAK_RSS_LIMIT_MIB = 100


# ------------------------------------------------------------------------------ helpers
def chunks(seed: int, total_mib: int) -> Iterator[bytes]:
    """Deterministic pseudo-random 1 MiB chunks (what a downloader would hand the writer)."""
    rng = random.Random(seed)
    for _ in range(total_mib):
        yield rng.randbytes(MIB)


def storage_for(endpoint: str, container: str, key_file: Path, prefix: str = "", **kwargs) -> AzureBlobStorage:
    config = AzureBlobConfig(
        account_url=endpoint,
        container=container,
        prefix=prefix,
        credential=CredentialConfig(kind="shared_key", account_key_file=str(key_file)),
    )
    return AzureBlobStorage.from_config(config, **kwargs)


def get_blob(storage: AzureBlobStorage, blob_path: str) -> bytes:
    return storage.request("GET", storage.blob_url(blob_path), "Get Blob", ok=(200,)).content


def blob_sha256(storage: AzureBlobStorage, blob_path: str) -> tuple[str, int]:
    response = storage.request("GET", storage.blob_url(blob_path), "Get Blob", ok=(200,), stream=True)
    digest, size = hashlib.sha256(), 0
    with response:
        for piece in response.iter_content(MIB):
            digest.update(piece)
            size += len(piece)
    return digest.hexdigest(), size


def block_list(storage: AzureBlobStorage, blob_path: str, which: str) -> list[tuple[str, int]]:
    response = storage.request(
        "GET",
        storage.blob_url(blob_path),
        "Get Block List",
        query=f"comp=blocklist&blocklisttype={which}",
        ok=(200,),
    )
    section = ET.fromstring(response.content).find("CommittedBlocks" if which == "committed" else "UncommittedBlocks")
    blocks = section.findall("Block") if section is not None else []
    return [(block.findtext("Name"), int(block.findtext("Size"))) for block in blocks]


def list_blobs(storage: AzureBlobStorage, prefix: str) -> list[str]:
    response = storage.request(
        "GET",
        storage.container_url(),
        "List Blobs",
        query=f"restype=container&comp=list&prefix={quote(prefix, safe='')}",
        ok=(200,),
    )
    return [n.text for n in ET.fromstring(response.content).iter("Name")]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def wait_exit(proc: subprocess.Popen, timeout: float) -> tuple[int, object]:
    """Reaps ``proc`` with os.wait4 (its own rusage, peak RSS included), within a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, rusage
        if time.monotonic() >= deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"child {proc.args!r} did not exit within {timeout}s")
        time.sleep(0.05)


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line from the child's stdout, or fail at the deadline."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not selector.select(timeout):
            pytest.fail(f"child printed nothing within {timeout}s")
        return proc.stdout.readline().decode().strip()
    finally:
        selector.close()


# Child: stream SIZE_MIB deterministic chunks into one blob, report sha256 and timings as JSON.
UPLOAD_CHILD = """
import hashlib, json, random, sys, time
from kafkapipe.config import AzureBlobConfig, CredentialConfig
from kafkapipe.storage.azure_blob import AzureBlobStorage

endpoint, container, key_file, blob_path, size_mib, seed, out = sys.argv[1:]
storage = AzureBlobStorage.from_config(AzureBlobConfig(
    account_url=endpoint, container=container,
    credential=CredentialConfig(kind="shared_key", account_key_file=key_file)))
rng = random.Random(int(seed))
digest = hashlib.sha256()
started = time.monotonic()
with storage.open_writer(blob_path) as writer:
    for _ in range(int(size_mib)):
        chunk = rng.randbytes(1024 * 1024)
        digest.update(chunk)
        writer.write(chunk)
    writer.commit()
elapsed = time.monotonic() - started
# VmHWM is this program's own peak: ru_maxrss from wait4 would also carry the peak of the
# forked test runner the child was before exec.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
with open(out, "w") as fh:
    json.dump({"sha256": digest.hexdigest(), "seconds": elapsed, "vmhwm_kib": hwm}, fh)
"""

# Child: Put Block three blocks, say so, then wait to be killed before any Put Block List.
KILLED_CHILD = """
import sys
from kafkapipe.config import AzureBlobConfig, CredentialConfig
from kafkapipe.storage.azure_blob import AzureBlobStorage

endpoint, container, key_file, blob_path = sys.argv[1:]
storage = AzureBlobStorage.from_config(AzureBlobConfig(
    account_url=endpoint, container=container,
    credential=CredentialConfig(kind="shared_key", account_key_file=key_file)))
writer = storage.open_writer(blob_path)
for i in range(12):
    writer.write(bytes([i]) * (1024 * 1024))
sys.stdout.write("blocks-sent\\n")
sys.stdout.flush()
sys.stdin.read()
writer.commit()
"""


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def azurite_endpoint(tmp_path_factory) -> Iterator[str]:
    """A strict Azurite of this module's own (the shared one runs with --loose)."""
    from tests.conftest import _free_ports, _run_script

    state = tmp_path_factory.mktemp("azurite-strict")
    (port,) = _free_ports(1)
    out = _run_script("azurite-local", "start", "--strict", "--dir", str(state), "--port", str(port))
    try:
        yield out["blob_endpoint"]
    finally:
        _run_script("azurite-local", "stop", "--dir", str(state), timeout=30, check=False)


@pytest.fixture
def key_file(tmp_path) -> Path:
    path = tmp_path / "azurite.key"
    path.write_text(AZURITE_KEY + "\n")
    return path


@pytest.fixture
def container(azurite_endpoint, key_file, unique_name) -> str:
    name = unique_name("kp")
    storage = storage_for(azurite_endpoint, name, key_file)
    assert storage.create_container() is True
    assert storage.create_container() is False  # idempotent
    storage.close()
    return name


@pytest.fixture
def storage(azurite_endpoint, container, key_file) -> Iterator[AzureBlobStorage]:
    st = storage_for(azurite_endpoint, container, key_file)
    yield st
    st.close()


# --------------------------------------------------------------------------------- tests
def test_200_mib_streamed_upload_matches_and_memory_stays_bounded(
    azurite_endpoint, container, key_file, storage, tmp_path, record_property
):
    size_mib, seed, blob_path = 200, 20261125, "claims/large/200mib.bin"
    out = tmp_path / "result.json"
    with open(tmp_path / "child.err", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", UPLOAD_CHILD, azurite_endpoint, container, str(key_file), blob_path,
             str(size_mib), str(seed), str(out)],
            env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
        status, _ = wait_exit(proc, 240)
    assert status == 0, (tmp_path / "child.err").read_text()[-3000:]
    result = json.loads(out.read_text())
    expected = hashlib.sha256()
    for chunk in chunks(seed, size_mib):
        expected.update(chunk)
    assert result["sha256"] == expected.hexdigest()
    assert blob_sha256(storage, blob_path) == (expected.hexdigest(), size_mib * MIB)

    peak_mib = result["vmhwm_kib"] / 1024
    rate = size_mib / result["seconds"]
    record_property("upload_mib_per_s", round(rate, 1))
    record_property("peak_rss_mib", round(peak_mib, 1))
    print(f"\n200 MiB to Azurite: {rate:.1f} MiB/s, writer peak RSS {peak_mib:.1f} MiB")
    assert peak_mib < PEAK_RSS_LIMIT_MIB, f"the writer process peaked at {peak_mib:.1f} MiB"

    blocks = block_list(storage, blob_path, "committed")
    assert len(blocks) == size_mib * MIB // storage.block_size
    assert len({len(name) for name, _ in blocks}) == 1  # every block id has the same length
    assert sum(size for _, size in blocks) == size_mib * MIB


def test_writer_killed_before_commit_leaves_no_blob(azurite_endpoint, container, key_file, storage):
    blob_path = "claims/killed/attachment.pdf"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, azurite_endpoint, container, str(key_file), blob_path],
        env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert read_line(proc, 60) == "blocks-sent"
        # The blocks really reached the service, uncommitted.
        assert len(block_list(storage, blob_path, "uncommitted")) == 3
    finally:
        proc.send_signal(signal.SIGKILL)
        status, _ = wait_exit(proc, 30)
        proc.stdin.close()
        proc.stdout.close()
    assert status == -signal.SIGKILL

    assert storage.exists(blob_path) is False
    with pytest.raises(PermanentError) as info:
        get_blob(storage, blob_path)
    assert info.value.http_status == 404 and info.value.error_code == "BlobNotFound"
    assert list_blobs(storage, "claims/killed/") == []

    # The task is processed again: the new attempt publishes only its own bytes.
    with storage.open_writer(blob_path) as writer:
        writer.write(b"second attempt")
        writer.commit()
    assert get_blob(storage, blob_path) == b"second attempt"
    assert block_list(storage, blob_path, "uncommitted") == []


def test_same_task_written_twice_gives_one_blob(storage):
    blob_path = "claims/dup/0123456789abcdef/estimate.pdf"
    body = b"".join(chunks(7, 9))  # 9 MiB: three blocks, the last one partial
    for _ in range(2):
        writer = storage.open_writer(blob_path)
        for i in range(0, len(body), MIB):
            writer.write(body[i : i + MIB])
        writer.commit()
    assert list_blobs(storage, "claims/dup/") == [blob_path]
    assert blob_sha256(storage, blob_path) == (hashlib.sha256(body).hexdigest(), len(body))
    assert len(block_list(storage, blob_path, "committed")) == 3


def test_nothing_is_visible_until_commit_and_abort_commits_nothing(storage):
    writer = storage.open_writer("claims/abort/a.bin")
    writer.write(b"a" * (5 * MIB))  # one full block sent
    assert storage.exists("claims/abort/a.bin") is False
    writer.abort()
    with pytest.raises(PermanentError):
        writer.commit()
    assert storage.exists("claims/abort/a.bin") is False

    with pytest.raises(RuntimeError), storage.open_writer("claims/abort/b.bin") as writer:
        writer.write(b"b" * (5 * MIB))
        raise RuntimeError("download failed halfway")
    assert storage.exists("claims/abort/b.bin") is False


def test_wrong_key_is_auth_and_the_same_write_succeeds_once_fixed(azurite_endpoint, container, tmp_path):
    key_file = tmp_path / "wrong.key"
    key_file.write_text(base64.b64encode(b"not the account key" * 3).decode())
    storage = storage_for(azurite_endpoint, container, key_file)
    blob_path = "claims/auth/report.pdf"

    def process_task() -> None:
        with storage.open_writer(blob_path) as writer:
            writer.write(b"%PDF-1.7 report")
            writer.commit()

    with pytest.raises(AuthError) as info:
        process_task()
    assert category_of(info.value) is ErrorCategory.AUTH
    assert info.value.http_status == 403
    # Azure says AuthenticationFailed; Azurite says AuthorizationFailure. Both are auth.
    assert getattr(info.value, "error_code", "") in ("AuthenticationFailed", "AuthorizationFailure")
    with pytest.raises(AuthError):
        storage.exists(blob_path)

    key_file.write_text(AZURITE_KEY)  # the operator fixes the key; no restart
    process_task()  # the message is processed again
    assert storage.exists(blob_path)
    assert get_blob(storage, blob_path) == b"%PDF-1.7 report"
    storage.close()


def test_onelake_style_path_under_a_container(azurite_endpoint, unique_name, key_file):
    # OneLake: container = workspace, prefix = <item>.Lakehouse/Files/<folder>.
    workspace = unique_name("ws")
    storage = storage_for(azurite_endpoint, workspace, key_file, prefix="/ClaimsLake.Lakehouse/Files/attachments/")
    storage.create_container()
    blob_path = "2026/11/25/0f1e2d3c4b5a69788796a5b4c3d2e1f0/photo.jpg"
    with storage.open_writer(blob_path) as writer:
        writer.write(b"\xff\xd8\xff\xe0 jpeg")
        writer.commit()
    full = f"ClaimsLake.Lakehouse/Files/attachments/{blob_path}"
    assert storage.describe(blob_path) == f"{azurite_endpoint}/{workspace}/{full}"
    assert list_blobs(storage, "ClaimsLake.Lakehouse/Files/") == [full]
    raw = storage_for(azurite_endpoint, workspace, key_file)  # no prefix: the full OneLake-style name
    assert get_blob(raw, full) == b"\xff\xd8\xff\xe0 jpeg"
    assert storage.exists(blob_path)
    storage.close()
    raw.close()


def account_sas(key: str, expiry: datetime) -> str:
    """An account SAS (blob service; container+object; read/write/create) signed with the key."""
    fields = {
        "sv": "2021-08-06",
        "ss": "b",
        "srt": "co",
        "sp": "rwc",
        "se": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "spr": "https,http",
    }
    to_sign = "\n".join(
        [AZURITE_ACCOUNT, fields["sp"], fields["ss"], fields["srt"], "", fields["se"], "", fields["spr"], fields["sv"],
         "", ""]
    )  # fmt: skip
    signature = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(), hashlib.sha256).digest()).decode()
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in {**fields, "sig": signature}.items())


def test_sas_token_from_a_file(azurite_endpoint, container, storage, tmp_path):
    sas_file = tmp_path / "sas"
    sas_file.write_text("?" + account_sas(AZURITE_KEY, datetime.now(UTC) + timedelta(hours=1)) + "\n")
    config = AzureBlobConfig(
        account_url=azurite_endpoint,
        container=container,
        prefix="via-sas",
        credential=CredentialConfig(kind="sas", sas_token_file=str(sas_file)),
    )
    sas_storage = AzureBlobStorage.from_config(config)
    with sas_storage.open_writer("claims/sas.bin") as writer:
        writer.write(b"x" * (4 * MIB + 1))
        writer.commit()
    assert sas_storage.exists("claims/sas.bin")
    assert "sig=" not in sas_storage.describe("claims/sas.bin")
    assert blob_sha256(storage, "via-sas/claims/sas.bin")[1] == 4 * MIB + 1

    expired_file = tmp_path / "expired-sas"
    expired_file.write_text(account_sas(AZURITE_KEY, datetime.now(UTC) - timedelta(hours=1)))
    expired = AzureBlobStorage.from_config(
        attrs.evolve(config, credential=CredentialConfig(kind="sas", sas_token_file=str(expired_file)))
    )
    with pytest.raises(AuthError) as info, expired.open_writer("claims/expired.bin") as writer:
        writer.write(b"y")
        writer.commit()
    assert "sig=" not in str(info.value)
    sas_storage.close()
    expired.close()


# ------------------------------------------------------------- bearer tokens (Azure AD)
def _azurite_blob_binary() -> Path:
    """The azurite-blob that bin/azurite-local installs (npm, cached)."""
    subprocess.run([str(ROOT / "bin" / "azurite-local"), "install"], check=True, capture_output=True, timeout=900)
    cache = Path(os.environ.get("KAFKAPIPE_CACHE", Path.home() / ".cache" / "kafkapipe"))
    found = sorted(cache.glob("azurite-*/node_modules/.bin/azurite-blob"))
    if not found:
        pytest.fail(f"bin/azurite-local install left no azurite-blob under {cache}", pytrace=False)
    return found[-1]


@pytest.fixture(scope="module")
def azurite_oauth(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """A second, also strict, Azurite over HTTPS with `--oauth basic` (checks aud/iss/nbf/exp, not signatures).

    Returns its blob endpoint and the CA file that verifies it.
    """
    import socket

    from kafkahelpers import wait_for

    directory = tmp_path_factory.mktemp("azurite-oauth")
    tls = TestCA.create(directory)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(directory / "azurite.out", "wb") as out:
        proc = subprocess.Popen(
            [str(_azurite_blob_binary()), "--blobHost", "127.0.0.1", "--blobPort", str(port),
             "--location", str(directory / "data"), "--silent", "--disableTelemetry",
             "--oauth", "basic", "--cert", str(tls.cert_path), "--key", str(tls.key_path)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    endpoint = f"https://127.0.0.1:{port}/{AZURITE_ACCOUNT}"

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"azurite (oauth) exited: {(directory / 'azurite.out').read_text()[-2000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(answers, 60, "azurite with --oauth basic to listen")
        yield endpoint, tls.ca_path
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_bearer_token_from_the_credential_layer(azurite_oauth, tmp_path, monkeypatch, key_file):
    """Azure AD mode end to end: `az` (a stand-in printing a JWT) → TokenCache → Bearer header."""
    endpoint, ca = azurite_oauth
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    audience_file = tmp_path / "audience"
    audience_file.write_text("https://wrong-audience.example")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    az = bindir / "az"
    az.write_text(
        f"#!{sys.executable}\n"
        "import base64, json, time\n"
        "def b64(obj):\n"
        "    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b'=').decode()\n"
        "now = int(time.time())\n"
        f"aud = open({str(audience_file)!r}).read().strip()\n"
        "claims = {'aud': aud, 'iss': 'https://sts.windows.net/ab1f708d-50f6-404c-a006-d71b2ac7a606/',\n"
        "          'nbf': now - 60, 'iat': now - 60, 'exp': now + 3600}\n"
        "token = '.'.join([b64({'alg': 'RS256', 'typ': 'JWT'}), b64(claims), b64({'sig': 'not checked'})])\n"
        "print(json.dumps({'accessToken': token, 'expires_on': now + 3600}))\n"
    )
    az.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    container = f"bearer-{os.getpid()}"
    storage_for(endpoint, container, key_file).create_container()  # Shared Key still works here
    config = AzureBlobConfig(
        account_url=endpoint,
        container=container,
        prefix="ClaimsLake.Lakehouse/Files",
        credential=CredentialConfig(kind="azure_cli"),
    )
    storage = AzureBlobStorage.from_config(config)
    with pytest.raises(AuthError) as info, storage.open_writer("a/b.bin") as writer:
        writer.write(b"bearer" * 1000)
        writer.commit()
    assert info.value.http_status in (401, 403)

    audience_file.write_text("https://storage.azure.com")  # a token for the right audience
    with storage.open_writer("a/b.bin") as writer:  # the refused token was dropped: a new one
        writer.write(b"bearer" * 1000)
        writer.commit()
    assert storage.exists("a/b.bin")
    assert get_blob(storage, "a/b.bin") == b"bearer" * 1000
    storage.close()


def test_this_azurite_is_strict_about_the_api_version(azurite_endpoint, container, key_file):
    """The fixture really is strict: a version Azure does not have is refused, ours is not."""
    ours = storage_for(azurite_endpoint, container, key_file)
    assert ours.exists("claims/none.bin") is False  # our x-ms-version is accepted
    future = storage_for(azurite_endpoint, container, key_file)
    future.api_version = "2099-01-01"
    with pytest.raises(PermanentError) as info:
        future.exists("claims/none.bin")
    assert info.value.http_status == 400 and info.value.error_code == "InvalidHeaderValue"
    ours.close()
    future.close()


def test_a_task_stored_under_its_detected_type_is_found_with_one_listing(storage, monkeypatch):
    """find(): every name a task may be stored under is asked with one List Blobs, not a HEAD each."""
    data = b"%PDF-1.7 found by its listing"
    with storage.open_writer("src/2026/01/01/t/abc-download") as writer:
        writer.use_extension("pdf")
        writer.write(data)
        writer.commit()
    calls: list[str] = []
    real = storage.request
    monkeypatch.setattr(storage, "request",
                        lambda method, url, op, **kw: calls.append(op) or real(method, url, op, **kw))
    base = "src/2026/01/01/t/abc-download"
    candidates = [base, *(f"{base}.{ext}" for ext in ("jpg", "pdf", "png"))]
    found = storage.find(candidates)
    assert found is not None and found.path == "src/2026/01/01/t/abc-download.pdf"
    assert (found.bytes, found.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert calls == ["List Blobs"]
    assert storage.find(["src/2026/01/01/t/other", "src/2026/01/01/t/other.pdf", "src/2026/01/01/t/other.jpg"]) is None
