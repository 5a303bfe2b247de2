"""Preflight: what a loaded configuration needs of this host, checked before any worker starts.

:func:`kafkapipe.config.load` checks the configuration itself; this checks the host against it,
without touching the network: secret and certificate files readable, keys that decode,
directories writable, the metrics port free. It runs in ``kafkapipe config check``, at
supervisor start and on SIGHUP (docs/architecture.md, "Configuration"), so a worker never
fails to boot on something a check could have named.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

from kafkapipe.auth.credentials import SecretSource, credential_from_config
from kafkapipe.config import STAGES, Config, CredentialConfig
from kafkapipe.errors import AuthError, ConfigError
from kafkapipe.stages.registry import SPECS

Check = Callable[[Config], list[str]]


def preflight(config: Config, stages: Iterable[str] = STAGES, *, ports: bool = True) -> list[str]:
    """Every problem found, each naming its configuration key; empty when the host is ready.

    ``stages`` limits the checks to what those stages use; ``ports=False`` skips the metrics
    port, which a running supervisor holds itself.
    """
    checks: list[Check] = [_kafka]
    for stage in stages:
        checks += [CHECKS[need] for need in SPECS[stage].needs if CHECKS[need] not in checks]
    if ports:
        checks.append(_metrics_port)
    checks.append(_metrics_dir)
    return [problem for check in checks for problem in check(config)]


def check_or_raise(config: Config, stages: Iterable[str] = STAGES, *, ports: bool = True) -> None:
    """ConfigError listing every preflight problem."""
    found = preflight(config, stages, ports=ports)
    if found:
        raise ConfigError(f"{config.source}: not ready on this host: " + "; ".join(found))


def _credential(config: CredentialConfig, where: str) -> list[str]:
    """Building a credential reads its secret or certificate and decodes keys: no request is made."""
    try:
        credential_from_config(config, where)
    except ConfigError as exc:
        return [str(exc)]
    return []


def _kafka(config: Config) -> list[str]:
    kafka = config.kafka
    found = []
    if kafka.security_protocol.startswith("SASL") and kafka.sasl_mechanism == "OAUTHBEARER":
        found += _credential(kafka.oauth.credential, "kafka.oauth.credential")
    for section in ("consumer", "producer"):
        for key, value in getattr(kafka, section).items():
            if key.endswith(".location") and isinstance(value, str):
                found += readable_file(f"kafka.{section}.{key}", value)
    return found


def storage(config: Config) -> list[str]:
    if config.storage.backend == "azure_blob":
        return _credential(config.storage.azure.credential, "storage.azure.credential")
    return writable_dir("storage.root", config.storage.root)


def download(config: Config) -> list[str]:
    return readable_file("download.ca_bundle", config.download.ca_bundle) if config.download.ca_bundle else []


def inventory(config: Config) -> list[str]:
    inv = config.inventory
    if inv.backend == "sqlite":
        return writable_dir("inventory.path", str(Path(inv.path).parent))
    pg = inv.postgresql
    found = []
    try:
        SecretSource("inventory.postgresql", "dsn", pg.dsn_env, pg.dsn_file).read()
    except (AuthError, ConfigError) as exc:
        found.append(str(exc))
    for key in ("sslrootcert", "sslcert", "sslkey"):
        if getattr(pg, key):
            found += readable_file(f"inventory.postgresql.{key}", getattr(pg, key))
    return found


def _metrics_dir(config: Config) -> list[str]:
    path = config.metrics.multiproc_dir
    return writable_dir("metrics.multiproc_dir", path) if path else []


def _metrics_port(config: Config) -> list[str]:
    host, _, port = config.metrics.bind.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
    except OSError as exc:
        return [f"metrics.bind: cannot listen on {config.metrics.bind} ({exc.strerror or exc})"]
    return []


def readable_file(key: str, path: str) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        return [f"{key}: file {path} cannot be read ({exc.strerror or exc})"]
    return []


def writable_dir(key: str, path: str) -> list[str]:
    """The directory, or the nearest ancestor that exists (it is created later), is writable."""
    target = Path(path or ".").absolute()
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir():
        return [f"{key}: {target} is not a directory"]
    if not os.access(target, os.W_OK | os.X_OK):
        return [f"{key}: directory {target} is not writable"]
    return []


# What a stage's spec may name in ``needs`` (kafkapipe.stages.registry).
CHECKS: dict[str, Check] = {"storage": storage, "download": download, "inventory": inventory}
