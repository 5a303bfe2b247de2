"""The URL validator: SSRF bypass forms are refused before any socket opens; legitimate edge cases pass.

Every test here runs with the network sealed off (``connect``, ``getaddrinfo``
and ``create_connection`` fail the test), and names are resolved by a stub
that records its calls, so "refused without a connection" is proved, not
assumed. The bypass forms are also pushed through the real ``Fetcher``.
"""

from __future__ import annotations

import io
import socket

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkapipe.cli.urlcheck import url_check
from kafkapipe.config import Config, DownloadConfig
from kafkapipe.download.fetch import Fetcher
from kafkapipe.errors import ExpiredError, TransientError, ValidationError
from kafkapipe.security import urls
from kafkapipe.security.urls import (
    UrlValidator,
    address_deny_reason,
    parse_ipv4_host,
    system_resolver,
)
from kafkapipe.storage.base import BlobWriter

OPEN = DownloadConfig(allowed_schemes=["https", "http"], allowed_ports=[80, 443])
RESTRICTED = DownloadConfig(
    allowed_schemes=["https"],
    allowed_hosts=["files.example.com"],
    allowed_host_suffixes=[".blob.core.windows.net"],
    allowed_ports=[443],
)
PUBLIC = "93.184.216.34"


class StubResolver:
    """name → addresses (or a list of answers, one per call); records every call."""

    def __init__(self, mapping: dict[str, list] | None = None) -> None:
        self.mapping = dict(mapping or {})
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.mapping:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = self.mapping[host]
        if answer and isinstance(answer[0], list):
            return answer.pop(0) if len(answer) > 1 else answer[0]
        return answer


