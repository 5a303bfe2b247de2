"""JSON log lines: context fields, process fields in every thread, and no secrets, ever."""

from __future__ import annotations

import io
import json
import logging
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kafkapipe import log as klog

PRESIGNED = (
    "https://bucket.s3.amazonaws.com/claims/a.pdf?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20261125%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Signature=deadbeefcafe0123456789"
)
SAS = "https://acct.blob.core.windows.net/c/b.pdf?sv=2023-11-03&se=2026-11-26&sp=r&sig=SECRETsig%2Bvalue%3D"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJrYWZrYXBpcGUifQ.c2lnbmF0dXJlLWJ5dGVz"
SECRET_PARTS = (
    "deadbeefcafe0123456789",
    "SECRETsig",
    "AKIAEXAMPLE",
    "X-Amz-Algorithm",
    "sv=2023-11-03",
    JWT,
    "hunter2",
    "tok3n-value",
)


@pytest.fixture
def capture():
    """Routes the root logger to a buffer through log.setup; restores everything afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_process = dict(klog._PROCESS)
    stream = io.StringIO()

    def lines() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    klog.setup("DEBUG", "json", stream)
    yield lines
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    klog._PROCESS.clear()
    klog._PROCESS.update(saved_process)


def assert_clean(text: str) -> None:
    for part in SECRET_PARTS:
        assert part not in text, f"{part!r} leaked into {text!r}"


def test_every_line_is_one_json_object_with_pid_and_stage(capture):
    klog.bind(stage="download")
    logging.getLogger("kafkapipe.test").info("hello %s", "world")
    (line,) = capture()
    assert line["msg"] == "hello world"
    assert line["pid"] == os.getpid()
    assert line["stage"] == "download"
    assert line["level"] == "INFO"
    assert line["logger"] == "kafkapipe.test"
    assert line["ts"].endswith("+00:00")


def test_stage_defaults_to_a_placeholder_when_nothing_bound(capture):
    klog._PROCESS.clear()
    klog._PROCESS["stage"] = "-"
    logging.getLogger("kafkapipe.test").warning("early")
    assert capture()[0]["stage"] == "-"


def test_context_fields_and_kafka_coordinates(capture):
    klog.bind(stage="ingest")
    logger = logging.getLogger("kafkapipe.test")
    with klog.context(trace_id="t-1", task_id="k-1", topic="events", partition=3, offset=42):
        logger.info("inside")
    logger.info("outside")
    inside, outside = capture()
    assert {k: inside[k] for k in ("trace_id", "task_id", "topic", "partition", "offset")} == {
        "trace_id": "t-1", "task_id": "k-1", "topic": "events", "partition": 3, "offset": 42,
    }
    assert "trace_id" not in outside and outside["stage"] == "ingest"


def test_process_fields_reach_threads_that_do_not_inherit_the_context(capture):
    klog.bind(stage="download")
    with klog.context(trace_id="main-only"):
        thread = threading.Thread(target=lambda: logging.getLogger("kafkapipe.pool").info("from a thread"))
        thread.start()
        thread.join()
    (line,) = capture()
    assert line["stage"] == "download"
    assert "trace_id" not in line


def test_redact_url_keeps_only_scheme_host_port_path():
    assert klog.redact_url(PRESIGNED) == "https://bucket.s3.amazonaws.com/claims/a.pdf"
    assert klog.redact_url("http://user:hunter2@[::1]:8080/x?y=1#f") == "http://[::1]:8080/x"
    assert klog.redact_url("http://[bad") == "<unparseable url>"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"download failed for {PRESIGNED}", "download failed for https://bucket.s3.amazonaws.com/claims/a.pdf?"),
        (f"GET {SAS} -> 403", "GET https://acct.blob.core.windows.net/c/b.pdf?"),
        ("connection string AccountName=acct;AccountKey=hunter2==;EndpointSuffix=core.windows.net",
         "AccountName=acct;AccountKey="),
        (f"Authorization: Bearer {JWT}", "Authorization: "),
        ("header authorization=Bearer tok3n-value", "header authorization="),
        (f"token {JWT} expired", " expired"),
        ('{"access_token": "tok3n-value", "expires_in": 3599}', '"expires_in": 3599}'),
        ("form client_secret=hunter2&grant_type=client_credentials", "&grant_type=client_credentials"),
        ("http://svc:hunter2@example.com/path", "@example.com/path"),
        ("relative blob c/b.pdf?se=2026&sig=SECRETsig%3D", "relative blob c/b.pdf?se=2026&sig="),
    ],
)
def test_scrub_removes_secrets_from_free_text(text, kept):
    scrubbed = klog.scrub(text)
    assert_clean(scrubbed)
    assert kept in scrubbed, "the harmless part survives: an empty result would pass the first check alone"
    assert klog.REDACTED in scrubbed


CANARY = "CANARY7f3a9"
# (form, text holding the canary, text that must survive)
CANARY_FORMS = [
    ("?code= of an Azure Function", f"POST https://fn.example.net/api/x?code={CANARY}", "https://fn.example.net/api/x"),
    ("relative ?code=", f"GET /api/x?code={CANARY}&id=1 -> 401", "GET /api/x?code="),
    ("relative ?key=", f"GET /v1/doc?alt=json&key={CANARY} -> 403", "GET /v1/doc?alt=json&key="),
    ("?apikey=", f"GET /files/a.pdf?apikey={CANARY}", "GET /files/a.pdf?apikey="),
    ("?api_key=", f"fetching /a.pdf?api_key={CANARY}", "fetching /a.pdf?api_key="),
    ("X-Amz-Security-Token", f"/b/a.pdf?X-Amz-Security-Token={CANARY}&X-Amz-Expires=60", "&X-Amz-Expires=60"),
    ("sig= alone", f"sas sv=2023-11-03&sig={CANARY}", "sas sv=2023-11-03&sig="),
    ("Authorization: Bearer", f"Authorization: Bearer {CANARY}", "Authorization:"),
    ("Authorization: bare token", f"Authorization: {CANARY}", "Authorization:"),
    ("x-api-key header", f"request headers x-api-key: {CANARY}", "request headers x-api-key:"),
    ("Ocp-Apim-Subscription-Key header", f"Ocp-Apim-Subscription-Key: {CANARY}", "Ocp-Apim-Subscription-Key:"),
    ("Cookie header", f"Cookie: session={CANARY}", "Cookie:"),
    ("dict repr of headers", f"{{'Authorization': 'SharedKey acct:{CANARY}', 'x-ms-version': '1'}}",
     "'x-ms-version': '1'"),
    ("JSON header map", f'{{"x-api-key": "{CANARY}", "Accept": "*/*"}}', '"Accept": "*/*"'),
    ("URL-encoded sig", f"next=%2Fc%2Fb.pdf%3Fsv%3D1%26sig%3D{CANARY}%26se%3D2", "%26se%3D2"),
    ("URL-encoded code", f"redirect_uri=https%3A%2F%2Fh%2Fcb%3Fcode%3D{CANARY}%26state%3Dx", "%26state%3Dx"),
    ("double-encoded signature", f"u=%253FX-Amz-Signature%253D{CANARY}%2526x%253D1", "%2526x%253D1"),
    ("JAAS password", f'PlainLoginModule required username="u" password="{CANARY}";', 'username="u" password="'),
    ("clientSecret=", f"clientId=abc clientSecret={CANARY}", "clientId=abc"),
    ("a JWT alone", f"got eyJ{CANARY}.eyJzdWIiOiJ4In0.c2ln", "got "),
]


@pytest.mark.parametrize(("form", "text", "kept"), CANARY_FORMS, ids=[f[0] for f in CANARY_FORMS])
def test_scrub_removes_the_canary_from_every_form(form, text, kept):
    scrubbed = klog.scrub(text)
    assert CANARY not in scrubbed, f"{form}: {scrubbed!r}"
    assert kept in scrubbed, f"{form}: the harmless part is gone: {scrubbed!r}"
    assert klog.scrub(scrubbed) == scrubbed


@pytest.mark.parametrize(
    "prose", ["HTTP error code=503 from upstream", "partition key=claims-7 assigned", "status code: 404"]
)
def test_scrub_leaves_prose_that_only_looks_like_a_parameter(prose):
    assert klog.scrub(prose) == prose


def test_scrub_is_idempotent_and_keeps_the_useful_part():
    once = klog.scrub(f"fetch {SAS} failed")
    assert klog.scrub(once) == once
    assert "https://acct.blob.core.windows.net/c/b.pdf" in once


def test_messages_arguments_extras_and_tracebacks_are_scrubbed(capture):
    logger = logging.getLogger("kafkapipe.test")
    logger.info("fetching %s", PRESIGNED)
    logger.warning("giving up", extra={"url": SAS, "headers": {"Authorization": f"Bearer {JWT}"}})
    try:
        raise RuntimeError(f"HTTP 403 for {SAS}")
    except RuntimeError:
        logger.exception("download failed")
    with klog.context(attachment_url=PRESIGNED):
        logger.error("context too")
    raw = "\n".join(json.dumps(line) for line in capture())
    assert_clean(raw)
    assert "https://bucket.s3.amazonaws.com/claims/a.pdf" in raw
    assert "RuntimeError" in raw


def test_third_party_loggers_are_scrubbed_as_well(capture):
    logging.getLogger("urllib3.connectionpool").warning('"GET /c/b.pdf?sv=1&sig=SECRETsig HTTP/1.1" 403')
    assert_clean(json.dumps(capture()))


def test_text_format_is_scrubbed_too():
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        klog.setup("INFO", "text", stream)
        logging.getLogger("kafkapipe.test").info("GET %s", SAS)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    out = stream.getvalue()
    assert "pid=" in out and "stage=" in out
    assert_clean(out)


def test_level_from_setup_filters_lines(capture):
    logging.getLogger().setLevel("WARNING")
    logging.getLogger("kafkapipe.test").info("dropped")
    logging.getLogger("kafkapipe.test").warning("kept")
    assert [line["msg"] for line in capture()] == ["kept"]


def test_bad_log_arguments_do_not_raise(capture):
    logging.getLogger("kafkapipe.test").info("needs two %s %s", "one")
    (line,) = capture()
    assert "bad log arguments" in line["msg"]


_FRAGMENTS = st.sampled_from([
    "https://", "HTTP://", "://", "h.example.com", "/a/b.pdf", "?", "&", "#", "=", "%3D", "%253d", "%26", "%3f", '"',
    "'", ":", " ", "\n", "\t", "@", "user:pw@", "sig", "SIG", "signature", "X-Amz-Signature", "code", "key", "token",
    "password", "Authorization", "cookie", "bearer ", "Basic ", "SharedKey ", "eyJhbGciOi", ".eyJzdWIi", ".sig",
    "abc", "503", "error code=503", "\u212a", "\u017f", "\u0130", "<redacted>", "AccountKey", "x-api-key",
])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_FRAGMENTS | st.text(max_size=6), max_size=14).map("".join))
def test_scrub_precheck_changes_nothing(text: str) -> None:
    assert klog.scrub(text) == klog.scrub_all(text)


def test_line_handler_writes_what_the_stock_handler_writes() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "stored %s", ("https://h/a?sig=1",), None)
    stock, ours = io.StringIO(), io.StringIO()
    for stream, cls in ((stock, logging.StreamHandler), (ours, klog.LineHandler)):
        handler = cls(stream)
        handler.setFormatter(klog.TextFormatter())
        handler.addFilter(klog.ScrubFilter())
        handler.handle(logging.makeLogRecord(record.__dict__))
    assert ours.getvalue() == stock.getvalue() and "sig=1" not in ours.getvalue()


@settings(max_examples=3000, deadline=None)
@given(st.lists(_FRAGMENTS | st.text(st.characters(max_codepoint=127), max_size=6), max_size=14).map("".join))
def test_a_rule_whose_precheck_fails_has_no_match(text: str) -> None:
    """Each rule's literals (``needs``, ``requires``) are in every text its pattern matches."""
    if not text.isascii():
        return
    lowered = text.lower()
    for rule in klog.SCRUB_RULES:
        if rule.pattern.search(text):
            assert rule.may_match(text, lowered), (rule.form, text)
            assert any(trigger in lowered for trigger in klog._TRIGGERS or ("",)), (rule.form, text)


