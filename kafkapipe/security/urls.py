"""The one URL validator: ingest uses it for early rejection, download before every hop.

Attachment URLs come from other systems and are treated as hostile. The
validator parses them itself, strictly, instead of trusting a lenient parser
whose idea of "the host" may differ from the HTTP client's; the download
client then connects to the address validated here, with the host name
validated here, so there is no second interpretation to disagree with.

Steps, in order (:meth:`UrlValidator.check_static` does 1-6 without DNS,
:meth:`UrlValidator.check` adds 7):

1. Shape: at most :data:`MAX_URL_LENGTH` characters; no whitespace, control
   characters or backslashes anywhere (browsers read ``\\`` as ``/``, Python
   does not: refusing it removes the disagreement); ``scheme://authority``
   is required (``https:host`` and ``https:/host`` are refused); the fragment
   is dropped, it is never sent.
2. Scheme in ``allowed_schemes`` (compared lower-cased) and one the client
   speaks (http, https).
3. No userinfo: any ``@`` in the authority is refused, even an empty one.
4. Host normalised: IPv6 literals in brackets (no zone id, no IPvFuture);
   otherwise UTS #46 mapping (full-width letters and digits, ideographic
   dots, upper case, ignorable characters), a trailing dot removed, then
   IDNA to ASCII. ``%`` in a host is refused rather than decoded. A host whose
   last label is a number is an IPv4 address in the WHATWG/inet_aton sense:
   ``2130706433``, ``0x7f.1``, ``0177.0.0.1`` and ``127.1`` all mean
   127.0.0.1 and are judged as that address; a malformed one is refused.
5. Allow-list: ``allowed_hosts`` are exact names or IP literals,
   ``allowed_host_suffixes`` match on a label boundary (``.example.com``
   matches sub-domains only; ``example.com`` matches itself and its
   sub-domains); both are normalised like hosts. **When both lists are
   empty every host passes this step**; the address deny-list still applies
   to every host. Names that always mean this machine or a cloud metadata
   service (:data:`DENIED_NAMES`, ``*.localhost``) are refused here unless
   listed exactly in ``allowed_hosts``.
6. Port (explicit, or the scheme's default) in ``allowed_ports``.
7. Addresses: an IP-literal host is its own address; a name is resolved by
   the injectable resolver. The URL is refused if *any* address is denied by
   :func:`address_deny_reason` (loopback, private, link-local, CGNAT,
   multicast, reserved, unspecified, documentation, IPv4-mapped /
   -compatible / NAT64 / 6to4 / Teredo forms, cloud metadata) and not inside
   an ``allow_cidrs`` network. Cloud metadata addresses are refused even
   inside ``allow_cidrs``.

Every refusal raises :class:`~kafkapipe.errors.ValidationError` with a short
reason that never contains the path or query string.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

import attrs

from kafkapipe.errors import TransientError, ValidationError
from kafkapipe.hostnames import (  # the host grammar config shares; the last two re-exported
    IPAddress,
    _parse_ipv6_literal,
    _short,
    normalize_host,
    parse_ipv4_host,  # noqa: F401 - re-exported
)
from kafkapipe.memo import remember

if TYPE_CHECKING:
    from kafkapipe.config import DownloadConfig

Resolver = Callable[[str, int], Iterable[str]]

MAX_URL_LENGTH = 16 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}

# Names that always mean "this machine" or a cloud metadata service.
DENIED_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "ip6-localhost",
        "ip6-loopback",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)
DENIED_NAME_SUFFIXES = (".localhost",)

_NET = ipaddress.ip_network

# Never allowed, not even inside allow_cidrs.
METADATA_NETWORKS = tuple(
    _NET(n)
    for n in (
        "169.254.169.254/32",  # AWS, Azure, GCP, OpenStack, DigitalOcean ... instance metadata
        "169.254.170.2/32",  # AWS ECS task metadata
        "169.254.170.23/32",  # AWS EKS pod identity
        "169.254.0.23/32",  # Tencent Cloud
        "100.100.100.200/32",  # Alibaba Cloud
        "168.63.129.16/32",  # Azure WireServer (a public address)
        "192.0.0.192/32",  # Oracle Cloud
        "fd00:ec2::/32",  # AWS Nitro IPv6 endpoints (IMDS fd00:ec2::254)
        "fd20:ce::254/128",  # GCP metadata over IPv6
    )
)

DENIED_V4 = tuple(
    (_NET(n), reason)
    for n, reason in (
        ("0.0.0.0/8", "unspecified address"),
        ("10.0.0.0/8", "private address"),
        ("100.64.0.0/10", "carrier-grade NAT address"),
        ("127.0.0.0/8", "loopback address"),
        ("169.254.0.0/16", "link-local address"),
        ("172.16.0.0/12", "private address"),
        ("192.0.0.0/24", "IETF protocol address"),
        ("192.0.2.0/24", "documentation address"),
        ("192.88.99.0/24", "6to4 relay address"),
        ("192.168.0.0/16", "private address"),
        ("198.18.0.0/15", "benchmarking address"),
        ("198.51.100.0/24", "documentation address"),
        ("203.0.113.0/24", "documentation address"),
        ("224.0.0.0/4", "multicast address"),
        ("240.0.0.0/4", "reserved address"),
    )
)

DENIED_V6 = tuple(
    (_NET(n), reason)
    for n, reason in (
        ("::/128", "unspecified address"),
        ("::1/128", "loopback address"),
        ("::/96", "IPv4-compatible address"),
        ("::ffff:0:0/96", "IPv4-mapped address"),
        ("::ffff:0:0:0/96", "IPv4-translated address"),
        ("64:ff9b:1::/48", "local-use NAT64 address"),
        ("100::/64", "discard-only address"),
        ("2001::/32", "Teredo address"),
        ("2001::/23", "IETF protocol address"),
        ("2001:db8::/32", "documentation address"),
        ("3fff::/20", "documentation address"),
        ("5f00::/16", "SRv6 address"),
        ("fc00::/7", "unique-local (private) address"),
        ("fe80::/10", "link-local address"),
        ("fec0::/10", "site-local address"),
        ("ff00::/8", "multicast address"),
    )
)
GLOBAL_UNICAST_V6 = _NET("2000::/3")
NAT64_WKP = _NET("64:ff9b::/96")
SIXTOFOUR = _NET("2002::/16")


@attrs.frozen
class ParsedUrl:
    """A URL after the static checks: everything the HTTP client needs, normalised."""

    scheme: str
    host: str  # ASCII (IDNA) lower-case name without trailing dot, or a canonical IP string
    port: int
    path: str  # starts with "/", percent-encoding kept as sent
    query: str | None
    ip: IPAddress | None = None  # set when the host is an IP literal (in any accepted spelling)

    @property
    def host_for_url(self) -> str:
        return f"[{self.host}]" if isinstance(self.ip, ipaddress.IPv6Address) else self.host

    @property
    def host_header(self) -> str:
        if self.port == DEFAULT_PORTS.get(self.scheme):
            return self.host_for_url
        return f"{self.host_for_url}:{self.port}"

    @property
    def request_target(self) -> str:
        return self.path if self.query is None else f"{self.path}?{self.query}"

    @property
    def url(self) -> str:
        """The normalised URL (no fragment). Contains the query: never log it."""
        return f"{self.scheme}://{self.host_header}{self.request_target}"

    @property
    def redacted(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.path}"


@attrs.frozen
class ValidatedUrl:
    """A URL whose every resolved address passed; connect only to ``addresses``."""

    parsed: ParsedUrl
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.addresses[0]


def system_resolver(host: str, port: int) -> list[str]:
    """``socket.getaddrinfo``: every address of ``host``, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_deny_reason(address: str | IPAddress, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Why connecting to ``address`` is refused, or None when it is allowed.

    IPv6 forms that carry an IPv4 address are judged by the address they
    carry first (so the reason says "loopback address (NAT64 form)"); the
    mapped, compatible and translated forms are then refused whatever they
    carry (a resolver has no business returning them), while NAT64 and 6to4
    forms of a public address pass. Teredo is refused outright. ``allow``
    networks (``allow_cidrs``) lift the deny-list for an address or for the
    IPv4 address it carries, but never for cloud metadata.
    """
    try:
        ip = _as_ip(address)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return "scoped (link-local) address"
    embedded = _embedded_v4(ip)
    candidates = [ip] if embedded is None else [ip, embedded]
    form = "" if embedded is None else f" ({_embedding_name(ip)} form)"
    for candidate in candidates:
        if any(candidate in net for net in METADATA_NETWORKS if net.version == candidate.version):
            return f"cloud metadata address{form}"
    allow = list(allow)
    if any(candidate in net for candidate in candidates for net in allow if net.version == candidate.version):
        return None
    if embedded is not None:
        reason = _v4_reason(embedded)
        if reason:
            return f"{reason}{form}"
    if isinstance(ip, ipaddress.IPv4Address):
        return _v4_reason(ip)
    return _v6_reason(ip)


def _as_ip(address: str | IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return address
    return ipaddress.ip_address(address)


def _v4_reason(ip: ipaddress.IPv4Address) -> str | None:
    for net, reason in DENIED_V4:
        if ip in net:
            return reason
    return None


def _v6_reason(ip: ipaddress.IPv6Address) -> str | None:
    if ip in NAT64_WKP or ip in SIXTOFOUR:
        return None  # the embedded IPv4 address was judged already
    for net, reason in DENIED_V6:
        if ip in net:
            return reason
    if ip not in GLOBAL_UNICAST_V6:
        return "reserved address"
    return None


def _embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    value = int(ip)
    if ip in NAT64_WKP or ip in _NET("::ffff:0:0:0/96") or (value >> 32 == 0 and value > 1):
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def _embedding_name(ip: IPAddress) -> str:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "IPv4-mapped"
        if ip.sixtofour is not None:
            return "6to4"
        if ip in NAT64_WKP:
            return "NAT64"
        if ip in _NET("::ffff:0:0:0/96"):
            return "IPv4-translated"
    return "IPv4-compatible"


# --- the parser ---


# Whitespace, controls (C0, DEL, C1), the Unicode line/paragraph separators, BOM, backslash:
# one regex scan instead of a Python loop per character; the first one found decides the reason.
_BAD = "\x00-\x20\x7f-\x9f\u2028\u2029\ufeff\\\\"
_BAD_CHAR = re.compile(f"[{_BAD}]")


_SCHEME = re.compile(r"[A-Za-z0-9+.-]+")
_AUTHORITY_END = re.compile(r"[/?#]")
# A URL the rules below split without complaint, in one match: scheme://authority, path, an
# optional ?query and #fragment, no refused character anywhere. Groups: scheme, authority,
# path (None when empty), query (None without "?"). The path starts at its "/", so no text can
# be read as either authority or path: a URL that fails to match fails in linear time.
_PLAIN_URL = re.compile(
    f"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#{_BAD}]*)(/[^?#{_BAD}]*)?(?:\\?([^#{_BAD}]*))?(?:#[^{_BAD}]*)?"
)


def _split(url: str, schemes: frozenset[str]) -> tuple[str, str, str, str | None]:
    """``scheme://authority/path?query#fragment`` → (scheme, authority, path, query)."""
    if type(url) is str and len(url) <= MAX_URL_LENGTH:
        plain = _PLAIN_URL.fullmatch(url)
        if plain is not None and (scheme := plain.group(1).lower()) in schemes:
            authority, path, query = plain.group(2, 3, 4)
            return scheme, authority, path or "/", query
    return _split_checked(url, schemes)


def _split_checked(url: str, schemes: frozenset[str]) -> tuple[str, str, str, str | None]:
    """:func:`_split` rule by rule, each refusal with its own reason."""
    if not isinstance(url, str):
        raise ValidationError("URL is not a string")
    if not url:
        raise ValidationError("empty URL")
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"URL longer than {MAX_URL_LENGTH} characters")
    bad = _BAD_CHAR.search(url)
    if bad:
        if bad.group() == "\\":
            raise ValidationError("URL contains a backslash")
        raise ValidationError("URL contains whitespace or a control character")
    scheme, sep, rest = url.partition(":")
    if not sep or not scheme or not scheme[0].isascii() or not scheme[0].isalpha():
        raise ValidationError("URL has no scheme")
    if not _SCHEME.fullmatch(scheme):
        raise ValidationError("URL has an invalid scheme")
    if scheme.lower() not in schemes:
        raise ValidationError(f"scheme {scheme.lower()!r} not allowed")
    if not rest.startswith("//"):
        raise ValidationError("URL has no authority (expected scheme://host)")
    rest = rest[2:]
    end = _AUTHORITY_END.search(rest)
    authority, rest = (rest[:end.start()], rest[end.start():]) if end else (rest, "")
    rest = rest.partition("#")[0]
    path, qsep, query = rest.partition("?")
    return scheme.lower(), authority, path or "/", query if qsep else None


