"""``status`` output: a few lines per stage for people, one JSON document with ``--json``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from kafkapipe.messages import format_ts
from kafkapipe.printable import json_text, printable
from kafkapipe.status.backlog import DlqSize, StageView, TopicBacklog
from kafkapipe.status.scrape import SupervisorView


def as_dict(supervisor: SupervisorView, stages: list[StageView], dlqs: list[DlqSize]) -> dict[str, Any]:
    return {
        "supervisor": {"url": supervisor.url, "up": supervisor.up, "error": supervisor.error},
        "stages": [
            {**_plain(attrs.asdict(view)), "workers": supervisor.workers.get(view.stage)} for view in stages
        ],
        "dlqs": [attrs.asdict(d) for d in dlqs],
        "open_circuits": list(supervisor.open_circuits),
        "half_open_circuits": list(supervisor.half_open_circuits),
        "holds": list(supervisor.holds),
        "auth_pauses": supervisor.auth_pauses,
    }


def as_json(supervisor: SupervisorView, stages: list[StageView], dlqs: list[DlqSize]) -> str:
    return json_text(as_dict(supervisor, stages, dlqs), indent=2)


def as_text(supervisor: SupervisorView, stages: list[StageView], dlqs: list[DlqSize], at: datetime) -> str:
    up = "up" if supervisor.up else f"DOWN: {supervisor.error}; workers unknown"
    lines = [f"status at {format_ts(at)}", f"supervisor {supervisor.url}: {printable(up)}", ""]
    lines.append(f"{'STAGE':<9} {'WORKERS':<8} {'GROUP (MEMBERS)':<26} BACKLOG")
    for view in stages:
        group = f"{view.group_state.lower()} ({view.members})"
        for i, topic in enumerate(view.topics or (None,)):
            head = f"{view.stage:<9} {_workers(supervisor, view.stage):<8} {group:<26}" if i == 0 else " " * 45
            lines.append(f"{head} {_backlog(topic)}")
    lines.append("")
    for dlq in dlqs:
        size = f"{dlq.unacknowledged} unacknowledged, {dlq.total} in all" if dlq.exists else "topic missing"
        lines.append(f"dlq {dlq.topic}: {size}")
    lines.append(f"open circuits: {_list(supervisor.open_circuits, supervisor.up)}")
    if supervisor.half_open_circuits:
        lines.append(f"half-open circuits: {_list(supervisor.half_open_circuits, True)}")
    holds = [f"{h['stage']} ({h['reason']})" for h in supervisor.holds]
    lines.append(f"holds: {_list(holds, supervisor.up)}")
    return "\n".join(lines)


def _workers(supervisor: SupervisorView, stage: str) -> str:
    counts = supervisor.workers.get(stage)
    if not counts:
        return "?"
    return f"{counts.get('ready', 0)}/{counts.get('expected', 0)}"


def _backlog(topic: TopicBacklog | None) -> str:
    if topic is None:
        return "-"
    if not topic.exists:
        return f"{topic.topic}: topic missing"
    rate = f" (+{topic.arrived_last_minute} in the last minute)" if topic.arrived_last_minute else ""
    if topic.waiting:
        due = f", oldest due {format_ts(topic.oldest_due)}" if topic.oldest_due else ""
        return f"{topic.topic}: {topic.backlog} waiting{due}{rate}"
    return f"{topic.topic}: {topic.backlog}{rate}"


def _list(items, known: bool) -> str:
    if not known:
        return "unknown (supervisor down)"
    return ", ".join(printable(i) for i in items) or "none"


def _plain(doc: dict[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return format_ts(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    return convert(doc)
