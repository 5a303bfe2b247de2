"""The export's systemd units: the service runs a command the CLI accepts, the timer repeats it."""

import configparser
import re
import shlex
from pathlib import Path

from kafkapipe.cli import build_parser

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def test_the_export_service_runs_an_export_the_cli_accepts():
    service = unit("kafkapipe-export.service")["Service"]
    assert service["Type"] == "oneshot"
    lines = (SYSTEMD / "kafkapipe-export.service").read_text().splitlines()
    assignments = [a for line in lines if line.startswith("Environment=") for a in shlex.split(line[12:])]
    env = dict(a.split("=", 1) for a in assignments)
    command = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], service["ExecStart"])
    argv = shlex.split(command)
    assert argv[0].endswith("/kafkapipe")
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.action, args.format) == ("inventory", "export", "delta")
    assert args.to == env["KAFKAPIPE_EXPORT_TO"]


def test_the_timer_repeats_the_export_every_few_minutes():
    timer = unit("kafkapipe-export.timer")["Timer"]
    assert timer["OnUnitActiveSec"].endswith("min") and int(timer["OnUnitActiveSec"][:-3]) <= 15
    assert "timers.target" in unit("kafkapipe-export.timer")["Install"]["WantedBy"]
