"""Configuration: TOML file + ``KAFKAPIPE_<SECTION>__<KEY>`` environment → :class:`Config`.

Every key has a default; unknown keys, wrong types and bad values raise
:class:`~kafkapipe.errors.ConfigError` naming the key and the file, so the
command line can exit 2 before anything touches Kafka. Kafka client overrides that would
break at-least-once delivery are refused the same way (:mod:`kafkapipe.guarantees`).
Secrets are never values in this file: only the ``*_env`` / ``*_file``
names of where to read them.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import cattrs
from attrs import field, frozen

from kafkapipe.errors import ConfigError, ValidationError
from kafkapipe.guarantees import CONSUMER_RULES, PRODUCER_RULES, Rule, violations
from kafkapipe.hostnames import normalize_host

ENV_PREFIX = "KAFKAPIPE_"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_stages(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"ingest,download"`` → ("ingest", "download"); None/empty → None (all). Raises ConfigError."""
    if not text:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    unknown = [name for name in names if name not in STAGES]
    if unknown:
        raise ConfigError(
            f"--stages: unknown stage(s) {', '.join(unknown)}; expected some of {', '.join(STAGES)}"
        )
    return names or None


def parse_duration(text: str) -> float:
    """``"5m"`` → 300.0 seconds. Units: ms, s, m, h."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like '30s', '5m' or '1h'")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _fraction(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{attribute.name} must be in (0, 1], got {value!r}")


def _one_of(*choices: str):
    def check(instance: Any, attribute: attrs.Attribute, value: str) -> None:
        if value not in choices:
            raise ValueError(f"{attribute.name} must be one of {', '.join(choices)}; got {value!r}")

    return check


def _durations(instance: Any, attribute: attrs.Attribute, value: list[str]) -> None:
    if not value:
        raise ValueError(f"{attribute.name} needs at least one delay")
    if len(set(value)) != len(value):
        raise ValueError(f"{attribute.name} must not repeat a delay (each names its own topic): {value}")
    for item in value:
        try:
            parse_duration(item)
        except ValueError as exc:
            raise ValueError(f"{attribute.name}: {exc}") from None


def _retention(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if value != -1 and value <= 0:
        raise ValueError(f"{attribute.name} must be -1 (keep forever) or > 0 milliseconds, got {value!r}")


def _cidrs(instance: Any, attribute: attrs.Attribute, value: list[str]) -> None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            raise ValueError(f"{attribute.name}: {exc}") from None


def _host_port(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{attribute.name} must be HOST:PORT, got {value!r}")


# Which credential kinds each use accepts: the one table both storage and Kafka consult.
CREDENTIAL_KINDS = {
    "storage": ("shared_key", "sas", "service_principal", "managed_identity", "workload_identity", "azure_cli"),
    "kafka": ("service_principal", "managed_identity", "workload_identity", "azure_cli", "unsecured_jwt"),
}
CREDENTIAL_TARGETS = {"storage": "Azure storage", "kafka": "Kafka"}


def one_source(where: str, name: str, env: str, path: str) -> list[str]:
    """A secret comes from exactly one of ``<name>_env`` and ``<name>_file``."""
    if env and path:
        return [f"{where}: set only one of {name}_env and {name}_file"]
    if not env and not path:
        return [f"{where}: {name}_env or {name}_file is required"]
    return []


@frozen
class CredentialConfig:
    """Where a token or key comes from (storage and Kafka OAUTHBEARER).

    kinds: ``service_principal`` (secret or certificate), ``managed_identity``,
    ``workload_identity`` (AKS pods: a federated token file), ``azure_cli``,
    ``shared_key`` and ``sas`` (storage only), ``unsecured_jwt`` (local
    development brokers only: an unsigned token Kafka's default validator
    accepts). :data:`CREDENTIAL_KINDS` says which use takes which.
    """

    kind: str = field(
        default="service_principal",
        validator=_one_of(*dict.fromkeys(CREDENTIAL_KINDS["storage"] + CREDENTIAL_KINDS["kafka"])),
    )
    tenant_id: str = ""
    client_id: str = ""
    client_secret_env: str = ""
    client_secret_file: str = ""
    certificate_file: str = ""
    certificate_thumbprint: str = ""
    authority_host: str = "https://login.microsoftonline.com"
    # workload_identity: the projected service-account token; empty = $AZURE_FEDERATED_TOKEN_FILE.
    federated_token_file: str = ""
    account_name: str = ""
    account_key_env: str = ""
    account_key_file: str = ""
    sas_token_env: str = ""
    sas_token_file: str = ""
    principal: str = "kafkapipe"
    token_lifetime: float = field(default=3600.0, validator=_positive)
    refresh_margin: float = field(default=300.0, validator=_non_negative)

    def problems(self, where: str, use: str | None = None) -> list[str]:
        """What keeps this credential from being built, each naming its key under ``where``.

        ``use`` (a key of :data:`CREDENTIAL_KINDS`) also refuses a kind that use cannot take.
        Workload identity's keys may come from the pod's environment: checked by the factory.
        """
        if use is not None and self.kind not in CREDENTIAL_KINDS[use]:
            return [
                f"{where}.kind: {self.kind} cannot authenticate to {CREDENTIAL_TARGETS[use]}; use "
                f"{', '.join(CREDENTIAL_KINDS[use])}"
            ]
        if self.kind == "service_principal":
            return self._service_principal_problems(where)
        if self.kind == "shared_key":
            return one_source(where, "account_key", self.account_key_env, self.account_key_file)
        if self.kind == "sas":
            return one_source(where, "sas_token", self.sas_token_env, self.sas_token_file)
        if self.kind == "unsecured_jwt" and not self.principal:
            return [f"{where}.principal: needed for kind unsecured_jwt"]
        return []

    def _service_principal_problems(self, where: str) -> list[str]:
        missing = [name for name in ("tenant_id", "client_id") if not getattr(self, name)]
        if missing:
            return [f"{where}: kind service_principal needs {' and '.join(missing)}"]
        has_secret = bool(self.client_secret_env or self.client_secret_file)
        if has_secret and self.certificate_file:
            return [f"{where}: set a client secret or a certificate_file, not both"]
        if not has_secret and not self.certificate_file:
            return [f"{where}: kind service_principal needs client_secret_env, client_secret_file or certificate_file"]
        if has_secret:
            return one_source(where, "client_secret", self.client_secret_env, self.client_secret_file)
        return []


@frozen
class OAuthConfig:
    scope: str = ""
    credential: CredentialConfig = CredentialConfig()

    def problems(self, where: str) -> list[str]:
        return self.credential.problems(f"{where}.credential", "kafka") or self.scope_problems(
            where, self.credential.kind
        )

    def scope_problems(self, where: str, kind: str) -> list[str]:
        if self.scope or kind == "unsecured_jwt":
            return []
        return [
            f"{where}.scope: required for kind {kind} (Event Hubs: https://<namespace>.servicebus.windows.net/.default)"
        ]



# Event Hubs' Kafka endpoints in the public, China and US Government clouds.
EVENT_HUBS_SUFFIXES = (".servicebus.windows.net", ".servicebus.chinacloudapi.cn", ".servicebus.usgovcloudapi.net")
COMPRESSIONS = ("auto", "none", "gzip", "snappy", "lz4", "zstd")
# Event Hubs takes compressed batches only on Premium and Dedicated, and only gzip.
EVENT_HUBS_COMPRESSIONS = ("auto", "none", "gzip")


def is_event_hubs(bootstrap_servers: str) -> bool:
    """True when every bootstrap server is an Event Hubs namespace."""
    hosts = [s.strip().rpartition(":")[0] or s.strip() for s in bootstrap_servers.split(",") if s.strip()]
    return bool(hosts) and all(h.lower().rstrip(".").endswith(EVENT_HUBS_SUFFIXES) for h in hosts)


def _compression(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    _one_of(*COMPRESSIONS)(instance, attribute, value)
    if is_event_hubs(instance.bootstrap_servers) and value not in EVENT_HUBS_COMPRESSIONS:
        raise ValueError(
            f"{attribute.name} must be auto, none or gzip for Event Hubs (gzip only on Premium/Dedicated); "
            f"got {value!r}"
        )


def _guarded(rules: tuple[Rule, ...]):
    def check(instance: Any, attribute: attrs.Attribute, value: dict[str, Any]) -> None:
        found = violations(value, rules)
        if found:
            raise ValueError(f"[kafka.{attribute.name}] " + "; ".join(found))

    return check


@frozen
class KafkaConfig:
    bootstrap_servers: str = "localhost:9092"
    security_protocol: str = field(
        default="PLAINTEXT", validator=_one_of("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
    )
    sasl_mechanism: str = field(default="OAUTHBEARER", validator=_one_of("OAUTHBEARER", "PLAIN"))
    group_prefix: str = "kafkapipe"
    # Producer compression; "auto" = lz4, or none when the target is Event Hubs.
    compression: str = field(default="auto", validator=_compression)
    consumer: dict[str, Any] = field(factory=dict, validator=_guarded(CONSUMER_RULES))
    producer: dict[str, Any] = field(factory=dict, validator=_guarded(PRODUCER_RULES))
    oauth: OAuthConfig = OAuthConfig()

    def problems(self) -> list[str]:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism == "OAUTHBEARER":
            return self.oauth.problems("kafka.oauth")
        return []


@frozen
class TopicsConfig:
    events: str = "attachments.events"
    pending: str = "attachments.downloads.pending"
    results: str = "attachments.downloads.results"
    dlq: str = "attachments.downloads.dlq"
    events_dlq: str = "attachments.events.dlq"
    retry_prefix: str = "attachments.downloads.retry"
    retry_delays: list[str] = field(factory=lambda: ["5m", "10m", "20m", "40m"], validator=_durations)
    partitions: int = field(default=6, validator=_positive)
    replication_factor: int = field(default=1, validator=_positive)
    # retention.ms of both dead-letter topics: -1 keeps dead letters until an operator deletes them.
    dlq_retention_ms: int = field(default=-1, validator=_retention)

    def retry_topic(self, index: int) -> str:
        return f"{self.retry_prefix}.{self.retry_delays[index]}"

    @property
    def retry_topics(self) -> list[str]:
        return [self.retry_topic(i) for i in range(len(self.retry_delays))]

    def retry_delay_seconds(self, index: int) -> float:
        return parse_duration(self.retry_delays[index])

    @property
    def all(self) -> list[str]:
        return [self.events, self.pending, self.results, self.dlq, self.events_dlq, *self.retry_topics]


@frozen
class SupervisorConfig:
    shutdown_timeout: float = field(default=30.0, validator=_positive)
    heartbeat_timeout: float = field(default=60.0, validator=_positive)
    restart_backoff_max: float = field(default=30.0, validator=_positive)
    runtime_restart_backoff_max: float = field(default=2.0, validator=_positive)
    healthy_after: float = field(default=10.0, validator=_non_negative)
    broker_check_timeout: float = field(default=15.0, validator=_positive)
    crash_loop_restarts: int = field(default=5, validator=_positive)
    crash_loop_window: float = field(default=60.0, validator=_positive)


@frozen
class IngestSettings:
    processes: int = field(default=1, validator=_non_negative)


@frozen
class DownloadSettings:
    processes: int = field(default=2, validator=_non_negative)
    threads: int = field(default=16, validator=_positive)
    # Tasks per process taken in before partitions are paused; 0 means 64 × threads. A waiting
    # task costs only its message (~1 KiB), and every pause makes librdkafka drop and re-fetch
    # its prefetched messages, so a small bound starves the threads.
    max_in_flight: int = field(default=0, validator=_non_negative)
    # Ask the inventory before downloading: a task it records as stored (ours, or imported from
    # the legacy pipeline) is reported successful without a request.
    check_inventory: bool = True

    @property
    def in_flight_bound(self) -> int:
        return self.max_in_flight or self.threads * 64


@frozen
class DelaySettings:
    processes: int = field(default=1, validator=_non_negative)
    # Pause republishing while the pending topic's lag is above this; 0 disables.
    max_pending_lag: int = field(default=100_000, validator=_non_negative)


@frozen
class ResultsSettings:
    processes: int = field(default=1, validator=_non_negative)
    batch_size: int = field(default=500, validator=_positive)
    batch_timeout: float = field(default=1.0, validator=_positive)


@frozen
class StagesConfig:
    """One section per stage; :mod:`kafkapipe.stages.registry` says what each stage is."""

    ingest: IngestSettings = IngestSettings()
    download: DownloadSettings = DownloadSettings()
    delay: DelaySettings = DelaySettings()
    results: ResultsSettings = ResultsSettings()

    def processes(self, stage: str) -> int:
        return getattr(self, stage).processes


# The stage names, in pipeline order: the sections of [stages] (docs/architecture.md, "Adding a stage").
STAGES: tuple[str, ...] = tuple(a.name for a in attrs.fields(StagesConfig))


DEFAULT_FILE_TYPES = ["pdf", "jpg", "png", "gif", "tiff", "heic", "docx", "xlsx", "doc", "xls", "txt", "zip", "esx"]


def _host_names(instance: Any, attribute: attrs.Attribute, value: list[str]) -> None:
    for item in value:
        suffix = attribute.name == "allowed_host_suffixes"
        try:
            _, ip = normalize_host(item.strip().lstrip(".") if suffix else item.strip())
        except ValidationError as exc:
            raise ValueError(f"{attribute.name}: {item!r}: {exc.message}") from None
        if suffix and ip is not None:
            raise ValueError(f"{attribute.name}: {item!r} is an IP address, not a domain")


def _schemes(instance: Any, attribute: attrs.Attribute, value: list[str]) -> None:
    unknown = sorted({s.lower() for s in value} - {"http", "https"})
    if unknown:
        raise ValueError(f"{attribute.name}: unsupported scheme(s) {', '.join(unknown)}; use http or https")


@frozen
class DownloadConfig:
    allowed_schemes: list[str] = field(factory=lambda: ["https"], validator=_schemes)
    allowed_hosts: list[str] = field(factory=list, validator=_host_names)
    allowed_host_suffixes: list[str] = field(factory=list, validator=_host_names)
    allowed_ports: list[int] = field(factory=lambda: [443])
    allow_cidrs: list[str] = field(factory=list, validator=_cidrs)
    allowed_file_types: list[str] = field(factory=lambda: list(DEFAULT_FILE_TYPES))
    connect_timeout: float = field(default=5.0, validator=_positive)
    read_timeout: float = field(default=30.0, validator=_positive)
    # Whole-download deadline: a server dribbling bytes is cut off here.
    total_timeout: float = field(default=600.0, validator=_positive)
    max_bytes: int = field(default=2 * 1024**3, validator=_positive)
    max_redirects: int = field(default=3, validator=_non_negative)
    chunk_size: int = field(default=1024 * 1024, validator=_positive)
    clock_skew: float = field(default=60.0, validator=_non_negative)
    # A server's Retry-After is honoured up to this; a longer one is retried after this long.
    max_retry_after: float = field(default=3600.0, validator=_positive)
    verify_tls: bool = True
    ca_bundle: str = ""
    # A host's circuit opens when at least circuit_failure_rate of its recent calls failed, once
    # circuit_minimum_calls distinct URLs are in the window of the last circuit_window_size.
    circuit_failure_rate: float = field(default=0.5, validator=_fraction)
    circuit_minimum_calls: int = field(default=10, validator=_positive)
    circuit_window_size: int = field(default=50, validator=_positive)
    circuit_reset_timeout: float = field(default=30.0, validator=_positive)
    # A task turned away by an open circuit waits for the probe; after this many waits, or this
    # long since its first wait, the next rejection counts as a transient failure (uses an attempt).
    max_circuit_waits: int = field(default=10, validator=_non_negative)
    max_circuit_wait: float = field(default=3600.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.circuit_minimum_calls > self.circuit_window_size:
            raise ValueError("circuit_minimum_calls must not exceed circuit_window_size")
    user_agent: str = "kafkapipe/1"


# Azure's limits on a block blob: blocks per blob and bytes per block.
MAX_BLOCKS = 50_000
MAX_BLOCK_SIZE = 4000 * 1024 * 1024


@frozen
class AzureBlobConfig:
    # https://<account>.blob.core.windows.net, https://onelake.blob.fabric.microsoft.com,
    # or http://127.0.0.1:10000/devstoreaccount1 for Azurite.
    account_url: str = ""
    container: str = ""
    prefix: str = ""
    api_version: str = "2023-11-03"
    # Bytes per Put Block: the upload's memory per download (at most 4000 MiB, Azure's limit).
    block_size: int = field(default=4 * 1024 * 1024, validator=[_positive, attrs.validators.le(MAX_BLOCK_SIZE)])
    credential: CredentialConfig = CredentialConfig(kind="shared_key")

    def problems(self, where: str = "storage.azure") -> list[str]:
        split = urlsplit(self.account_url)
        if not self.account_url:
            return [f"{where}.account_url: required for backend azure_blob ({ACCOUNT_URL_FORMS})"]
        if split.scheme not in ("https", "http") or not split.hostname or split.query:
            return [f"{where}.account_url: must be {ACCOUNT_URL_FORMS}; got {self.account_url!r}"]
        if not self.container:
            return [f"{where}.container: required (for OneLake: the workspace name)"]
        credential = f"{where}.credential"
        found = self.credential.problems(credential, "storage")
        if not found and self.credential.kind == "shared_key" and not self.shared_key_account:
            found = [f"{credential}.account_name: required (cannot be derived from the account_url)"]
        return found

    @property
    def shared_key_account(self) -> str:
        return self.credential.account_name or account_from_url(self.account_url)


ACCOUNT_URL_FORMS = (
    "https://<account>.blob.core.windows.net, https://onelake.blob.fabric.microsoft.com or an Azurite URL"
)


def account_from_url(account_url: str) -> str:
    """``https://acct.blob.core.windows.net`` → acct; ``http://127.0.0.1:10000/acct`` → acct."""
    split = urlsplit(account_url)
    segments = [s for s in split.path.split("/") if s]
    if segments:
        return segments[0]
    return (split.hostname or "").split(".")[0]


