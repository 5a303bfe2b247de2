import orjson
import pytest

from kafkapipe.config import TopicsConfig
from kafkapipe.messages import DownloadTask, ErrorInfo, utcnow
from kafkapipe.stages.outcomes import Outcomes, retry_at_for

TOPICS = TopicsConfig(retry_delays=["5m", "10m"])


def task(retry_count=0):
    now = utcnow()
    return DownloadTask(task_id="t" * 32, trace_id="tr", attachment_url="https://h/a.pdf", blob_path="p/a.pdf",
                        event_type="e", event_subtype="e", source_system="s", original_timestamp=now,
                        created_at=now, retry_count=retry_count)


def outcomes(now=1_000_000.0):
    return Outcomes(TOPICS, "download", rand=lambda: 1.0, clock=lambda: now)


def test_retry_at_respects_delay_and_retry_after():
    assert retry_at_for(300, None, 0, 0.0) == 300
    assert retry_at_for(300, 900, 0, 0.0) == 900
    assert 300 <= retry_at_for(300, None, 0, 1.0) <= 330


def test_transient_goes_to_next_retry_topic_with_count_and_error():
    result, routed = outcomes().transient(task(0), ErrorInfo("transient", "HTTP 503"), 0.0, 503, 10.0)
    assert routed.topic == "attachments.downloads.retry.5m"
    body = orjson.loads(routed.value)
    assert body["retry_count"] == 1
    assert body["last_error"] == {"category": "transient", "message": "HTTP 503"}
    headers = dict(routed.headers)
    assert int(headers["retry-at"]) >= (1_000_000 + 300) * 1000
    assert headers["kafkapipe-schema"] == b"download_task/1"
    res = orjson.loads(result.value)
    assert res["status"] == "failed_transient" and res["attempt"] == 1 and res["http_status"] == 503


def test_second_transient_uses_second_topic_and_last_goes_to_dlq():
    _, routed = outcomes().transient(task(1), ErrorInfo("transient", "x"), 0.0)
    assert routed.topic == "attachments.downloads.retry.10m"
    result, dead = outcomes().transient(task(2), ErrorInfo("transient", "HTTP 503"), 0.0, 503)
    assert dead.topic == "attachments.downloads.dlq"
    failed = orjson.loads(dead.value)
    assert failed["error_category"] == "transient" and failed["attempts"] == 3
    assert failed["task"]["retry_count"] == 2
    assert orjson.loads(result.value)["status"] == "failed_permanent"


def test_circuit_open_does_not_use_an_attempt():
    _, routed = outcomes().circuit_open(task(1), ErrorInfo("circuit_open", "open"), 0.0)
    assert routed.topic == "attachments.downloads.retry.5m"
    assert orjson.loads(routed.value)["retry_count"] == 1


def test_a_long_retry_after_goes_to_the_topic_whose_delay_covers_it():
    topics = TopicsConfig(retry_delays=["5m", "10m", "20m", "40m"])
    out = Outcomes(topics, "download", rand=lambda: 0.0, clock=lambda: 0.0, max_retry_after=3 * 3600.0)
    _, routed = out.transient(task(0), ErrorInfo("transient", "429"), 0.0, 429, 900.0)
    assert routed.topic == "attachments.downloads.retry.20m"
    assert int(dict(routed.headers)["retry-at"]) == 1_200_000
    assert orjson.loads(routed.value)["retry_count"] == 1, "still one attempt used"
    _, routed = out.transient(task(0), ErrorInfo("transient", "429"), 0.0, 429, 7200.0)
    assert routed.topic == "attachments.downloads.retry.40m"
    assert int(dict(routed.headers)["retry-at"]) == 7_200_000, "never before Retry-After"


def test_a_retry_after_above_the_cap_is_retried_at_the_cap():
    topics = TopicsConfig(retry_delays=["5m", "40m"])
    out = Outcomes(topics, "download", rand=lambda: 0.0, clock=lambda: 0.0, max_retry_after=3600.0)
    result, routed = out.transient(task(0), ErrorInfo("transient", "503"), 0.0, 503, 30 * 86400.0)
    assert routed.topic == "attachments.downloads.retry.40m"
    assert int(dict(routed.headers)["retry-at"]) == 3_600_000
    assert orjson.loads(result.value)["status"] == "failed_transient"


@pytest.mark.parametrize("retry_after", [float("inf"), float("nan"), -5.0, 0.0, 1e308, 10**400])
def test_routing_never_raises_whatever_the_retry_after(retry_after):
    out = Outcomes(TOPICS, "download", rand=lambda: 1.0, clock=lambda: 1_000_000.0)
    _, routed = out.transient(task(0), ErrorInfo("transient", "503"), 0.0, 503, retry_after)
    due = int(dict(routed.headers)["retry-at"])
    assert (1_000_000 + 300) * 1000 <= due <= (1_000_000 + 3600 + 30) * 1000
