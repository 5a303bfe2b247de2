"""Credentials, the token cache, Shared Key signing, the Kafka oauth_cb, and secret hygiene.

No network beyond loopback: the identity provider is a requests adapter answering like Azure
AD, the managed-identity endpoint and the storage service are small HTTP servers on 127.0.0.1,
and ``az`` is a script on a temporary PATH.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import logging
import os
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter

from kafkapipe import log
from kafkapipe.auth.cache import TokenCache
from kafkapipe.auth.credentials import (
    AccessToken,
    AzureCliCredential,
    CredentialError,
    ManagedIdentityCredential,
    SecretSource,
    UnsecuredJwtCredential,
    credential_from_config,
    parse_cli_token,
    redact,
)
from kafkapipe.auth.http import RetryingSession
from kafkapipe.auth.kafka_oauth import make_oauth_cb
from kafkapipe.config import AzureBlobConfig, CredentialConfig, OAuthConfig
from kafkapipe.errors import (
    AuthError,
    ConfigError,
    ErrorCategory,
    PermanentError,
    StorageUnavailableError,
    TransientError,
    category_of,
)
from kafkapipe.storage.azure_blob import AzureBlobStorage, classify, shared_key_signature, string_to_sign

CANARY = "kpCanary7Q2xZ9mW4vN8rT1yU6sK3pL0"  # 32 characters: what a leak would look like
CANARY_KEY = base64.b64encode(CANARY.encode() * 2).decode()  # an account key must be base64
STORAGE = "https://storage.azure.com/.default"


# ------------------------------------------------------------------------------ helpers
class FakeCredential:
    """A credential whose tokens and failures the test scripts; counts calls."""

    kind = "fake"

    def __init__(self, lifetime: float = 100.0, clock: Callable[[], float] = time.time) -> None:
        self.lifetime = lifetime
        self.clock = clock
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail: BaseException | None = None
        self.lock = threading.Lock()

    def get_token(self, scope: str) -> AccessToken:
        with self.lock:
            self.calls += 1
            n = self.calls
        self.entered.set()
        assert self.release.wait(30), "test never released the credential"
        if self.fail is not None:
            raise self.fail
        return AccessToken(f"token-{n}", self.clock() + self.lifetime)

    def known_secrets(self) -> tuple[str, ...]:
        return (CANARY,)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def run_threads(n: int, target: Callable[[], object]) -> list[object]:
    results: list[object] = [None] * n
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        barrier.wait(10)
        try:
            results[i] = target()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def join_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a thread is stuck"


# ---------------------------------------------------------------------------- TokenCache
def test_cache_reuses_token_until_margin_then_refreshes():
    clock = Clock()
    cred = FakeCredential(lifetime=3600, clock=clock)
    cache = TokenCache(cred, STORAGE, refresh_margin=1200, clock=clock)
    first = cache.get()
    clock.now += 3600 - 1201
    assert cache.get() is first and cred.calls == 1
    clock.now += 2  # now inside the 1200 s margin
    second = cache.get()
    assert second.token == "token-2" and cred.calls == 2
    assert second.expires_on == pytest.approx(clock.now + 3600)


def test_cache_refreshes_at_three_quarters_of_life_at_the_latest():
    # librdkafka asks again at 80 % of a token's life; it must then get a new token.
    clock = Clock()
    cred = FakeCredential(lifetime=3600, clock=clock)
    cache = TokenCache(cred, STORAGE, refresh_margin=300, clock=clock)
    cache.get()
    clock.now += 2699
    assert cache.get().token == "token-1"
    clock.now += 2
    assert cache.get().token == "token-2"


def test_cache_refreshes_short_tokens_at_half_life():
    clock = Clock()
    cred = FakeCredential(lifetime=4, clock=clock)
    cache = TokenCache(cred, "kafka", refresh_margin=300, clock=clock)
    cache.get()
    clock.now += 1.9
    assert cache.get().token == "token-1"
    clock.now += 0.2
    assert cache.get().token == "token-2"


def test_single_refresh_in_flight_across_threads():
    cred = FakeCredential()
    cred.release.clear()
    cache = TokenCache(cred, STORAGE)
    threads, results = run_threads(12, cache.get)
    assert cred.entered.wait(10)
    cred.release.set()
    join_all(threads)
    assert cred.calls == 1
    assert {r.token for r in results} == {"token-1"}


def test_callers_keep_the_valid_token_while_a_refresh_runs():
    clock = Clock()
    cred = FakeCredential(lifetime=600, clock=clock)
    cache = TokenCache(cred, STORAGE, refresh_margin=300, clock=clock)
    old = cache.get()
    clock.now += 400  # inside the margin, still valid for 200 s
    cred.entered.clear()
    cred.release.clear()
    refresher = threading.Thread(target=cache.get)
    refresher.start()
    assert cred.entered.wait(10)
    assert cache.get() is old  # no waiting behind the refresh
    cred.release.set()
    refresher.join(10)
    assert cache.get().token == "token-2" and cred.calls == 2


def test_waiters_share_one_failed_refresh_and_backoff_applies():
    clock = Clock()
    cred = FakeCredential(clock=clock)
    cred.fail = RuntimeError(f"idp said no; secret={CANARY}")
    cred.release.clear()
    cache = TokenCache(cred, STORAGE, retry_backoff=30, clock=clock)
    threads, results = run_threads(6, cache.get)
    assert cred.entered.wait(10)
    cred.release.set()
    join_all(threads)
    assert cred.calls == 1
    for result in results:
        assert isinstance(result, AuthError) and category_of(result) is ErrorCategory.AUTH
        assert "fake credential" in str(result) and "RuntimeError" in str(result)
        assert CANARY not in str(result)
    with pytest.raises(AuthError):
        cache.get()  # still backing off: the credential is not called again
    assert cred.calls == 1
    clock.now += 31
    cred.fail = None
    assert cache.get().token == "token-2"


def test_failed_early_refresh_keeps_the_valid_token(caplog):
    clock = Clock()
    cred = FakeCredential(lifetime=600, clock=clock)
    cache = TokenCache(cred, STORAGE, refresh_margin=300, clock=clock)
    old = cache.get()
    clock.now += 400
    cred.fail = AuthError("fake credential: the identity provider is down")
    with caplog.at_level(logging.WARNING):
        assert cache.get() is old
    assert any("refresh failed" in r.getMessage() for r in caplog.records)
    clock.now += 211  # past expiry and past the retry backoff: one more attempt, failing too
    with pytest.raises(AuthError, match="identity provider is down"):
        cache.get()
    assert cred.calls == 3


def test_wrapped_errors_carry_no_cause():
    cred = FakeCredential()
    cred.fail = OSError(f"disk says {CANARY}")
    with pytest.raises(AuthError) as info:
        TokenCache(cred, STORAGE).get()
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert CANARY not in "".join(traceback.format_exception(info.value))


def test_invalidate_forces_a_new_token():
    cred = FakeCredential()
    cache = TokenCache(cred, STORAGE)
    assert cache.get().token == "token-1"
    cache.invalidate()
    assert cache.get().token == "token-2"


# ------------------------------------------------------------------------------- secrets
def test_secret_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KP_TEST_SECRET", "  from-env \n")
    assert SecretSource("storage.azure.credential", "sas_token", env="KP_TEST_SECRET").read() == "from-env"
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    assert SecretSource("x", "client_secret", path=str(path)).read() == "from-file"


def test_secret_errors_name_the_key_never_the_value(tmp_path, monkeypatch):
    monkeypatch.delenv("KP_TEST_MISSING", raising=False)
    with pytest.raises(AuthError) as info:
        SecretSource("storage.azure.credential", "account_key", env="KP_TEST_MISSING").read()
    assert str(info.value) == (
        "storage.azure.credential.account_key_env: environment variable KP_TEST_MISSING is not set or empty"
    )
    with pytest.raises(AuthError, match=r"client_secret_file: file .*nope does not exist"):
        SecretSource("kafka.oauth.credential", "client_secret", path=str(tmp_path / "nope")).read()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(AuthError, match="is empty"):
        SecretSource("x", "sas_token", path=str(empty)).read()
    with pytest.raises(ConfigError, match="only one of account_key_env and account_key_file"):
        SecretSource("x", "account_key", env="A", path="/b")
    with pytest.raises(ConfigError, match="x: account_key_env or account_key_file is required"):
        SecretSource("x", "account_key")


def test_missing_secret_fails_at_construction_as_config_error(monkeypatch):
    monkeypatch.delenv("KP_NO_SUCH_ENV", raising=False)
    config = CredentialConfig(
        kind="service_principal", tenant_id="t", client_id="c", client_secret_env="KP_NO_SUCH_ENV"
    )
    with pytest.raises(ConfigError, match=r"kafka\.oauth\.credential\.client_secret_env: environment variable"):
        credential_from_config(config, "kafka.oauth.credential")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (CredentialConfig(kind="service_principal", client_id="c", client_secret_env="E"), "needs tenant_id"),
        (CredentialConfig(kind="service_principal", tenant_id="t", client_id="c"), "needs client_secret_env"),
        (
            CredentialConfig(
                kind="service_principal",
                tenant_id="t",
                client_id="c",
                client_secret_env="E",
                certificate_file="/f",
            ),
            "not both",
        ),
        (CredentialConfig(kind="sas"), "sas_token_env or sas_token_file is required"),
    ],
)
def test_credential_config_errors(config, message):
    with pytest.raises(ConfigError, match=message):
        credential_from_config(config, "where")


def test_storage_and_kafka_refuse_kinds_they_cannot_use(monkeypatch):
    monkeypatch.delenv("KP_KEY", raising=False)  # refused before any secret is read
    with pytest.raises(ConfigError, match=r"storage\.azure\.credential\.kind: unsecured_jwt"):
        AzureBlobStorage.from_config(
            AzureBlobConfig(
                account_url="http://127.0.0.1:1/a",
                container="c",
                credential=CredentialConfig(kind="unsecured_jwt"),
            )
        )
    with pytest.raises(ConfigError, match=r"kafka\.oauth\.credential\.kind: shared_key cannot"):
        make_oauth_cb(OAuthConfig(scope="s", credential=CredentialConfig(kind="shared_key", account_key_env="KP_KEY")))
    with pytest.raises(ConfigError, match=r"kafka\.oauth\.scope: required"):
        make_oauth_cb(OAuthConfig(credential=CredentialConfig(kind="azure_cli")))
    with pytest.raises(ConfigError, match=r"storage\.azure\.container"):
        AzureBlobStorage.from_config(AzureBlobConfig(account_url="https://a.blob.core.windows.net"))


def test_bad_account_key_is_reported_without_echo(monkeypatch):
    monkeypatch.setenv("KP_KEY", f"not base64 {CANARY}!")
    with pytest.raises(ConfigError) as info:
        credential_from_config(
            CredentialConfig(kind="shared_key", account_key_env="KP_KEY"), "storage.azure.credential"
        )
    assert str(info.value) == "storage.azure.credential.account_key_env: the account key is not valid base64"


def test_redact_removes_known_and_token_like_text():
    jwt_payload = base64.urlsafe_b64encode(json.dumps({"sub": "x", "aud": "https://storage.azure.com"}).encode())
    text = f"sig={CANARY}&x=1 bearer e30.{jwt_payload.decode()}. id 6a1b2c3d-0000-4000-8000-1234567890ab"
    out = redact(text, ["short-secret"])
    assert CANARY not in out and jwt_payload.decode()[:32] not in out
    assert "6a1b2c3d-0000-4000-8000-1234567890ab" in out  # correlation ids stay useful
    assert redact("the short-secret leaked", ["short-secret"]) == "the *** leaked"


# ---------------------------------------------------------------------------- Azure CLI
def test_cli_output_with_expires_on():
    token = parse_cli_token(json.dumps({"accessToken": "abc", "expires_on": 1767225600, "tokenType": "Bearer"}))
    assert token.token == "abc" and token.expires_on == 1767225600.0
    assert parse_cli_token(json.dumps({"accessToken": "abc", "expires_on": "1767225600"})).expires_on == 1767225600.0


def test_cli_output_with_naive_local_expires_on():
    token = parse_cli_token(json.dumps({"accessToken": "abc", "expiresOn": "2026-01-01 12:30:00.000000"}))
    assert token.expires_on == datetime(2026, 1, 1, 12, 30).timestamp()  # local time, as az prints it


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (f"WARNING {CANARY} not json", "not JSON"),
        (json.dumps({"expires_on": 1}), "no accessToken"),
        (json.dumps({"accessToken": CANARY}), "neither expires_on nor expiresOn"),
        (json.dumps({"accessToken": CANARY, "expiresOn": "soon"}), "not a date"),
    ],
)
def test_cli_output_errors_never_echo(output, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_cli_token(output)
    assert CANARY not in str(info.value)


def fake_az(tmp_path: Path, script: str) -> Path:
    """An `az` executable (a Python script) in its own directory; returns that directory."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    az = bindir / "az"
    az.write_text(f"#!{sys.executable}\nimport json, sys\n{script}\n")
    az.chmod(az.stat().st_mode | stat.S_IXUSR)
    return bindir


