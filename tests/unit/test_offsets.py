import random

from kafkapipe.kafka.offsets import OffsetTracker, PartitionTrack


def finish_checking_the_prefix(track: PartitionTrack, order: list[int], first: int) -> None:
    """Finish ``order`` (every offset started, from ``first`` on, contiguous); after each finish the
    committable offset is one past the finished prefix, and only the prefix has left flight."""
    finished: set[int] = set()
    for o in order:
        track.finish(o)
        finished.add(o)
        prefix = first
        while prefix in finished:
            prefix += 1
        assert track.committable == (prefix if prefix > first else None)
        assert track.in_flight == len(order) - (prefix - first)

KEY = ("t", 0)


def test_contiguous_offset_advances_only_over_finished_prefix():
    track = PartitionTrack()
    for offset in (10, 11, 12, 13):
        track.start(offset)
    track.finish(12)
    assert track.committable is None
    track.finish(10)
    assert track.committable == 11
    track.finish(11)
    assert track.committable == 13
    track.finish(13)
    assert track.committable == 14
    assert track.in_flight == 0


def test_random_completion_order_always_commits_highest_contiguous():
    rng = random.Random(7)
    for _ in range(50):
        track = PartitionTrack()
        offsets = list(range(100, 160))
        for o in offsets:
            track.start(o)
        order = offsets[:]
        rng.shuffle(order)
        finish_checking_the_prefix(track, order, first=100)


def test_rewind_forgets_offsets_at_and_after():
    track = PartitionTrack()
    for o in (5, 6, 7):
        track.start(o)
    track.finish(5)
    track.finish(7)
    track.rewind(6)
    assert track.in_flight == 0
    assert track.committable == 6
    track.start(6)
    track.finish(6)
    assert track.committable == 7


def test_tracker_reports_each_advance_once_and_drops_revoked():
    tracker = OffsetTracker()
    tracker.assign([KEY, ("t", 1)])
    tracker.start(KEY, 0)
    tracker.finish(KEY, 0)
    assert tracker.to_store() == [("t", 0, 1)]
    tracker.mark_stored(KEY, 1)
    assert tracker.to_store() == []
    tracker.forget([KEY])
    tracker.finish(KEY, 1)  # late completion of a revoked partition is ignored
    assert tracker.to_store() == []
    assert not tracker.owns(KEY)
    assert tracker.in_flight() == 0


def test_start_owned_tracks_only_assigned_partitions():
    tracker = OffsetTracker()
    tracker.assign([KEY])
    assert tracker.start_owned(KEY, 4)
    assert not tracker.start_owned(("t", 9), 4)  # fetched just before a revoke: not ours
    assert not tracker.owns(("t", 9)) and tracker.in_flight() == 1
    tracker.finish(KEY, 4)
    assert tracker.to_store() == [("t", 0, 5)]


def test_in_order_and_out_of_order_finishes_mixed_commit_the_contiguous_prefix():
    rng = random.Random(11)
    for _ in range(200):
        track = PartitionTrack()
        offsets = list(range(20))
        for o in offsets:
            track.start(o)
        order = offsets[:]
        for i in range(len(order) - 1):  # mostly in order, now and then a swap
            if rng.random() < 0.3:
                order[i], order[i + 1] = order[i + 1], order[i]
        finish_checking_the_prefix(track, order, first=0)
