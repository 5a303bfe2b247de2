"""HTTP statuses and client exceptions → categorised pipeline errors (docs/contract.md, "What each failure gets").

Kept apart from the client so the stages, the CLI and tests share one mapping.
Messages are short and never contain a URL: exception texts from urllib3 are
not reused, because some of them quote the request target with its query.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping

import urllib3.exceptions as u3

from kafkapipe.errors import PermanentError, PipelineError, TransientError
from kafkapipe.retry_after import parse_retry_after  # re-exported: callers of this module use it

SUCCESS_STATUSES = frozenset({200, 203})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
TRANSIENT_STATUSES = frozenset({408, 429})


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, item in headers.items():
        if key.lower() == lowered:
            return item
    return None


def classify_status(
    status: int, headers: Mapping[str, str] | None = None, *, now: float | None = None
) -> PipelineError | None:
    """None for a success status; otherwise the error that status stands for.

    404/410/400/403 and every other 4xx are permanent; 408, 429 and 5xx are
    transient and carry Retry-After; a 3xx that reaches here (no Location,
    or a kind that is not followed) is permanent.
    """
    if status in SUCCESS_STATUSES:
        return None
    if status in TRANSIENT_STATUSES or 500 <= status <= 599:
        retry_after = parse_retry_after(_header(headers, "Retry-After"), now)
        return TransientError(f"HTTP {status}", http_status=status, retry_after=retry_after)
    if status in REDIRECT_STATUSES:
        return PermanentError(f"HTTP {status} redirect without a Location header", http_status=status)
    if 300 <= status <= 399:
        return PermanentError(f"HTTP {status} not followed", http_status=status)
    if 400 <= status <= 499:
        return PermanentError(f"HTTP {status}", http_status=status)
    return PermanentError(f"unexpected HTTP status {status}", http_status=status)


def _is_cert_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, ssl.SSLCertVerificationError | ssl.CertificateError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(node):
            return True
        node = node.__cause__ or node.__context__
    return False


def classify_exception(exc: BaseException, *, where: str = "") -> PipelineError:
    """A categorised error for any failure of a request or of reading its body.

    Connect/read timeouts, refused or reset connections, truncated bodies and
    DNS failures are transient; a TLS certificate that does not verify is
    permanent (it will not fix itself between retries); a body that cannot
    be decoded is permanent; anything unknown is permanent, never swallowed.
    """
    if isinstance(exc, PipelineError):
        return exc
    at = f" ({where})" if where else ""
    if isinstance(exc, u3.MaxRetryError) and exc.reason is not None:
        return classify_exception(exc.reason, where=where)
    if isinstance(exc, u3.SSLError | ssl.SSLError):
        if _is_cert_failure(exc):
            return PermanentError(f"TLS certificate verification failed{at}")
        return TransientError(f"TLS handshake failed{at}")
    if isinstance(exc, u3.NameResolutionError | socket.gaierror):
        return TransientError(f"DNS resolution failed{at}")
    if isinstance(exc, u3.NewConnectionError):
        return TransientError(f"connection failed{at}: {_os_reason(exc)}")
    if isinstance(exc, u3.ConnectTimeoutError):
        return TransientError(f"connect timeout{at}")
    if isinstance(exc, u3.ReadTimeoutError | TimeoutError | socket.timeout):
        return TransientError(f"read timeout{at}")
    if isinstance(exc, u3.DecodeError):
        return PermanentError(f"body could not be decoded{at}")
    if isinstance(exc, u3.ProtocolError | ConnectionError | u3.IncompleteRead):
        return TransientError(f"connection broken{at}: {_os_reason(exc)}")
    if isinstance(exc, OSError | u3.HTTPError):
        return TransientError(f"network error{at}: {type(exc).__name__}")
    return PermanentError(f"unexpected error{at}: {type(exc).__name__}")


def _os_reason(exc: BaseException) -> str:
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, ConnectionRefusedError):
            return "connection refused"
        if isinstance(node, ConnectionResetError):
            return "connection reset"
        if isinstance(node, u3.IncompleteRead) or type(node).__name__ == "IncompleteRead":
            return "body ended early"
        if isinstance(node, TimeoutError | socket.timeout):
            return "timed out"
        for arg in getattr(node, "args", ()):
            if isinstance(arg, BaseException):
                node = arg
                break
        else:
            node = node.__cause__ or node.__context__
    return type(exc).__name__
