"""Azure Blob Storage and OneLake over the Blob REST API, with requests.

A writer uploads each block as it fills (Put Block, with a Content-MD5 the service verifies)
and publishes the blob with one Put Block List on commit. Until then nothing is visible under
the blob's name; uncommitted blocks of a writer that died are discarded by the service (after
about a week), so abort has nothing to delete. Writing the same path twice replaces the blob
with the same bytes: one blob, as the contract requires.

Each writer uses its own random block-id nonce, so two workers racing on the same task never
mix blocks; all ids of one blob have the same length, as the service requires.

OneLake speaks the same API: ``account_url = "https://onelake.blob.fabric.microsoft.com"``,
``container = "<workspace>"``, ``prefix = "<item>.Lakehouse/Files/<folder>"``, with a bearer
token for ``https://storage.azure.com/.default``.

Errors are classified from ``x-ms-error-code``; messages carry the operation, the blob URL
without its query string, the HTTP status and the error code, never a response body (Azure's
authentication errors echo the signature) nor a requests message (it repeats the URL with its
SAS).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import logging
import os
import random
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import requests
from requests.adapters import HTTPAdapter

from kafkapipe.auth.cache import TokenCache
from kafkapipe.auth.credentials import (
    STORAGE_SCOPE,
    SasCredential,
    SharedKeyCredential,
    credential_from_config,
    is_token_credential,
)
from kafkapipe.backoff import backoff
from kafkapipe.config import MAX_BLOCK_SIZE, MAX_BLOCKS, AzureBlobConfig
from kafkapipe.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    PipelineError,
    StorageUnavailableError,
    TransientError,
    refuse,
)
from kafkapipe.log import redact_url
from kafkapipe.paths import check_relative, stored_path
from kafkapipe.retry_after import parse_retry_after
from kafkapipe.storage.base import BlobWriter, Storage, StoredBlob

logger = logging.getLogger(__name__)

WHERE = "storage.azure"
DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024
# Our storage cannot take the write now: the task is fine, so the stage holds (never dead-letters).
UNAVAILABLE_CODES = frozenset({"InternalError", "OperationTimedOut", "ServerBusy", "ContainerNotFound",
                               "ContainerBeingDeleted", "ContainerDisabled", "AccountBeingCreated"})
# The service saw a corrupted upload: this attempt failed, another one will do.
TRANSIENT_CODES = frozenset({"Md5Mismatch", "InvalidBlockList"})
# Limits and features of the account, explained so an operator knows what to change.
EXPLAINED_CODES = {
    "BlockCountExceedsLimit": "the blob would need more than 50,000 blocks: raise storage.azure.block_size "
    "or lower download.max_bytes",
    "BlobOperationNotSupported": "the account does not support this blob operation (e.g. a hierarchical "
    "namespace or premium account feature is missing)",
}
AUTH_CODES = frozenset(
    {
        "AuthenticationFailed",
        "InvalidAuthenticationInfo",
        "NoAuthenticationInformation",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
        "AuthorizationProtocolMismatch",
        "AuthorizationResourceTypeMismatch",
        "AuthorizationServiceMismatch",
        "AuthorizationSourceIPMismatch",
        "InsufficientAccountPermissions",
        "AccountIsDisabled",
    }
)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_WAIT = 30.0  # longest pause between two tries of one request; beyond it the stage holds
META_SHA256 = "x-ms-meta-sha256"
# Headers in the Shared Key string-to-sign, in order, after the verb.
_SIGNED_HEADERS = (
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-MD5",
    "Content-Type",
    "Date",
    "If-Modified-Since",
    "If-Match",
    "If-None-Match",
    "If-Unmodified-Since",
    "Range",
)


# ------------------------------------------------------------------------------ errors
def classify(
    status: int,
    code: str,
    operation: str,
    where: str,
    retry_after: float | None = None,
    request_id: str = "",
) -> PipelineError:
    """The categorised error for an Azure reply (by its x-ms-error-code, as the Blob service documents it).

    The message ends with the service's request id, which Azure support asks for.
    """
    message = f"azure blob {operation} {where}: HTTP {status}" + (f" {code}" if code else "")
    if request_id:
        message += f" (request id {request_id})"
    error = _classify(status, code, message, retry_after)
    error.error_code = code  # type: ignore[attr-defined]
    return error


def _classify(status: int, code: str, message: str, retry_after: float | None) -> PipelineError:
    if status in (401, 403) or code in AUTH_CODES:
        return AuthError(message, http_status=status)
    if code in TRANSIENT_CODES:
        return TransientError(message, http_status=status, retry_after=retry_after)
    if code in UNAVAILABLE_CODES or status in TRANSIENT_STATUS or status >= 500:
        return StorageUnavailableError(message, http_status=status, retry_after=retry_after)
    if code in EXPLAINED_CODES:
        return PermanentError(f"{message}: {EXPLAINED_CODES[code]}", http_status=status)
    return PermanentError(message, http_status=status)


def _retry_after(response: requests.Response) -> float | None:
    """``x-ms-retry-after-ms`` (the storage service's own, finer) or else ``Retry-After``."""
    millis = response.headers.get("x-ms-retry-after-ms", "").strip()
    if millis.isascii() and millis.isdigit() and len(millis) <= 12:
        return int(millis) / 1000.0
    return parse_retry_after(response.headers.get("Retry-After"))


# ------------------------------------------------------------------------- Shared Key
def string_to_sign(account: str, method: str, url: str, headers: Mapping[str, str]) -> str:
    """The Blob service's Shared Key string-to-sign (x-ms-version 2015-02-21 and later).

    The canonical resource is ``/<account><URL path>``; against Azurite's path-style URLs the
    path already starts with the account, so the account appears twice, as Azurite expects.
    """
    lowered = {k.lower(): str(v) for k, v in headers.items()}
    parts = [method.upper()]
    for name in _SIGNED_HEADERS:
        value = lowered.get(name.lower(), "")
        if name == "Content-Length" and value == "0":
            value = ""
        parts.append(value)
    canonical_headers = [
        f"{name}:{' '.join(value.split())}" for name, value in sorted(lowered.items()) if name.startswith("x-ms-")
    ]
    split = urlsplit(url)
    resource = f"/{account}{split.path or '/'}"
    params: dict[str, list[str]] = {}
    for name, value in parse_qsl(split.query, keep_blank_values=True):
        params.setdefault(name.lower(), []).append(value)
    for name in sorted(params):
        resource += f"\n{name}:{','.join(sorted(params[name]))}"
    return "\n".join(parts) + "\n" + "".join(h + "\n" for h in canonical_headers) + resource


def shared_key_signature(key: bytes, text: str) -> str:
    return base64.b64encode(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()).decode("ascii")


# ------------------------------------------------------------------------------- auth
class _Auth:
    kind = "none"

    def apply(self, request: requests.PreparedRequest) -> None:
        raise NotImplementedError

    def invalidate(self) -> None:
        """The service refused the credentials: re-read / re-fetch them next time."""


class _SharedKeyAuth(_Auth):
    kind = "shared_key"

    def __init__(self, credential: SharedKeyCredential, account: str) -> None:
        self.credential = credential
        self.account = account

    def apply(self, request: requests.PreparedRequest) -> None:
        headers = cast(Mapping[str, str], request.headers)  # every value set here is a str
        text = string_to_sign(self.account, request.method or "GET", request.url or "", headers)
        signature = shared_key_signature(self.credential.key(), text)
        request.headers["Authorization"] = f"SharedKey {self.account}:{signature}"

    def invalidate(self) -> None:
        self.credential.invalidate()


class _SasAuth(_Auth):
    kind = "sas"

    def __init__(self, credential: SasCredential) -> None:
        self.credential = credential

    def apply(self, request: requests.PreparedRequest) -> None:
        separator = "&" if urlsplit(request.url or "").query else "?"
        request.url = f"{request.url}{separator}{self.credential.token()}"

    def invalidate(self) -> None:
        self.credential.invalidate()


class _BearerAuth(_Auth):
    kind = "bearer"

    def __init__(self, cache: TokenCache) -> None:
        self.cache = cache

    def apply(self, request: requests.PreparedRequest) -> None:
        request.headers["Authorization"] = f"Bearer {self.cache.get().token}"

    def invalidate(self) -> None:
        self.cache.invalidate()


# ------------------------------------------------------------------------------ storage
class AzureBlobStorage(Storage):
    def __init__(
        self,
        account_url: str,
        container: str,
        *,
        auth: _Auth,
        prefix: str = "",
        api_version: str = "2023-11-03",
        block_size: int = DEFAULT_BLOCK_SIZE,
        timeout: tuple[float, float] = (5.0, 60.0),
        max_attempts: int = 3,
        retry_backoff: float = 0.5,
    ) -> None:
        self.account_url = account_url.rstrip("/")
        self.container = container
        self.prefix = "/".join(p for p in prefix.split("/") if p)
        self.api_version = api_version
        self.block_size = max(1, min(block_size, MAX_BLOCK_SIZE))
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.retry_backoff = retry_backoff
        self._auth = auth
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: AzureBlobConfig, **kwargs: Any) -> AzureBlobStorage:
        refuse(config.problems(WHERE))
        return cls(
            config.account_url,
            config.container,
            auth=_auth_from_config(config),
            prefix=config.prefix,
            api_version=config.api_version,
            block_size=config.block_size,
            **kwargs,
        )

    # ------------------------------------------------------------------------ plumbing
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def blob_url(self, blob_path: str) -> str:
        """The blob's URL; ValidationError for a path with ``.``/``..``/empty segments (see paths.check_relative).

        Checked here, before any URL exists: an HTTP client collapses ``..`` and the request
        would land in another container.
        """
        return f"{self.account_url}/{quote(self.container, safe='')}/{quote(self.blob_name(blob_path), safe='/')}"

    def blob_name(self, blob_path: str) -> str:
        check_relative(blob_path)
        return f"{self.prefix}/{blob_path}" if self.prefix else blob_path

    def container_url(self) -> str:
        return f"{self.account_url}/{quote(self.container, safe='')}"

    def request(
        self,
        method: str,
        url: str,
        operation: str,
        *,
        query: str = "",
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        ok: tuple[int, ...] = (200, 201),
        stream: bool = False,
    ) -> requests.Response:
        """One REST call, retried on transient failures; raises a categorised PipelineError."""
        where = redact_url(url)
        for attempt in range(1, self.max_attempts + 1):
            error = self._attempt(method, url, operation, where, query, headers, data, ok, stream)
            if isinstance(error, requests.Response):
                return error
            if isinstance(error, AuthError) and error.http_status is not None:
                self._auth.invalidate()  # the service refused it; a credential failure keeps its backoff
            if not isinstance(error, TransientError | StorageUnavailableError) or attempt == self.max_attempts:
                raise error
            delay = backoff(attempt, self.retry_backoff, MAX_RETRY_WAIT, jitter=random.random)
            if error.retry_after is not None:
                delay = max(delay, min(error.retry_after, MAX_RETRY_WAIT))
            logger.info(
                "azure blob request failed; retrying",
                extra={"operation": operation, "url": where, "attempt": attempt, "error": error.message},
            )
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _attempt(
        self,
        method: str,
        url: str,
        operation: str,
        where: str,
        query: str,
        headers: Mapping[str, str] | None,
        data: bytes | None,
        ok: tuple[int, ...],
        stream: bool,
    ) -> requests.Response | PipelineError:
        session = self._session()
        full = f"{url}?{query}" if query else url
        all_headers = {
            "x-ms-version": self.api_version,
            "x-ms-date": email.utils.formatdate(usegmt=True),
            **(headers or {}),
        }
        try:
            prepared = session.prepare_request(requests.Request(method, full, headers=all_headers, data=data))
            self._auth.apply(prepared)
            # What Session.request would add: HTTPS_PROXY/NO_PROXY, REQUESTS_CA_BUNDLE.
            settings = session.merge_environment_settings(prepared.url or full, {}, stream, None, None)
            response = session.send(prepared, timeout=self.timeout, allow_redirects=False, **settings)
        except PipelineError as exc:  # the credential failed (already secret-free)
            return exc
        except (requests.ConnectionError, requests.Timeout) as exc:  # our storage is unreachable
            return StorageUnavailableError(f"azure blob {operation} {where}: {type(exc).__name__}")
        except requests.RequestException as exc:
            return PermanentError(f"azure blob {operation} {where}: {type(exc).__name__}")
        if response.status_code in ok:
            return response
        code = response.headers.get("x-ms-error-code", "")
        request_id = response.headers.get("x-ms-request-id", "")[:64]
        response.close()
        return classify(response.status_code, code, operation, where, _retry_after(response), request_id)

    # ---------------------------------------------------------------------- interface
    def open_writer(self, blob_path: str) -> AzureBlobWriter:
        return AzureBlobWriter(self, blob_path)

    def exists(self, blob_path: str) -> bool:
        try:
            self.request("HEAD", self.blob_url(blob_path), "Get Blob Properties", ok=(200,))
        except PermanentError as exc:
            if exc.http_status == 404:
                return False
            raise
        return True

    def stat(self, blob_path: str) -> StoredBlob | None:
        """A committed blob is complete (Put Block List is atomic); only ours carry their sha256.

        A blob without the sha256 metadata was not written by this pipeline and is written again.
        """
        try:
            response = self.request("HEAD", self.blob_url(blob_path), "Get Blob Properties", ok=(200,))
        except PermanentError as exc:
            if exc.http_status == 404:
                return None
            raise
        response.close()
        sha256 = response.headers.get(META_SHA256, "")
        length = response.headers.get("Content-Length", "")
        if len(sha256) != 64 or not length.isdigit():
            return None
        return StoredBlob(bytes=int(length), sha256=sha256.lower())

    def find(self, blob_paths: Sequence[str]) -> StoredBlob | None:
        """One List Blobs call for every name a task may be stored under (they share a prefix).

        A HEAD per candidate would cost a round trip per allowed file type before each download.
        """
        names = {self.blob_name(path): path for path in blob_paths}
        prefix = os.path.commonprefix(list(names))  # noqa: RUF071 - a name prefix, by character
        if len(names) < 3 or "/" not in prefix:  # one or two: as cheap to ask for each
            return super().find(blob_paths)
        query = f"restype=container&comp=list&include=metadata&maxresults=100&prefix={quote(prefix, safe='')}"
        response = self.request("GET", self.container_url(), "List Blobs", query=query, ok=(200,))
        listed = _listed(response.content)
        for name, path in names.items():
            length, sha256 = listed.get(name, ("", ""))
            if len(sha256) == 64 and length.isdigit():
                return StoredBlob(bytes=int(length), sha256=sha256.lower(), path=path)
        return None

    def describe(self, blob_path: str) -> str:
        return redact_url(self.blob_url(blob_path))

    def create_container(self) -> bool:
        """Create the container (Azure Blob / Azurite; OneLake workspaces exist already).

        Returns False when it already existed.
        """
        try:
            self.request("PUT", self.container_url(), "Create Container", query="restype=container", ok=(201,))
        except PermanentError as exc:
            if exc.http_status == 409:
                return False
            raise
        return True

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