class RecordingWriter(BlobWriter):
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.committed = self.aborted = False

    def write(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def commit(self) -> None:
        self.committed = True

    def abort(self) -> None:
        self.aborted = True


@pytest.fixture(autouse=True)
def sealed_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        pytest.fail(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- bypass forms judged without DNS (open allow-list: the address deny-list must do the work) ---

NUMERIC_AND_IP_FORMS = [
    ("http://127.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.1/", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://0x7f000001/", "loopback"),
    ("http://0X7F000001/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://0x7f.0.0.1/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://0177.1/", "loopback"),
    ("http://127.000.000.001/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://0000000000177.0.0.1/", "loopback"),
    ("http://0x00000000007f.1/", "loopback"),
    ("http://127.255.255.254/", "loopback"),
    ("http://127.0.0.1:80/", "loopback"),
    ("http://0/", "unspecified"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0x0/", "unspecified"),
    ("http://169.254.169.254/", "metadata"),
    ("http://2852039166/", "metadata"),
    ("http://0xa9fea9fe/", "metadata"),
    ("http://0251.0376.0251.0376/", "metadata"),
    ("http://169.254.43518/", "metadata"),
    ("http://0xA9.0xFE.0xA9.0xFE/", "metadata"),
    ("http://169.254.170.2/", "metadata"),
    ("http://100.100.100.200/", "metadata"),
    ("http://168.63.129.16/", "metadata"),
    ("http://192.0.0.192/", "metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://10.0.0.1/", "private"),
    ("http://10.1/", "private"),
    ("http://167772161/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://3232235777/", "private"),
    ("http://0xc0a80101/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.255/", "private"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://224.0.0.1/", "multicast"),
    ("http://255.255.255.255/", "reserved"),
    ("http://240.0.0.1/", "reserved"),
    ("http://198.18.0.1/", "benchmarking"),
    ("http://192.0.2.1/", "documentation"),
    # Unicode digits and dots that normalise to an address
    ("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "loopback"),
    ("http://127\u30020\u30020\u30021/", "loopback"),
    (
        "http://\uff11\uff16\uff19\uff0e\uff12\uff15\uff14\uff0e\uff11\uff16\uff19\uff0e\uff12\uff15\uff14/",
        "metadata",
    ),
    ("http://\u246f\u2468.\u2461\u2464\u2463.\u246f\u2468.\u2461\u2464\u2463/", "metadata"),
    ("http://\uff10\uff58\uff17\uff46\uff0e\uff11/", "loopback"),
    # IPv6 literals and IPv4-in-IPv6 forms
    ("http://[::1]/", "loopback"),
    ("http://[0:0:0:0:0:0:0:1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "loopback"),
    ("http://[::FFFF:169.254.169.254]/", "metadata"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[::127.0.0.1]/", "loopback"),
    ("http://[::ffff:0:127.0.0.1]/", "loopback"),
    ("http://[64:ff9b::127.0.0.1]/", "loopback"),
    ("http://[64:ff9b::a9fe:a9fe]/", "metadata"),
    ("http://[64:ff9b:1::a00:1]/", "NAT64"),
    ("http://[2002:7f00:1::]/", "loopback"),
    ("http://[2002:a9fe:a9fe::1]/", "metadata"),
    ("http://[2002:c0a8:101::1]/", "private"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "unique-local"),
    ("http://[fd12:3456::1]/", "unique-local"),
    ("http://[fd00:ec2::254]/", "metadata"),
    ("http://[fd20:ce::254]/", "metadata"),
    ("http://[FD20:00CE:0000::0254]/", "metadata"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[100::1]/", "discard"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://[fec0::1]/", "site-local"),
    ("http://[::ffff:8.8.8.8]/", "IPv4-mapped"),
    ("http://[::8.8.8.8]/", "IPv4-compatible"),
    # malformed hosts that must be refused, never guessed at
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://[v1.fe80::a]/", "IPvFuture"),
    ("http://::1/", "IPv6 literal without brackets"),
    ("http://[::1/", "unterminated"),
    ("http://[::1]x/", "after IPv6"),
    ("http://127.0.0.1.1/", "numeric"),
    ("http://256.0.0.1/", "numeric"),
    ("http://0x100000000/", "numeric"),
    ("http://4294967296/", "numeric"),
    ("http://08.0.0.1/", "numeric"),
    ("http://1.2.3.09/", "numeric"),
    ("http://%31%32%37.0.0.1/", "percent"),
    # names that mean this machine or a metadata service, refused before DNS
    ("http://localhost/", "local or metadata"),
    ("http://LOCALHOST./", "local or metadata"),
    ("http://foo.localhost/", "local or metadata"),
    ("http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/", "local or metadata"),
    ("http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/", "local or metadata"),
    ("http://metadata.google.internal/", "local or metadata"),
    ("http://METADATA.GOOGLE.INTERNAL./", "local or metadata"),
    ("http://metadata/", "local or metadata"),
    ("http://instance-data/", "local or metadata"),
]

# --- host-confusion forms against an allow-list ---

ALLOW_LIST_FORMS = [
    ("https://files.example.com@evil.com/", "userinfo"),
    ("https://evil.com@files.example.com/", "userinfo"),
    ("https://user:pass@files.example.com/", "userinfo"),
    ("https://@files.example.com/", "userinfo"),
    ("https://files.example.com:443@127.0.0.1/", "userinfo"),
    ("https://files.example.com%40evil.com/", "percent"),
    ("https://evil.com#@files.example.com/", "allow-list"),
    ("https://evil.com?@files.example.com/", "allow-list"),
    ("https://evil.com/#.files.example.com", "allow-list"),
    ("https://evil.com\\@files.example.com/", "backslash"),
    ("https://files.example.com\\@evil.com/", "backslash"),
    ("https:\\\\evil.com/", "backslash"),
    ("https:/\\evil.com/", "backslash"),
    ("https://evil.com\\.files.example.com/", "backslash"),
    ("https:evil.com/", "authority"),
    ("https:/evil.com/", "authority"),
    ("https:///evil.com/", "empty host"),
    ("//evil.com/", "no scheme"),
    ("evil.com/a.pdf", "no scheme"),
    ("https://files.example.com.evil.com/", "allow-list"),
    ("https://evilfiles.example.com/", "allow-list"),
    ("https://files.example.com\u3002evil.com/", "allow-list"),
    ("https://evilblob.core.windows.net/", "allow-list"),
    ("https://blob.core.windows.net/", "allow-list"),
    ("https://blob.core.windows.net.evil.com/", "allow-list"),
    ("https://f\u0456les.example.com/", "allow-list"),
    ("https://files.example.com%2eevil.com/", "percent"),
    ("https://%66iles.example.com/", "percent"),
    ("https://files.example.com%00.evil.com/", "percent"),
    ("https://files.example.com\x00.evil.com/", "control"),
    ("https://files.example.com\t/", "whitespace"),
    ("https://files.exam\nple.com/", "whitespace"),
    (" https://files.example.com/", "whitespace"),
    ("https://files.example.com/a.pdf\r\nHost: evil", "whitespace"),
    ("https://files.example.com\u2028/", "whitespace"),
    ("https://files.example.com\x85/", "control"),
    ("https://files.example.com../", "empty label"),
    ("https://" + "a" * 64 + ".files.example.com/", "invalid host"),
    ("https://xn--zz.files.example.com/", "invalid host"),
    ("https://files_example.com/", "invalid host"),
    ("https://files.example.com:8443/", "port 8443"),
    ("https://files.example.com:0/", "out of range"),
    ("https://files.example.com:65536/", "out of range"),
    ("https://files.example.com:+443/", "invalid port"),
    ("https://files.example.com:443:443/", "several ports"),
    ("https://files.example.com:\uff14\uff14\uff13/", "invalid port"),
    ("https://files.example.com:/", "empty port"),
    ("https://files.example.com:0x1bb/", "invalid port"),
    ("https://127.0.0.1/", "allow-list"),
    ("https://[::1]/", "allow-list"),
    ("https://2130706433/", "allow-list"),
    ("http://files.example.com/", "scheme 'http'"),
    ("file:///etc/passwd", "scheme 'file'"),
    ("gopher://files.example.com/", "scheme 'gopher'"),
    ("ftp://files.example.com/a.pdf", "scheme 'ftp'"),
    ("dict://files.example.com:11211/", "scheme 'dict'"),
    ("ldap://files.example.com/", "scheme 'ldap'"),
    ("jar:https://files.example.com/a.jar!/", "scheme 'jar'"),
    ("data:text/plain,hello", "scheme 'data'"),
    ("javascript:alert(1)", "scheme 'javascript'"),
    ("https+evil://files.example.com/", "scheme"),
    ("", "empty URL"),
]

# --- names whose resolution is the attack (resolver stub, open allow-list unless said) ---

NAME_FORMS = [
    ("http://localtest.me/", {"localtest.me": ["127.0.0.1"]}, "loopback"),
    ("http://127.0.0.1.nip.io/", {"127.0.0.1.nip.io": ["127.0.0.1"]}, "loopback"),
    ("http://loopback6.example/", {"loopback6.example": ["::1"]}, "loopback"),
    ("http://mixed.example/", {"mixed.example": [PUBLIC, "10.0.0.1"]}, "private"),
    ("http://mixed-first.example/", {"mixed-first.example": ["10.0.0.1", PUBLIC]}, "private"),
    ("http://mapped.example/", {"mapped.example": ["::ffff:10.0.0.1"]}, "private"),
    ("http://imds.example/", {"imds.example": ["169.254.169.254"]}, "metadata"),
    ("http://imds6.example/", {"imds6.example": ["fd00:ec2::254"]}, "metadata"),
    ("http://gcp6.example/", {"gcp6.example": ["fd20:ce::254"]}, "metadata"),
    ("http://zero.example/", {"zero.example": ["0.0.0.0"]}, "unspecified"),
    ("http://scoped.example/", {"scoped.example": ["fe80::1%eth0"]}, "scoped"),
    ("http://home.example/", {"home.example": ["192.168.0.10"]}, "private"),
    ("http://cgnat.example/", {"cgnat.example": ["100.64.1.1"]}, "carrier-grade NAT"),
    ("http://nat64.example/", {"nat64.example": ["64:ff9b::7f00:1"]}, "loopback"),
    ("http://sixtofour.example/", {"sixtofour.example": ["2002:a9fe:a9fe::"]}, "metadata"),
    ("http://garbage.example/", {"garbage.example": ["not-an-ip"]}, "invalid address"),
]
ALLOWED_NAME_FORMS = [
    ("https://files.example.com/a.pdf", {"files.example.com": ["10.1.2.3"]}, "private"),
    ("https://acct.blob.core.windows.net/c/a.pdf", {"acct.blob.core.windows.net": ["127.0.0.1"]}, "loopback"),
]


def _ids(cases: list[tuple]) -> list[str]:
    return [ascii(case[0])[:70] for case in cases]


def test_at_least_80_distinct_bypass_forms_are_covered() -> None:
    forms = {c[0] for c in NUMERIC_AND_IP_FORMS + ALLOW_LIST_FORMS + NAME_FORMS + ALLOWED_NAME_FORMS}
    assert len(forms) >= 80


@pytest.mark.parametrize(("url", "reason"), NUMERIC_AND_IP_FORMS, ids=_ids(NUMERIC_AND_IP_FORMS))
def test_numeric_and_ip_forms_are_refused_without_dns(url: str, reason: str) -> None:
    resolver = StubResolver()
    validator = UrlValidator(OPEN, resolver)
    with pytest.raises(ValidationError) as caught:
        validator.check_static(url)
    assert reason.lower() in caught.value.message.lower()
    with pytest.raises(ValidationError):
        validator.check(url)
    assert resolver.calls == []


@pytest.mark.parametrize(("url", "reason"), ALLOW_LIST_FORMS, ids=_ids(ALLOW_LIST_FORMS))
def test_host_confusion_forms_are_refused_without_dns(url: str, reason: str) -> None:
    resolver = StubResolver({"files.example.com": [PUBLIC], "evil.com": [PUBLIC]})
    validator = UrlValidator(RESTRICTED, resolver)
    with pytest.raises(ValidationError) as caught:
        validator.check(url)
    assert reason.lower() in caught.value.message.lower()
    assert resolver.calls == []


@pytest.mark.parametrize(("url", "answers", "reason"), NAME_FORMS, ids=_ids(NAME_FORMS))
def test_names_resolving_to_denied_addresses_are_refused(url: str, answers: dict, reason: str) -> None:
    resolver = StubResolver(answers)
    validator = UrlValidator(OPEN, resolver)
    validator.check_static(url)  # nothing to see without DNS
    with pytest.raises(ValidationError) as caught:
        validator.check(url)
    assert reason.lower() in caught.value.message.lower()
    assert len(resolver.calls) == 1


@pytest.mark.parametrize(("url", "answers", "reason"), ALLOWED_NAME_FORMS, ids=_ids(ALLOWED_NAME_FORMS))
def test_allow_listed_names_are_still_judged_by_address(url: str, answers: dict, reason: str) -> None:
    validator = UrlValidator(RESTRICTED, StubResolver(answers))
    with pytest.raises(ValidationError) as caught:
        validator.check(url)
    assert reason in caught.value.message


@pytest.fixture(scope="module")
def open_fetcher_factory():
    fetchers: list[Fetcher] = []

    def make(config: DownloadConfig, resolver: StubResolver) -> Fetcher:
        fetcher = Fetcher(config, resolver=resolver)
        fetchers.append(fetcher)
        return fetcher

    yield make
    for fetcher in fetchers:
        fetcher.close()


ALL_FETCH_CASES = (
    [(OPEN, url, {}) for url, _ in NUMERIC_AND_IP_FORMS]
    + [(RESTRICTED, url, {"files.example.com": [PUBLIC], "evil.com": [PUBLIC]}) for url, _ in ALLOW_LIST_FORMS]
    + [(OPEN, url, answers) for url, answers, _ in NAME_FORMS]
    + [(RESTRICTED, url, answers) for url, answers, _ in ALLOWED_NAME_FORMS]
)


@pytest.mark.parametrize(("config", "url", "answers"), ALL_FETCH_CASES, ids=_ids([c[1:] for c in ALL_FETCH_CASES]))
def test_fetcher_refuses_every_bypass_form_without_connecting(open_fetcher_factory, config, url, answers) -> None:
    resolver = StubResolver(answers)
    writer = RecordingWriter()
    with pytest.raises(ValidationError):
        open_fetcher_factory(config, resolver).fetch(url, writer)
    assert writer.chunks == []
    assert len(resolver.calls) <= 1


# --- legitimate edge cases ---

LONG_SIGV4_QUERY = (
    "X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261125%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261125T190922Z&X-Amz-Expires=604800"
    "&X-Amz-Security-Token=" + "IQoJb3JpZ2luX2VjE" * 200 + "%2B%2F%3D"
    "&X-Amz-SignedHeaders=host&X-Amz-Signature=" + "ab12" * 16
)


@pytest.mark.parametrize(
    ("url", "host", "port", "target"),
    [
        ("https://FILES.EXAMPLE.COM/claims/a.pdf", "files.example.com", 443, "/claims/a.pdf"),
        ("https://files.example.com:443/a.pdf", "files.example.com", 443, "/a.pdf"),
        ("HTTPS://files.example.com/a.pdf", "files.example.com", 443, "/a.pdf"),
        ("https://files.example.com./a.pdf", "files.example.com", 443, "/a.pdf"),
        (
            "https://files.example.com/claims/report%20final%2Fv2%3F%25.pdf",
            "files.example.com",
            443,
            "/claims/report%20final%2Fv2%3F%25.pdf",
        ),
        (
            "https://files.example.com/b/key.pdf?" + LONG_SIGV4_QUERY,
            "files.example.com",
            443,
            "/b/key.pdf?" + LONG_SIGV4_QUERY,
        ),
        (
            "https://acct.blob.core.windows.net/c/a.pdf?sv=2023-11-03&se=2099-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=x%2By%3D",
            "acct.blob.core.windows.net",
            443,
            "/c/a.pdf?sv=2023-11-03&se=2099-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=x%2By%3D",
        ),
        ("https://files.example.com/a.pdf#page=2", "files.example.com", 443, "/a.pdf"),
        (
            "https://files.example.com/a.pdf?next=https://x/@y",
            "files.example.com",
            443,
            "/a.pdf?next=https://x/@y",
        ),
        ("https://\uff46\uff49\uff4c\uff45\uff53.example.com/a.pdf", "files.example.com", 443, "/a.pdf"),
        ("https://files.example.com/\u00fcml\u00e4ut.pdf", "files.example.com", 443, "/%C3%BCml%C3%A4ut.pdf"),
        ("https://files.example.com", "files.example.com", 443, "/"),
        ("https://files.example.com?x=1", "files.example.com", 443, "/?x=1"),
    ],
)
def test_legitimate_edge_cases_pass(url: str, host: str, port: int, target: str) -> None:
    resolver = StubResolver({host: [PUBLIC]})
    validated = UrlValidator(RESTRICTED, resolver).check(url)
    assert validated.parsed.host == host
    assert validated.parsed.port == port
    assert validated.parsed.request_target == target
    assert validated.address == PUBLIC
    assert validated.parsed.host_header == host
    assert resolver.calls == [(host, port)]


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("https://93.184.216.34/a.pdf", "93.184.216.34"),
        ("https://1572395042/a.pdf", "93.184.216.34"),
        ("https://[2606:4700::1111]/a.pdf", "2606:4700::1111"),
        ("https://[64:ff9b::5db8:d822]/a.pdf", "64:ff9b::5db8:d822"),
        ("http://example.org:80/a.pdf", PUBLIC),
    ],
)
def test_public_addresses_pass_an_open_allow_list(url: str, address: str) -> None:
    validated = UrlValidator(OPEN, StubResolver({"example.org": [PUBLIC]})).check(url)
    assert validated.addresses == (address,)


def test_every_address_is_kept_in_resolver_order_without_duplicates() -> None:
    resolver = StubResolver({"multi.example": [PUBLIC, "2606:4700::1111", PUBLIC]})
    validated = UrlValidator(OPEN, resolver).check("https://multi.example/a")
    assert validated.addresses == (PUBLIC, "2606:4700::1111")


def test_allow_cidrs_open_loopback_for_tests_but_never_metadata() -> None:
    config = DownloadConfig(
        allowed_schemes=["http"],
        allowed_ports=[8080, 80],
        allow_cidrs=["127.0.0.0/8", "169.254.0.0/16", "::1/128"],
    )
    validator = UrlValidator(config, StubResolver({"localtest.me": ["127.0.0.1", "::1"]}))
    assert validator.check("http://127.0.0.1:8080/a").address == "127.0.0.1"
    assert validator.check("http://127.1:8080/a").address == "127.0.0.1"
    assert validator.check("http://[::1]:8080/a").address == "::1"
    assert validator.check("http://[::ffff:127.0.0.1]:8080/a").parsed.host == "::ffff:7f00:1"
    assert validator.check("http://localtest.me:8080/a").addresses == ("127.0.0.1", "::1")
    assert validator.check("http://169.254.1.1/").address == "169.254.1.1"
    with pytest.raises(ValidationError, match="metadata"):
        validator.check("http://169.254.169.254/")
    with pytest.raises(ValidationError, match="private"):
        validator.check("http://10.0.0.1/")


def test_idn_hosts_match_in_either_spelling() -> None:
    unicode_cfg = DownloadConfig(allowed_hosts=["B\u00fccher.Example"])
    punycode_cfg = DownloadConfig(allowed_hosts=["xn--bcher-kva.example."])
    resolver = StubResolver({"xn--bcher-kva.example": [PUBLIC]})
    for config in (unicode_cfg, punycode_cfg):
        for url in ("https://b\u00fccher.example/a.pdf", "https://XN--BCHER-KVA.example/a.pdf"):
            assert UrlValidator(config, resolver).check(url).parsed.host == "xn--bcher-kva.example"


def test_suffix_without_a_leading_dot_also_matches_the_domain_itself() -> None:
    validator = UrlValidator(DownloadConfig(allowed_host_suffixes=["Example.COM"]), StubResolver())
    assert validator.check_static("https://example.com/").host == "example.com"
    assert validator.check_static("https://a.b.example.com/").host == "a.b.example.com"
    with pytest.raises(ValidationError):
        validator.check_static("https://badexample.com/")


def test_explicitly_allowed_local_name_is_judged_by_its_address() -> None:
    config = DownloadConfig(allowed_hosts=["localhost"], allowed_schemes=["http"], allowed_ports=[80])
    with pytest.raises(ValidationError, match="loopback"):
        UrlValidator(config, StubResolver({"localhost": ["127.0.0.1"]})).check("http://localhost/")


def test_host_header_carries_a_non_default_port_and_brackets() -> None:
    config = DownloadConfig(allowed_schemes=["https"], allowed_ports=[8443])
    parsed = UrlValidator(config).check_static("https://[2606:4700::1111]:8443/x?y=1")
    assert parsed.host_header == "[2606:4700::1111]:8443"
    assert parsed.url == "https://[2606:4700::1111]:8443/x?y=1"
    assert parsed.redacted == "https://[2606:4700::1111]:8443/x"


def test_dns_failure_is_transient_and_names_the_host_only() -> None:
    validator = UrlValidator(OPEN, StubResolver())
    with pytest.raises(TransientError) as caught:
        validator.check("https://missing.example/a.pdf?sig=secret")
    assert "missing.example" in caught.value.message
    assert "secret" not in caught.value.message


def test_empty_resolution_is_transient() -> None:
    with pytest.raises(TransientError):
        UrlValidator(OPEN, StubResolver({"empty.example": []})).check("https://empty.example/")


def test_reasons_never_contain_the_query_or_path() -> None:
    url = "https://127.0.0.1/secret-path.pdf?X-Amz-Signature=deadbeef"
    with pytest.raises(ValidationError) as caught:
        UrlValidator(OPEN).check(url)
    assert "deadbeef" not in caught.value.message
    assert "secret-path" not in caught.value.message


def test_very_long_urls_are_refused() -> None:
    with pytest.raises(ValidationError, match="longer than"):
        UrlValidator(OPEN).check_static("https://example.com/" + "a" * 20000)


def test_system_resolver_deduplicates_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, 443)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1111", 443, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC, 443)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    assert system_resolver("example.org", 443) == [PUBLIC, "2606:4700::1111"]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.1", "127.0.0.1"),
        ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
        ("1.2.65535", "1.2.255.255"),
        ("1.16777215", "1.255.255.255"),
        ("4294967295", "255.255.255.255"),
        ("0", "0.0.0.0"),
        ("1.2.65536", None),
        ("1.2.3.4.5", None),
        ("0x", "0.0.0.0"),
        ("1..2", None),
    ],
)
def test_ipv4_number_forms(host: str, expected: str | None) -> None:
    result = parse_ipv4_host(host)
    assert (str(result) if result else None) == expected


def test_address_deny_reason_allows_public_and_honours_allow_networks() -> None:
    import ipaddress

    assert address_deny_reason(PUBLIC) is None
    assert address_deny_reason("2606:4700::1111") is None
    assert address_deny_reason("127.0.0.1") == "loopback address"
    assert address_deny_reason("127.0.0.1", [ipaddress.ip_network("127.0.0.0/8")]) is None
    assert address_deny_reason("::ffff:127.0.0.1", [ipaddress.ip_network("127.0.0.0/8")]) is None
    assert "metadata" in address_deny_reason("169.254.169.254", [ipaddress.ip_network("0.0.0.0/0")])


def test_only_http_and_https_are_ever_allowed() -> None:
    with pytest.raises(ValueError, match="unsupported scheme"):
        DownloadConfig(allowed_schemes=["https", "ftp"])
    with attrs.validators.disabled():  # the validator holds even if a config slipped past its check
        validator = UrlValidator(DownloadConfig(allowed_schemes=["https", "ftp", "file"]))
    for url in ("ftp://files.example.com/a.pdf", "file://files.example.com/etc/passwd"):
        with pytest.raises(ValidationError, match="not allowed"):
            validator.check_static(url)


def test_bad_allow_list_entries_are_reported() -> None:
    with pytest.raises(ValueError, match="allowed_hosts"):
        UrlValidator(DownloadConfig(allowed_hosts=["bad host"]))
    with pytest.raises(ValueError, match="allowed_host_suffixes"):
        UrlValidator(DownloadConfig(allowed_host_suffixes=["10.0.0.1"]))


# --- kafkapipe url-check ---


def test_url_check_prints_one_redacted_verdict_per_line_and_fails_on_any_denial() -> None:
    out = io.StringIO()
    resolver = StubResolver({"files.example.com": [PUBLIC], "evil.example": ["10.0.0.1"]})
    config = Config(download=RESTRICTED)
    urls = [
        "https://files.example.com/a.pdf?X-Amz-Signature=s3cret",
        "https://user:pw@files.example.com/a.pdf",
        "https://127.0.0.1/a.pdf",
        "https://files.example.com/b.pdf?X-Amz-Date=20200101T000000Z&X-Amz-Expires=60&X-Amz-Signature=x",
        "https://files.example.com/\x1b[31mred.pdf",
    ]
    assert url_check(config, urls, out, resolver=resolver) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == "ALLOW https://files.example.com/a.pdf"
    assert lines[1] == "DENY https://files.example.com/a.pdf URL contains userinfo (user@host)"
    assert lines[2].startswith("DENY https://127.0.0.1/a.pdf ") and "allow-list" in lines[2]
    assert lines[3].startswith("DENY https://files.example.com/b.pdf ") and "expired" in lines[3]
    assert lines[4] == "DENY https://files.example.com/\\x1b[31mred.pdf URL contains whitespace or a control character"
    text = out.getvalue()
    assert "s3cret" not in text and "pw" not in text and "X-Amz" not in text


def test_url_check_exits_zero_when_everything_is_allowed() -> None:
    out = io.StringIO()
    resolver = StubResolver({"files.example.com": [PUBLIC]})
    assert url_check(RESTRICTED, ["https://files.example.com/a.pdf"], out, resolver=resolver) == 0
    assert out.getvalue() == "ALLOW https://files.example.com/a.pdf\n"


def test_url_check_uses_dns_like_the_download_stage() -> None:
    out = io.StringIO()
    resolver = StubResolver({"rebind.example": ["127.0.0.1"]})
    assert url_check(OPEN, ["https://rebind.example/a"], out, resolver=resolver) == 1
    assert "loopback" in out.getvalue()
    assert resolver.calls == [("rebind.example", 443)]


def test_expired_presigned_url_is_refused_by_the_fetcher_before_dns() -> None:
    resolver = StubResolver({"files.example.com": [PUBLIC]})
    fetcher = Fetcher(RESTRICTED, resolver=resolver, clock=lambda: 2_000_000_000.0)
    try:
        with pytest.raises(ExpiredError):
            fetcher.fetch("https://files.example.com/a.pdf?Expires=1700000000&Signature=x", RecordingWriter())
    finally:
        fetcher.close()
    assert resolver.calls == []


def test_gcp_ipv6_metadata_is_refused_even_inside_allow_cidrs() -> None:
    config = DownloadConfig(allowed_schemes=["http"], allowed_ports=[80], allow_cidrs=["fd20::/16", "fc00::/7"])
    validator = UrlValidator(config, StubResolver({"gcp6.example": ["fd20:ce::254"]}))
    assert validator.check("http://[fd20:ce::253]/").address == "fd20:ce::253"
    for url in ("http://[fd20:ce::254]/", "http://gcp6.example/"):
        with pytest.raises(ValidationError, match="metadata"):
            validator.check(url)


# --- the one-match splitter and the remembered authorities change no verdict ---

URL_PIECES = st.sampled_from([
    "http", "HTTPS", "https", "ftp", "h1+.-", "1http", "", ":", "//", "/", "?", "#", "@", "[", "]", "[::1]", "::1",
    "files.example.com", "FILES.example.com.", "127.1", "0x7f.1", "[::ffff:127.0.0.1]",
    "\uff46\uff49\uff4c\uff45\uff53",
    ":443", ":80", ":8080", ":0", ":99999", ":", "%2e", "a.pdf", "\u00fc", " ", "\t", "\x00", "\x7f", "\x85", "\\",
    "\u2028", "\ufeff", "x.blob.core.windows.net", "localhost", "169.254.169.254", "user@", "evil.com",
])
URL_TEXT = st.lists(URL_PIECES, max_size=12).map("".join) | st.text(max_size=60)


def _verdict(validator: UrlValidator, url: str) -> object:
    try:
        parsed = validator.check_static(url)
    except ValidationError as exc:
        with pytest.raises(ValidationError) as again:
            validator.validate_static(url)
        assert again.value.message == exc.message
        return ("refused", exc.message)
    assert validator.validate_static(url) is None
    return parsed


@settings(max_examples=3000, deadline=None)
@given(URL_TEXT)
def test_the_one_match_split_is_the_checked_split(url: str) -> None:
    schemes = frozenset({"http", "https"})
    try:
        expected: object = urls._split_checked(url, schemes)
    except ValidationError as exc:
        expected = exc.message
    try:
        got: object = urls._split(url, schemes)
    except ValidationError as exc:
        got = exc.message
    assert got == expected


SHARED = {"open": UrlValidator(OPEN, StubResolver()), "restricted": UrlValidator(RESTRICTED, StubResolver())}


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(sorted(SHARED)), st.lists(URL_TEXT, min_size=1, max_size=4))
def test_a_long_lived_validator_judges_like_a_new_one(name: str, urls_: list[str]) -> None:
    config = OPEN if name == "open" else RESTRICTED
    for url in urls_ + urls_:  # twice: the second time from what it remembered
        assert _verdict(SHARED[name], url) == _verdict(UrlValidator(config, StubResolver()), url)


def test_every_bypass_form_is_refused_again_by_a_validator_that_passed_its_neighbours() -> None:
    for config, forms in ((OPEN, NUMERIC_AND_IP_FORMS), (RESTRICTED, ALLOW_LIST_FORMS)):
        validator = UrlValidator(config, StubResolver())
        for _ in range(2):
            validator.check_static("https://files.example.com/a.pdf")
            validator.check_static("https://x.blob.core.windows.net/a.pdf")
            for url, reason in forms:
                for check in (validator.check_static, validator.validate_static):
                    with pytest.raises(ValidationError) as caught:
                        check(url)
                    assert reason.lower() in caught.value.message.lower(), url


def test_remembered_authorities_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urls, "_HOST_VERDICTS", 8)
    validator = UrlValidator(OPEN, StubResolver())
    for i in range(50):
        validator.check_static(f"https://h{i}.example.com/a.pdf")
    long_public = validator.check_static("https://0x" + "0" * 400 + "5d.184.216.34/x")  # inet_aton allows the zeros
    assert long_public.host == PUBLIC
    assert long_public == validator.check_static("https://0x" + "0" * 400 + "5d.184.216.34/x")
    assert 0 < len(validator._passed_authorities) <= 8
    assert all(len(authority) <= urls._MAX_REMEMBERED_AUTHORITY for _, authority in validator._passed_authorities)


@pytest.mark.timeout(120)  # a guard against hanging, not a speed bound: linear time is milliseconds
@pytest.mark.parametrize("tail", [" ", "\\", "\x00", "\x7f", "\u2028"])
@pytest.mark.parametrize("shape", ["authority", "path", "query"])
def test_a_url_the_one_match_refuses_is_refused_in_linear_time(shape: str, tail: str) -> None:
    """A hostile character at the end of a long URL: no backtracking over every split of authority and path.

    With an authority that could give its characters to the path, the one match took seconds on
    a 16 KiB URL and grew with the square of the length. On 400,000 characters that would be
    hours, so a regression hangs here until the timeout; the split itself refuses the same URL
    at the length limit.
    """
    def url(length: int) -> str:
        body = "a" * length
        shapes = {"authority": f"https://{body}", "path": f"https://h/{body}", "query": f"https://h/a?{body}"}
        return shapes[shape] + tail

    assert urls._PLAIN_URL.fullmatch(url(400_000)) is None
    with pytest.raises(ValidationError):
        urls._split(url(urls.MAX_URL_LENGTH - 40), frozenset({"https"}))
