"""Command-line conventions, each through a real `python -m kafkapipe` subprocess.

--version; the default configuration ($KAFKAPIPE_CONFIG); `config check` as pure JSON; a closed
pipe; one readable line and exit 1 when the broker cannot be reached; shell completion.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kafkapipe.cli import defaults as cli_defaults
from kafkapipe.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAFKAPIPE_")}
    return subprocess.run(
        [sys.executable, "-m", "kafkapipe", *argv], cwd=ROOT, env={**clean, **(env or {})},
        capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text('[kafka]\ngroup_prefix = "from-env-file"\n')
    return path


@pytest.fixture
def unreachable(tmp_path) -> Path:
    """A config whose broker and metrics port are a loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = tmp_path / "unreachable.toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = "127.0.0.1:{port}"\n[metrics]\nbind = "127.0.0.1:{port}"\n'
        f'[inventory]\npath = "{tmp_path / "none" / "inventory.sqlite3"}"\n'
    )
    return path


def test_version():
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"kafkapipe {cli_defaults.version()}" and cli_defaults.version() != "unknown"


def test_config_comes_from_the_environment_and_check_prints_only_json(config_file):
    proc = run("config", "check", env={"KAFKAPIPE_CONFIG": str(config_file)})
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)  # the whole of stdout, as `| jq` reads it
    assert shown["kafka"]["group_prefix"] == "from-env-file"
    assert f"effective configuration from {config_file}" in proc.stderr
    jq = shutil.which("jq")
    if jq:
        piped = subprocess.run([jq, "-r", ".kafka.group_prefix"], input=proc.stdout, capture_output=True, text=True)
        assert piped.stdout.strip() == "from-env-file"


def test_config_option_beats_the_environment(config_file, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('[kafka]\ngroup_prefix = "from-option"\n')
    proc = run("config", "check", "--config", str(other), env={"KAFKAPIPE_CONFIG": str(config_file)})
    assert json.loads(proc.stdout)["kafka"]["group_prefix"] == "from-option"


def test_default_config_order(tmp_path, monkeypatch):
    system = tmp_path / "etc" / "pipeline.toml"
    monkeypatch.setattr(cli_defaults, "SYSTEM_CONFIG", system)
    with pytest.raises(ConfigError, match=r"--config FILE, set \$KAFKAPIPE_CONFIG, or create .*etc/pipeline.toml"):
        cli_defaults.config_path(None, {})
    system.parent.mkdir()
    system.write_text("")
    assert cli_defaults.config_path(None, {}) == str(system)
    assert cli_defaults.config_path(None, {"KAFKAPIPE_CONFIG": "/x.toml"}) == "/x.toml"
    assert cli_defaults.config_path("/y.toml", {"KAFKAPIPE_CONFIG": "/x.toml"}) == "/y.toml"


def test_no_config_anywhere_is_a_usage_error_naming_the_places(tmp_path):
    if cli_defaults.SYSTEM_CONFIG.exists():  # this machine has one: the option and env are covered above
        proc = run("config", "check", env={"KAFKAPIPE_CONFIG": str(tmp_path / "absent.toml")})
        assert proc.returncode == 2 and "absent.toml" in proc.stderr
        return
    proc = run("config", "check")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "kafkapipe: no configuration: give --config FILE, set $KAFKAPIPE_CONFIG, or create "
        "/etc/kafkapipe/pipeline.toml"
    )


def test_a_closed_pipe_ends_quietly(config_file):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAFKAPIPE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kafkapipe", "completion", "bash"], cwd=ROOT, env=clean,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the first byte is written, as with `| head`
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 1
    assert err == ""


@pytest.mark.parametrize("argv", [
    ("dlq", "list"), ("dlq", "stats"), ("trace", "CLM-1"), ("status",),
])
def test_an_unreachable_broker_is_one_line_and_exit_1(unreachable, argv):
    proc = run(*argv, "--timeout", "3", "--config", str(unreachable))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot reach the Kafka broker at 127.0.0.1:" in lines[0]
    assert "KafkaError{" not in proc.stderr and "Traceback" not in proc.stderr


def test_bash_completion_completes_commands_and_subcommands(tmp_path):
    bash = shutil.which("bash")
    assert bash, "bash is needed for this test"
    proc = run("completion", "bash")
    assert proc.returncode == 0
    script = tmp_path / "kafkapipe.bash"
    script.write_text(proc.stdout)
    probe = (
        f"source {script}\n"
        "complete_words() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(( $# - 1 )); COMP_LINE=\"$*\"; "
        "COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _shtab_kafkapipe; echo \"${COMPREPLY[*]}\"; }\n"
        "complete_words kafkapipe st\ncomplete_words kafkapipe dlq re\ncomplete_words kafkapipe dlq list --cat\n"
    )
    done = subprocess.run([bash, "--norc", "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == ["status", "replay", "--category"], done.stderr
