"""Logging: one JSON object per line, with the pipeline's context attached.

Every line carries ``pid`` and ``stage`` (``bind(stage=...)`` once per process;
the supervisor binds ``supervisor``). Per-message context (trace_id, task_id,
topic, partition, offset) lives in a :class:`contextvars.ContextVar`, so
thread-pool downloads log their own task.

Nothing here ever prints a query string: presigned URLs carry credentials.
Callers pass URLs through :func:`redact_url`; :class:`ScrubFilter` is the last
line of defence for anything that slips through (a URL inside an exception
message, a header dumped by a library).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import attrs

from kafkapipe.printable import json_text, printable

_CONTEXT: contextvars.ContextVar[dict[str, object]] = contextvars.ContextVar(
    "kafkapipe_log", default={}  # noqa: B039 - never mutated: context() and bind() build new dicts
)
# Fields for every line of this process, whatever the thread: the stage a worker runs.
# Threads do not inherit context variables, so these cannot live in _CONTEXT.
_PROCESS: dict[str, object] = {"stage": "-"}
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

REDACTED = "<redacted>"

# Parameter names whose values are credentials wherever they appear (query strings,
# connection strings, form bodies, JSON). Matched case-insensitively.
SECRET_PARAMS = (
    "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
    "x-goog-credential", "awsaccesskeyid", "accountkey", "sharedaccesskey", "sharedaccesssignature",
    "client_secret", "clientsecret", "client_assertion", "password", "passwd", "access_token", "refresh_token",
    "id_token", "token", "sas_token", "apikey", "api_key", "api-key", "x-api-key", "subscription-key",
    "subscription_key", "x-functions-key", "access_key", "secret", "secret_key", "session_token",
    "security_token", "private_key",
)
# Names that are credentials only as URL parameters (``?code=`` of Azure Functions, ``?key=`` of
# Google APIs): in prose, "error code=503" must survive.
QUERY_ONLY_PARAMS = ("code", "key")
# Header names whose whole value is a credential.
SECRET_HEADERS = (
    "authorization", "proxy-authorization", "x-api-key", "api-key", "apikey", "x-functions-key",
    "ocp-apim-subscription-key", "x-amz-security-token", "x-goog-api-key", "x-ms-encryption-key", "cookie",
    "set-cookie",
)

_EQ = r"(?:=|%3[dD]|%253[dD])"  # name=value, also URL-encoded once or twice
_VALUE = r"(?:(?!%26|%2526|<redacted>)[^&\s\"'<>;,])+"
_QUERY_SEP = r"(?:[?&]|%3[fF]|%26|%253[fF]|%2526)"
# Where a parameter name starts: not inside a longer name, or right after an encoded ? or &.
_START = r"(?:(?<![a-z0-9_-])|(?<=%3f)|(?<=%26)|(?<=%253f)|(?<=%2526))"


def _names(names: tuple[str, ...]) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


@attrs.frozen
class ScrubRule:
    """One form a credential takes in text, and what replaces it."""

    form: str
    pattern: re.Pattern[str]
    replacement: str
    # Literals every match contains: in ASCII text holding none of them (compared lower-cased
    # when the pattern ignores case) the rule cannot match and is skipped.
    needs: tuple[str, ...] = ()
    # More literals every match contains, one of each group (``=`` or the ``%`` of its URL
    # encoding): checked first, they spare most lines the search for every parameter name.
    requires: tuple[tuple[str, ...], ...] = ()
    # The pattern's re.IGNORECASE, read once: testing the flag makes an enum per test.
    ignore_case: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        if self.pattern.flags & re.IGNORECASE:
            object.__setattr__(self, "ignore_case", True)
            object.__setattr__(self, "needs", tuple(n.lower() for n in self.needs))
            object.__setattr__(self, "requires", tuple(tuple(n.lower() for n in g) for g in self.requires))

    def may_match(self, text: str, lowered: str) -> bool:
        haystack = lowered if self.ignore_case else text
        for group in self.requires:
            if not any(map(haystack.__contains__, group)):
                return False
        return not self.needs or any(map(haystack.__contains__, self.needs))


SCRUB_RULES: tuple[ScrubRule, ...] = (
    ScrubRule("userinfo in a URL", re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@\"'<>]+@"), rf"\1{REDACTED}@",
              needs=("@",), requires=(("://",),)),
    ScrubRule(
        "the query string of any URL",
        re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^\s?#\"'<>]*)\?(?!<redacted>)[^\s#\"'<>]+"),
        rf"\1?{REDACTED}",
        needs=("?",),
        requires=(("://",),),
    ),
    ScrubRule(
        "name=value anywhere, plain or URL-encoded",
        re.compile(rf"(?i){_START}({_names(SECRET_PARAMS)})({_EQ}){_VALUE}"),
        rf"\1\2{REDACTED}",
        needs=SECRET_PARAMS,
        requires=(("=", "%"),),
    ),
    ScrubRule(
        "name=\"value\" (a JAAS config, an attribute)",
        re.compile(rf"(?i)(?<![a-z0-9_-])({_names(SECRET_PARAMS)})\s*=\s*([\"'])(?!<redacted>)[^\"']*([\"'])"),
        rf"\1=\2{REDACTED}\3",
        needs=SECRET_PARAMS,
        requires=(("=",), ("\"", "'")),
    ),
    ScrubRule(
        "URL-only parameters after ? or &",
        re.compile(rf"(?i)({_QUERY_SEP})({_names(QUERY_ONLY_PARAMS)})({_EQ}){_VALUE}"),
        rf"\1\2\3{REDACTED}",
        needs=QUERY_ONLY_PARAMS,
        requires=(("=", "%"),),
    ),
    ScrubRule(
        "quoted key and value (JSON, a dict's repr)",
        re.compile(
            rf"(?i)([\"']({_names(SECRET_PARAMS + SECRET_HEADERS)})[\"']\s*:\s*[\"'])(?!<redacted>)[^\"']*([\"'])"
        ),
        rf"\1{REDACTED}\3",
        needs=SECRET_PARAMS + SECRET_HEADERS,
        requires=((":",), ("\"", "'")),
    ),
    ScrubRule(
        "header line",
        re.compile(rf"(?im)(?<![a-z0-9_-])({_names(SECRET_HEADERS)})([ \t]*:[ \t]*+)(?!<redacted>)[^\r\n\"']+"),
        rf"\1\2{REDACTED}",
        needs=SECRET_HEADERS,
        requires=((":",),),
    ),
    ScrubRule(
        "Authorization scheme",
        re.compile(r"(?i)\b(bearer|basic|sharedkey)\s+(?!<redacted>)[A-Za-z0-9\-._~+/:]+=*"),
        rf"\1 {REDACTED}",
        needs=("bearer", "basic", "sharedkey"),
    ),
    ScrubRule("a JWT", re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED,
              needs=("eyJ",)),
)


def _triggers(rules: tuple[ScrubRule, ...]) -> tuple[str, ...] | None:
    """Lower-cased literals, one of which every match of every rule contains (None: some rule has none).

    Each rule's first check gives its literals; one that holds another (``://`` holds ``:``)
    adds nothing. ASCII text, lower-cased, holding none of them is matched by no rule.
    """
    literals: set[str] = set()
    for rule in rules:
        first = rule.requires[0] if rule.requires else rule.needs
        if not first:
            return None
        literals.update(literal.lower() for literal in first)
    kept = [lit for lit in literals if not any(other != lit and other in lit for other in literals)]
    return tuple(sorted(kept, key=lambda lit: (len(lit), lit)))


_TRIGGERS = _triggers(SCRUB_RULES)


def scrub(text: str) -> str:
    """Remove credentials and query strings from free text (every :data:`SCRUB_RULES` form). Idempotent.

    In ASCII text each rule runs only where its literals are (:attr:`ScrubRule.needs`), so most
    lines skip most rules, and text without a literal of any rule is returned at once; test_log
    holds the result equal to :func:`scrub_all`'s.
    """
    if not text.isascii():  # re's case-insensitive matching folds some non-ASCII letters onto ASCII
        return scrub_all(text)
    lowered = text.lower()
    if _TRIGGERS is not None and not any(map(lowered.__contains__, _TRIGGERS)):
        return text
    for rule in SCRUB_RULES:
        if rule.may_match(text, lowered):
            changed = rule.pattern.sub(rule.replacement, text)
            if changed != text:
                text, lowered = changed, changed.lower()
    return text


def scrub_all(text: str) -> str:
    """:func:`scrub` without the pre-checks: every rule's pattern over the text."""
    for rule in SCRUB_RULES:
        text = rule.pattern.sub(rule.replacement, text)
    return text


