"""The one sanitiser: every control, bidi and zero-width character escaped visibly, letters kept."""

from __future__ import annotations

import io
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kafkapipe import log
from kafkapipe.printable import json_text, printable

CONTROLS = (
    [chr(c) for c in range(0x00, 0x20)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)]
    + list("\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2060\ufeff\u2028")
)


@pytest.mark.parametrize("ch", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_is_escaped_visibly(ch: str) -> None:
    shown = printable(f"a{ch}b")
    assert ch not in shown
    assert shown.startswith("a\\") and shown.endswith("b")
    assert f"{ord(ch):02x}" in shown


def test_letters_and_spaces_stay() -> None:
    assert printable("Schadensmeldung für Küche — 100 €") == "Schadensmeldung für Küche — 100 €"
    assert printable("a b", spaces=False) == "a\\x20b"


@given(st.text())
def test_printable_leaves_nothing_a_terminal_acts_on(text: str) -> None:
    assert printable(text).isprintable()


@given(st.dictionaries(st.text(), st.text()))
def test_json_text_is_valid_json_of_the_same_value_with_nothing_raw(doc: dict) -> None:
    text = json_text(doc, indent=2)
    assert json.loads(text) == doc
    assert all(ch.isprintable() or ch == "\n" for ch in text)


def test_json_text_keeps_letters_readable() -> None:
    assert json_text({"m": "Küche\u202e\x9b"}) == '{"m": "Küche\\u202e\\u009b"}'


HOSTILE_TRACE = "t-1\x1b[2J\x9b31m\u202e\r\n2026-11-30 00:00:00 INFO pid=1 forged: all good"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_hostile_trace_id_cannot_forge_a_log_line_or_reach_the_terminal(fmt: str) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    log.setup("INFO", fmt, stream)
    try:
        with log.context(trace_id=HOSTILE_TRACE):
            logging.getLogger("kafkapipe.test").info("redirect to %s", "http://h/\x9b2J\u202ex")
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    out = stream.getvalue()
    assert out.count("\n") == 1, "one record, one line"
    assert all(ch.isprintable() for ch in out.rstrip("\n"))
    if fmt == "json":
        assert json.loads(out)["trace_id"] == HOSTILE_TRACE
    else:
        assert "trace_id=t-1\\x1b[2J\\x9b31m\\u202e\\x0d\\x0a2026-11-30" in out