@frozen
class StorageConfig:
    backend: str = field(default="local", validator=_one_of("local", "azure_blob"))
    root: str = "var/attachments"
    azure: AzureBlobConfig = AzureBlobConfig()

    def problems(self) -> list[str]:
        return self.azure.problems("storage.azure") if self.backend == "azure_blob" else []


@frozen
class PostgresInventoryConfig:
    """Where the PostgreSQL inventory is. The DSN may carry a password: only where to read it."""

    dsn_env: str = ""
    dsn_file: str = ""
    # libpq's TLS settings, passed through as connection parameters; empty = libpq's default.
    sslmode: str = field(
        default="", validator=_one_of("", "disable", "allow", "prefer", "require", "verify-ca", "verify-full")
    )
    sslrootcert: str = ""
    sslcert: str = ""
    sslkey: str = ""
    connect_timeout: float = field(default=10.0, validator=_positive)
    pool_min: int = field(default=1, validator=_positive)
    pool_max: int = field(default=4, validator=_positive)


@frozen
class InventoryExportConfig:
    # Rows changed this long before the last export's newest row are read again: covers
    # transactions that committed late and clocks of several writers. Merging is idempotent.
    overlap: float = field(default=120.0, validator=_non_negative)


@frozen
class InventoryConfig:
    backend: str = field(default="sqlite", validator=_one_of("sqlite", "postgresql"))
    path: str = "var/inventory.sqlite3"
    postgresql: PostgresInventoryConfig = PostgresInventoryConfig()
    export: InventoryExportConfig = InventoryExportConfig()

    def problems(self) -> list[str]:
        if self.backend != "postgresql":
            return []
        pg = self.postgresql
        return one_source("inventory.postgresql", "dsn", pg.dsn_env, pg.dsn_file)


