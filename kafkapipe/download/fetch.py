"""One attachment: validate → check expiry → connect → follow redirects → stream into storage.

The order matters: every hop (the first URL and each redirect target) is
validated statically, checked for presigned expiry, and resolved, and only
then is a connection opened — to the address that was validated. Nothing is
written to storage before the first bytes have passed the file-type check;
``max_bytes`` is enforced on ``Content-Length`` first and then while
streaming; the sha256 is computed on the fly; memory is a few chunks (plus
the first :data:`~kafkapipe.security.filetypes.SNIFF_BYTES` for the type
check): large bodies are written by a second thread at most
:data:`WRITE_BEHIND_DEPTH` chunks behind the socket.

The request asks for ``Accept-Encoding: identity``; a body encoded anyway is
refused unread (see :mod:`kafkapipe.download.http`), so a compression bomb
costs nothing.

``fetch`` never commits the writer: the caller commits after success, and the
writer's context manager aborts it when ``fetch`` raises, so a rejected
download leaves nothing in storage.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urljoin

import attrs
import urllib3
import urllib3.exceptions as u3

from kafkapipe.config import DownloadConfig
from kafkapipe.download.classify import REDIRECT_STATUSES, classify_exception, classify_status
from kafkapipe.download.http import Deadline, HttpClient
from kafkapipe.errors import PermanentError, TransientError, ValidationError
from kafkapipe.log import redact_url
from kafkapipe.security.filetypes import SNIFF_BYTES, canonical_extension, check_type
from kafkapipe.security.presigned import check_expiry
from kafkapipe.security.urls import ParsedUrl, Resolver, UrlValidator, ValidatedUrl
from kafkapipe.storage.base import BlobWriter

log = logging.getLogger(__name__)

_ERROR_BODY_DRAIN = 64 * 1024
WRITE_BEHIND_AFTER = 8 * 1024 * 1024  # bodies larger than this write from a second thread
WRITE_BEHIND_DEPTH = 3  # chunks queued for it at most: memory stays a few chunks


@attrs.frozen
class FetchOutcome:
    """What a successful fetch stored. ``final_url`` is redacted (no query: it may hold a signature)."""

    http_status: int
    bytes: int
    sha256: str
    content_type: str | None
    file_type: str | None
    final_url: str
    extension: str = ""  # the stored name's, from the detected type (kafkapipe.paths.stored_path)


class Fetcher:
    """Thread-safe: one instance serves the download stage's thread pool."""

    def __init__(
        self,
        config: DownloadConfig,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.time,
        *,
        pool_maxsize: int = 16,
    ) -> None:
        self._config = config
        self._validator = UrlValidator(config, resolver)
        self._clock = clock
        self._http = HttpClient(config, pool_maxsize=pool_maxsize)

    @property
    def validator(self) -> UrlValidator:
        return self._validator

    def fetch(self, url: str, writer: BlobWriter) -> FetchOutcome:
        """Download ``url`` into ``writer`` (not committed); raise a categorised PipelineError."""
        deadline = self._http.deadline(self._config.total_timeout)
        try:
            response, parsed = self._open(url, deadline)
            return self._stream(response, parsed, url, writer, deadline)
        finally:
            deadline.close()

    def close(self) -> None:
        self._http.close()

    # --- connecting and redirects ---

    def _check_hop(self, url: str) -> ValidatedUrl:
        parsed = self._validator.check_static(url)
        check_expiry(url, now=self._clock(), skew=self._config.clock_skew)
        return self._validator.resolve(parsed)

    def _open(self, url: str, deadline: Deadline) -> tuple[urllib3.BaseHTTPResponse, ParsedUrl]:
        current = url
        for hop in range(self._config.max_redirects + 1):
            target = self._check_hop(current)
            response = self._request(target, deadline)
            status = response.status
            if status not in REDIRECT_STATUSES:
                error = classify_status(status, response.headers, now=self._clock())
                if error is not None:
                    _discard(response)
                    raise error
                return response, target.parsed
            location = response.headers.get("Location")
            _discard(response)
            if not location:
                raise PermanentError(f"HTTP {status} redirect without a Location header", http_status=status)
            if hop == self._config.max_redirects:
                raise PermanentError(
                    f"too many redirects (max_redirects={self._config.max_redirects})", http_status=status
                )
            current = urljoin(target.parsed.url, _header_text(location).strip())
            log.debug("HTTP %s redirect to %s", status, redact_url(current))
        raise AssertionError("unreachable")

    def _request(self, target: ValidatedUrl, deadline: Deadline) -> urllib3.BaseHTTPResponse:
        where = target.parsed.host
        last: BaseException | None = None
        for address in target.addresses:
            if deadline.expired:
                break
            try:
                return self._http.open(target.parsed, address, deadline)
            except (u3.NewConnectionError, u3.ConnectTimeoutError) as exc:
                last = exc  # try the next validated address
            except (u3.HTTPError, OSError) as exc:
                raise self._failure(exc, deadline, where) from None
        if deadline.expired:
            raise _too_slow(deadline)
        raise classify_exception(last or TimeoutError(), where=where) from None

    def _failure(self, exc: BaseException, deadline: Deadline, where: str) -> Exception:
        return _too_slow(deadline) if deadline.expired else classify_exception(exc, where=where)

    # --- streaming ---

    def _stream(
        self,
        response: urllib3.BaseHTTPResponse,
        parsed: ParsedUrl,
        original_url: str,
        writer: BlobWriter,
        deadline: Deadline,
    ) -> FetchOutcome:
        cfg = self._config
        status = response.status
        content_type = response.headers.get("Content-Type")
        declared = _content_length(response)
        if declared is not None and declared > cfg.max_bytes:
            _discard(response, drain=False)
            raise ValidationError(f"Content-Length {declared} exceeds max_bytes {cfg.max_bytes}", http_status=status)
        sink = _Sink(
            writer,
            cfg.max_bytes,
            lambda head: self._type(head, parsed, original_url, content_type, status),
            status,
        )
        ok = False
        try:
            for chunk in self._chunks(response, deadline, parsed.host):
                sink.feed(chunk)
            if deadline.expired:
                raise _too_slow(deadline)
            file_type = sink.finish()
            ok = True
        finally:
            if ok:
                response.release_conn()
            else:
                sink.cancel()
                _discard(response, drain=False)
        return FetchOutcome(
            http_status=status,
            bytes=sink.total,
            sha256=sink.hasher.hexdigest(),
            content_type=content_type,
            file_type=file_type,
            final_url=parsed.redacted,
            extension=sink.extension,
        )

    def _chunks(self, response: urllib3.BaseHTTPResponse, deadline: Deadline, where: str) -> Iterator[bytes]:
        stream = response.stream(self._config.chunk_size)
        while True:
            try:
                chunk = next(stream)
            except StopIteration:
                return
            except (u3.HTTPError, OSError) as exc:
                raise self._failure(exc, deadline, where) from None
            if deadline.expired:
                raise _too_slow(deadline)
            if chunk:
                yield chunk

    def _type(self, head: bytes, parsed: ParsedUrl, original_url: str, content_type: str | None, status: int) -> str:
        others = []
        if original_url != parsed.url:
            try:
                others.append(self._validator.check_static(original_url).path)
            except ValidationError:
                pass
        try:
            return check_type(head, parsed.path, content_type, self._config.allowed_file_types, also_paths=others)
        except ValidationError as exc:
            raise ValidationError(exc.message, http_status=status) from None


