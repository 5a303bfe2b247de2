"""Reading the supervisor's /metrics text for `kafkapipe status` (the parsing only)."""

from __future__ import annotations

import pytest

from kafkapipe.status.scrape import metrics_url, parse

BODY = """\
# HELP kafkapipe_workers Worker processes per stage
# TYPE kafkapipe_workers gauge
kafkapipe_workers{stage="download",state="expected"} 2.0
kafkapipe_workers{stage="download",state="alive"} 2.0
kafkapipe_workers{stage="download",state="ready"} 1.0
kafkapipe_workers{stage="ingest",state="expected"} 1.0
# TYPE kafkapipe_circuit_state gauge
kafkapipe_circuit_state{host="a.example.com"} 2.0
kafkapipe_circuit_state{host="b.example.com"} 1.0
kafkapipe_circuit_state{host="c.example.com"} 0.0
# TYPE kafkapipe_holding gauge
kafkapipe_holding{stage="download",reason="storage"} 1.0
kafkapipe_holding{stage="ingest",reason="auth"} 0.0
# TYPE kafkapipe_auth_pauses counter
kafkapipe_auth_pauses_total{stage="download"} 3.0
"""


def test_parse_reads_workers_circuits_holds_and_pauses():
    view = parse("u", BODY)
    assert view.up
    assert view.workers == {"download": {"expected": 2, "alive": 2, "ready": 1}, "ingest": {"expected": 1}}
    assert view.open_circuits == ("a.example.com",) and view.half_open_circuits == ("b.example.com",)
    assert view.holds == ({"stage": "download", "reason": "storage"},)
    assert view.auth_pauses == {"download": 3}


def test_parse_of_an_empty_body_knows_nothing():
    view = parse("u", "")
    assert view.workers == {} and view.open_circuits == () and view.holds == ()


def test_garbage_is_an_error_not_a_crash():
    with pytest.raises(ValueError):
        parse("u", 'kafkapipe_workers{stage="x" 1\n')


@pytest.mark.parametrize(("bind", "url"), [
    ("127.0.0.1:9464", "http://127.0.0.1:9464/metrics"),
    ("0.0.0.0:9464", "http://127.0.0.1:9464/metrics"),
    (":9470", "http://127.0.0.1:9470/metrics"),
    ("[::1]:9464", "http://[::1]:9464/metrics"),
])
def test_metrics_url_asks_loopback_for_a_wildcard_bind(bind, url):
    assert metrics_url(bind) == url