@pytest.mark.parametrize(("form", "text", "kept"), CANARY_FORMS, ids=[f[0] for f in CANARY_FORMS])
def test_every_rule_that_matches_a_canary_form_passes_its_precheck(form, text, kept):
    for rule in klog.SCRUB_RULES:
        if rule.pattern.search(text):
            assert rule.may_match(text, text.lower()), (form, rule.form)


def _record(created: float, msg: str = "stored %s (%d bytes)", args: tuple = ("a/b.pdf", 12), **extra):
    record = logging.LogRecord("kafkapipe.stages.download", logging.INFO, __file__, 1, msg, args, None)
    record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
    record.__dict__.update(extra)
    return record


def test_a_json_line_is_exactly_the_fields_in_their_order(capture):
    klog.bind(stage="download")
    formatter = klog.JsonFormatter()
    with klog.context(trace_id="t-1", task_id="k-1", partition=2, offset=7):
        first = formatter.format(_record(1764500000.125))
        same_second = formatter.format(_record(1764500000.9))
        next_second = formatter.format(_record(1764500061.0, "GET %s", ("https://h/a?sig=1",), topic="x.pending"))
    pid = os.getpid()
    fields = f'"pid": {pid}, "stage": "download", "trace_id": "t-1", "task_id": "k-1", "partition": 2, "offset": 7'
    assert first == ('{"ts": "2025-11-30T10:53:20.125+00:00", "level": "INFO", "logger": "kafkapipe.stages.download", '
                     f'{fields}, "msg": "stored a/b.pdf (12 bytes)"}}')
    assert same_second.startswith('{"ts": "2025-11-30T10:53:20.900+00:00", "level": "INFO"')
    assert next_second == ('{"ts": "2025-11-30T10:54:21.000+00:00", "level": "INFO", '
                           f'"logger": "kafkapipe.stages.download", {fields}, '
                           '"msg": "GET https://h/a?<redacted>", "topic": "x.pending"}')