def test_cli_credential_runs_az_with_resource_and_tenant(tmp_path, monkeypatch):
    argv_file = tmp_path / "argv.json"
    bindir = fake_az(
        tmp_path,
        f"json.dump(sys.argv[1:], open({str(argv_file)!r}, 'w'))\n"
        "print(json.dumps({'accessToken': 'tok', 'expires_on': 2000000000}))",
    )
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    token = AzureCliCredential("tenant-1").get_token(STORAGE)
    assert (token.token, token.expires_on) == ("tok", 2000000000.0)
    assert json.loads(argv_file.read_text()) == [
        "account",
        "get-access-token",
        "--output",
        "json",
        "--resource",
        "https://storage.azure.com",
        "--tenant",
        "tenant-1",
    ]
    AzureCliCredential().get_token("api://custom/scope.read")
    assert json.loads(argv_file.read_text())[-2:] == ["--scope", "api://custom/scope.read"]


def test_cli_credential_failures(tmp_path, monkeypatch):
    bindir = fake_az(tmp_path, "sys.stderr.write(\"ERROR: Please run 'az login' to setup account.\\n\"); sys.exit(1)")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(CredentialError, match=r"azure_cli credential: not logged in: run 'az login'"):
        AzureCliCredential().get_token(STORAGE)
    with pytest.raises(CredentialError, match="is not installed or not on PATH"):
        AzureCliCredential(command="az-does-not-exist").get_token(STORAGE)


