"""The HTTP sessions msal is given: always a timeout, and for managed identity, retries.

msal passes no timeout of its own and leaves retrying the managed identity endpoint to the
caller. Microsoft's guidance for that endpoint is exponential backoff on 404 and 410 (the
endpoint is being updated; 410 for up to 70 s), 429 and 5xx. The retries happen here, below
msal, because msal remembers a 429 or 5xx reply for a few seconds and would hand the same
failure back to a retry made above it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
import requests

from kafkapipe.backoff import exponential
from kafkapipe.retry_after import parse_retry_after

logger = logging.getLogger(__name__)


class TimeoutSession(requests.Session):
    """A Session that never waits forever."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self._timeout = timeout

    def request(  # type: ignore[override]  # same call, fewer declared parameters
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


def default_http_client(timeout: tuple[float, float] = (5.0, 30.0)) -> requests.Session:
    return TimeoutSession(timeout)


@attrs.frozen
class IdentityRetry:
    """Exponential backoff for the managed identity endpoint, within a total budget."""

    statuses: frozenset[int] = frozenset({404, 410, 429, *range(500, 600)})
    budget: float = 70.0
    first_delay: float = 1.0
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry ``attempt`` (1 = the first retry); Retry-After when longer."""
        backoff = exponential(attempt - 1, self.first_delay, self.max_delay)
        return max(backoff, min(retry_after, self.max_delay)) if retry_after is not None else backoff


class RetryingSession(TimeoutSession):
    """Retries replies the policy names until its budget would be exceeded; returns the last reply.

    Connection errors are not retried: off Azure the endpoint does not exist, and waiting 70 s
    to say so would only hide that.
    """

    def __init__(
        self,
        timeout: tuple[float, float],
        policy: IdentityRetry = IdentityRetry(),
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(timeout)
        self.policy = policy
        self._sleep = sleep
        self._clock = clock

    def request(  # type: ignore[override]  # same call, fewer declared parameters
        self, method: str, url: str, *args: Any, **kwargs: Any
    ) -> requests.Response:
        deadline = self._clock() + self.policy.budget
        attempt = 0
        while True:
            response = super().request(method, url, *args, **kwargs)
            if response.status_code not in self.policy.statuses:
                return response
            attempt += 1
            delay = self.policy.delay(attempt, parse_retry_after(response.headers.get("Retry-After")))
            if self._clock() + delay > deadline:
                return response
            logger.info(
                "managed identity endpoint answered %s; retrying",
                response.status_code,
                extra={"status": response.status_code, "attempt": attempt, "delay": round(delay, 2)},
            )
            response.close()
            self._sleep(delay)
