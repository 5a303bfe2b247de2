"""A thread-safe token cache: refresh ahead of expiry, one refresh in flight at a time.

Sixteen download threads (or librdkafka's background thread and the poll loop) may all ask
for a token at once. Exactly one of them calls the credential; the others keep using the
current token while it is still valid, or wait for that one refresh and share its outcome.
A failed refresh is not retried by every caller: until ``retry_backoff`` has passed, callers
get the still-valid token, or the same :class:`~kafkapipe.errors.AuthError` again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafkapipe.auth.credentials import AccessToken, Credential, CredentialError, redact
from kafkapipe.errors import AuthError

logger = logging.getLogger(__name__)


class TokenCache:
    def __init__(
        self,
        credential: Credential,
        scope: str,
        *,
        refresh_margin: float = 300.0,
        retry_backoff: float = 5.0,
        wait_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credential = credential
        self.scope = scope
        self.refresh_margin = refresh_margin
        self.retry_backoff = retry_backoff
        self.wait_timeout = wait_timeout
        self._clock = clock
        self._cond = threading.Condition()
        self._token: AccessToken | None = None
        self._refresh_at = 0.0
        self._refreshing = False
        self._failure: str | None = None
        self._retry_at = 0.0
        self.refreshes = 0  # credential calls made, for tests and metrics

    @property
    def kind(self) -> str:
        return self.credential.kind

    def get(self) -> AccessToken:
        """A token valid now; refreshes it first when it is within the margin of expiry."""
        deadline = time.monotonic() + self.wait_timeout
        with self._cond:
            while True:
                now = self._clock()
                token = self._token
                if token is not None and now < self._refresh_at:
                    return token
                if self._refreshing:
                    if token is not None and now < token.expires_on:
                        return token  # still valid: no need to queue behind the refresh
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise AuthError(
                            f"{self.kind} credential: no token within {self.wait_timeout:g}s "
                            f"(a refresh for {self.scope} is still running)"
                        )
                    self._cond.wait(remaining)
                    continue
                if self._failure is not None and now < self._retry_at:
                    if token is not None and now < token.expires_on:
                        return token
                    raise AuthError(self._failure)
                self._refreshing = True
                break
        return self._refresh()

    def _refresh(self) -> AccessToken:
        token: AccessToken | None = None
        failure: str | None = None
        try:
            token = self.credential.get_token(self.scope)
        except AuthError as exc:  # already secret-free and naming the credential
            failure = exc.message
        except Exception as exc:
            secrets = getattr(self.credential, "known_secrets", lambda: ())()
            failure = CredentialError(self.kind, f"{type(exc).__name__}: {redact(str(exc), secrets)}").message
        with self._cond:
            self._refreshing = False
            self.refreshes += 1
            now = self._clock()
            if token is not None:
                self._store(token, now)
            else:
                self._failure = failure
                self._retry_at = now + self.retry_backoff
            self._cond.notify_all()
            if token is not None:
                return token
            current = self._token
            if current is not None and now < current.expires_on:
                logger.warning(
                    "token refresh failed; using the current token until it expires",
                    extra={
                        "credential": self.kind,
                        "scope": self.scope,
                        "error": failure,
                        "expires_in": round(current.expires_on - now, 1),
                    },
                )
                return current
        raise AuthError(failure or f"{self.kind} credential: no token")

    def _store(self, token: AccessToken, now: float) -> None:
        # Refresh `refresh_margin` before expiry or at 75 % of the token's life, whichever comes
        # first, but never before half of it: librdkafka asks for a new token at 80 % of the
        # lifetime and must then get a fresh one, not the same token again.
        lifetime = max(0.0, token.expires_on - now)
        self._token = token
        self._refresh_at = token.expires_on - min(max(self.refresh_margin, lifetime / 4), lifetime / 2)
        self._failure = None
        self._retry_at = 0.0
        logger.debug(
            "token refreshed",
            extra={"credential": self.kind, "scope": self.scope, "expires_in": round(lifetime, 1)},
        )

    def invalidate(self) -> None:
        """Drop the current token (the service refused it); the next :meth:`get` refreshes."""
        with self._cond:
            self._token = None
            self._refresh_at = 0.0
            self._failure = None
            self._retry_at = 0.0