class _WriteBehind:
    """Writes chunks to a BlobWriter from a second thread, at most :data:`WRITE_BEHIND_DEPTH` behind.

    Reading the socket and hashing (one core) then overlap with storage
    writes (another): on a large body this nearly doubles throughput. The
    writer is only ever used by one thread at a time — this one between
    ``start`` and ``finish``/``cancel`` — and both of those join the thread,
    so the caller's ``commit``/``abort`` never race a write. A storage error
    is raised in the download thread at its next ``write`` or at ``finish``.
    """

    _STOP = object()

    def __init__(self, writer: BlobWriter) -> None:
        self._writer = writer
        self._queue: queue.Queue[object] = queue.Queue(maxsize=WRITE_BEHIND_DEPTH)
        self._error: BaseException | None = None
        self._cancelled = False
        context = contextvars.copy_context()  # keep the task's log context in storage code
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name="kafkapipe-write-behind", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._STOP:
                return
            if self._error is None and not self._cancelled:
                try:
                    self._writer.write(item)  # type: ignore[arg-type]
                except BaseException as exc:  # handed to the download thread, raised there
                    self._error = exc

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)

    def finish(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        self._cancelled = True
        self._queue.put(self._STOP)
        self._thread.join()


class _Sink:
    """Size limit, sha256 and the type check in front of a writer; holds back only the sniffed head.

    Past :data:`WRITE_BEHIND_AFTER` bytes the writes move to a
    :class:`_WriteBehind` thread; small files never start one.
    """

    def __init__(self, writer: BlobWriter, max_bytes: int, judge: Callable[[bytes], str], status: int) -> None:
        self.writer = writer
        self.max_bytes = max_bytes
        self.judge = judge
        self.status = status
        self.hasher = hashlib.sha256()
        self.total = 0
        self.file_type: str | None = None
        self.extension = ""
        self._head = bytearray()
        self._behind: _WriteBehind | None = None

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.max_bytes:
            raise ValidationError(f"body exceeds max_bytes {self.max_bytes}", http_status=self.status)
        self.hasher.update(chunk)
        if self.file_type is not None:
            self._write(chunk)
        elif not self._head and len(chunk) >= SNIFF_BYTES:
            self._decide(bytes(chunk[:SNIFF_BYTES]))
            self._write(chunk)
        else:
            self._head += chunk
            if len(self._head) >= SNIFF_BYTES:
                self._decide(bytes(self._head[:SNIFF_BYTES]))
                self._write(bytes(self._head))
                self._head = bytearray()

    def _decide(self, head: bytes) -> None:
        """The type, and so the stored name's extension, before the first byte reaches storage."""
        file_type = self.judge(head)
        try:
            self.extension = canonical_extension(file_type)
        except ValidationError as exc:
            raise ValidationError(exc.message, http_status=self.status) from None
        self.writer.use_extension(self.extension)
        self.file_type = file_type

    def _write(self, chunk: bytes) -> None:
        if self._behind is None and self.total > WRITE_BEHIND_AFTER:
            self._behind = _WriteBehind(self.writer)
        if self._behind is not None:
            self._behind.write(chunk)
        else:
            self.writer.write(chunk)

    def finish(self) -> str:
        if self.file_type is None:
            self._decide(bytes(self._head))
            if self._head:
                self._write(bytes(self._head))
            self._head = bytearray()
        if self._behind is not None:
            behind, self._behind = self._behind, None
            behind.finish()
        assert self.file_type is not None  # _decide sets it or raises
        return self.file_type

    def cancel(self) -> None:
        if self._behind is not None:
            behind, self._behind = self._behind, None
            behind.cancel()


def _header_text(value: str) -> str:
    """http.client decodes header bytes as latin-1; a Location sent as UTF-8 is read back as UTF-8."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def _too_slow(deadline: Deadline) -> TransientError:
    return TransientError(f"download too slow: not finished within total_timeout {deadline.seconds:g}s")


def _content_length(response: urllib3.BaseHTTPResponse) -> int | None:
    values = response.headers.getlist("Content-Length") if hasattr(response.headers, "getlist") else []
    numbers = set()
    for value in values:
        for part in value.split(","):
            text = part.strip()
            if not (text.isascii() and text.isdigit()):
                return None
            numbers.add(int(text))
    return numbers.pop() if len(numbers) == 1 else None


def _discard(response: urllib3.BaseHTTPResponse, *, drain: bool = True) -> None:
    """Free the connection: drain a small body for reuse, else close it."""
    try:
        length = _content_length(response)
        if drain and length is not None and length <= _ERROR_BODY_DRAIN:
            response.read(_ERROR_BODY_DRAIN + 1)
            response.release_conn()
            return
    except (u3.HTTPError, OSError):
        pass
    response.close()
    response.release_conn()
