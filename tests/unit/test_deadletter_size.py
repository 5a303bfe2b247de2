"""An output's size as the broker counts it: the fast path for plain outputs agrees with the definition."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kafkapipe.kafka.deadletter import FRAMING, output_size, size_of
from kafkapipe.kafka.records import Output


class Bytes(bytes):
    pass


_TEXT = st.text(st.characters(), max_size=12) | st.text(st.characters(max_codepoint=127), max_size=12)
_KEYS = st.none() | st.binary(max_size=12) | _TEXT | st.builds(Bytes, st.binary(max_size=4)) | st.integers()
_VALUES = st.none() | st.binary(max_size=12) | _TEXT | st.builds(Bytes, st.binary(max_size=4))
_HEADERS = st.lists(st.tuples(st.text(st.characters(max_codepoint=0x7FF), max_size=8), _VALUES), max_size=6)


@settings(max_examples=2000, deadline=None)
@given(_KEYS, st.binary(max_size=40), _HEADERS)
def test_output_size_is_size_of_plus_framing_whatever_the_types(key, value, hdrs):
    assert output_size(Output("t", key, value, hdrs)) == size_of(key, value, hdrs) + FRAMING


def test_a_header_name_that_cannot_be_encoded_still_raises_as_before():
    out = Output("t", b"k", b"v", [("\udc80", b"x")])
    for measure in (lambda: output_size(out), lambda: size_of(out.key, out.value, out.headers)):
        try:
            measure()
        except UnicodeEncodeError:
            continue
        raise AssertionError("a lone surrogate in a header name was sized")


def test_a_plain_output_is_sized_by_its_lengths():
    out = Output("t", "task-1", b"x" * 100, [("trace_id", b"abc"), ("task_id", b"task-1")])
    assert output_size(out) == 6 + 100 + len("trace_id") + 3 + len("task_id") + 6 + FRAMING
