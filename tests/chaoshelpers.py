"""Chaos for the real supervisor: a kill -9 storm, a faulty workload and the tally of what survived.

Shared by the system tests and ``bin/chaos``. Every check is on what the run left behind —
stored files, inventory rows, digests — never on how long anything took.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import attrs
from pipelinehelpers import Pipeline, event
from supervisedhelpers import worker_pids

from kafkapipe.messages import STATUS_PERMANENT, STATUS_SUCCESS, make_task_id
from tests.integration.httpfaults import FaultServer

TRANSIENT_FAULTS = ([503, 200], [500, 200], [429, 200], [502, 503, 200])
PERMANENT_FAULTS = ([404], [410])


class KillStorm(threading.Thread):
    """``kill -9`` of a random child of the supervisor every ``interval`` (low, high) seconds until stopped.

    ``supervisor``: a callable giving the supervisor's current pid (it may have been restarted).
    """

    def __init__(self, supervisor: Callable[[], int], interval: tuple[float, float] = (1.0, 2.0),
                 seed: int = 0) -> None:
        super().__init__(name="kill-storm", daemon=True)
        self.supervisor = supervisor
        self.interval = interval
        self.kills: list[int] = []
        self._rng = random.Random(seed)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self._rng.uniform(*self.interval)):
            children = sorted(worker_pids(self.supervisor()))
            if not children:
                continue
            victim = self._rng.choice(children)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.kills.append(victim)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


@attrs.frozen
class Expected:
    """One task of the workload and how it must end."""

    task_id: str
    url: str
    sha256: str
    permanent: bool


@attrs.define
class Workload:
    """Events with one PDF each: on ``good`` some fail once or twice (transient); on ``bad`` a share fail for good.

    ``transient`` is the share of all tasks whose first requests fail (5xx/429);
    ``bad_share`` of the tasks go to the ``bad`` host, ``bad_permanent`` of those answer 404/410.
    """

    good: FaultServer
    bad: FaultServer
    transient: float = 0.05
    bad_share: float = 0.2
    bad_permanent: float = 0.3
    seed: int = 0
    expected: dict[str, Expected] = attrs.field(factory=dict)
    _rng: random.Random = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def events(self, count: int, prefix: str) -> list[dict]:
        return [self._one(f"{prefix}-{i}") for i in range(count)]

    def _one(self, name: str) -> dict:
        body = b"%PDF-1.7\n" + name.encode() + b"\n" + self._rng.randbytes(2048)
        path = f"/claims/{name}/doc.pdf"
        server, statuses = self._route()
        server.add(path, body, content_type="application/pdf", statuses=list(statuses))
        url = server.url(path)
        trace_id = f"trace-{name}"
        task_id = make_task_id(trace_id, url)
        permanent = statuses[-1] != 200
        self.expected[task_id] = Expected(task_id, url, hashlib.sha256(body).hexdigest(), permanent)
        return event(trace_id, [url])

    def _route(self) -> tuple[FaultServer, tuple[int, ...]]:
        if self._rng.random() < self.bad_share:
            if self._rng.random() < self.bad_permanent:
                return self.bad, tuple(self._rng.choice(PERMANENT_FAULTS))
            return self.bad, (200,)
        if self._rng.random() < self.transient:
            return self.good, tuple(self._rng.choice(TRANSIENT_FAULTS))
        return self.good, (200,)


@attrs.frozen
class Tally:
    """What a run left behind; every count but ``tasks``, ``stored`` and ``dead_lettered`` must be 0."""

    tasks: int
    stored: int
    dead_lettered: int
    lost: int
    duplicate_files: int
    extra_rows: int
    sha_mismatches: int
    wrong_outcome: int

    @property
    def failures(self) -> dict[str, int]:
        names = ("lost", "duplicate_files", "extra_rows", "sha_mismatches", "wrong_outcome")
        return {name: getattr(self, name) for name in names if getattr(self, name)}

    def lines(self) -> list[str]:
        return [f"{field.name:16} {getattr(self, field.name)}" for field in attrs.fields(Tally)]


def final(row: dict) -> bool:
    return row["status"] in (STATUS_SUCCESS, STATUS_PERMANENT)


def tally(pipe: Pipeline, expected: dict[str, Expected]) -> Tally:
    rows = collections.defaultdict(list)
    for row in pipe.rows():
        rows[row["task_id"]].append(row)
    files = collections.Counter(_task_of(path) for path in _stored(pipe.storage_root))
    lost = duplicates = mismatches = wrong = stored = dead = 0
    for task_id, want in expected.items():
        mine = [r for r in rows.get(task_id, []) if final(r)]
        if not mine:
            lost += 1
            continue
        row = mine[0]
        if (row["status"] == STATUS_PERMANENT) != want.permanent:
            wrong += 1
        if row["status"] == STATUS_SUCCESS:
            stored += 1
            path = pipe.storage_root / row["blob_path"]
            if not path.is_file() or _sha256(path) != want.sha256:
                mismatches += 1
        else:
            dead += 1
        duplicates += max(0, files.get(task_id, 0) - (row["status"] == STATUS_SUCCESS))
    unknown_files = sum(n for task_id, n in files.items() if task_id not in expected)
    extra = sum(len(v) - 1 for v in rows.values() if len(v) > 1) + sum(1 for t in rows if t not in expected)
    return Tally(len(expected), stored, dead, lost, duplicates + unknown_files, extra, mismatches, wrong)


def _stored(root: Path) -> Iterable[Path]:
    return (p for p in root.rglob("*") if p.is_file() and ".incoming" not in p.relative_to(root).parts)


def _task_of(path: Path) -> str:
    """Stored files are named ``<task_id>-<file name>``; task ids are hex, so the first ``-`` ends it."""
    return path.name.split("-", 1)[0]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def all_final(pipe: Pipeline, expected: dict[str, Expected]) -> Callable[[], bool]:
    """A predicate for ``wait_for``: every expected task has its final inventory row."""

    def check() -> bool:
        done = {r["task_id"] for r in pipe.rows() if final(r)}
        return all(task_id in done for task_id in expected)

    return check


def publish_in_waves(pipe: Pipeline, workload: Workload, total: int, waves: int, pause: float,
                     prefix: str, stop: Callable[[], bool] = lambda: False) -> None:
    """``total`` events in ``waves`` batches ``pause`` seconds apart, so work arrives all through a storm."""
    for wave in range(waves):
        if stop():
            return
        count = total * (wave + 1) // waves - total * wave // waves
        pipe.produce(workload.events(count, f"{prefix}-w{wave}"))
        if wave < waves - 1:
            time.sleep(pause)
