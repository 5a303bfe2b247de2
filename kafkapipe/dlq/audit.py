"""The audit trail: who did what where, for every ``replay`` and ``ack``.

Each action is one JSON line appended to ``[dlq] audit_log`` (opened with ``O_APPEND`` and
fsynced, so lines of concurrent runs do not interleave and survive a crash) and the same
record goes to the log (logger ``kafkapipe.audit``). :func:`check_audit_log` runs before
anything is sent or committed: an action that cannot be recorded is not taken.
"""

from __future__ import annotations

import logging
import os
import pwd
import socket
from pathlib import Path
from typing import Any

from kafkapipe.config import Config
from kafkapipe.dlq.errors import DlqError
from kafkapipe.dlq.reading import review_group
from kafkapipe.messages import format_ts, utcnow
from kafkapipe.printable import json_text

AUDIT = logging.getLogger("kafkapipe.audit")
AUDIT_MAX_IDS = 1000


def user() -> str:
    """Who ran the command, by the real uid: $USER/$LOGNAME are whatever the caller set them to."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry (some containers)
        return f"uid:{uid}"


def check_audit_log(config: Config) -> None:
    """DlqError unless the audit file can be appended to."""
    try:
        _append(Path(config.dlq.audit_log), b"")
    except OSError as exc:
        raise DlqError(f"cannot write the audit log {config.dlq.audit_log}: {exc.strerror}; nothing done") from None


def audit(action: str, config: Config, **fields: Any) -> None:
    if not AUDIT.isEnabledFor(logging.INFO):
        AUDIT.setLevel(logging.INFO)  # the audit trail is not subject to the log level
    who = user()
    ids = fields.pop("task_ids", None)
    if ids is not None:
        fields["task_ids"] = ids[:AUDIT_MAX_IDS]
        if len(ids) > AUDIT_MAX_IDS:
            fields["task_ids_truncated"] = len(ids)
    record = {
        "action": f"dlq.{action}",
        "user": who,
        "host": socket.gethostname(),
        "dlq_topic": config.topics.dlq,
        "review_group": review_group(config),
        **fields,
    }
    AUDIT.info("dlq %s by %s", action, who, extra=record)
    try:
        _append(Path(config.dlq.audit_log), (json_text({"at": format_ts(utcnow()), **record}) + "\n").encode())
    except OSError as exc:  # checked before acting; a disk that fills meanwhile is still told
        AUDIT.error("dlq %s by %s not written to the audit log %s: %s", action, who, config.dlq.audit_log, exc)


def _append(path: Path, line: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        if line:
            os.write(fd, line)
            os.fsync(fd)
    finally:
        os.close(fd)
