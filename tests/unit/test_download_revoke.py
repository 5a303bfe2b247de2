"""Downloads still queued when their partition is revoked are given up, not downloaded for nothing."""

from __future__ import annotations

from fakekafka import FakeMessage

from kafkapipe.config import from_mapping
from kafkapipe.kafka.loop import Done, Release
from kafkapipe.stages.download import DownloadStage


def test_a_task_queued_before_its_partition_was_revoked_is_released_without_a_request(tmp_path, monkeypatch):
    config = from_mapping({"storage": {"root": str(tmp_path / "attachments")}})
    stage = DownloadStage(config)
    fetched: list[str] = []
    monkeypatch.setattr(stage, "process", lambda msg: fetched.append(msg.offset()) or Done())
    topic = config.topics.pending
    verdicts: dict[tuple[int, int], object] = {}

    def complete(msg, verdict):
        verdicts[(msg.partition(), msg.offset())] = verdict

    try:
        queued = [FakeMessage(topic, p, 0) for p in (0, 1)]
        epochs = [stage._revocations.get((topic, p), 0) for p in (0, 1)]  # what handle() captures
        stage.revoked([(topic, 0)])
        for msg, epoch in zip(queued, epochs, strict=True):
            stage._run(msg, complete, epoch)
        again = FakeMessage(topic, 0, 1)  # partition 0 assigned back: new work runs
        stage._run(again, complete, stage._revocations.get((topic, 0), 0))
    finally:
        stage.close()
    assert verdicts[(0, 0)] == Release()
    assert verdicts[(1, 0)] == Done() and verdicts[(0, 1)] == Done()
    assert fetched == [0, 1]
