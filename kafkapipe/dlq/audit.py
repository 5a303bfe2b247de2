"""The audit trail: one line (logger ``kafkapipe.audit``) per ``replay`` and ``ack`` saying who did what where."""

from __future__ import annotations

import logging
import os
import pwd
import socket
from typing import Any

from kafkapipe.config import Config
from kafkapipe.dlq.reading import review_group

AUDIT = logging.getLogger("kafkapipe.audit")
AUDIT_MAX_IDS = 1000


def user() -> str:
    """Who ran the command, by the real uid: $USER/$LOGNAME are whatever the caller set them to."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # no passwd entry (some containers)
        return f"uid:{uid}"


def audit(action: str, config: Config, **fields: Any) -> None:
    if not AUDIT.isEnabledFor(logging.INFO):
        AUDIT.setLevel(logging.INFO)  # the audit trail is not subject to the log level
    who = user()
    ids = fields.pop("task_ids", None)
    if ids is not None:
        fields["task_ids"] = ids[:AUDIT_MAX_IDS]
        if len(ids) > AUDIT_MAX_IDS:
            fields["task_ids_truncated"] = len(ids)
    AUDIT.info(
        "dlq %s by %s",
        action,
        who,
        extra={
            "action": f"dlq.{action}",
            "user": who,
            "host": socket.gethostname(),
            "dlq_topic": config.topics.dlq,
            "review_group": review_group(config),
            **fields,
        },
    )