def test_a_field_named_ts_takes_the_place_of_the_time_and_is_scrubbed(capture):
    line = json.loads(klog.JsonFormatter().format(_record(1764500000.5, ts="https://h/a?sig=SECRETsig")))
    assert next(iter(line)) == "ts" and line["ts"] == "https://h/a?<redacted>"


def _any_case(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True))
    )


# Every name any rule knows, in any case, next to every separator and encoding the rules read,
# the characters \s and re's case folding treat specially, and what a rule writes itself.
_NAMES = st.sampled_from(
    sorted({*klog.SECRET_PARAMS, *klog.QUERY_ONLY_PARAMS, *klog.SECRET_HEADERS, "bearer", "basic", "sharedkey"})
).flatmap(_any_case) | st.sampled_from(["eyJ", "eyJhbGciOi", ".eyJzdWIi", "EYJ"])
_SEPARATORS = st.sampled_from([
    "=", "%3d", "%3D", "%253d", "%253D", "%", ":", ": ", " = ", "\t:\t", "='", '="', '": "', "':'", "?", "&", "%3f",
    "%3F", "%26", "%2526", "%253f", "://", "@", "https://", "S3://", "h.example/", "#", " ", "\n", "\r\n", "\x0b",
    "\x1c", '"', "'", "<", ">", ";", ",", "<redacted>", ".", "-", "_", "abc", "XYZ123", "Bearer ", "Basic\t",
    "\x85", "\u00a0", "\u2028", "\u017f", "\u212a", "\u0130", "\u0131",
])


# One credential-shaped piece: what may come before a name, the name, how it is tied to its
# value, and the value; pieces and loose separators are then strung together.
_PIECE = st.tuples(
    st.sampled_from(["", "?", "&", "%3f", "%3F", "%26", "%253f", "%2526", '"', "'", " ", "\n", "https://h/a?", "x",
                     "-"]),
    _NAMES,
    st.sampled_from(["=", "%3d", "%3D", "%253d", "%253D", ":", ": ", " = ", '="', "='", '": "', "':'", "\t:\t", " ",
                     "%"]),
    st.sampled_from(["", "v", "s3cr3t", '"', "'", "<redacted>", "a&b", "%26x", "x;y", "eyJabcd.efgh.ij"]),
).map("".join)


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECE | _NAMES | _SEPARATORS | st.text(st.characters(max_codepoint=127), max_size=4), max_size=12)
       .map("".join))
def test_scrub_equals_scrub_all_for_every_name_in_any_case(text: str) -> None:
    assert klog.scrub(text) == klog.scrub_all(text)
