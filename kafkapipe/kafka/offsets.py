"""Per-partition offset tracking for out-of-order completion.

Work on a partition may finish in any order (the download thread pool); the
offset that may be committed is one past the highest offset below which
*every* message is done. Pure logic, no Kafka calls, so it is unit-tested on
its own.
"""

from __future__ import annotations

import heapq

import attrs

TopicPartitionKey = tuple[str, int]


@attrs.define
class PartitionTrack:
    """Offsets in flight on one partition; ``committable`` is what may be stored."""

    pending: list[int] = attrs.Factory(list)  # heap of offsets not yet done
    done: set[int] = attrs.Factory(set)  # finished but not yet contiguous
    committable: int | None = None  # next offset to store (last contiguous done + 1)
    stored: int | None = None  # what was last handed to store_offsets

    def start(self, offset: int) -> None:
        heapq.heappush(self.pending, offset)

    def finish(self, offset: int) -> None:
        pending = self.pending
        if pending and pending[0] == offset and not self.done:  # in order, the usual case
            heapq.heappop(pending)
            self.committable = offset + 1
            return
        self.done.add(offset)
        while self.pending and self.pending[0] in self.done:
            head = heapq.heappop(self.pending)
            self.done.discard(head)
            self.committable = head + 1

    def rewind(self, offset: int) -> None:
        """Forget everything at or after ``offset``: it will be consumed again."""
        self.pending = [o for o in self.pending if o < offset]
        heapq.heapify(self.pending)
        self.done = {o for o in self.done if o < offset}
        if not self.pending and self.done:  # pragma: no cover - done ⊆ pending by construction
            self.done.clear()

    @property
    def in_flight(self) -> int:
        return len(self.pending)


class OffsetTracker:
    """All partitions of one consumer. Used from the consume loop's thread only."""

    def __init__(self) -> None:
        self._parts: dict[TopicPartitionKey, PartitionTrack] = {}

    def assign(self, keys: list[TopicPartitionKey]) -> None:
        for key in keys:
            self._parts.setdefault(key, PartitionTrack())

    def forget(self, keys: list[TopicPartitionKey]) -> None:
        for key in keys:
            self._parts.pop(key, None)

    def owns(self, key: TopicPartitionKey) -> bool:
        return key in self._parts

    def start(self, key: TopicPartitionKey, offset: int) -> None:
        self._parts.setdefault(key, PartitionTrack()).start(offset)

    def start_owned(self, key: TopicPartitionKey, offset: int) -> bool:
        """Track ``offset`` if the partition is ours; False (nothing tracked) if it is not."""
        track = self._parts.get(key)
        if track is None:
            return False
        track.start(offset)
        return True

    def finish(self, key: TopicPartitionKey, offset: int) -> None:
        track = self._parts.get(key)
        if track is not None:  # a revoked partition's late completion is dropped
            track.finish(offset)

    def rewind(self, key: TopicPartitionKey, offset: int) -> None:
        track = self._parts.get(key)
        if track is not None:
            track.rewind(offset)

    def in_flight(self, keys: list[TopicPartitionKey] | None = None) -> int:
        parts = self._parts if keys is None else {k: self._parts[k] for k in keys if k in self._parts}
        return sum(track.in_flight for track in parts.values())

    def to_store(self, keys: list[TopicPartitionKey] | None = None) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) for partitions whose committable offset advanced."""
        out = []
        for key, track in self._parts.items():
            if keys is not None and key not in keys:
                continue
            if track.committable is not None and track.committable != track.stored:
                out.append((key[0], key[1], track.committable))
        return out

    def mark_stored(self, key: TopicPartitionKey, offset: int) -> None:
        track = self._parts.get(key)
        if track is not None:
            track.stored = offset

    @property
    def partitions(self) -> list[TopicPartitionKey]:
        return list(self._parts)
