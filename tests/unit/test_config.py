from pathlib import Path

import pytest

from kafkapipe import config as cfg
from kafkapipe.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path, text):
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_contract():
    c = cfg.load(None, environ={})
    assert c.kafka.bootstrap_servers == "localhost:9092"
    assert c.topics.retry_topics == [f"attachments.downloads.retry.{d}" for d in ("5m", "10m", "20m", "40m")]
    assert c.stages.download.processes == 2 and c.stages.download.threads == 16
    assert c.download.allowed_ports == [443] and c.download.max_bytes == 2147483648
    assert c.metrics.bind == "127.0.0.1:9464"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[kafka]\nbootstrap_servers = 5\n", "kafka.bootstrap_servers: expected str"),
        ('[stages.download]\nprocesses = "2"\n', "stages.download.processes: expected int"),
        ("[stages.download]\nthreds = 2\n", "unknown key(s) threds"),
        ("[nonsense]\na = 1\n", "unknown key(s) nonsense"),
        ('[storage]\nbackend = "s3"\n', "backend must be one of"),
        ('[topics]\nretry_delays = ["5 minutes"]\n', "is not a duration"),
        ("[download]\nallow_cidrs = [\"10.0.0.0/99\"]\n", "allow_cidrs"),
        ("[supervisor]\nshutdown_timeout = -1\n", "shutdown_timeout must be > 0"),
        ("[metrics]\nbind = \"nowhere\"\n", "bind must be HOST:PORT"),
        ("[download]\nverify_tls = 1\n", "expected bool"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        cfg.load(path, environ={})
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        cfg.load(tmp_path / "absent.toml", environ={})


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, '[kafka]\nbootstrap_servers = "file:1"\n[stages.download]\nthreads = 2\n')
    c = cfg.load(path, environ={
        "KAFKAPIPE_KAFKA__BOOTSTRAP_SERVERS": "env:2",
        "KAFKAPIPE_STAGES__DOWNLOAD__THREADS": "4",
        "KAFKAPIPE_TOPICS__RETRY_DELAYS": '["1s", "2s"]',
        "UNRELATED": "x",
    })
    assert c.kafka.bootstrap_servers == "env:2"
    assert c.stages.download.threads == 4
    assert c.topics.retry_delay_seconds(1) == 2.0


def test_bad_environment_value_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="stages.download.threads"):
        cfg.load(None, environ={"KAFKAPIPE_STAGES__DOWNLOAD__THREADS": "many"})


def test_durations():
    assert cfg.parse_duration("5m") == 300
    assert cfg.parse_duration("1.5s") == 1.5
    assert cfg.parse_duration("2h") == 7200
    with pytest.raises(ValueError):
        cfg.parse_duration("5")


def test_display_masks_secrets_but_not_their_locations():
    c = cfg.from_mapping({"kafka": {"producer": {"sasl.password": "hunter2"}},
                          "storage": {"azure": {"credential": {"account_key_env": "AZ_KEY"}}}})
    shown = cfg.to_display(c)
    assert shown["kafka"]["producer"]["sasl.password"] == "***"
    assert shown["storage"]["azure"]["credential"]["account_key_env"] == "AZ_KEY"


def test_shipped_example_configs_load():
    paths = sorted((ROOT / "etc").rglob("*.toml"))
    assert ROOT / "etc" / "pipeline.toml" in paths
    for path in paths:
        loaded = cfg.load(path, environ={})  # raises ConfigError naming the key if one is wrong
        assert isinstance(loaded, cfg.Config) and loaded.source == str(path)


def test_pipeline_toml_documents_every_key_with_its_default():
    import tomllib

    documented = tomllib.loads((ROOT / "etc" / "pipeline.toml").read_text())
    defaults = cfg.to_display(cfg.Config())

    def keys(tree, prefix=""):
        out = set()
        for k, v in tree.items():
            if isinstance(v, dict) and v:
                out |= keys(v, f"{prefix}{k}.")
            else:
                out.add(f"{prefix}{k}")
        return out

    assert keys(documented) == keys(defaults)
    assert cfg.load(ROOT / "etc" / "pipeline.toml", environ={}) == cfg.Config()


def test_state_dir_places_relative_state_paths_wherever_the_command_runs(tmp_path, monkeypatch):
    config_file = tmp_path / "etc" / "pipeline.toml"
    config_file.parent.mkdir()
    config_file.write_text('state_dir = "/var/lib/kp"\n[storage]\nroot = "files"\n[dlq]\naudit_log = "/abs/audit"\n')
    monkeypatch.chdir("/")
    config = cfg.load(config_file, environ={})
    assert config.storage.root == "/var/lib/kp/files"
    assert config.inventory.path == "/var/lib/kp/var/inventory.sqlite3"
    assert config.dlq.audit_log == "/abs/audit"  # absolute paths stay
    assert config.metrics.multiproc_dir == ""  # empty keeps its meaning: a fresh directory


def test_a_relative_state_dir_is_taken_from_the_config_files_directory(tmp_path, monkeypatch):
    config_file = tmp_path / "pipeline.toml"
    config_file.write_text('state_dir = "state"\n')
    monkeypatch.chdir("/")
    assert cfg.load(config_file, environ={}).inventory.path == str(tmp_path / "state" / "var/inventory.sqlite3")


def test_without_state_dir_paths_stay_relative_to_the_working_directory():
    assert cfg.load(None, environ={}).inventory.path == "var/inventory.sqlite3"
