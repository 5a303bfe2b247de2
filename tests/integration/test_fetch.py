"""The streaming fetch against a real fault-injecting server on loopback.

Every test runs with ``loopback_only``: a ``connect()`` anywhere but
127.0.0.0/8 or ::1 fails the test before a packet leaves, so the private and
metadata addresses named below are only ever *refused*, never contacted.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import hashlib
import socket
import time
from pathlib import Path

import pytest

from kafkapipe.config import DownloadConfig
from kafkapipe.download.fetch import Fetcher, FetchOutcome
from kafkapipe.errors import ExpiredError, PermanentError, TransientError, ValidationError
from kafkapipe.storage.local import LocalStorage
from tests.integration.conftest_http import loopback_download_config
from tests.integration.httpfaults import FaultServer

# Fixtures fault_server, tls_fault_server, test_ca and loopback_only come from
# tests/integration/conftest_http.py through tests/integration/conftest.py.
pytestmark = pytest.mark.usefixtures("loopback_only")

PDF_HEAD = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64)


class StubResolver:
    """name → list of answers, one per call (the last repeats); records every call."""

    def __init__(self, mapping: dict[str, list[list[str]]]) -> None:
        self.mapping = mapping
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.mapping[host]
        index = min(sum(1 for c in self.calls if c == host) - 1, len(answers) - 1)
        return answers[index]


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "store")


def stored_files(storage: LocalStorage) -> list[Path]:
    return sorted(p for p in storage.root.rglob("*") if p.is_file()) if storage.root.exists() else []


def fetch_into(fetcher: Fetcher, storage: LocalStorage, url: str, blob: str = "claims/a.bin") -> FetchOutcome:
    with storage.open_writer(blob) as writer:
        outcome = fetcher.fetch(url, writer)
        writer.commit()
    return outcome


@pytest.fixture
def make_fetcher():
    fetchers: list[Fetcher] = []

    def make(config: DownloadConfig, resolver=None, **kwargs) -> Fetcher:  # type: ignore[no-untyped-def]
        fetcher = Fetcher(config, resolver=resolver, **kwargs)
        fetchers.append(fetcher)
        return fetcher

    yield make
    for fetcher in fetchers:
        fetcher.close()


# --- success ---


def test_success_streams_the_body_with_its_sha256(fault_server: FaultServer, storage, make_fetcher) -> None:
    route = fault_server.add(
        "/claims/a.pdf", size=3 * 1024 * 1024 + 17, prefix=PDF_HEAD, content_type="application/pdf"
    )
    fetcher = make_fetcher(loopback_download_config(fault_server))
    outcome = fetch_into(fetcher, storage, fault_server.url("/claims/a.pdf", query="X-Amz-Signature=abc"))
    assert outcome == FetchOutcome(
        http_status=200,
        bytes=route.length,
        sha256=route.sha256,
        content_type="application/pdf",
        file_type="pdf",
        final_url=fault_server.url("/claims/a.pdf"),
        extension="pdf",
    )
    stored = storage.root / "claims/a.pdf"  # opened as a.bin: the stored name is the detected type's
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == route.sha256
    assert stored_files(storage) == [stored]
    (record,) = fault_server.records("/claims/a.pdf")
    assert record.query == "X-Amz-Signature=abc"
    assert record.headers["Host"] == f"127.0.0.1:{fault_server.port}"
    assert record.headers["User-Agent"] == "kafkapipe/1"


@pytest.mark.parametrize("framing", ["length", "close", "chunked"])
def test_every_body_framing_is_streamed_whole(fault_server, storage, make_fetcher, framing: str) -> None:
    extra = {"length": {}, "close": {"content_length": None}, "chunked": {"chunked": True}}[framing]
    route = fault_server.add("/a.pdf", size=1_000_003, prefix=PDF_HEAD, **extra)
    fetcher = make_fetcher(loopback_download_config(fault_server, chunk_size=7000))
    outcome = fetch_into(fetcher, storage, fault_server.url("/a.pdf"))
    assert (outcome.bytes, outcome.sha256) == (route.length, route.sha256)


def test_small_text_file_and_keep_alive_reuse(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/notes.txt", b"claim notes\n", content_type="text/plain; charset=utf-8")
    fetcher = make_fetcher(loopback_download_config(fault_server))
    for index in range(3):
        outcome = fetch_into(fetcher, storage, fault_server.url("/notes.txt"), blob=f"n{index}.txt")
        assert outcome.file_type == "txt"
    assert fault_server.requests_to("/notes.txt") == 3
    assert fault_server.connections == 1


def test_concurrent_fetches_share_one_fetcher(fault_server, storage, make_fetcher) -> None:
    routes = {f"/f{i}.pdf": fault_server.add(f"/f{i}.pdf", size=50_000 + i, prefix=PDF_HEAD) for i in range(48)}
    fetcher = make_fetcher(loopback_download_config(fault_server, chunk_size=8192))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = dict(
            zip(
                routes,
                pool.map(lambda p: fetch_into(fetcher, storage, fault_server.url(p), blob=p[1:]), routes),
                strict=True,
            )
        )
    for path, outcome in results.items():
        assert outcome.sha256 == routes[path].sha256
    assert len(stored_files(storage)) == 48


# --- redirects ---


def test_redirect_chain_is_validated_hop_by_hop(fault_server, storage, make_fetcher) -> None:
    port = fault_server.port
    fault_server.add("/start", statuses=[302], location=f"http://files.test:{port}/middle")
    fault_server.add("/middle", statuses=[307], location="/final.pdf?sig=1")
    route = fault_server.add("/final.pdf", size=10_000, prefix=PDF_HEAD)
    resolver = StubResolver({"files.test": [["127.0.0.1"]], "start.test": [["127.0.0.1"]]})
    fetcher = make_fetcher(loopback_download_config(fault_server), resolver)
    outcome = fetch_into(fetcher, storage, f"http://start.test:{port}/start")
    assert outcome.sha256 == route.sha256
    assert outcome.final_url == f"http://files.test:{port}/final.pdf"
    assert resolver.calls == ["start.test", "files.test", "files.test"]
    assert [r.path for r in fault_server.records()] == ["/start", "/middle", "/final.pdf"]
    assert fault_server.records("/final.pdf")[0].headers["Host"] == f"files.test:{port}"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://10.0.0.1/x.pdf", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://2130706433:1/x", "port 1"),  # loopback by number, on a port not allowed
        ("http://user@127.0.0.1/x", "userinfo"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1:70/", "scheme"),
    ],
)
def test_redirect_to_a_refused_target_is_never_requested(
    fault_server, storage, make_fetcher, location: str, reason: str
) -> None:
    fault_server.add("/start", statuses=[302], location=location)
    config = loopback_download_config(fault_server, allowed_ports=[fault_server.port, 80])
    fetcher = make_fetcher(config)
    with pytest.raises(ValidationError) as caught:
        fetch_into(fetcher, storage, fault_server.url("/start"))
    assert reason in caught.value.message
    assert fault_server.total_requests == 1
    assert stored_files(storage) == []


def test_redirect_to_a_name_whose_second_resolution_turns_private(fault_server, storage, make_fetcher) -> None:
    port = fault_server.port
    fault_server.add("/start", statuses=[302], location=f"http://files.test:{port}/a.pdf")
    fault_server.add("/a.pdf", PDF_HEAD)
    resolver = StubResolver({"files.test": [["127.0.0.1"], ["10.0.0.1"]]})
    fetcher = make_fetcher(loopback_download_config(fault_server), resolver)
    with pytest.raises(ValidationError, match="files.test resolves to a denied private address 10.0.0.1"):
        fetch_into(fetcher, storage, f"http://files.test:{port}/start")
    assert resolver.calls == ["files.test", "files.test"]
    assert fault_server.requests_to("/a.pdf") == 0


def test_too_many_redirects(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/loop", statuses=[302], location="/loop")
    fetcher = make_fetcher(loopback_download_config(fault_server, max_redirects=3))
    with pytest.raises(PermanentError, match="too many redirects") as caught:
        fetch_into(fetcher, storage, fault_server.url("/loop"))
    assert caught.value.http_status == 302
    assert fault_server.requests_to("/loop") == 4


def test_redirect_without_location_is_permanent(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/r", statuses=[301])
    fetcher = make_fetcher(loopback_download_config(fault_server))
    with pytest.raises(PermanentError, match="without a Location") as caught:
        fetch_into(fetcher, storage, fault_server.url("/r"))
    assert caught.value.http_status == 301


def test_redirects_disabled(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/r", statuses=[302], location="/a.pdf")
    fetcher = make_fetcher(loopback_download_config(fault_server, max_redirects=0))
    with pytest.raises(PermanentError, match="too many redirects"):
        fetch_into(fetcher, storage, fault_server.url("/r"))
    assert fault_server.requests_to("/a.pdf") == 0


# --- DNS rebinding ---


def test_dns_rebinding_cannot_switch_the_address(
    fault_server, storage, make_fetcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = fault_server.port
    route = fault_server.add("/a.pdf", size=5000, prefix=PDF_HEAD)
    resolver = StubResolver({"files.test": [["127.0.0.1"], ["10.0.0.1"]]})
    name_lookups: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def rebinding_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Had the client resolved the name itself when connecting, it would be sent to 10.0.0.1.
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host))
        except OSError:
            name_lookups.append(str(host))
            return real_getaddrinfo("10.0.0.1", *args, **kwargs)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    fetcher = make_fetcher(loopback_download_config(fault_server), resolver)
    url = f"http://files.test:{port}/a.pdf"
    assert fetch_into(fetcher, storage, url).sha256 == route.sha256
    assert resolver.calls == ["files.test"]
    assert name_lookups == []
    assert fault_server.records("/a.pdf")[0].headers["Host"] == f"files.test:{port}"
    # The next resolution turns private: refused, although a pooled connection to 127.0.0.1 is idle.
    with pytest.raises(ValidationError, match="private"):
        fetch_into(fetcher, storage, url, blob="b.bin")
    assert fault_server.requests_to("/a.pdf") == 1


def test_connection_goes_to_the_next_validated_address_when_the_first_refuses(
    fault_server, storage, make_fetcher
) -> None:
    # The server listens on 127.0.0.1 only: 127.0.0.2 at its port refuses the connection.
    resolver = StubResolver({"files.test": [["127.0.0.2", "127.0.0.1"]]})
    fault_server.add("/a.pdf", PDF_HEAD)
    fetcher = make_fetcher(loopback_download_config(fault_server), resolver)
    assert fetch_into(fetcher, storage, f"http://files.test:{fault_server.port}/a.pdf").bytes == len(PDF_HEAD)


# --- size, type ---


@pytest.mark.parametrize("framing", ["length", "close", "chunked"])
def test_over_size_body_is_refused_and_leaves_nothing(fault_server, storage, make_fetcher, framing: str) -> None:
    extra = {"length": {}, "close": {"content_length": None}, "chunked": {"chunked": True}}[framing]
    fault_server.add("/big.pdf", size=2_000_000, prefix=PDF_HEAD, **extra)
    fetcher = make_fetcher(loopback_download_config(fault_server, max_bytes=1_000_000, chunk_size=65536))
    with pytest.raises(ValidationError, match="max_bytes") as caught:
        fetch_into(fetcher, storage, fault_server.url("/big.pdf"))
    assert caught.value.http_status == 200
    assert stored_files(storage) == []


def test_content_length_over_the_limit_is_refused_before_the_body(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/big.pdf", size=10_000, prefix=PDF_HEAD)
    fetcher = make_fetcher(loopback_download_config(fault_server, max_bytes=9_999))
    with pytest.raises(ValidationError, match="Content-Length 10000 exceeds max_bytes 9999"):
        fetch_into(fetcher, storage, fault_server.url("/big.pdf"))
    assert stored_files(storage) == []


def test_exactly_max_bytes_is_accepted(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/edge.pdf", size=10_000, prefix=PDF_HEAD, content_length=None)
    fetcher = make_fetcher(loopback_download_config(fault_server, max_bytes=10_000))
    assert fetch_into(fetcher, storage, fault_server.url("/edge.pdf")).bytes == 10_000


@pytest.mark.parametrize(
    ("path", "body", "content_type", "message"),
    [
        ("/photo.pdf", PNG, "image/png", "content is png, extension says pdf"),
        ("/a.pdf", PDF_HEAD + bytes(100), "image/png", "Content-Type says png"),
        ("/report.pdf", b"<!DOCTYPE html><html>Sign in</html>", "text/html", "content is html"),
        ("/tool", b"MZ\x90\x00" + bytes(300), "application/octet-stream", "file type exe not allowed"),
        ("/empty.pdf", b"", "application/pdf", "empty body"),
    ],
)
def test_disallowed_or_mismatched_type_is_refused_and_leaves_nothing(
    fault_server, storage, make_fetcher, path: str, body: bytes, content_type: str, message: str
) -> None:
    fault_server.add(path, body, content_type=content_type)
    fetcher = make_fetcher(loopback_download_config(fault_server))
    with pytest.raises(ValidationError) as caught:
        fetch_into(fetcher, storage, fault_server.url(path))
    assert message in caught.value.message
    assert stored_files(storage) == []


def test_type_is_judged_on_a_large_body_before_anything_is_written(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/big.pdf", size=5_000_000, prefix=PNG)
    fetcher = make_fetcher(loopback_download_config(fault_server, chunk_size=4096))
    with pytest.raises(ValidationError, match="content is png"):
        fetch_into(fetcher, storage, fault_server.url("/big.pdf"))
    assert stored_files(storage) == []


def test_allowed_types_come_from_the_config(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/a.pdf", PDF_HEAD)
    fetcher = make_fetcher(loopback_download_config(fault_server, allowed_file_types=["png"]))
    with pytest.raises(ValidationError, match="file type pdf not allowed"):
        fetch_into(fetcher, storage, fault_server.url("/a.pdf"))


# --- slow servers, timeouts, resets ---


@pytest.mark.parametrize("framing", [{}, {"content_length": None}])
def test_dribbling_server_is_cut_off_by_the_total_deadline(fault_server, storage, make_fetcher, framing) -> None:
    fault_server.add("/slow.pdf", size=100_000, prefix=PDF_HEAD, rate=1.0, **framing)
    fetcher = make_fetcher(loopback_download_config(fault_server, total_timeout=1.0, read_timeout=30.0))
    with pytest.raises(TransientError, match="too slow"):
        fetch_into(fetcher, storage, fault_server.url("/slow.pdf"))
    assert stored_files(storage) == []


def test_stalled_headers_are_cut_off_by_the_total_deadline(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/stall.pdf", PDF_HEAD, stall=60.0)
    fetcher = make_fetcher(loopback_download_config(fault_server, total_timeout=1.0, read_timeout=30.0))
    with pytest.raises(TransientError, match="too slow"):
        fetch_into(fetcher, storage, fault_server.url("/stall.pdf"))


def test_read_timeout_is_transient(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/stall.pdf", PDF_HEAD, stall=60.0)
    fetcher = make_fetcher(loopback_download_config(fault_server, read_timeout=0.5, total_timeout=30.0))
    with pytest.raises(TransientError, match="read timeout"):
        fetch_into(fetcher, storage, fault_server.url("/stall.pdf"))


def test_the_deadline_covers_the_tls_handshake(make_fetcher, storage) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts into the backlog, never answers the ClientHello
    port = silent.getsockname()[1]
    try:
        config = loopback_download_config(None, allowed_ports=[port], total_timeout=1.0, connect_timeout=30.0)
        fetcher = make_fetcher(config)
        with pytest.raises(TransientError, match="too slow"):
            fetch_into(fetcher, storage, f"https://127.0.0.1:{port}/a.pdf")
    finally:
        silent.close()


def test_connection_reset_mid_body_is_transient(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/reset.pdf", size=500_000, prefix=PDF_HEAD, reset_after=200_000)
    fetcher = make_fetcher(loopback_download_config(fault_server))
    with pytest.raises(TransientError, match="connection"):
        fetch_into(fetcher, storage, fault_server.url("/reset.pdf"))
    assert stored_files(storage) == []


def test_content_length_lie_is_a_truncated_body(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/short.pdf", size=1000, prefix=PDF_HEAD, content_length=5000)
    fetcher = make_fetcher(loopback_download_config(fault_server))
    with pytest.raises(TransientError, match="body ended early"):
        fetch_into(fetcher, storage, fault_server.url("/short.pdf"))
    assert stored_files(storage) == []


def test_connection_refused_is_transient(make_fetcher, storage) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    fetcher = make_fetcher(loopback_download_config(None, allowed_ports=[port]))
    with pytest.raises(TransientError, match="connection refused"):
        fetch_into(fetcher, storage, f"http://127.0.0.1:{port}/a.pdf")


def test_dns_failure_is_transient(fault_server, storage, make_fetcher) -> None:
    def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    fetcher = make_fetcher(loopback_download_config(fault_server), failing)
    with pytest.raises(TransientError, match="DNS"):
        fetch_into(fetcher, storage, f"http://files.test:{fault_server.port}/a.pdf")
    assert fault_server.connections == 0


# --- statuses ---


@pytest.mark.parametrize("status", [404, 410, 400, 403, 401, 405, 418, 451])
def test_client_errors_are_permanent(fault_server, storage, make_fetcher, status: int) -> None:
    fault_server.add("/x.pdf", statuses=[status])
    fetcher = make_fetcher(loopback_download_config(fault_server))
    with pytest.raises(PermanentError) as caught:
        fetch_into(fetcher, storage, fault_server.url("/x.pdf"))
    assert caught.value.http_status == status
    assert stored_files(storage) == []


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_transient_with_retry_after(fault_server, storage, make_fetcher, status) -> None:
    fault_server.add("/x.pdf", statuses=[status], retry_after="7")
    fetcher = make_fetcher(loopback_download_config(fault_server))
    with pytest.raises(TransientError) as caught:
        fetch_into(fetcher, storage, fault_server.url("/x.pdf"))
    assert (caught.value.http_status, caught.value.retry_after) == (status, 7.0)


def test_retry_after_as_an_http_date(fault_server, storage, make_fetcher) -> None:
    now = 2_000_000_000.0
    fault_server.add("/x.pdf", statuses=[503], retry_after=email.utils.formatdate(now + 120, usegmt=True))
    fetcher = make_fetcher(loopback_download_config(fault_server), clock=lambda: now)
    with pytest.raises(TransientError) as caught:
        fetch_into(fetcher, storage, fault_server.url("/x.pdf"))
    assert caught.value.retry_after == 120.0


def test_status_sequence_then_success(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/x.pdf", PDF_HEAD, statuses=[503, 503, 200])
    fetcher = make_fetcher(loopback_download_config(fault_server))
    for _ in range(2):
        with pytest.raises(TransientError):
            fetch_into(fetcher, storage, fault_server.url("/x.pdf"))
    assert fetch_into(fetcher, storage, fault_server.url("/x.pdf")).http_status == 200
    assert fault_server.requests_to("/x.pdf") == 3


# --- refused before any connection ---


def test_expired_presigned_url_makes_no_connection(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/a.pdf", PDF_HEAD)
    fetcher = make_fetcher(loopback_download_config(fault_server), clock=time.time)
    url = fault_server.url("/a.pdf", query="X-Amz-Date=20200101T000000Z&X-Amz-Expires=60&X-Amz-Signature=x")
    with pytest.raises(ExpiredError):
        fetch_into(fetcher, storage, url)
    assert fault_server.connections == 0


def test_validation_failure_makes_no_connection(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/a.pdf", PDF_HEAD)
    fetcher = make_fetcher(loopback_download_config(fault_server, allow_cidrs=[]))
    with pytest.raises(ValidationError, match="loopback"):
        fetch_into(fetcher, storage, fault_server.url("/a.pdf"))
    assert fault_server.connections == 0


# --- TLS: SNI and Host carry the name, the socket goes to the validated address ---


def test_tls_with_sni_and_host_set_to_the_original_name(tls_fault_server, test_ca, storage, make_fetcher) -> None:
    route = tls_fault_server.add("/a.pdf", size=200_000, prefix=PDF_HEAD)
    resolver = StubResolver({"files.test": [["127.0.0.1"]]})
    config = loopback_download_config(tls_fault_server, ca_bundle=str(test_ca.ca_path))
    fetcher = make_fetcher(config, resolver)
    url = tls_fault_server.url("/a.pdf", host="files.test")
    assert fetch_into(fetcher, storage, url).sha256 == route.sha256
    (record,) = tls_fault_server.records("/a.pdf")
    assert record.sni == "files.test"
    assert record.headers["Host"] == f"files.test:{tls_fault_server.port}"


def test_tls_verification_fails_without_the_test_ca(tls_fault_server, storage, make_fetcher) -> None:
    tls_fault_server.add("/a.pdf", PDF_HEAD)
    resolver = StubResolver({"files.test": [["127.0.0.1"]]})
    fetcher = make_fetcher(loopback_download_config(tls_fault_server), resolver)
    with pytest.raises(PermanentError, match="certificate verification failed"):
        fetch_into(fetcher, storage, tls_fault_server.url("/a.pdf", host="files.test"))
    assert tls_fault_server.requests_to("/a.pdf") == 0
    assert stored_files(storage) == []


def test_tls_verification_checks_the_name_not_the_address(tls_fault_server, test_ca, storage, make_fetcher) -> None:
    tls_fault_server.add("/a.pdf", PDF_HEAD)
    resolver = StubResolver({"other.test": [["127.0.0.1"]]})
    config = loopback_download_config(tls_fault_server, ca_bundle=str(test_ca.ca_path))
    fetcher = make_fetcher(config, resolver)
    with pytest.raises(PermanentError, match="certificate verification failed"):
        fetch_into(fetcher, storage, tls_fault_server.url("/a.pdf", host="other.test"))
    assert tls_fault_server.requests_to("/a.pdf") == 0


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verification_can_be_turned_off_explicitly(tls_fault_server, storage, make_fetcher) -> None:
    tls_fault_server.add("/a.pdf", PDF_HEAD)
    resolver = StubResolver({"other.test": [["127.0.0.1"]]})
    fetcher = make_fetcher(loopback_download_config(tls_fault_server, verify_tls=False), resolver)
    assert fetch_into(fetcher, storage, tls_fault_server.url("/a.pdf", host="other.test")).file_type == "pdf"


def test_ipv6_loopback_server(storage, make_fetcher) -> None:
    with FaultServer(host="::1") as server:
        route = server.add("/a.pdf", size=70_000, prefix=PDF_HEAD)
        fetcher = make_fetcher(loopback_download_config(server))
        outcome = fetch_into(fetcher, storage, server.url("/a.pdf"))
        assert outcome.sha256 == route.sha256
        assert server.records("/a.pdf")[0].headers["Host"] == f"[::1]:{server.port}"


# --- large bodies: writes go through the write-behind thread ---


def _write_behind_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name == "kafkapipe-write-behind"]


def test_large_body_is_written_behind_the_socket(fault_server, storage, make_fetcher) -> None:
    route = fault_server.add("/big.pdf", size=24 * 1024 * 1024 + 5, prefix=PDF_HEAD)
    fetcher = make_fetcher(loopback_download_config(fault_server, chunk_size=256 * 1024))
    outcome = fetch_into(fetcher, storage, fault_server.url("/big.pdf"))
    assert (outcome.bytes, outcome.sha256) == (route.length, route.sha256)
    assert hashlib.sha256((storage.root / "claims/a.pdf").read_bytes()).hexdigest() == route.sha256
    assert _write_behind_threads() == []


def test_over_size_large_body_stops_the_write_behind_and_leaves_nothing(fault_server, storage, make_fetcher) -> None:
    fault_server.add("/big.pdf", size=40 * 1024 * 1024, prefix=PDF_HEAD, content_length=None)
    fetcher = make_fetcher(loopback_download_config(fault_server, max_bytes=12 * 1024 * 1024))
    with pytest.raises(ValidationError, match="max_bytes"):
        fetch_into(fetcher, storage, fault_server.url("/big.pdf"))
    assert stored_files(storage) == []
    assert _write_behind_threads() == []


def test_storage_failure_during_write_behind_reaches_the_caller(fault_server, make_fetcher) -> None:
    from kafkapipe.storage.base import BlobWriter

    class FailingWriter(BlobWriter):
        def __init__(self) -> None:
            self.written = 0
            self.aborted = self.committed = False

        def write(self, chunk: bytes) -> None:
            self.written += len(chunk)
            if self.written > 16 * 1024 * 1024:
                raise TransientError("storage write failed: disk full")

        def commit(self) -> None:
            self.committed = True

        def abort(self) -> None:
            self.aborted = True

    fault_server.add("/big.pdf", size=40 * 1024 * 1024, prefix=PDF_HEAD)
    fetcher = make_fetcher(loopback_download_config(fault_server))
    writer = FailingWriter()
    with pytest.raises(TransientError, match="disk full"), writer:
        fetcher.fetch(fault_server.url("/big.pdf"), writer)
    assert writer.aborted and not writer.committed
    assert _write_behind_threads() == []


# --- content encodings the server applies although identity was asked for ---


def _encoded(encoding: str, body: bytes) -> bytes:
    import gzip
    import zlib

    if encoding == "gzip":
        return gzip.compress(body)
    if encoding == "deflate":
        return zlib.compress(body)
    return b"\x1b\x00\x00" + body  # br: the header alone decides; nothing is ever decoded


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-gzip", "identity, gzip", "GZIP"])
def test_an_encoded_body_is_refused_unread_when_identity_was_asked(
    fault_server, storage, make_fetcher, encoding
) -> None:
    body = PDF_HEAD + b"stream of the document" * 1000
    fault_server.add("/a.pdf", _encoded(encoding.split(",")[-1].strip().lower(), body),
                     headers={"Content-Encoding": encoding}, content_type="application/pdf")
    fetcher = make_fetcher(loopback_download_config(fault_server))
    with pytest.raises(ValidationError) as caught:
        fetch_into(fetcher, storage, fault_server.url("/a.pdf"))
    assert "Content-Encoding" in caught.value.message and "identity" in caught.value.message
    assert caught.value.http_status == 200 and caught.value.category == "validation"
    assert fault_server.records("/a.pdf")[0].headers["Accept-Encoding"] == "identity"
    assert stored_files(storage) == []


def test_identity_encoding_is_accepted(fault_server, storage, make_fetcher) -> None:
    body = PDF_HEAD + b"plain" * 100
    fault_server.add("/a.pdf", body, headers={"Content-Encoding": "identity"}, content_type="application/pdf")
    fetcher = make_fetcher(loopback_download_config(fault_server))
    assert fetch_into(fetcher, storage, fault_server.url("/a.pdf")).sha256 == hashlib.sha256(body).hexdigest()


def test_compression_bomb_is_refused_before_decoding(fault_server, storage, make_fetcher) -> None:
    import gzip

    bomb = gzip.compress(PDF_HEAD + bytes(200 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 1024 * 1024
    fault_server.add("/bomb.pdf", bomb, headers={"Content-Encoding": "gzip"})
    fetcher = make_fetcher(loopback_download_config(fault_server, max_bytes=2 * 1024 * 1024))
    with pytest.raises(ValidationError, match="Content-Encoding 'gzip' refused"):
        fetch_into(fetcher, storage, fault_server.url("/bomb.pdf"))
    assert stored_files(storage) == []


def test_utf8_location_is_followed_as_utf8(fault_server, storage, make_fetcher) -> None:
    route = fault_server.add("/sch%C3%A4den.pdf", PDF_HEAD)
    fault_server.add("/start", statuses=[302], location="/schäden.pdf".encode().decode("latin-1"))
    fetcher = make_fetcher(loopback_download_config(fault_server))
    outcome = fetch_into(fetcher, storage, fault_server.url("/start"))
    assert outcome.sha256 == route.sha256


def test_proxy_environment_is_ignored(fault_server, storage, make_fetcher, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://10.0.0.1:3128")
    fault_server.add("/a.pdf", PDF_HEAD)
    fetcher = make_fetcher(loopback_download_config(fault_server))
    assert fetch_into(fetcher, storage, fault_server.url("/a.pdf")).bytes == len(PDF_HEAD)


def test_fetch_after_close_is_transient_not_a_crash(fault_server, storage) -> None:
    fault_server.add("/a.pdf", PDF_HEAD)
    fetcher = Fetcher(loopback_download_config(fault_server))
    fetcher.close()
    with pytest.raises(TransientError, match="closed"):
        fetch_into(fetcher, storage, fault_server.url("/a.pdf"))
    assert fault_server.connections == 0
