"""The pipeline fixtures' scan of worker logs: a traceback fails the test unless it was provoked on purpose."""

from __future__ import annotations

import json

from pipelinehelpers import unexpected_tracebacks

TB = "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: boom"


def record(msg: str, exc: str | None = None) -> str:
    return json.dumps({"level": "ERROR", "msg": msg, **({"exc": exc} if exc else {})})


def test_a_traceback_is_found_in_a_json_record_and_in_raw_stderr():
    log = "\n".join([record("fine"), record("stage download failed to boot", TB), TB.splitlines()[0]])
    assert len(unexpected_tracebacks(log)) == 2


def test_a_provoked_traceback_is_allowed_by_its_message_only():
    log = "\n".join([record("handler failed on a message; dead-lettering it: x", TB), record("other", TB)])
    assert unexpected_tracebacks(log, ("handler failed on a message",)) == [record("other", TB)]
    assert unexpected_tracebacks(record("fine")) == []