def _encode_non_ascii(text: str) -> str:
    if text.isascii():
        return text
    return "".join(ch if ch.isascii() else quote(ch, safe="") for ch in text)


def _split_authority(authority: str) -> tuple[str, str | None, bool]:
    """→ (host text, port text or None, bracketed)."""
    if "@" in authority:
        raise ValidationError("URL contains userinfo (user@host)")
    if not authority:
        raise ValidationError("URL has an empty host")
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise ValidationError("unterminated IPv6 literal")
        host, after = authority[1:close], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise ValidationError("invalid characters after IPv6 literal")
        return host, (after[1:] if after else None), True
    host, sep, port = authority.rpartition(":")
    if not sep:
        return authority, None, False
    if ":" in host:
        raise ValidationError("IPv6 literal without brackets or several ports")
    return host, port, False


def _parse_port(text: str | None, scheme: str) -> int:
    if text is None:
        default = DEFAULT_PORTS.get(scheme)
        if default is None:
            raise ValidationError(f"scheme {scheme!r} has no default port")
        return default
    if not text:
        raise ValidationError("empty port")
    if not (text.isascii() and text.isdigit()) or len(text) > 5:
        raise ValidationError(f"invalid port {_short(text, 12)}")
    port = int(text)
    if not 0 < port < 65536:
        raise ValidationError(f"port {port} out of range")
    return port


