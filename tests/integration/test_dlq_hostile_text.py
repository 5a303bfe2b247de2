"""Hostile text in dead letters (a redirect's Location, an event's trace_id) never reaches a terminal raw."""

from __future__ import annotations

import json

import attrs
import pytest

from kafkapipe.messages import make_task_id
from tests.integration.test_dlq_cli import env, failed, produce, tool  # noqa: F401 - env is a fixture

HOSTILE_TRACE = "trace-\x1b]0;owned\x07\x9b2J\u202egpj.exe\u200b\u2066\r\n2026-11-30 INFO forged line\x7f"
HOSTILE_LOCATION = "redirect to http://files.example.com/\x9b31mred\x1b[2J\u202dx\u2069\ufeff.pdf refused"


def raw_controls(text: str) -> list[str]:
    return sorted({ch for ch in text if not ch.isprintable() and ch != "\n"})


@pytest.fixture
def hostile_entry(env):  # noqa: F811 - the imported fixture
    entry = failed("hostile", "validation", message=HOSTILE_LOCATION)
    task = attrs.evolve(entry.task, trace_id=HOSTILE_TRACE, task_id=make_task_id(HOSTILE_TRACE, "x") + "\x9b")
    entry = attrs.evolve(entry, task=task)
    (coordinate,) = produce(env, [(0, entry, None)])
    return entry, coordinate


def test_the_table_escapes_every_control_visibly(env, hostile_entry) -> None:  # noqa: F811
    code, out, _ = tool(env, "list")
    assert code == 0
    assert raw_controls(out) == []
    lines = out.splitlines()
    assert len(lines) == 2, "one header, one row: nothing forged a line"
    assert "example.com/\\x9b31mred" in lines[1] and "8047dc80932e79c3486b6a2787227916\\x9b" in lines[1]


def test_list_json_escapes_non_ascii_controls_and_keeps_the_text(env, hostile_entry) -> None:  # noqa: F811
    entry, _ = hostile_entry
    code, out, _ = tool(env, "list", "--json")
    assert code == 0
    assert raw_controls(out) == []
    (line,) = out.splitlines()
    doc = json.loads(line)
    assert doc["trace_id"] == HOSTILE_TRACE
    assert doc["task_id"] == entry.task.task_id
    assert "\\u009b" in line and "\\u202e" in line and "\\u007f" in line


def test_show_escapes_too(env, hostile_entry) -> None:  # noqa: F811
    _, coordinate = hostile_entry
    code, out, _ = tool(env, "show", coordinate)
    assert code == 0
    assert raw_controls(out) == []
    doc = json.loads(out)
    assert doc["value"]["task"]["trace_id"] == HOSTILE_TRACE
    assert doc["value"]["error_message"] == HOSTILE_LOCATION