# --------------------------------------------------------------------------- unsecured JWT
def _b64json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_unsecured_jwt_has_what_kafkas_validator_wants():
    before = time.time()
    token = UnsecuredJwtCredential("svc-kafkapipe", lifetime=5).get_token("")
    header, payload, signature = token.token.split(".")
    assert _b64json(header) == {"alg": "none"} and signature == ""
    claims = _b64json(payload)
    assert claims["sub"] == "svc-kafkapipe" and int(before) <= claims["iat"] <= time.time()
    assert claims["exp"] == pytest.approx(token.expires_on) and token.expires_on == pytest.approx(before + 5, abs=1)


def test_oauth_cb_returns_absolute_expiry_and_principal():
    cb = make_oauth_cb(
        OAuthConfig(credential=CredentialConfig(kind="unsecured_jwt", principal="me", token_lifetime=60))
    )
    token, expiry, principal = cb("")
    assert principal == "me" and expiry == pytest.approx(time.time() + 60, abs=2)
    assert cb("")[0] == token  # cached, not minted per call


def test_oauth_cb_failure_is_logged_and_raised(caplog):
    cred = FakeCredential()
    cred.fail = AuthError("fake credential: refused")
    cb = make_oauth_cb(OAuthConfig(scope="s"), credential=cred)
    with caplog.at_level(logging.WARNING), pytest.raises(AuthError, match="refused"):
        cb("")
    assert any(getattr(r, "error", "") == "fake credential: refused" for r in caplog.records)


# ---------------------------------------------------------------------- Shared Key signing
# Requests signed by Microsoft's .NET storage client and accepted by Azure, with the test
# account's key, from the MicrosoftDX/Dash project's SignatureValidationTests.
DASH_KEY = base64.b64decode("8jqRVtXUWiEthgIhR+dFwrB8gh3lFuquvJQ1v4eabObIj7okI1cZIuzY8zZHmEdpcC0f+XlUkbFwAhjTfyrLIg==")
DASH_URL = "https://dashstorage1.blob.core.windows.net/test/test.txt"
DASH_COMMON = {
    "User-Agent": "WA-Storage/4.3.0 (.NET CLR 4.0.30319.34014; Win32NT 6.2.9200.0)",
    "Content-Length": "423",
    "Content-MD5": "LHmMkMS8mTXh0bRP4e4Ptw==",
    "x-ms-blob-type": "BlockBlob",
    "x-ms-version": "2014-02-14",
    "Connection": "Keep-Alive",
    "Expect": "100-continue",
    "Host": "dashstorage1.blob.core.windows.net",
}


@pytest.mark.parametrize(
    ("headers", "signature"),
    [
        (
            {
                "x-ms-client-request-id": "82370d95-e820-4817-bd3f-6c266544ee8b",
                "x-ms-date": "Thu, 30 Oct 2014 17:31:22 GMT",
            },
            "mDTyDIDy8yt7D81qAmYEYiXH1X/bmBHJF2+ZPn/r74k=",
        ),
        (
            {
                "x-ms-client-request-id": "TestRequest1",
                "x-ms-date": "Thu, 30 Oct 2014 19:48:43 GMT",
                "x-ms-test": "testvalue",
                "x-test": "differentvalue",
            },
            "ktMmzuta7Wsqtzyd3TBbd3zW4miedtJPkWWlW9DCRb0=",
        ),
        (
            {
                "x-ms-client-request-id": "d0863cd4-ae43-4dd4-aa27-eff01d30b5cf",
                "x-ms-date": "Thu, 30 Oct 2014 20:15:46 GMT",
                "If-Modified-Since": "Thu, 30 Oct 2014 20:15:41 GMT",
            },
            "21rAYhnoRQQu6MmxXj6W5Rx3YWI8OCjO50CNNniohAA=",
        ),
        (
            {
                "Content-Type": "application/octet-stream",
                "Content-Language": "EN-US",
                "Content-Encoding": "gzip",
                "If-Match": "DummyETag",
                "x-ms-client-request-id": "93399f8e-6ce2-4020-81a4-4f1f53f427fd",
                "x-ms-date": "Thu, 30 Oct 2014 20:46:48 GMT",
            },
            "ZBQYgC9dgzldVfH6t06qIYZujSz/3blWrinuYePTMv8=",
        ),
    ],
)
def test_shared_key_signature_known_vectors(headers, signature):
    text = string_to_sign("dashstorage1", "PUT", DASH_URL, {**DASH_COMMON, **headers})
    assert shared_key_signature(DASH_KEY, text) == signature


