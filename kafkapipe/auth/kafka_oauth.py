"""SASL/OAUTHBEARER for confluent-kafka: an ``oauth_cb`` fed by the credential layer.

librdkafka calls ``oauth_cb(sasl.oauthbearer.config)`` when it needs a token and again at
about 80 % of the token's lifetime. Since confluent-kafka 2.13 that happens on a librdkafka
background thread, before only inside ``poll()``/``flush()`` (call ``poll(0)`` once after
creating a client to cover both). Either way the callback only reads a
:class:`~kafkapipe.auth.cache.TokenCache`, which is thread-safe. It returns the token with
its *absolute* expiry in epoch seconds, and the principal name librdkafka uses in its logs.

When no token can be had the callback logs why (secret-free) and raises; confluent-kafka
then reports the failure to librdkafka, which retries about ten seconds later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import cast

from kafkapipe.auth.cache import TokenCache
from kafkapipe.auth.credentials import Credential, credential_from_config, is_token_credential
from kafkapipe.config import OAuthConfig
from kafkapipe.errors import AuthError, refuse

logger = logging.getLogger(__name__)
WHERE = "kafka.oauth"

OAuthCallback = Callable[[str], tuple[str, float, str]]


def make_oauth_cb(oauth: OAuthConfig, *, credential: Credential | None = None) -> OAuthCallback:
    """The ``oauth_cb`` for one Kafka client; ConfigError when the configuration cannot work."""
    settings = oauth.credential
    if credential is None:
        refuse(oauth.problems(WHERE))
        built = credential_from_config(settings, f"{WHERE}.credential")
        assert is_token_credential(built)
        credential = cast(Credential, built)
    refuse(oauth.scope_problems(WHERE, credential.kind))
    cache = TokenCache(credential, oauth.scope, refresh_margin=settings.refresh_margin)
    principal = (
        settings.principal
        if credential.kind == "unsecured_jwt"
        else (settings.client_id or settings.principal)
    )
    principal = principal or "kafkapipe"

    def oauth_cb(oauthbearer_config: str) -> tuple[str, float, str]:
        try:
            token = cache.get()
        except AuthError as exc:
            logger.warning(
                "kafka OAUTHBEARER token unavailable",
                extra={"credential": credential.kind, "error": exc.message},
            )
            raise
        return token.token, token.expires_on, principal

    oauth_cb.token_cache = cache  # type: ignore[attr-defined]  # for tests and diagnostics
    return oauth_cb