MASKED = "***"
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
# A bare key or token: one long run of base64/base64url with upper, lower and digits
# (an Azure account key, an API key), which no host, path or topic name looks like.
_BARE_KEY = re.compile(r"^(?=.*[A-Z])(?=.*[a-z])(?=.*[0-9])[A-Za-z0-9+/_-]{32,}={0,2}$")


def mask_secrets(node: object) -> object:
    """Structured data (a configuration) with every credential-bearing string masked by its content.

    A string holding a credential in any :data:`SCRUB_RULES` form keeps its harmless part
    (``account_url`` without its SAS ``sig=``); a private key or a bare key becomes ``***``.
    """
    if isinstance(node, dict):
        return {k: mask_secrets(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [mask_secrets(v) for v in node]
    if not isinstance(node, str):
        return node
    if _PRIVATE_KEY.search(node) or _BARE_KEY.match(node.strip()):
        return MASKED
    return scrub(node)


def _scrub_value(value: object) -> object:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_value(v) for v in value]
    return value


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` — no userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@contextlib.contextmanager
def context(**fields: object) -> Iterator[None]:
    """Attach fields to every log line emitted inside the block (this thread/context)."""
    token = _CONTEXT.set({**_CONTEXT.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def bind(**fields: object) -> None:
    """Set fields for every line this process logs from now on, in every thread (e.g. ``stage``)."""
    _PROCESS.update(fields)


def current_fields() -> dict[str, object]:
    """Process fields, then this context's fields: what the next line will carry."""
    return {**_PROCESS, **_CONTEXT.get()}


class ScrubFilter(logging.Filter):
    """Renders the message once and scrubs it, its traceback and its extra fields.

    Installed on the handler, so it sees every record of every logger,
    including third-party ones that might print a presigned URL.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = f"{record.msg!s} (bad log arguments)"
        record.msg = scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, _scrub_value(value))
        return True


class RepeatFilter(logging.Filter):
    """Lets one of a run of identical lines through per ``interval`` seconds.

    Identical means the same logger, level and rendered message (after scrubbing). The first
    line after a quiet interval carries ``repeated``: how many copies were held back, so a
    storm is visible without filling the disk.
    """

    def __init__(self, interval: float = 10.0, max_keys: int = 4096, clock=time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._seen: dict[tuple[str, int, str], list[float | int]] = {}  # key → [last emitted, held back]
        self._lock = threading.Lock()  # handlers filter before taking their own lock

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        with self._lock:
            return self._admit(key, record, self._clock())

    def _admit(self, key: tuple[str, int, str], record: logging.LogRecord, now: float) -> bool:
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return False
        if entry is not None and entry[1]:
            record.repeated = entry[1]
        if len(self._seen) >= self.max_keys:
            self._seen.clear()
        self._seen[key] = [now, 0]
        return True


_SECOND: tuple[int, str] = (-1, "")  # the last second formatted, and its text: one strftime a second


def _timestamp(record: logging.LogRecord) -> str:
    global _SECOND
    second, text = _SECOND
    if int(record.created) != second:
        second = int(record.created)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _SECOND = (second, text)
    return text + f".{int(record.msecs):03d}+00:00"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "level": record.levelname,
            "logger": record.name,
            "pid": os.getpid(),
            **current_fields(),
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub(self.formatException(record.exc_info))
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # Context values are scrubbed too (a URL bound by a caller); the time is ours, made of digits,
        # and comes first unless a field of the same name replaces it in place.
        scrubbed: dict[str, object] = {"ts": _timestamp(record)}
        for key, value in entry.items():
            scrubbed[key] = _scrub_value(value)
        return json_text(scrubbed, default=str)


class TextFormatter(logging.Formatter):
    """One line per record: values from events (a trace_id, a message) are escaped, never raw,
    so they cannot forge a line or drive the terminal; only a traceback spans lines."""

    def format(self, record: logging.LogRecord) -> str:
        ctx = " ".join(f"{k}={printable(str(v), spaces=False)}" for k, v in current_fields().items())
        base = (
            f"{self.formatTime(record)} {record.levelname} pid={os.getpid()} {ctx} "
            f"{record.name}: {printable(record.getMessage())}"
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            base += "\n" + "\n".join(printable(line) for line in record.exc_text.splitlines())
        return scrub(base)


# syslog priorities (RFC 5424) of the logging levels, for journald's SyslogLevelPrefix.
PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
DEBUG_PRIORITY = 7


def priority(levelno: int) -> int:
    return next((prio for level, prio in PRIORITIES if levelno >= level), DEBUG_PRIORITY)


class JournalPrefix(logging.Formatter):
    """``<N>`` before every line, so journald files each at its level (``journalctl -p warning``).

    Every line of a traceback gets it too: journald reads each line as its own entry.
    """

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


def writes_to_journal(stream, environ=None) -> bool:
    """True when ``stream`` is the journal's stream: ``$JOURNAL_STREAM`` names its device and inode.

    Checked against the stream itself, as systemd asks: a child whose stderr was redirected
    inherits the variable but no longer writes to the journal.
    """
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return device.isdigit() and inode.isdigit() and (st.st_dev, st.st_ino) == (int(device), int(inode))


class LineHandler(logging.StreamHandler):
    """A StreamHandler that renders the line before taking its lock.

    The stock handler formats (JSON, scrubbing) while holding the lock, so a pool of download
    threads each logging a line queued behind one another's formatting; here they wait only
    for each other's write. The line written is the same.
    """

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        try:
            line = self.format(record) + self.terminator
        except RecursionError:  # as the stock handler does
            raise
        except Exception:
            self.handleError(record)
            return True
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(line)
                self.flush()
            except Exception:
                self.handleError(record)
        return True


def setup(level: str = "INFO", fmt: str = "json", stream=None) -> None:
    stream = stream or sys.stderr
    handler = LineHandler(stream)
    formatter: logging.Formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler.setFormatter(JournalPrefix(formatter) if writes_to_journal(stream) else formatter)
    handler.addFilter(ScrubFilter())
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "msal", "azure"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def flush() -> None:
    """Flush every root handler; a forked worker calls this before ``os._exit``."""
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
