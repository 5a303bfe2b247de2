"""Hostile text in dead letters (a redirect's Location, an event's trace_id) never reaches a terminal raw."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys

import attrs
import pytest

from kafkapipe.messages import make_task_id
from tests.integration.test_dlq_cli import ROOT, env, failed, produce, tool, write_config  # noqa: F401 - env is a fixture

HOSTILE_TRACE = "trace-\x1b]0;owned\x07\x9b2J\u202egpj.exe\u200b\u2066\r\n2026-11-30 INFO forged line\x7f"
HOSTILE_LOCATION = "redirect to http://files.example.com/\x9b31mred\x1b[2J\u202dx\u2069\ufeff.pdf refused"


def raw_controls(text: str) -> list[str]:
    return sorted({ch for ch in text if not ch.isprintable() and ch != "\n"})


@pytest.fixture
def hostile_entry(env):  # noqa: F811 - the imported fixture
    entry = failed("hostile", "validation", message=HOSTILE_LOCATION)
    task = attrs.evolve(entry.task, trace_id=HOSTILE_TRACE, task_id=make_task_id(HOSTILE_TRACE, "x"))
    entry = attrs.evolve(entry, task=task)
    (coordinate,) = produce(env, [(0, entry, None)])
    return entry, coordinate


def test_the_table_escapes_every_control_visibly(env, hostile_entry) -> None:  # noqa: F811
    code, out, _ = tool(env, "list")
    assert code == 0
    assert raw_controls(out) == []
    lines = out.splitlines()
    assert len(lines) == 2, "one header, one row: nothing forged a line"
    assert "example.com/\\x9b31mred" in lines[1] and "trace-\\x1b]0;owned\\x07" in lines[1]


def test_a_dead_letter_whose_task_id_is_hostile_is_listed_as_undecodable_and_escaped(env) -> None:  # noqa: F811
    """A task id that is not 32 hex digits is refused when read, and shown only escaped."""
    entry = failed("hostile-id", "validation", message=HOSTILE_LOCATION)
    task = attrs.evolve(entry.task, task_id=make_task_id("t", "x") + "\x9b\x1b[2J")
    produce(env, [(0, attrs.evolve(entry, task=task), None)])
    code, out, _ = tool(env, "list")
    assert code == 0
    assert raw_controls(out) == []
    lines = out.splitlines()
    assert len(lines) == 2 and "undecodable" in lines[1], out
    assert make_task_id("t", "x") + "\\x9b\\x1b[2J" in lines[1]


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


def test_the_audit_line_names_the_real_user_whatever_user_says(env, tmp_path) -> None:  # noqa: F811
    produce(env, [(0, failed("audited", "permanent"), None)])
    config_file = write_config(env, tmp_path / "pipeline.toml", tmp_path / "dlq-audit.jsonl")
    envvars = {k: v for k, v in os.environ.items() if not k.startswith("KAFKAPIPE_")}
    envvars.update(USER="mallory", LOGNAME="mallory", LNAME="mallory", USERNAME="mallory")
    proc = subprocess.run(
        [sys.executable, "-m", "kafkapipe.cli", "dlq", "ack", "--all", "--config", str(config_file)],
        cwd=ROOT, env=envvars, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (audit,) = [json.loads(line) for line in proc.stderr.splitlines() if '"kafkapipe.audit"' in line]
    assert audit["action"] == "dlq.ack"
    assert audit["user"] == pwd.getpwuid(os.getuid()).pw_name != "mallory"