def test_string_to_sign_matches_the_documented_example():
    # learn.microsoft.com, "Authorize with Shared Key": Get Container Metadata.
    text = string_to_sign(
        "myaccount",
        "GET",
        "https://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=metadata&timeout=20",
        {"x-ms-date": "Fri, 26 Jun 2015 23:39:12 GMT", "x-ms-version": "2015-02-21"},
    )
    assert text == (
        "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Fri, 26 Jun 2015 23:39:12 GMT\nx-ms-version:2015-02-21\n"
        "/myaccount/mycontainer\ncomp:metadata\nrestype:container\ntimeout:20"
    )


def test_string_to_sign_for_azurite_and_put_block():
    text = string_to_sign(
        "devstoreaccount1",
        "PUT",
        "http://127.0.0.1:10000/devstoreaccount1/c/a%20b.bin?comp=block&blockid=YWJj%2Bd%2F%3D",
        {"Content-Length": "0", "x-ms-date": "D", "x-ms-version": "V", "X-Ms-Meta-Foo": "  a   b "},
    )
    lines = text.split("\n")
    assert lines[3] == ""  # Content-Length 0 is signed as empty (versions from 2015-02-21)
    assert lines[12:15] == ["x-ms-date:D", "x-ms-meta-foo:a b", "x-ms-version:V"]
    # Path-style URL: the account appears twice; query values are decoded.
    assert lines[15:] == ["/devstoreaccount1/devstoreaccount1/c/a%20b.bin", "blockid:YWJj+d/=", "comp:block"]


# --------------------------------------------------------------------- error classification
@pytest.mark.parametrize(
    ("status", "code", "category"),
    [
        # Our storage busy, failing or misconfigured: the stage holds, nothing is dead-lettered.
        (503, "ServerBusy", ErrorCategory.STORAGE),
        (500, "OperationTimedOut", ErrorCategory.STORAGE),
        (500, "InternalError", ErrorCategory.STORAGE),
        (502, "", ErrorCategory.STORAGE),
        (429, "", ErrorCategory.STORAGE),
        (404, "ContainerNotFound", ErrorCategory.STORAGE),
        (409, "ContainerBeingDeleted", ErrorCategory.STORAGE),
        # Any 401/403 is refused credentials or permissions: held like them.
        (403, "AuthenticationFailed", ErrorCategory.AUTH),
        (403, "AuthorizationPermissionMismatch", ErrorCategory.AUTH),
        (403, "KeyBasedAuthenticationNotPermitted", ErrorCategory.AUTH),
        (403, "AuthorizationFailure", ErrorCategory.AUTH),
        (403, "SomeFutureRefusal", ErrorCategory.AUTH),
        (401, "InvalidAuthenticationInfo", ErrorCategory.AUTH),
        (401, "NoAuthenticationInformation", ErrorCategory.AUTH),
        # This attempt's upload was damaged or raced: another attempt will do.
        (400, "Md5Mismatch", ErrorCategory.TRANSIENT),
        (400, "InvalidBlockList", ErrorCategory.TRANSIENT),
        # The task's own problem.
        (409, "BlockCountExceedsLimit", ErrorCategory.PERMANENT),
        (400, "BlobOperationNotSupported", ErrorCategory.PERMANENT),
        (412, "ConditionNotMet", ErrorCategory.PERMANENT),
        (404, "BlobNotFound", ErrorCategory.PERMANENT),
    ],
)
def test_classify(status, code, category):
    error = classify(status, code, "Put Block", "https://a/c/b")
    assert error.category is category and error.http_status == status
    assert str(error).startswith(f"azure blob Put Block https://a/c/b: HTTP {status}" + (f" {code}" if code else ""))


@pytest.mark.parametrize(
    ("code", "hint"),
    [("BlockCountExceedsLimit", "block_size"), ("BlobOperationNotSupported", "does not support")],
)
def test_account_limits_are_explained(code, hint):
    error = classify(409, code, "Put Block List", "https://a/c/b")
    assert hint in str(error)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [({"x-ms-retry-after-ms": "1500"}, 1.5), ({"Retry-After": "7"}, 7.0),
     ({"x-ms-retry-after-ms": "250", "Retry-After": "9"}, 0.25), ({"x-ms-retry-after-ms": "²"}, None),
     ({"x-ms-retry-after-ms": "9" * 400}, None), ({}, None)],
)
def test_retry_after_from_either_header(headers, seconds):
    import requests as rq

    from kafkapipe.storage.azure_blob import _retry_after

    response = rq.Response()
    response.headers.update(headers)
    assert _retry_after(response) == seconds


# ------------------------------------------------------------------ loopback fake services
class FakeServer:
    """A loopback HTTP server; ``reply(handler)`` → (status, headers, body) decides each answer."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.reply: Callable[[http.server.BaseHTTPRequestHandler], tuple[int, dict, bytes]] = lambda h: (
            200,
            {},
            b"{}",
        )
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                server.requests.append(
                    {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
                )
                status, headers, payload = server.reply(self)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    yield srv
    srv.close()


def echo_everything(status: int, code: str) -> Callable:
    """Like Azure's AuthenticationFailed: the body repeats what the client sent (signature, URL)."""

    def reply(h: http.server.BaseHTTPRequestHandler) -> tuple[int, dict, bytes]:
        body = f"<Error><Code>{code}</Code><Detail>{h.path} {dict(h.headers)}</Detail></Error>".encode()
        return status, {"x-ms-error-code": code, "x-ms-echo": h.path[:200]}, body

    return reply