class _Unjudged(enum.Enum):
    """A host with no verdict cached yet (None is a verdict: not refused)."""

    UNJUDGED = enum.auto()


_UNJUDGED: Final = _Unjudged.UNJUDGED
_HOST_VERDICTS = 4096
_MAX_REMEMBERED_AUTHORITY = 300  # a 253-character name, a port, brackets: longer ones are not kept


class UrlValidator:
    """Static and resolved checks over one :class:`DownloadConfig`; thread-safe (immutable).

    ``resolver(host, port) -> iterable of IP strings`` defaults to
    :func:`system_resolver`; tests inject a stub.
    """

    def __init__(self, config: DownloadConfig, resolver: Resolver | None = None) -> None:
        self._config = config
        self._resolver = resolver or system_resolver
        # Only what the download client speaks, whatever the configuration lists.
        self._schemes = frozenset(s.lower() for s in config.allowed_schemes) & frozenset(DEFAULT_PORTS)
        self._ports = frozenset(config.allowed_ports)
        self._allow_nets = tuple(ipaddress.ip_network(c, strict=False) for c in config.allow_cidrs)
        self._hosts = frozenset(_config_host(h) for h in config.allowed_hosts)
        self._suffixes = tuple(_config_suffix(s) for s in config.allowed_host_suffixes)
        # Host → refusal (None: allowed). The key is the normalised host, whose spelling also
        # tells an IP literal (canonical form) from a name; dict reads and writes are atomic.
        self._host_refusals: dict[str, str | None] = {}
        # (scheme, authority) → (host, port, ip) of those that passed; see _authority.
        self._passed_authorities: dict[tuple[str, str], tuple[str, int, IPAddress | None]] = {}

    @property
    def open_host_list(self) -> bool:
        return not self._hosts and not self._suffixes

    def check_static(self, url: str) -> ParsedUrl:
        """Everything that needs no DNS; an IP-literal host is judged as an address here."""
        scheme, authority, path, query = _split(url, self._schemes)
        host, port, ip = self._authority(scheme, authority)
        return ParsedUrl(
            scheme=scheme,
            host=host,
            port=port,
            path=_encode_non_ascii(path),
            query=None if query is None else _encode_non_ascii(query),
            ip=ip,
        )

    def validate_static(self, url: str) -> None:
        """:meth:`check_static`'s verdict alone: its ValidationError, or None when it would pass.

        For a caller that only rejects early (ingest) and has no use for the parsed URL.
        """
        scheme, authority, _, _ = _split(url, self._schemes)
        self._authority(scheme, authority)

    def _authority(self, scheme: str, authority: str) -> tuple[str, int, IPAddress | None]:
        """(host, port, ip) of an authority that passes steps 3-6 and, for an IP literal, 7.

        A function of the two strings and the configuration only (no DNS), and events name the
        same few hosts over and over: a passed authority is remembered, a refused one is judged
        again every time. Bounded in entries and in the length of what is kept.
        """
        key = (scheme, authority)
        passed = self._passed_authorities.get(key)
        if passed is None:
            passed = self._judge_authority(scheme, authority)
            if len(authority) <= _MAX_REMEMBERED_AUTHORITY:
                remember(self._passed_authorities, key, passed, _HOST_VERDICTS)
        return passed

    def _judge_authority(self, scheme: str, authority: str) -> tuple[str, int, IPAddress | None]:
        host_text, port_text, bracketed = _split_authority(authority)
        if bracketed:
            ip: IPAddress | None = _parse_ipv6_literal(host_text)
            host = str(ip)
        else:
            host, ip = normalize_host(host_text)
        self._check_host_allowed(host, ip)
        port = _parse_port(port_text, scheme)
        if port not in self._ports:
            raise ValidationError(f"port {port} not allowed")
        if ip is not None:
            self._check_address(ip)
        return host, port, ip

    def check(self, url: str) -> ValidatedUrl:
        """Static checks, then resolve and judge every address."""
        return self.resolve(self.check_static(url))

    def resolve(self, parsed: ParsedUrl) -> ValidatedUrl:
        """Resolve a statically checked URL; refuse if any address is denied."""
        if parsed.ip is not None:
            return ValidatedUrl(parsed, (str(parsed.ip),))
        try:
            raw = list(self._resolver(parsed.host, parsed.port))
        except (OSError, UnicodeError) as exc:
            raise TransientError(f"DNS resolution of {parsed.host} failed: {_dns_reason(exc)}") from None
        if not raw:
            raise TransientError(f"DNS resolution of {parsed.host} returned no address")
        addresses: list[str] = []
        for item in raw:
            text = str(item)
            if "%" in text:
                raise ValidationError(f"{parsed.host} resolves to a scoped (link-local) address")
            try:
                ip = _as_ip(text)
            except ValueError:
                raise ValidationError(f"{parsed.host} resolved to an invalid address") from None
            self._check_address(ip, name=parsed.host)
            if str(ip) not in addresses:
                addresses.append(str(ip))
        return ValidatedUrl(parsed, tuple(addresses))

    def _check_address(self, ip: IPAddress, name: str | None = None) -> None:
        reason = address_deny_reason(ip, self._allow_nets)
        if reason:
            where = f"{name} resolves to" if name else "host is"
            raise ValidationError(f"{where} a denied {reason} {ip}")

    def _check_host_allowed(self, host: str, ip: IPAddress | None) -> None:
        refusal = self._host_refusals.get(host, _UNJUDGED)
        if refusal is _UNJUDGED:
            refusal = remember(self._host_refusals, host, self._judge_host(host, ip), _HOST_VERDICTS)
        if refusal is not None:
            raise ValidationError(refusal)

    def _judge_host(self, host: str, ip: IPAddress | None) -> str | None:
        """Why ``host`` is refused by the name lists, or None; a function of the host and the config only."""
        try:
            self._host_allowed(host, ip)
        except ValidationError as exc:
            return exc.message
        return None

    def _host_allowed(self, host: str, ip: IPAddress | None) -> None:
        if host in self._hosts:
            return
        if ip is None and (host in DENIED_NAMES or host.endswith(DENIED_NAME_SUFFIXES)):
            raise ValidationError(f"host {host!r} is a local or metadata name")
        if self.open_host_list:
            return
        if ip is None and any(_suffix_match(host, s) for s in self._suffixes):
            return
        raise ValidationError(f"host {host!r} not in the allow-list")


def _dns_reason(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return exc.strerror or "resolver error"
    return type(exc).__name__


def _config_host(entry: str) -> str:
    try:
        return normalize_host(entry.strip())[0]
    except ValidationError as exc:
        raise ValueError(f"allowed_hosts entry {entry!r}: {exc.message}") from None


def _config_suffix(entry: str) -> tuple[str, bool]:
    text = entry.strip()
    subdomains_only = text.startswith(".")
    host, ip = normalize_host(text.lstrip("."))
    if ip is not None:
        raise ValueError(f"allowed_host_suffixes entry {entry!r} is an IP address")
    return host, subdomains_only


def _suffix_match(host: str, suffix: tuple[str, bool]) -> bool:
    domain, subdomains_only = suffix
    if host.endswith("." + domain):
        return True
    return not subdomains_only and host == domain
