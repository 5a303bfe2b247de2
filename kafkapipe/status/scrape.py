"""What the supervisor's ``/metrics`` (at ``metrics.bind``) says about workers, circuits and holds.

Metric names are those of :mod:`kafkapipe.metrics`; a test keeps them equal.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from attrs import field, frozen

from kafkapipe.metrics_server import parse_bind

WORKERS = "kafkapipe_workers"
CIRCUIT = "kafkapipe_circuit_state"
HOLDING = "kafkapipe_holding"
AUTH_PAUSES = "kafkapipe_auth_pauses_total"
CIRCUIT_OPEN = 2.0
MAX_BODY = 16 * 1024 * 1024


@frozen
class SupervisorView:
    url: str
    error: str | None = None  # why it could not be read: the supervisor is down, or not ours
    workers: dict[str, dict[str, int]] = field(factory=dict)  # stage → {expected, alive, ready}
    open_circuits: tuple[str, ...] = ()
    half_open_circuits: tuple[str, ...] = ()
    holds: tuple[dict[str, str], ...] = ()  # {stage, reason} now holding
    auth_pauses: dict[str, int] = field(factory=dict)

    @property
    def up(self) -> bool:
        return self.error is None


def metrics_url(bind: str) -> str:
    host, port = parse_bind(bind)
    host = "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host
    return f"http://[{host}]:{port}/metrics" if ":" in host else f"http://{host}:{port}/metrics"


def scrape(bind: str, timeout: float) -> SupervisorView:
    url = metrics_url(bind)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(MAX_BODY).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return SupervisorView(url, error=f"/metrics answered HTTP {exc.code}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return SupervisorView(url, error=f"not answering ({reason})")
    try:
        return parse(url, body)
    except ValueError as exc:
        return SupervisorView(url, error=f"/metrics is not Prometheus text: {exc}")


def parse(url: str, body: str) -> SupervisorView:
    workers: dict[str, dict[str, int]] = {}
    open_, half, holds = [], [], []
    pauses: dict[str, int] = {}
    for sample in _samples(body):
        name, labels, value = sample
        if name == WORKERS and "stage" in labels and "state" in labels:
            workers.setdefault(labels["stage"], {})[labels["state"]] = int(value)
        elif name == CIRCUIT and value >= CIRCUIT_OPEN:
            open_.append(labels.get("host", "?"))
        elif name == CIRCUIT and value > 0:
            half.append(labels.get("host", "?"))
        elif name == HOLDING and value > 0:
            holds.append({"stage": labels.get("stage", "?"), "reason": labels.get("reason", "?")})
        elif name == AUTH_PAUSES and "stage" in labels:
            pauses[labels["stage"]] = pauses.get(labels["stage"], 0) + int(value)
    return SupervisorView(url, None, workers, tuple(sorted(open_)), tuple(sorted(half)), tuple(holds), pauses)


def _samples(body: str) -> list[tuple[str, dict[str, Any], float]]:
    # Late: importing prometheus_client fixes its multiprocess mode (kafkapipe.metrics decides that).
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(body)
        for s in family.samples
    ]
