"""The alert rules are valid, behave as their unit tests say, and use only metrics we export.

promtool comes from Debian's ``prometheus`` package (``.ci/run`` installs it); without it these
tests fail with the command that installs it rather than passing unseen.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from kafkapipe import metricdefs as metrics  # the definitions themselves, not the lazy front

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "etc/prometheus/alerts.yml"
ALERT_TESTS = ROOT / "tests/prometheus/alerts_test.yml"
DASHBOARD = ROOT / "etc/grafana-dashboard.json"
METRIC_NAME = re.compile(r"\bkafkapipe_[a-z0-9_]+\b")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: apt-get install prometheus (Debian) puts it on PATH")
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_rules_are_valid():
    out = _run("check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 9 rules found" in out.stdout


def test_rules_fire_as_their_unit_tests_say():
    out = _run("test", "rules", str(ALERT_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_a_broken_expectation_fails(tmp_path):
    """The rule tests can fail: an alert expected at the wrong time is reported."""
    broken = ALERT_TESTS.read_text().replace("eval_time: 8m", "eval_time: 4m", 1)
    path = tmp_path / "alerts_test.yml"
    path.write_text(broken.replace("../../etc/prometheus/alerts.yml", str(ALERTS)))
    out = _run("test", "rules", str(path))
    assert out.returncode != 0
    assert "KafkapipeWorkersNotReady" in out.stdout + out.stderr


def exported_sample_names() -> set[str]:
    names: set[str] = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        base, kind = value._name, value._type
        if kind == "counter":
            names |= {f"{base}_total", f"{base}_created"}
        elif kind == "histogram":
            names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"}
        else:
            names.add(base)
    return names


def used_metric_names() -> dict[str, set[str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            exprs.extend(v for k, v in node.items() if k in ("expr", "query") and isinstance(v, str))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dashboard)
    return {
        "dashboard": set(METRIC_NAME.findall("\n".join(exprs))),
        "alerts": set(METRIC_NAME.findall(ALERTS.read_text())),
    }


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_used_is_exported(source):
    used = used_metric_names()[source]
    assert len(used) >= 5, f"found too few metric names in the {source}: {sorted(used)}"
    missing = used - exported_sample_names()
    assert not missing, f"the {source} uses metrics kafkapipe does not export: {sorted(missing)}"