def _auth_from_config(config: AzureBlobConfig) -> _Auth:
    where = f"{WHERE}.credential"
    refuse(config.credential.problems(where, "storage"))
    credential = credential_from_config(config.credential, where)
    if isinstance(credential, SharedKeyCredential):
        return _SharedKeyAuth(credential, config.shared_key_account)
    if isinstance(credential, SasCredential):
        return _SasAuth(credential)
    if credential.kind == "unsecured_jwt" or not is_token_credential(credential):
        raise ConfigError(f"{where}.kind: {credential.kind} cannot authenticate to Azure storage")
    cache = TokenCache(credential, STORAGE_SCOPE, refresh_margin=config.credential.refresh_margin)
    return _BearerAuth(cache)


# ------------------------------------------------------------------------------- writer
class AzureBlobWriter(BlobWriter):
    """Put Block as blocks fill, Put Block List on commit.

    ``write`` receives the downloader's chunks; they are gathered to ``block_size`` (4 MiB by
    default) so a 2 GiB body is 512 blocks, far below the 50,000 limit, and memory per writer
    stays at one block plus one chunk.
    """

    def __init__(self, storage: AzureBlobStorage, blob_path: str) -> None:
        self._storage = storage
        self._blob_path = blob_path
        self._url = storage.blob_url(blob_path)
        self._nonce = secrets.token_hex(16)
        self._ids: list[str] = []
        self._buffer = bytearray()
        self._sha256 = hashlib.sha256()  # of what is stored, kept as metadata for Storage.stat
        self._state = "open"  # open → committed | aborted | failed

    def use_extension(self, extension: str) -> None:
        if self._ids or self._buffer or self._state != "open":
            raise PermanentError(f"azure blob writer for {redact_url(self._url)}: named after the first write")
        self._url = self._storage.blob_url(stored_path(self._blob_path, extension))

    def block_id(self, index: int) -> str:
        # 32 hex + "-" + 15 digits = 48 bytes → 64 base64 characters, no padding, every id.
        return base64.b64encode(f"{self._nonce}-{index:015d}".encode("ascii")).decode("ascii")

    def write(self, chunk: bytes) -> None:
        if self._state != "open":
            raise PermanentError(f"azure blob writer for {redact_url(self._url)} is {self._state}")
        if not chunk:
            return
        self._sha256.update(chunk)
        if not self._buffer and len(chunk) >= self._storage.block_size:
            self._put_block(bytes(chunk))
            return
        self._buffer += chunk
        if len(self._buffer) >= self._storage.block_size:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            self._put_block(data)

    def _put_block(self, data: bytes) -> None:
        if len(self._ids) >= MAX_BLOCKS:
            self._state = "failed"
            raise PermanentError(f"azure blob {redact_url(self._url)}: more than {MAX_BLOCKS} blocks")
        block_id = self.block_id(len(self._ids))
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")
        try:
            response = self._storage.request(
                "PUT",
                self._url,
                "Put Block",
                query=f"comp=block&blockid={quote(block_id, safe='')}",
                headers={"Content-MD5": md5},
                data=data,
                ok=(201,),
            )
        except PipelineError:
            self._state = "failed"
            raise
        response.close()
        self._ids.append(block_id)

    def commit(self) -> None:
        if self._state == "committed":
            return
        if self._state != "open":
            raise PermanentError(f"azure blob writer for {redact_url(self._url)} is {self._state}; not committed")
        self._flush()
        body = (
            '<?xml version="1.0" encoding="utf-8"?><BlockList>'
            + "".join(f"<Latest>{escape(i)}</Latest>" for i in self._ids)
            + "</BlockList>"
        ).encode("utf-8")
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")
        try:
            response = self._storage.request(
                "PUT",
                self._url,
                "Put Block List",
                query="comp=blocklist",
                headers={
                    "Content-MD5": md5,
                    "Content-Type": "application/xml; charset=utf-8",
                    "x-ms-blob-content-type": "application/octet-stream",
                    META_SHA256: self._sha256.hexdigest(),
                },
                data=body,
                ok=(201,),
            )
        except TransientError as exc:
            self._state = "failed"
            if getattr(exc, "error_code", "") == "InvalidBlockList":
                # Another writer of the same blob committed first and the service discarded our
                # uncommitted blocks: the task is fine, a later attempt rewrites it.
                raise TransientError(
                    exc.message + " (blocks discarded by a concurrent commit)", http_status=exc.http_status
                ) from None
            raise
        except PipelineError:
            self._state = "failed"
            raise
        response.close()
        self._state = "committed"

    def abort(self) -> None:
        # Uncommitted blocks cost nothing and expire on their own; deleting could race a
        # concurrent writer of the same task. Only make sure nothing gets committed.
        if self._state == "open":
            self._state = "aborted"
        self._buffer = bytearray()


def _listed(body: bytes) -> dict[str, tuple[str, str]]:
    """Name → (Content-Length, sha256 metadata) of the blobs in a List Blobs reply."""
    found: dict[str, tuple[str, str]] = {}
    for blob in ElementTree.fromstring(body).iter("Blob"):
        name = blob.findtext("Name") or ""
        length = blob.findtext("Properties/Content-Length") or ""
        found[name] = (length, blob.findtext("Metadata/sha256") or "")
    return found
