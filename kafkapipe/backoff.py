"""The one exponential backoff: ``base · 2^attempt`` capped, bare or with full jitter.

Used by the supervisor's restarts, Azure storage retries, the managed identity endpoint and
the DLQ reader. Each caller says which attempt is the first to wait (docs/architecture.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable

_MAX_EXPONENT = 64  # past this base · 2^n is past any cap; keeps the float finite


def exponential(attempt: int, base: float, cap: float) -> float:
    """``min(cap, base · 2^attempt)`` for ``attempt`` ≥ 0."""
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    return min(cap, base * 2.0 ** min(attempt, _MAX_EXPONENT))


def backoff(attempt: int, base: float, cap: float, jitter: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): "full jitter".

    A uniform draw from ``[0, min(cap, base * 2**attempt))``, which spreads
    retries of many clients that failed together instead of bunching them.
    """
    return max(0.0, exponential(attempt, base, cap) * jitter())
