"""Presigned-URL expiry, decided from the query string before any request.

A presigned URL that has already expired can only earn a 403; asking costs a
connection and hides the real cause. Recognised forms (parameter names are
matched case-insensitively; the first occurrence of a parameter counts):

- S3 SigV4: ``X-Amz-Date`` (``YYYYMMDDTHHMMSSZ``) + ``X-Amz-Expires`` (seconds).
- S3 SigV2 and GCS V2: ``Expires`` (epoch seconds) with ``Signature``,
  ``AWSAccessKeyId`` or ``GoogleAccessId`` beside it.
- Azure SAS: ``se`` with ``sig`` beside it; ISO 8601 in UTC as Azure accepts
  it (``2026-11-25``, ``2026-11-25T19:09Z``, ``2026-11-25T19:09:22.1234567Z``);
  a date alone means midnight UTC.
- GCS V4: ``X-Goog-Date`` + ``X-Goog-Expires``.

A URL is expired when ``now > expiry + skew``: ``skew`` (``download.clock_skew``)
forgives a local clock running ahead of the signer's. A recognised form with a
value that does not parse is left to the server to judge (no verdict): a
parser disagreement must not turn a valid URL into a dead letter.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlsplit

from kafkapipe.errors import ExpiredError

_AMZ_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$")
_AZURE_DATE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?(Z|[+-]\d{2}:\d{2})?)?$"
)
_INT = re.compile(r"^\d{1,12}$")


def _params(url: str) -> dict[str, str]:
    try:
        query = urlsplit(url).query
    except ValueError:
        return {}
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key.lower(), value)
    return params


def _compact_date(text: str) -> float | None:
    match = _AMZ_DATE.match(text)
    if not match:
        return None
    try:
        year, month, day, hour, minute, second = (int(g) for g in match.groups())
        datetime(year, month, day, hour, minute, second)  # validates ranges
    except ValueError:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def _date_plus_seconds(date: str, seconds: str) -> float | None:
    start = _compact_date(date)
    if start is None or not _INT.match(seconds):
        return None
    return start + int(seconds)


def _azure_time(text: str) -> float | None:
    match = _AZURE_DATE.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if hour is not None and zone is None:
        return None
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0), tzinfo=UTC
        )
    except ValueError:
        return None
    value = moment.timestamp() + (float("0." + fraction) if fraction else 0.0)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        value -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return value


def presigned_expiry(url: str) -> tuple[str, float] | None:
    """(form, expiry epoch seconds) for a recognised presigned URL, else None."""
    p = _params(url)
    if not p:
        return None
    if "x-amz-date" in p and "x-amz-expires" in p:
        value = _date_plus_seconds(p["x-amz-date"], p["x-amz-expires"])
        return None if value is None else ("S3 SigV4", value)
    if "x-goog-date" in p and "x-goog-expires" in p:
        value = _date_plus_seconds(p["x-goog-date"], p["x-goog-expires"])
        return None if value is None else ("GCS V4", value)
    if "se" in p and "sig" in p:
        value = _azure_time(p["se"])
        return None if value is None else ("Azure SAS", value)
    if "expires" in p and ({"signature", "awsaccesskeyid", "googleaccessid"} & p.keys()):
        if not _INT.match(p["expires"]):
            return None
        form = "GCS V2" if "googleaccessid" in p else "S3 SigV2"
        return (form, float(p["expires"]))
    return None


def check_expiry(url: str, now: float | None = None, skew: float = 60.0) -> float | None:
    """Raise :class:`ExpiredError` if ``url`` is a presigned URL past its expiry.

    Returns the expiry (epoch seconds) when one was recognised, else None.
    The message names the form and the time, never the query string.
    """
    found = presigned_expiry(url)
    if found is None:
        return None
    form, expiry = found
    current = time.time() if now is None else now
    if current > expiry + skew:
        stamp = datetime.fromtimestamp(expiry, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise ExpiredError(f"presigned URL expired at {stamp} ({form})")
    return expiry
