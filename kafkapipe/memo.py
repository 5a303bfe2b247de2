"""Bounded memos of pure functions on hot paths (URL authorities, blob path segments)."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


def remember(memo: dict[K, V], key: K, value: V, limit: int) -> V:
    """Keep ``value`` under ``key`` in ``memo`` and return it; ``memo`` holds at most ``limit`` entries.

    When full it starts over: a flood of distinct keys costs recomputation, never memory, and
    the few keys real traffic repeats are back after one miss each.
    """
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value
