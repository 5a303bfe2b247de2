"""The metric objects. Imported only by :mod:`kafkapipe.metrics`, on first use of a metric.

Only metric types that prometheus_client's multiprocess mode supports belong here: no Info,
Enum, Summary quantiles or ``set_function``. Gauges use ``live*`` modes so a dead worker's
values disappear once the supervisor marks it dead.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_CONSUMED = Counter(
    "kafkapipe_messages_consumed_total", "Messages handed to a stage handler", ["stage", "topic"]
)
MESSAGES_PRODUCED = Counter(
    "kafkapipe_messages_produced_total", "Messages acknowledged by the broker", ["stage", "topic"]
)
PROCESSING_SECONDS = Histogram(
    "kafkapipe_processing_seconds",
    "Time from handler start to outputs acknowledged",
    ["stage"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
DOWNLOADS = Counter("kafkapipe_downloads_total", "Download attempts by outcome", ["status", "category"])
DOWNLOAD_BYTES = Counter("kafkapipe_download_bytes_total", "Bytes stored by successful downloads")
CONSUMER_LAG = Gauge(
    "kafkapipe_consumer_lag",
    "High watermark minus position, per assigned partition",
    ["stage", "topic", "partition"],
    multiprocess_mode="livesum",
)
IN_FLIGHT = Gauge("kafkapipe_in_flight", "Messages being processed", ["stage"], multiprocess_mode="livesum")
ASSIGNED_PARTITIONS = Gauge(
    "kafkapipe_assigned_partitions", "Partitions assigned", ["stage"], multiprocess_mode="livesum"
)
CIRCUIT_STATE = Gauge(
    "kafkapipe_circuit_state", "Per-host circuit: 0 closed, 1 half-open, 2 open", ["host"],
    multiprocess_mode="livemax",
)
RETRIES_ROUTED = Counter(
    "kafkapipe_retries_routed_total", "Tasks sent to a retry topic", ["topic", "category"]
)
DEAD_LETTERS = Counter("kafkapipe_dead_letters_total", "Messages dead-lettered", ["stage", "category"])
WORKER_RESTARTS = Counter("kafkapipe_worker_restarts_total", "Workers restarted by the supervisor", ["stage"])
AUTH_PAUSES = Counter("kafkapipe_auth_pauses_total", "Times a stage paused on an auth failure", ["stage"])
KAFKA_ERRORS = Counter(
    "kafkapipe_kafka_errors_total", "Errors reported by librdkafka, by category: auth, transient, permanent",
    ["stage", "category"],
)

# Written by the supervisor process only.
WORKER_EXITS = Counter(
    "kafkapipe_worker_exits_total",
    "Worker processes that ended, by cause: stopped, exited, signaled, stale, boot_error",
    ["stage", "cause"],
)
WORKERS = Gauge(
    "kafkapipe_workers",
    "Worker processes per stage: expected (target), alive, ready",
    ["stage", "state"],
    multiprocess_mode="livemax",
)
RELOADS = Counter(
    "kafkapipe_config_reloads_total", "SIGHUP reloads by outcome: applied, rejected", ["outcome"]
)
STORAGE_HOLDS = Counter(
    "kafkapipe_storage_holds_total", "Times the download stage held a task because storage was unavailable",
    ["reason"],
)
ALREADY_STORED = Counter(
    "kafkapipe_already_stored_total", "Tasks reported successful without a request: their blob was already stored"
)
# 1 while a worker's stage holds its work, by kind (auth, storage, inventory, broker); set and
# cleared by the consume loop. `kafkapipe status` lists every non-zero series.
HOLDING = Gauge(
    "kafkapipe_holding", "1 while a stage holds its work, by kind: auth, storage, inventory, broker",
    ["stage", "reason"], multiprocess_mode="livemax",
)
# The delay stage's backlog is retries waiting for their due time, not work falling behind: kept
# apart from kafkapipe_consumer_lag so a growing backlog alert never fires on planned waits.
RETRY_WAITING = Gauge(
    "kafkapipe_retry_waiting", "Messages on a retry partition not yet forwarded (most wait for their due time)",
    ["topic", "partition"], multiprocess_mode="livesum",
)
# Per worker process (the pid label comes from the multiprocess "liveall" mode): prometheus_client's
# own process collector reads only the scraping process, the supervisor.
PROCESS_CPU = Gauge(
    "kafkapipe_process_cpu_seconds", "User and system CPU seconds of a worker process", ["stage"],
    multiprocess_mode="liveall",
)
PROCESS_RSS = Gauge(
    "kafkapipe_process_resident_memory_bytes", "Resident memory of a worker process", ["stage"],
    multiprocess_mode="liveall",
)
BUILD_INFO = Gauge(
    "kafkapipe_build_info", "1, labelled with the running kafkapipe and Python versions", ["version", "python"],
    multiprocess_mode="livemax",
)
# Refreshed every minute by the delay worker (one broker read for the whole pipeline); livemax
# because every delay process reports the same figures.
DLQ_ENTRIES = Gauge(
    "kafkapipe_dlq_entries", "Dead letters per DLQ topic: unacknowledged (after the review mark) and total",
    ["topic", "state"], multiprocess_mode="livemax",
)
