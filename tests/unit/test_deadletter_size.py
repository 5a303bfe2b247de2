"""An output's size as the broker counts it: the fast path for plain outputs agrees with the definition."""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize("bad", [
    Output("out", None, b"v", [("\udc80", b"x")]),  # a header name UTF-8 cannot encode
    Output("out", None, b"v", [(b"name", b"x")]),  # a header name that is not text
    Output("out", None, b"v", [("a", b"x", b"y")]),  # not a (name, value) pair
    Output("out", None, None, []),  # no value at all
])
def test_an_output_that_cannot_be_sized_dead_letters_its_input_and_the_stage_goes_on(bad):
    from loophelpers import DLQ, OUT, P0, ScriptedStage, T, make, spin

    from kafkapipe.kafka.loop import Done

    loop, consumer, producer, _ = make(
        ScriptedStage(lambda msg: Done([bad] if msg.value() == b"bad" else [Output(OUT, None, msg.value())]))
    )
    for value in (b"a", b"bad", b"c"):
        consumer.add(T, 0, value)
    consumer.assign(P0)
    spin(loop)
    assert loop._fatal is None
    assert [p.value for p in producer.on(OUT)] == [b"a", b"c"]
    [letter] = producer.on(DLQ)
    assert letter.value == b"bad" and letter.header("error-message").startswith(b"output refused: ")
    assert consumer.stored[P0] == 3