class FakeAzureAD(BaseAdapter):
    """A requests transport answering like login.microsoftonline.com (discovery + token endpoint)."""

    def __init__(self, token_reply: tuple[int, dict]) -> None:
        super().__init__()
        self.token_reply = token_reply
        self.posts: list[str] = []

    def send(self, request, **kwargs) -> requests.Response:
        response = requests.Response()
        response.request, response.url, response.status_code = request, request.url, 200
        tenant = request.url.split("/")[3]
        if "openid-configuration" in request.url:
            body = {
                "token_endpoint": f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
                "authorization_endpoint": f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
                "issuer": f"https://login.microsoftonline.com/{tenant}/v2.0",
            }
        elif "discovery/instance" in request.url:
            body = {
                "tenant_discovery_endpoint": "",
                "metadata": [
                    {
                        "preferred_network": "login.microsoftonline.com",
                        "preferred_cache": "login.windows.net",
                        "aliases": ["login.microsoftonline.com", "login.windows.net"],
                    }
                ],
            }
        else:
            self.posts.append(request.body if isinstance(request.body, str) else (request.body or b"").decode())
            response.status_code, body = self.token_reply
        response._content = json.dumps(body).encode()
        response.headers["Content-Type"] = "application/json"
        return response

    def close(self) -> None:
        pass


def fake_ad_session(token_reply: tuple[int, dict]) -> tuple[requests.Session, FakeAzureAD]:
    adapter = FakeAzureAD(token_reply)
    session = requests.Session()
    session.mount("https://", adapter)
    return session, adapter


