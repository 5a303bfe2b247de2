"""HTTP's Retry-After header, read the same way for downloads, storage and token endpoints."""

from __future__ import annotations

import datetime
import email.utils
import math
import re
import time

_DELTA_SECONDS = re.compile(r"[+-]?[0-9]+")  # a negative delay means "now"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds from ``now``: delta-seconds or an HTTP-date; None if absent or invalid."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)  # 400 digits give inf here rather than int→float's OverflowError
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:  # asctime form and "-0000": HTTP-dates are always UTC
        moment = moment.replace(tzinfo=datetime.UTC)
    delay = moment.timestamp() - (time.time() if now is None else now)
    return max(0.0, delay) if math.isfinite(delay) else None