def _column_names(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value.strip() or any(ord(c) < 32 for c in value):
        raise ValueError(f"{attribute.name} must name a column, got {value!r}")


@frozen
class MigrateConfig:
    """Legacy (Delta pipeline) column → task field, for ``kafkapipe migrate`` / ``compare`` / ``inventory import``."""

    trace_id: str = field(default="trace_id", validator=_column_names)
    attachment_url: str = field(default="attachment_url", validator=_column_names)
    retry_count: str = field(default="retry_count", validator=_column_names)
    next_retry_at: str = field(default="next_retry_at", validator=_column_names)
    last_error: str = field(default="last_error", validator=_column_names)
    created_at: str = field(default="created_at", validator=_column_names)
    event_type: str = field(default="event_type", validator=_column_names)
    source_system: str = field(default="source_system", validator=_column_names)
    blob_path: str = field(default="blob_path", validator=_column_names)
    status: str = field(default="status", validator=_column_names)
    sha256: str = field(default="sha256", validator=_column_names)
    bytes: str = field(default="bytes", validator=_column_names)
    legacy_id: str = field(default="id", validator=_column_names)
    # Legacy status values that mean "stored"; compared with kafkapipe's `success`.
    success_values: list[str] = field(factory=lambda: ["success", "succeeded", "completed", "downloaded"])
    batch_size: int = field(default=10_000, validator=_positive)

    def __attrs_post_init__(self) -> None:
        names = [a.name for a in attrs.fields(MigrateConfig) if isinstance(getattr(self, a.name), str)]
        seen: dict[str, str] = {}
        for name in names:
            column = getattr(self, name)
            if column in seen:
                raise ValueError(f"migrate.{name} and migrate.{seen[column]} both read column {column!r}")
            seen[column] = name


@frozen
class MetricsConfig:
    bind: str = field(default="127.0.0.1:9464", validator=_host_port)
    # Where worker processes write their metric files; empty = a fresh temp dir per supervisor.
    multiproc_dir: str = ""


@frozen
class DlqToolConfig:
    # Append-only JSON lines, one per `kafkapipe dlq replay|ack` (relative: to the working directory).
    audit_log: str = "var/dlq-audit.jsonl"


@frozen
class LoggingConfig:
    level: str = field(default="INFO", validator=_one_of("DEBUG", "INFO", "WARNING", "ERROR"))
    format: str = field(default="json", validator=_one_of("json", "text"))


@frozen
class Config:
    kafka: KafkaConfig = KafkaConfig()
    topics: TopicsConfig = TopicsConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    stages: StagesConfig = StagesConfig()
    download: DownloadConfig = DownloadConfig()
    storage: StorageConfig = StorageConfig()
    inventory: InventoryConfig = InventoryConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    dlq: DlqToolConfig = DlqToolConfig()
    migrate: MigrateConfig = MigrateConfig()
    # Where relative state paths (storage.root, inventory.path, dlq.audit_log,
    # metrics.multiproc_dir) live; empty means the working directory. Set it, and the service
    # and every CLI command find the same files from any directory.
    state_dir: str = ""
    source: str = field(default="<defaults>", eq=False)

    def problems(self) -> list[str]:
        """The rules that span fields or sections; each problem names its key."""
        return [
            *self.kafka.problems(),
            *self.storage.problems(),
            *self.inventory.problems(),
            *_blob_capacity_problems(self),
        ]

    def validate(self) -> None:
        """ConfigError listing every problem of :meth:`problems`; :func:`load` runs it."""
        found = self.problems()
        if found:
            raise ConfigError(f"{self.source}: invalid configuration: " + "; ".join(found))


def _strict_converter() -> cattrs.Converter:
    """A converter that refuses to coerce: ``"5"`` is not an int here."""
    conv = cattrs.Converter(forbid_extra_keys=True)

    def exact(kind: type, accept: tuple[type, ...]):
        def structure(value: Any, _: type) -> Any:
            if isinstance(value, bool) and kind is not bool:
                raise TypeError(f"expected {kind.__name__}, got bool")
            if not isinstance(value, accept):
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
            return kind(value)

        return structure

    conv.register_structure_hook(str, exact(str, (str,)))
    conv.register_structure_hook(int, exact(int, (int,)))
    conv.register_structure_hook(float, exact(float, (int, float)))
    conv.register_structure_hook(bool, exact(bool, (bool,)))
    conv.register_structure_hook_func(lambda t: t == dict[str, Any], lambda v, _: _table(v))
    return conv


def _table(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a table, got {type(value).__name__}")
    return dict(value)


_CONVERTER = _strict_converter()


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """``KAFKAPIPE_STAGES__DOWNLOAD__THREADS=8`` → ``{"stages": {"download": {"threads": 8}}}``.

    Values are read as TOML literals when they parse as one, else as strings,
    so ``["1s","2s"]`` is a list and ``localhost:9092`` a string.
    """
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(exc: BaseException, source: str) -> str:
    lines = cattrs.transform_error(exc, path="", format_exception=_format_leaf)
    return f"{source}: invalid configuration: " + "; ".join(_key_first(line) for line in lines)


def _format_leaf(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown key(s) {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required key missing"
    return str(exc)


def _key_first(line: str) -> str:
    # cattrs says "<problem> @ $.a.b"; operators look for the key first.
    problem, sep, key = line.rpartition(" @ ")
    key = key.lstrip("$.")
    return f"{key or '<top level>'}: {problem}" if sep else line


def from_mapping(data: dict[str, Any], source: str = "<mapping>") -> Config:
    try:
        config = _CONVERTER.structure(data, Config)
    except (cattrs.BaseValidationError, ValueError, TypeError) as exc:
        raise ConfigError(_describe(exc, source)) from None
    config = with_state_dir(attrs.evolve(config, source=source))
    config.validate()
    return config


def with_state_dir(config: Config) -> Config:
    """Relative state paths resolved against ``state_dir`` (itself relative to the config file)."""
    if not config.state_dir:
        return config
    base = Path(config.state_dir)
    if not base.is_absolute() and config.source not in ("<defaults>", "<mapping>"):
        base = Path(config.source).resolve().parent / base

    def place(path: str) -> str:
        return path if not path or Path(path).is_absolute() else str(base / path)

    return attrs.evolve(
        config,
        state_dir=str(base),
        storage=attrs.evolve(config.storage, root=place(config.storage.root)),
        inventory=attrs.evolve(config.inventory, path=place(config.inventory.path)),
        dlq=attrs.evolve(config.dlq, audit_log=place(config.dlq.audit_log)),
        metrics=attrs.evolve(config.metrics, multiproc_dir=place(config.metrics.multiproc_dir)),
    )


def _blob_capacity_problems(config: Config) -> list[str]:
    """A download the stage accepts must fit in one block blob (50,000 blocks of block_size)."""
    if config.storage.backend != "azure_blob":
        return []
    block_size = config.storage.azure.block_size
    capacity = block_size * MAX_BLOCKS
    if config.download.max_bytes <= capacity:
        return []
    return [
        f"download.max_bytes ({config.download.max_bytes}) is more than "
        f"storage.azure.block_size ({block_size}) x {MAX_BLOCKS:,} blocks = {capacity} bytes, the most one "
        f"blob can hold; raise storage.azure.block_size to at least "
        f"{-(-config.download.max_bytes // MAX_BLOCKS)} or lower download.max_bytes"
    ]


def load(path: str | os.PathLike[str] | None, environ: dict[str, str] | None = None) -> Config:
    """Read ``path`` (or only defaults when None), apply the environment, validate."""
    environ = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return from_mapping(_merge(data, _env_overrides(environ)), source)


SECRET_HINTS = ("secret", "password", "key", "token", "sas")


def to_display(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, with anything secret-looking masked."""
    data = _CONVERTER.unstructure(config)
    data.pop("source", None)
    return _mask(data)


def _mask(node: Any, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _mask(v, k) for k, v in node.items()}
    lowered = key.lower()
    if (
        isinstance(node, str)
        and node
        and any(h in lowered for h in SECRET_HINTS)
        and not lowered.endswith(("_env", "_file"))
    ):
        return "***"
    return node
