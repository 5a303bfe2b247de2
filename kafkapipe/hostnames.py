"""Host names and IP literals as URLs write them, normalised: the grammar config and URL checks share.

Below both :mod:`kafkapipe.config` (which checks ``download.allowed_hosts``) and
:mod:`kafkapipe.security.urls` (which checks every URL), so neither imports the other.
"""

from __future__ import annotations

import functools
import ipaddress

import idna

from kafkapipe.errors import ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# --- numeric hosts (WHATWG URL "IPv4 parser", the same forms inet_aton accepts) ---

_HEX = set("0123456789abcdefABCDEF")
_OCT = set("01234567")
_DEC = set("0123456789")


def _ipv4_number(part: str) -> int | None:
    if part == "":
        return None
    digits, radix, allowed = part, 10, _DEC
    if len(part) >= 2 and part[:2] in ("0x", "0X"):
        digits, radix, allowed = part[2:], 16, _HEX
    elif len(part) >= 2 and part[0] == "0":
        digits, radix, allowed = part[1:], 8, _OCT
    if digits == "":
        return 0
    if not set(digits) <= allowed:
        return None
    return int(digits, radix)


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    if last and set(last) <= _DEC:
        return True
    return _ipv4_number(last) is not None and last[:2] in ("0x", "0X")


def parse_ipv4_host(host: str) -> ipaddress.IPv4Address | None:
    """``127.1``, ``0x7f000001``, ``017700000001`` … → the IPv4 address they mean, else None."""
    parts = host.split(".")
    if len(parts) > 4:
        return None
    numbers = [_ipv4_number(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return None
    address = values[-1]
    for index, n in enumerate(values[:-1]):
        address += n * 256 ** (3 - index)
    return ipaddress.IPv4Address(address)


def _short(text: str, limit: int = 80) -> str:
    text = text if len(text) <= limit else text[:limit] + "…"
    return repr(text)


def _parse_ipv6_literal(text: str) -> ipaddress.IPv6Address:
    if text[:1] in ("v", "V"):
        raise ValidationError("IPvFuture literals are not supported")
    if "%" in text:
        raise ValidationError("IPv6 zone identifiers are not allowed")
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        raise ValidationError(f"invalid IPv6 literal {_short(text, 60)}") from None


def normalize_host(text: str) -> tuple[str, IPAddress | None]:
    """A host as written → (normalised ASCII name or canonical IP, IP or None)."""
    return _normalize_host_cached(text)


# A pure function of the text (no configuration, no DNS), and events name the same few hosts
# over and over: UTS #46 and IDNA cost more than the rest of ingest. Refusals are not cached
# (lru_cache keeps only returns); the size bounds the memory a flood of distinct hosts can take.
@functools.lru_cache(maxsize=4096)
def _normalize_host_cached(text: str) -> tuple[str, IPAddress | None]:
    if text.startswith("[") and text.endswith("]"):
        ip6 = _parse_ipv6_literal(text[1:-1])
        return str(ip6), ip6
    if "%" in text:
        raise ValidationError("percent-encoded host")
    if ":" in text:
        try:
            ip6 = ipaddress.IPv6Address(text)
        except ValueError:
            raise ValidationError(f"invalid host {_short(text)}") from None
        return str(ip6), ip6
    try:
        mapped = idna.uts46_remap(text, std3_rules=True, transitional=False)
    except (idna.IDNAError, UnicodeError, ValueError):
        raise ValidationError(f"invalid host name {_short(text)}") from None
    if mapped.endswith("."):
        mapped = mapped[:-1]
    labels = mapped.split(".")
    if not mapped or any(label == "" for label in labels):
        raise ValidationError(f"invalid host name {_short(text)} (empty label)")
    if _ends_in_number(labels):
        ip4 = parse_ipv4_host(mapped)
        if ip4 is None:
            raise ValidationError(f"invalid numeric host {_short(text)}")
        return str(ip4), ip4
    try:
        ascii_host = idna.encode(mapped, uts46=False).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError, ValueError):
        raise ValidationError(f"invalid host name {_short(text)}") from None
    return ascii_host, None
