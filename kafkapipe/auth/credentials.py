"""Where tokens and keys come from: Azure AD (msal), the Azure CLI, unsigned dev tokens, keys.

Every credential is built from a :class:`~kafkapipe.config.CredentialConfig`. Secrets are read
from the environment variable or file the configuration names, never from the TOML itself, and
they are re-read when a credential is rebuilt, so a rotated key file is picked up without a
restart. Every error raised here names the credential kind and the configuration key that
failed, never a secret: texts that come from outside (identity provider replies, ``az``
output) pass through :func:`redact` first, and wrapped exceptions are raised ``from None`` so
their original text does not ride along in a traceback.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol, runtime_checkable
from urllib.parse import quote

import attrs
import requests

from kafkapipe.auth.http import RetryingSession, default_http_client
from kafkapipe.config import CredentialConfig, one_source
from kafkapipe.errors import AuthError, ConfigError, refuse

STORAGE_SCOPE = "https://storage.azure.com/.default"
_TOKEN_KINDS = ("service_principal", "managed_identity", "workload_identity", "azure_cli", "unsecured_jwt")
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
# Runs of token/key/signature alphabet this long are never useful in an error message.
_TOKENISH = re.compile(r"[A-Za-z0-9+/=_%]{32,}")
_MAX_REASON = 300
_MI_SECRET_ENV = ("IDENTITY_HEADER", "MSI_SECRET")
# msal computes the SHA-256 thumbprint (x5t#S256) from a PEM certificate only from 1.35 on.
MSAL_FOR_CERTIFICATES = (1, 35)


@attrs.frozen
class AccessToken:
    """A bearer token and its absolute expiry (epoch seconds)."""

    token: str = attrs.field(repr=False)
    expires_on: float


@runtime_checkable
class Credential(Protocol):
    """Anything that can mint a bearer token for a scope."""

    kind: str

    def get_token(self, scope: str) -> AccessToken: ...


class CredentialError(AuthError):
    """A credential could not produce a token; the text names the kind and the reason."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(f"{kind} credential: {reason}")
        self.kind = kind
        self.reason = reason


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any of ``secrets`` (raw or URL-encoded) nor long token-like runs.

    Used on every text that comes from outside (an identity provider's error description,
    ``az`` stderr) before it becomes part of an exception or a log line.
    """
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe=""), quote(secret, safe="/")}:
            text = text.replace(form, "***")
    text = _TOKENISH.sub("***", text)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


# -------------------------------------------------------------------------------- secrets
class SecretSource:
    """One secret, read from the environment variable or the file the configuration names.

    ``where`` is the configuration path of the credential (``storage.azure.credential``) and
    ``name`` the field stem (``account_key``), so errors read
    ``storage.azure.credential.account_key_env: environment variable AZ_KEY is not set``.
    """

    def __init__(self, where: str, name: str, env: str = "", path: str = "") -> None:
        refuse(one_source(where, name, env, path))
        self.where = where
        self.name = name
        self.env = env
        self.path = path

    @property
    def key(self) -> str:
        """The configuration key this secret is named by."""
        return f"{self.where}.{self.name}_env" if self.env else f"{self.where}.{self.name}_file"

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env else f"file {self.path}"

    def read(self) -> str:
        """The secret, stripped of surrounding whitespace; AuthError naming the key when absent."""
        if self.env:
            value = os.environ.get(self.env, "").strip()
            if not value:
                raise AuthError(f"{self.key}: environment variable {self.env} is not set or empty")
            return value
        try:
            with open(self.path, encoding="utf-8") as handle:
                value = handle.read().strip()
        except FileNotFoundError:
            raise AuthError(f"{self.key}: file {self.path} does not exist") from None
        except PermissionError:
            raise AuthError(f"{self.key}: file {self.path} is not readable") from None
        except UnicodeDecodeError:
            raise AuthError(f"{self.key}: file {self.path} is not UTF-8 text") from None
        except OSError as exc:
            raise AuthError(f"{self.key}: file {self.path} cannot be read ({exc.strerror})") from None
        if not value:
            raise AuthError(f"{self.key}: file {self.path} is empty")
        return value


def optional_secret(where: str, name: str, env: str, path: str) -> SecretSource | None:
    return SecretSource(where, name, env, path) if env or path else None


def _check_readable(source: SecretSource) -> None:
    """Fail at start-up (exit 2) rather than at the first request when a secret is missing."""
    try:
        source.read()
    except AuthError as exc:
        raise ConfigError(exc.message) from None


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _msal_failure(kind: str, result: dict[str, Any], secrets: Iterable[str]) -> CredentialError:
    error = str(result.get("error") or "unknown_error")
    description = _first_line(str(result.get("error_description") or ""))
    reason = f"{error}: {description}" if description else error
    return CredentialError(kind, redact(reason, secrets))


def _request_failure(kind: str, target: str, exc: BaseException) -> CredentialError:
    # requests' messages repeat URLs (with query strings); the class name is enough.
    return CredentialError(kind, f"cannot reach {target}: {type(exc).__name__}")


def _expiry(result: dict[str, Any], now: float) -> float:
    try:
        return now + float(result.get("expires_in", 0))
    except (TypeError, ValueError):
        return now


# ------------------------------------------------------------------------- service principal
@attrs.frozen
class CertificateSource:
    """A PEM file holding the private key and the certificate.

    msal (1.35 and later) computes the SHA-256 thumbprint (``x5t#S256``) from the certificate
    and sends the certificate itself (``x5c``) in every client assertion, which subject-name /
    issuer authentication needs. ``thumbprint`` is the legacy SHA-1 one, for a file that holds
    only the key.
    """

    where: str
    path: str
    thumbprint: str = ""

    def load(self) -> dict[str, str]:
        """msal's ``client_credential`` dict; errors name the file, never its content."""
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        key = f"{self.where}.certificate_file"
        try:
            with open(self.path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise AuthError(f"{key}: file {self.path} cannot be read ({exc.strerror})") from None
        try:
            private_key = serialization.load_pem_private_key(_pem_blocks(data, b"PRIVATE KEY"), password=None)
        except (ValueError, TypeError):
            raise AuthError(
                f"{key}: file {self.path} holds no unencrypted PEM private key "
                "(export it with 'openssl pkcs12 -nodes')"
            ) from None
        credential = {
            "private_key": private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode("ascii")
        }
        try:
            cert = x509.load_pem_x509_certificate(_pem_blocks(data, b"CERTIFICATE"))
        except ValueError:
            cert = None
        if cert is not None:
            credential["public_certificate"] = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        if self.thumbprint:
            credential["thumbprint"] = self.thumbprint.replace(":", "").lower()
        elif cert is None:
            raise AuthError(
                f"{key}: file {self.path} holds no PEM certificate; add it to the file or set "
                f"{self.where}.certificate_thumbprint"
            )
        return credential


def _pem_blocks(data: bytes, label: bytes) -> bytes:
    """The first PEM block whose label ends with ``label`` (``RSA PRIVATE KEY``, ``CERTIFICATE``)."""
    pattern = re.compile(rb"-----BEGIN ([A-Z ]*" + label + rb")-----.*?-----END \1-----", re.S)
    match = pattern.search(data)
    return match.group(0) if match else b""


class ServicePrincipalCredential:
    """An app registration: client secret or certificate, client-credentials flow via msal."""

    kind = "service_principal"

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        *,
        secret: SecretSource | None = None,
        certificate: CertificateSource | None = None,
        authority_host: str = "https://login.microsoftonline.com",
        http_client: requests.Session | None = None,
    ) -> None:
        if (secret is None) == (certificate is None):
            raise ValueError("exactly one of secret and certificate is needed")
        self.tenant_id = tenant_id
        self.client_id = client_id
        self.authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._secret = secret
        self._certificate = certificate
        self._http_client = http_client or default_http_client()
        self._lock = threading.Lock()
        self._app: Any = None
        self._known: tuple[str, ...] = ()

    def known_secrets(self) -> tuple[str, ...]:
        return self._known

    def _client_credential(self) -> Any:
        """What msal gets as ``client_credential``; remembers the secrets it holds for redaction."""
        if self._secret is not None:
            secret = self._secret.read()
            self._known = (secret,)
            return secret
        assert self._certificate is not None  # __init__ takes exactly one of secret and certificate
        credential = self._certificate.load()
        self._known = (credential["private_key"],)
        return credential

    def _application(self) -> Any:
        import msal

        with self._lock:
            if self._app is not None:
                return self._app
            credential = self._client_credential()
            try:
                self._app = msal.ConfidentialClientApplication(
                    self.client_id,
                    client_credential=credential,
                    authority=self.authority,
                    http_client=self._http_client,
                    # The authority is the operator's choice; asking login.microsoftonline.com
                    # whether it knows a sovereign or private host adds nothing but a request.
                    instance_discovery=False,
                )
            except requests.RequestException as exc:
                raise _request_failure(self.kind, self.authority, exc) from None
            except (ValueError, msal.exceptions.MsalError) as exc:
                raise CredentialError(
                    self.kind, redact(f"{type(exc).__name__}: {exc}", self._known)
                ) from None
            return self._app

    def get_token(self, scope: str) -> AccessToken:
        import msal

        app = self._application()
        now = time.time()
        try:
            result = app.acquire_token_for_client(scopes=[scope])
        except requests.RequestException as exc:
            raise _request_failure(self.kind, self.authority, exc) from None
        except (ValueError, msal.exceptions.MsalError) as exc:
            raise CredentialError(self.kind, redact(f"{type(exc).__name__}: {exc}", self._known)) from None
        if result and result.get("access_token"):
            return AccessToken(result["access_token"], _expiry(result, now))
        result = result or {}
        if result.get("error") in ("invalid_client", "unauthorized_client"):
            with self._lock:  # rebuild (and re-read the secret) next time: it may have been rotated
                self._app = None
        raise _msal_failure(f"{self.kind} (client_id {self.client_id})", result, self._known) from None


# ------------------------------------------------------------------------- workload identity
class WorkloadIdentityCredential(ServicePrincipalCredential):
    """AKS workload identity: the pod's projected service-account token as a client assertion.

    The file rotates (kubelet renews it well before it expires), so msal gets a callable that
    reads it again for every token request rather than the content read once.
    """

    kind = "workload_identity"

    def __init__(
        self,
        tenant_id: str,
        client_id: str,
        token_file: SecretSource,
        *,
        authority_host: str = "https://login.microsoftonline.com",
        http_client: requests.Session | None = None,
    ) -> None:
        super().__init__(
            tenant_id, client_id, secret=token_file, authority_host=authority_host, http_client=http_client
        )

    def _client_credential(self) -> Any:
        return {"client_assertion": self._assertion}

    def _assertion(self) -> str:
        assert self._secret is not None  # the federated token file, always given
        assertion = self._secret.read()
        self._known = (assertion,)
        return assertion


WORKLOAD_IDENTITY_ENV = {
    "tenant_id": "AZURE_TENANT_ID",
    "client_id": "AZURE_CLIENT_ID",
    "federated_token_file": "AZURE_FEDERATED_TOKEN_FILE",
}


def _workload_identity(
    config: CredentialConfig, where: str, http_client: requests.Session | None
) -> WorkloadIdentityCredential:
    """Empty keys take what the AKS workload identity webhook puts in the pod's environment."""
    values = {
        key: getattr(config, key) or os.environ.get(env, "").strip() for key, env in WORKLOAD_IDENTITY_ENV.items()
    }
    missing = [f"{where}.{key} (or ${WORKLOAD_IDENTITY_ENV[key]})" for key, value in values.items() if not value]
    if missing:
        raise ConfigError(f"{where}: kind workload_identity needs {', '.join(missing)}")
    authority_host = config.authority_host
    if authority_host == DEFAULT_AUTHORITY_HOST:
        authority_host = os.environ.get("AZURE_AUTHORITY_HOST", "").strip() or authority_host
    token_file = SecretSource(where, "federated_token", path=values["federated_token_file"])
    _check_readable(token_file)
    return WorkloadIdentityCredential(
        values["tenant_id"],
        values["client_id"],
        token_file,
        authority_host=authority_host,
        http_client=http_client,
    )


# -------------------------------------------------------------------------- managed identity
def scope_to_resource(scope: str) -> str:
    """``https://storage.azure.com/.default`` → ``https://storage.azure.com`` (IMDS wants a resource)."""
    return scope[: -len("/.default")] if scope.endswith("/.default") else scope


class ManagedIdentityCredential:
    """The identity of the VM / App Service / Arc machine, via msal's ManagedIdentityClient.

    The endpoint's 404, 410, 429 and 5xx replies are retried with exponential backoff for up to
    70 s (:class:`~kafkapipe.auth.http.RetryingSession`) before the failure becomes an ``auth``
    hold. AKS pods use :class:`WorkloadIdentityCredential`.
    """

    kind = "managed_identity"

    def __init__(self, client_id: str = "", *, http_client: requests.Session | None = None) -> None:
        self.client_id = client_id
        self._http_client = http_client or RetryingSession((2.0, 30.0))
        self._lock = threading.Lock()
        self._client: Any = None

    def known_secrets(self) -> tuple[str, ...]:
        # The platform hands msal these shared secrets (App Service, Machine Learning).
        return tuple(v for v in (os.environ.get(n, "") for n in _MI_SECRET_ENV) if v)

    def _identity(self) -> Any:
        import msal

        with self._lock:
            if self._client is None:
                identity = (
                    msal.UserAssignedManagedIdentity(client_id=self.client_id)
                    if self.client_id
                    else msal.SystemAssignedManagedIdentity()
                )
                self._client = msal.ManagedIdentityClient(identity, http_client=self._http_client)
            return self._client

    def get_token(self, scope: str) -> AccessToken:
        import msal

        label = (
            f"{self.kind} (client_id {self.client_id})"
            if self.client_id
            else f"{self.kind} (system-assigned)"
        )
        now = time.time()
        try:
            result = self._identity().acquire_token_for_client(resource=scope_to_resource(scope))
        except requests.RequestException as exc:
            raise _request_failure(label, "the managed identity endpoint", exc) from None
        except (ValueError, msal.exceptions.MsalError) as exc:  # ManagedIdentityError, a reply not JSON
            raise CredentialError(
                label, f"{type(exc).__name__}: {redact(str(exc), self.known_secrets())}"
            ) from None
        if result and result.get("access_token"):
            return AccessToken(result["access_token"], _expiry(result, now))
        raise _msal_failure(label, result or {}, self.known_secrets()) from None


# -------------------------------------------------------------------------------- Azure CLI
def parse_cli_token(output: str) -> AccessToken:
    """``az account get-access-token --output json`` → AccessToken.

    ``expires_on`` (epoch seconds, CLI ≥ 2.54) wins; older CLIs only give ``expiresOn``, a
    naive local time like ``2024-01-01 12:00:00.000000``. Raises ValueError without echoing
    the output (it holds the token).
    """
    try:
        data = json.loads(output)
    except json.JSONDecodeError:
        raise ValueError("az printed something that is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("accessToken"), str) or not data["accessToken"]:
        raise ValueError("az output has no accessToken")
    if data.get("expires_on") not in (None, ""):
        try:
            expires = float(data["expires_on"])
        except (TypeError, ValueError):
            raise ValueError("az output has an expires_on that is not a number") from None
    elif isinstance(data.get("expiresOn"), str):
        try:
            expires = datetime.fromisoformat(data["expiresOn"].strip()).timestamp()
        except ValueError:
            raise ValueError("az output has an expiresOn that is not a date and time") from None
    else:
        raise ValueError("az output has neither expires_on nor expiresOn")
    return AccessToken(data["accessToken"], expires)


class AzureCliCredential:
    """Whoever is logged in with ``az login`` (developer machines, CI with a federated login)."""

    kind = "azure_cli"

    def __init__(self, tenant_id: str = "", *, command: str = "az", timeout: float = 30.0) -> None:
        self.tenant_id = tenant_id
        self.command = command
        self.timeout = timeout

    def known_secrets(self) -> tuple[str, ...]:
        return ()

    def _argv(self, executable: str, scope: str) -> list[str]:
        argv = [executable, "account", "get-access-token", "--output", "json"]
        if scope.endswith("/.default"):
            argv += ["--resource", scope_to_resource(scope)]
        else:
            argv += ["--scope", scope]
        if self.tenant_id:
            argv += ["--tenant", self.tenant_id]
        return argv

    def get_token(self, scope: str) -> AccessToken:
        executable = shutil.which(self.command)
        if executable is None:
            raise CredentialError(
                self.kind, f"'{self.command}' (the Azure CLI) is not installed or not on PATH"
            )
        try:
            proc = subprocess.run(
                self._argv(executable, scope),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise CredentialError(self.kind, f"az did not answer within {self.timeout:g}s") from None
        except OSError as exc:
            raise CredentialError(self.kind, f"az could not be run ({exc.strerror})") from None
        if proc.returncode != 0:
            raise CredentialError(self.kind, self._explain(proc.returncode, proc.stderr)) from None
        try:
            return parse_cli_token(proc.stdout)
        except ValueError as exc:
            raise CredentialError(self.kind, str(exc)) from None

    @staticmethod
    def _explain(status: int, stderr: str) -> str:
        if "az login" in (stderr or ""):
            return "not logged in: run 'az login'"
        line = _first_line(stderr)
        detail = f": {redact(line)}" if line else ""
        return f"az exited with status {status}{detail}"


# ---------------------------------------------------------------------------- unsecured JWT
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class UnsecuredJwtCredential:
    """Unsigned JWS tokens (``alg: none``) for Kafka's unsecured OAUTHBEARER validator.

    For local development brokers and tests only: anyone can mint these.
    """

    kind = "unsecured_jwt"

    def __init__(self, principal: str = "kafkapipe", lifetime: float = 3600.0) -> None:
        self.principal = principal
        self.lifetime = lifetime

    def known_secrets(self) -> tuple[str, ...]:
        return ()

    def get_token(self, scope: str) -> AccessToken:
        now = time.time()
        expires = now + self.lifetime
        claims: dict[str, Any] = {"sub": self.principal, "iat": int(now), "exp": expires}
        if scope:
            claims["scope"] = scope
        header = _b64url(json.dumps({"alg": "none"}, separators=(",", ":")).encode())
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        return AccessToken(f"{header}.{payload}.", expires)


# ------------------------------------------------------------------------ storage-only kinds
class SharedKeyCredential:
    """A storage account name and key (base64) for Shared Key request signing."""

    kind = "shared_key"

    def __init__(self, account_name: str, key: SecretSource) -> None:
        self.account_name = account_name
        self.source = key
        self._lock = threading.Lock()
        self._key: bytes | None = None
        self._raw = ""

    def known_secrets(self) -> tuple[str, ...]:
        return (self._raw,) if self._raw else ()

    def key(self) -> bytes:
        """The decoded key, read once and again after :meth:`invalidate`."""
        with self._lock:
            if self._key is None:
                raw = self.source.read()
                try:
                    self._key = base64.b64decode(raw, validate=True)
                except (binascii.Error, ValueError):
                    raise AuthError(f"{self.source.key}: the account key is not valid base64") from None
                self._raw = raw
            return self._key

    def invalidate(self) -> None:
        """Forget the key so the next request reads it again (it may have been fixed)."""
        with self._lock:
            self._key = None


class SasCredential:
    """A shared access signature appended to every request's query string."""

    kind = "sas"

    def __init__(self, token: SecretSource) -> None:
        self.source = token
        self._lock = threading.Lock()
        self._token: str | None = None

    def known_secrets(self) -> tuple[str, ...]:
        return (self._token,) if self._token else ()

    def token(self) -> str:
        with self._lock:
            if self._token is None:
                self._token = self.source.read().lstrip("?")
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None


AnyCredential = Credential | SharedKeyCredential | SasCredential


# -------------------------------------------------------------------------------- factory
def credential_from_config(
    config: CredentialConfig,
    where: str = "credential",
    *,
    http_client: requests.Session | None = None,
) -> AnyCredential:
    """The credential ``config`` describes; ConfigError naming ``where``'s keys when it cannot be."""
    refuse(config.problems(where))
    kind = config.kind
    if kind == "service_principal":
        return _service_principal(config, where, http_client)
    if kind == "managed_identity":
        return ManagedIdentityCredential(config.client_id, http_client=http_client)
    if kind == "workload_identity":
        return _workload_identity(config, where, http_client)
    if kind == "azure_cli":
        return AzureCliCredential(config.tenant_id)
    if kind == "unsecured_jwt":
        return UnsecuredJwtCredential(config.principal, config.token_lifetime)
    if kind == "shared_key":
        source = SecretSource(where, "account_key", config.account_key_env, config.account_key_file)
        _check_readable(source)
        credential = SharedKeyCredential(config.account_name, source)
        try:
            credential.key()
        except AuthError as exc:
            raise ConfigError(exc.message) from None
        return credential
    if kind == "sas":
        source = SecretSource(where, "sas_token", config.sas_token_env, config.sas_token_file)
        _check_readable(source)
        return SasCredential(source)
    raise ConfigError(f"{where}.kind: unknown credential kind {kind!r}")


def msal_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(p) for p in re.findall(r"\d+", version("msal"))[:2])


def _require_msal(floor: tuple[int, int], key: str) -> None:
    """Refuse at start-up an msal that would fail at the first token."""
    found = msal_version()
    if found < floor:
        raise ConfigError(
            f"{key}: needs msal >= {'.'.join(map(str, floor))} (installed: {'.'.join(map(str, found))}); "
            "reinstall kafkapipe to upgrade it"
        )


def _service_principal(
    config: CredentialConfig, where: str, http_client: requests.Session | None
) -> ServicePrincipalCredential:
    secret = optional_secret(where, "client_secret", config.client_secret_env, config.client_secret_file)
    certificate = None
    if secret is not None:
        _check_readable(secret)
    else:
        certificate = CertificateSource(where, config.certificate_file, config.certificate_thumbprint)
        if not certificate.thumbprint:
            _require_msal(MSAL_FOR_CERTIFICATES, f"{where}.certificate_file")
        try:
            certificate.load()
        except AuthError as exc:
            raise ConfigError(exc.message) from None
    return ServicePrincipalCredential(
        config.tenant_id,
        config.client_id,
        secret=secret,
        certificate=certificate,
        authority_host=config.authority_host,
        http_client=http_client,
    )


def is_token_credential(credential: object) -> bool:
    return getattr(credential, "kind", "") in _TOKEN_KINDS and callable(
        getattr(credential, "get_token", None)
    )