def make_certificate(tmp_path: Path) -> tuple[Path, str]:
    """A self-signed certificate and key in one PEM file; returns the path and the key's PEM body."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kafkapipe-test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now.replace(year=now.year + 1))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path = tmp_path / "spn.pem"
    path.write_bytes(key_pem + cert.public_bytes(serialization.Encoding.PEM))
    body = "".join(key_pem.decode().splitlines()[1:-1])
    return path, body


def test_service_principal_secret_token_and_rotation(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("first-secret\n")
    session, ad = fake_ad_session((200, {"access_token": "at-1", "expires_in": 3599, "token_type": "Bearer"}))
    config = CredentialConfig(
        kind="service_principal", tenant_id="tenant-1", client_id="app-1", client_secret_file=str(secret_file)
    )
    cred = credential_from_config(config, "storage.azure.credential", http_client=session)
    token = cred.get_token(STORAGE)
    assert token.token == "at-1" and token.expires_on == pytest.approx(time.time() + 3599, abs=5)
    assert "client_secret=first-secret" in ad.posts[-1] and "client_credentials" in ad.posts[-1]
    # The secret is rotated; the old one is refused once, then the file is read again.
    secret_file.write_text("second-secret\n")
    ad.token_reply = (
        401,
        {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret."},
    )
    with pytest.raises(CredentialError, match=r"service_principal \(client_id app-1\) credential: invalid_client"):
        cred.get_token("https://other/.default")
    ad.token_reply = (200, {"access_token": "at-2", "expires_in": 3599})
    assert cred.get_token("https://other/.default").token == "at-2"
    assert "client_secret=second-secret" in ad.posts[-1]


def test_service_principal_certificate(tmp_path):
    path, _ = make_certificate(tmp_path)
    session, ad = fake_ad_session((200, {"access_token": "at-cert", "expires_in": 3599}))
    config = CredentialConfig(kind="service_principal", tenant_id="t", client_id="c", certificate_file=str(path))
    assert credential_from_config(config, "x", http_client=session).get_token(STORAGE).token == "at-cert"
    assert "client_assertion=" in ad.posts[-1] and "client_secret" not in ad.posts[-1]


def test_managed_identity_via_imds(server, monkeypatch):
    for name in (
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", server.url)
    server.reply = lambda h: (
        200,
        {},
        json.dumps({"access_token": "mi-token", "expires_in": "3599"}).encode(),
    )
    cred = credential_from_config(CredentialConfig(kind="managed_identity", client_id="uami-1"), "x")
    assert cred.get_token(STORAGE).token == "mi-token"
    request = server.requests[-1]
    assert request["path"].startswith("/metadata/identity/oauth2/token?")
    assert "resource=https%3A%2F%2Fstorage.azure.com" in request["path"] and "client_id=uami-1" in request["path"]
    assert request["headers"]["Metadata"] == "true"


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _imds_on(server: FakeServer, monkeypatch) -> None:
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "MSI_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", server.url)


def _scripted(server: FakeServer, replies: list[tuple[int, dict]]) -> None:
    script = iter(replies)

    def reply(h):
        status, headers = next(script, (200, {}))
        body = {"access_token": "mi-after-retries", "expires_in": "3599"} if status == 200 else {
            "error": "unavailable", "error_description": f"status {status}"}
        return status, headers, json.dumps(body).encode()

    server.reply = reply


def test_managed_identity_retries_429_and_410_with_exponential_backoff(server, monkeypatch):
    _imds_on(server, monkeypatch)
    _scripted(server, [(429, {}), (410, {}), (410, {}), (410, {})])
    fake = FakeTime()
    session = RetryingSession((2.0, 5.0), sleep=fake.sleep, clock=fake.clock)
    cred = ManagedIdentityCredential("uami-1", http_client=session)
    assert cred.get_token(STORAGE).token == "mi-after-retries"
    assert len(server.requests) == 5
    assert fake.sleeps == [1.0, 2.0, 4.0, 8.0]


def test_managed_identity_honours_retry_after_and_gives_up_within_70_seconds(server, monkeypatch):
    _imds_on(server, monkeypatch)
    _scripted(server, [(429, {"Retry-After": "7"})] + [(503, {})] * 100)
    fake = FakeTime()
    cred = ManagedIdentityCredential("", http_client=RetryingSession((2.0, 5.0), sleep=fake.sleep, clock=fake.clock))
    with pytest.raises(AuthError) as info:
        cred.get_token(STORAGE)
    assert "managed_identity (system-assigned)" in str(info.value)
    assert fake.sleeps[0] == 7.0, "Retry-After longer than the backoff wins"
    assert fake.sleeps[1:3] == [2.0, 4.0]
    assert sum(fake.sleeps) <= 70.0 and sum(fake.sleeps) + 30.0 > 70.0, "the budget was used, not exceeded"
    assert len(server.requests) == len(fake.sleeps) + 1


@pytest.mark.parametrize("status", [400, 401, 403])
def test_managed_identity_does_not_retry_what_retrying_cannot_fix(server, monkeypatch, status):
    _imds_on(server, monkeypatch)
    _scripted(server, [(status, {})])
    fake = FakeTime()
    cred = ManagedIdentityCredential("", http_client=RetryingSession((2.0, 5.0), sleep=fake.sleep, clock=fake.clock))
    with pytest.raises(AuthError):
        cred.get_token(STORAGE)
    assert fake.sleeps == [] and len(server.requests) == 1


def test_managed_identity_retries_by_default():
    cred = credential_from_config(CredentialConfig(kind="managed_identity"), "x")
    assert isinstance(cred._http_client, RetryingSession)
    assert cred._http_client.policy.budget == 70.0


# ------------------------------------------------------------------------------ the canary
@pytest.fixture
def captured_logs(caplog) -> Iterator[Callable[[], str]]:
    """The project's logging set-up at DEBUG (JSON to a buffer), plus caplog's records."""
    root = logging.getLogger()
    saved = (
        root.handlers[:],
        root.level,
        {n: logging.getLogger(n).level for n in ("urllib3", "msal", "azure")},
    )
    stream = io.StringIO()
    log.setup("DEBUG", "json", stream=stream)
    root.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.DEBUG)

    def text() -> str:
        records = []
        for r in caplog.records:
            records.append(r.getMessage())
            records.append(repr(r.args))
            records.append(repr(vars(r)))
            if r.exc_info:
                records.append("".join(traceback.format_exception(*r.exc_info)))
        return stream.getvalue() + "\n".join(records)

    yield text
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def exception_text(exc: BaseException) -> str:
    return f"{exc}\n{exc!r}\n{getattr(exc, 'message', '')}\n" + "".join(traceback.format_exception(exc))


def expect_failure(call: Callable[[], object], types=(AuthError, ConfigError)) -> BaseException:
    with pytest.raises(types) as info:
        call()
    return info.value


def test_canary_secret_never_reaches_logs_or_exceptions(tmp_path, monkeypatch, server, captured_logs):
    failures: list[BaseException] = []
    canary_file = tmp_path / "canary"
    canary_file.write_text(CANARY + "\n")
    key_file = tmp_path / "key"
    key_file.write_text(CANARY_KEY)
    monkeypatch.setenv("KP_CANARY", CANARY)
    monkeypatch.setenv("KP_CANARY_KEY", CANARY_KEY)
    monkeypatch.setenv("KP_CANARY_SAS", f"sv=2023-11-03&sp=rcw&sig={CANARY}")
    echoing_ad = (
        401,
        {
            "error": "invalid_client",
            "error_description": f"AADSTS7000215: Invalid client secret provided: {CANARY}\r\nTrace",
        },
    )

    # 1. Service principal, secret from env and from file; the IdP's reply echoes the secret.
    for source in ({"client_secret_env": "KP_CANARY"}, {"client_secret_file": str(canary_file)}):
        session, _ = fake_ad_session(echoing_ad)
        config = CredentialConfig(kind="service_principal", tenant_id="t", client_id="c", **source)
        cred = credential_from_config(config, "storage.azure.credential", http_client=session)
        failures.append(expect_failure(lambda c=cred: TokenCache(c, STORAGE).get()))
        # ... and the Kafka callback on the same credential.
        failures.append(expect_failure(lambda c=cred: make_oauth_cb(OAuthConfig(scope="s"), credential=c)("")))
        # A token that works is never logged either.
        session, _ = fake_ad_session((200, {"access_token": CANARY, "expires_in": 3599}))
        cred = credential_from_config(config, "x", http_client=session)
        assert TokenCache(cred, STORAGE).get().token == CANARY

    # 2. Certificate: a good key is not echoed when the IdP refuses it; a bad file is not echoed.
    cert_path, key_body = make_certificate(tmp_path)
    session, _ = fake_ad_session((401, {"error": "invalid_client", "error_description": "bad assertion"}))
    cert_config = CredentialConfig(
        kind="service_principal", tenant_id="t", client_id="c", certificate_file=str(cert_path)
    )
    cred = credential_from_config(cert_config, "x", http_client=session)
    failures.append(expect_failure(lambda: cred.get_token(STORAGE)))
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text(f"-----BEGIN PRIVATE KEY-----\n{CANARY}\n-----END PRIVATE KEY-----\n")
    failures.append(
        expect_failure(
            lambda: credential_from_config(
                CredentialConfig(kind="service_principal", tenant_id="t", client_id="c", certificate_file=str(bad_pem)),
                "x",
            )
        )
    )

    # 3. Managed identity (App Service flavour): the identity header is a secret; the endpoint
    #    echoes it, then hands out a canary token.
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"{server.url}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", CANARY)
    server.reply = lambda h: (
        400,
        {},
        json.dumps({"statusCode": 400, "message": f"header {h.headers.get('X-IDENTITY-HEADER')} refused"}).encode(),
    )
    mi = credential_from_config(CredentialConfig(kind="managed_identity"), "x")
    failures.append(expect_failure(lambda: TokenCache(mi, STORAGE).get()))
    server.reply = lambda h: (
        200,
        {},
        json.dumps({"access_token": CANARY, "expires_on": str(int(time.time()) + 3600)}).encode(),
    )
    mi = credential_from_config(CredentialConfig(kind="managed_identity"), "x")
    assert TokenCache(mi, STORAGE).get().token == CANARY
    server.reply = lambda h: (200, {}, f"<html>{CANARY}</html>".encode())  # not JSON
    mi = credential_from_config(CredentialConfig(kind="managed_identity"), "x")
    failures.append(expect_failure(lambda: TokenCache(mi, STORAGE).get()))
    monkeypatch.delenv("IDENTITY_ENDPOINT")
    monkeypatch.delenv("IDENTITY_HEADER")

    # 4. Azure CLI: stderr and broken stdout carry the canary; a good token is the canary.
    for script in (
        f"sys.stderr.write('ERROR: AADSTS50173 token {CANARY} was revoked\\n'); sys.exit(1)",
        f"print('not json {CANARY}')",
        f"print(json.dumps({{'accessToken': {CANARY!r}}}))",
    ):
        (tmp_path / f"az{len(failures)}").mkdir()
        bindir = fake_az(tmp_path / f"az{len(failures)}", script)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        failures.append(expect_failure(lambda: TokenCache(AzureCliCredential(), STORAGE).get()))

    # 5. Storage with a shared key (env, file) and a SAS (env, file): the service echoes the
    #    signature and URL back, fails with 5xx, or is not there at all.
    dead_port = _closed_port()
    storage_credentials = [
        CredentialConfig(kind="shared_key", account_key_env="KP_CANARY_KEY"),
        CredentialConfig(kind="shared_key", account_key_file=str(key_file)),
        CredentialConfig(kind="sas", sas_token_env="KP_CANARY_SAS"),
        CredentialConfig(kind="sas", sas_token_file=str(_write(tmp_path / "sas", f"?sv=1&sig={CANARY}"))),
    ]
    for credential in storage_credentials:
        for url, reply in (
            (f"{server.url}/devstoreaccount1", echo_everything(403, "AuthenticationFailed")),
            (f"{server.url}/devstoreaccount1", echo_everything(500, "InternalError")),
            (f"http://127.0.0.1:{dead_port}/devstoreaccount1", None),
        ):
            if reply:
                server.reply = reply
            storage = AzureBlobStorage.from_config(
                AzureBlobConfig(account_url=url, container="c", credential=credential),
                max_attempts=2,
                retry_backoff=0.0,
            )
            with storage.open_writer("t/blob.bin") as writer:
                failures.append(
                    expect_failure(
                        lambda w=writer: w.write(b"x" * 10) or w.commit(),
                        (AuthError, TransientError, StorageUnavailableError, PermanentError),
                    )
                )
            failures.append(
                expect_failure(
                    lambda s=storage: s.exists("t/blob.bin"),
                    (AuthError, TransientError, StorageUnavailableError, PermanentError),
                )
            )
            assert CANARY not in storage.describe("t/blob.bin")
            storage.close()
    assert any(r["path"].endswith(f"sig={CANARY}") for r in server.requests)  # the SAS was really sent

    # 6. A shared key that is not base64 and a SAS file that is missing.
    monkeypatch.setenv("KP_CANARY_BAD_KEY", f"{CANARY}!!")
    failures.append(
        expect_failure(
            lambda: credential_from_config(
                CredentialConfig(kind="shared_key", account_key_env="KP_CANARY_BAD_KEY"), "x"
            )
        )
    )

    assert len(failures) >= 30
    categories = {category_of(f) for f in failures if not isinstance(f, ConfigError)}
    assert ErrorCategory.AUTH in categories and ErrorCategory.STORAGE in categories
    for failure in failures:
        text = exception_text(failure)
        assert CANARY not in text and CANARY_KEY not in text, text
        assert key_body[:40] not in text
    logs = captured_logs()
    assert "token refresh" in logs or "retrying" in logs  # the logs were really captured
    assert CANARY not in logs and CANARY_KEY not in logs
    assert key_body[:40] not in logs


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------- examples
EXAMPLES = Path(__file__).resolve().parents[2] / "etc" / "examples"


@pytest.mark.parametrize(
    "name",
    [
        "storage-local.toml",
        "storage-azure-blob-spn.toml",
        "storage-onelake-managed-identity.toml",
        "kafka-eventhubs-spn.toml",
    ],
)
def test_documented_examples_load_and_build(name, monkeypatch):
    from kafkapipe.config import load
    from kafkapipe.kafka.clients import producer_config
    from kafkapipe.storage import open_storage

    monkeypatch.setenv("KAFKAPIPE_SPN_SECRET", "example-secret")
    monkeypatch.setenv("KAFKAPIPE_EVENTHUBS_SECRET", "example-secret")
    config = load(EXAMPLES / name, environ={})
    storage = open_storage(config)  # builds credentials; nothing is contacted yet
    assert "example-secret" not in storage.describe("a/b.pdf")
    storage.close()
    settings = producer_config(config)
    if config.kafka.security_protocol.startswith("SASL"):
        assert callable(settings["oauth_cb"])
        assert settings["oauth_cb"].token_cache.scope == "https://claims-events.servicebus.windows.net/.default"


def test_onelake_example_tells_the_operator_what_real_onelake_needs():
    text = " ".join((EXAMPLES / "storage-onelake-managed-identity.toml").read_text().replace("#", " ").split())
    assert "Users can access data stored in OneLake with apps external to Fabric" in text
    assert "OneLake SAS tokens exist too (preview)" in text and "at most one hour" in text
    assert "nor SAS" not in text


# ------------------------------------------------------------------ storage request handling
def _storage(server: FakeServer, monkeypatch, **kwargs) -> AzureBlobStorage:
    monkeypatch.setenv("KP_TEST_KEY", base64.b64encode(b"k" * 64).decode())
    config = AzureBlobConfig(
        account_url=f"{server.url}/devstoreaccount1",
        container="c",
        credential=CredentialConfig(kind="shared_key", account_key_env="KP_TEST_KEY"),
    )
    return AzureBlobStorage.from_config(config, retry_backoff=0.0, **kwargs)


def test_transient_replies_are_retried_within_the_request(server, monkeypatch):
    replies = iter([(503, "ServerBusy"), (500, "InternalError")])

    def reply(h):
        status, code = next(replies, (201, ""))
        return status, ({"x-ms-error-code": code, "Retry-After": "0"} if code else {}), b""

    server.reply = reply
    storage = _storage(server, monkeypatch, max_attempts=3)
    with storage.open_writer("a/b.bin") as writer:
        writer.write(b"x" * 10)
        writer.commit()
    methods = [(r["method"], r["path"].split("?")[1].split("&")[0]) for r in server.requests]
    assert methods == [("PUT", "comp=block")] * 3 + [("PUT", "comp=blocklist")]
    put_block = server.requests[0]["headers"]
    assert put_block["x-ms-version"] == "2023-11-03" and put_block["Authorization"].startswith(
        "SharedKey devstoreaccount1:"
    )
    assert put_block["Content-MD5"] == base64.b64encode(hashlib.md5(b"x" * 10).digest()).decode()


def test_block_ids_have_one_length_and_the_list_names_them_in_order(server, monkeypatch):
    server.reply = lambda h: (201, {}, b"")
    storage = _storage(server, monkeypatch)
    storage.block_size = 4
    with storage.open_writer("a/b.bin") as writer:
        for piece in (b"ab", b"cdef", b"ghijklmnopq", b"r"):
            writer.write(piece)
        writer.commit()
    ids = [parse_qs(urlsplit(r["path"]).query)["blockid"][0] for r in server.requests[:-1]]
    assert len(ids) == 3 and len({len(i) for i in ids}) == 1 and len(ids[0]) == 64
    bodies = [r["body"] for r in server.requests[:-1]]
    assert bodies == [b"abcdef", b"ghijklmnopq", b"r"]
    block_list = server.requests[-1]["body"].decode()
    assert block_list == (
        '<?xml version="1.0" encoding="utf-8"?><BlockList>'
        + "".join(f"<Latest>{i}</Latest>" for i in ids)
        + "</BlockList>"
    )


def test_a_commit_racing_another_writer_is_transient(server, monkeypatch):
    server.reply = lambda h: (
        (400, {"x-ms-error-code": "InvalidBlockList"}, b"") if "blocklist" in h.path else (201, {}, b"")
    )
    storage = _storage(server, monkeypatch)
    writer = storage.open_writer("a/b.bin")
    writer.write(b"x")
    with pytest.raises(TransientError, match="InvalidBlockList"):
        writer.commit()


def test_exists_is_false_on_404_and_errors_are_classified(server, monkeypatch):
    server.reply = lambda h: (404, {"x-ms-error-code": "BlobNotFound", "x-ms-request-id": "req-1"}, b"")
    storage = _storage(server, monkeypatch)
    assert storage.exists("a/b.bin") is False
    server.reply = lambda h: (403, {"x-ms-error-code": "AuthorizationPermissionMismatch"}, b"")
    with pytest.raises(AuthError, match="HTTP 403 AuthorizationPermissionMismatch"):
        storage.exists("a/b.bin")
    server.reply = lambda h: (400, {"x-ms-error-code": "Md5Mismatch", "x-ms-request-id": "req-2"}, b"")
    writer = storage.open_writer("a/b.bin")
    writer.write(b"x")
    with pytest.raises(TransientError, match=r"Md5Mismatch \(request id req-2\)$"):
        writer.commit()


def test_a_failing_credential_is_not_hammered_by_every_write(tmp_path, monkeypatch, server):
    counter = tmp_path / "calls"
    bindir = fake_az(tmp_path, f"open({str(counter)!r}, 'a').write('x'); sys.stderr.write('boom\\n'); sys.exit(2)")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    config = AzureBlobConfig(
        account_url=f"{server.url}/devstoreaccount1", container="c", credential=CredentialConfig(kind="azure_cli")
    )
    storage = AzureBlobStorage.from_config(config)
    storage._auth.cache.retry_backoff = 3600  # deterministic: the backoff cannot run out mid-test
    for _ in range(3):
        writer = storage.open_writer("a/b.bin")
        writer.write(b"x")
        with pytest.raises(AuthError, match="azure_cli credential: az exited with status 2: boom"):
            writer.commit()
    assert counter.read_text() == "x"  # one attempt; the others got the same error during the backoff
    assert server.requests == []


# ------------------------------------------------------------------------ workload identity
def test_workload_identity_names_every_missing_setting(monkeypatch):
    for name in ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_CLIENT_ID", "app-from-env")
    with pytest.raises(ConfigError) as info:
        credential_from_config(CredentialConfig(kind="workload_identity"), "kafka.oauth.credential")
    assert str(info.value) == (
        "kafka.oauth.credential: kind workload_identity needs kafka.oauth.credential.tenant_id "
        "(or $AZURE_TENANT_ID), kafka.oauth.credential.federated_token_file (or $AZURE_FEDERATED_TOKEN_FILE)"
    )


def test_workload_identity_unreadable_token_file_fails_at_start(tmp_path, monkeypatch):
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE", raising=False)
    config = CredentialConfig(
        kind="workload_identity", tenant_id="t", client_id="c", federated_token_file=str(tmp_path / "absent")
    )
    with pytest.raises(ConfigError, match=r"storage\.azure\.credential\.federated_token_file: file .* does not exist"):
        credential_from_config(config, "storage.azure.credential")


@pytest.mark.parametrize(
    ("use", "kind", "accepted"),
    [
        ("kafka", "workload_identity", True),
        ("storage", "workload_identity", True),
        ("kafka", "sas", False),
        ("kafka", "shared_key", False),
        ("storage", "unsecured_jwt", False),
    ],
)
def test_credential_kinds_per_use(tmp_path, monkeypatch, use, kind, accepted):
    token = _write(tmp_path / "token", "assertion")
    credential = CredentialConfig(
        kind=kind, tenant_id="t", client_id="c", federated_token_file=str(token), account_key_env="KP_NONE",
        sas_token_env="KP_NONE",
    )  # fmt: skip
    monkeypatch.delenv("KP_NONE", raising=False)

    def build():
        if use == "kafka":
            return make_oauth_cb(OAuthConfig(scope="https://ns.servicebus.windows.net/.default", credential=credential))
        return AzureBlobStorage.from_config(
            AzureBlobConfig(account_url="https://a.blob.core.windows.net", container="c", credential=credential)
        )

    if accepted:
        build()
    else:
        with pytest.raises(ConfigError, match=rf"{kind} cannot authenticate to .*workload_identity"):
            build()
