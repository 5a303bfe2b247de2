"""sd_notify(3) without libsystemd: one datagram of ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET``.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a cheap no-op. Failures
are swallowed: telling systemd how we are must never be why we stop working.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    """Talks to the service manager named by ``NOTIFY_SOCKET`` (``@name`` = abstract namespace)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_interval = _watchdog_interval(env)
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """``notify(READY=1, STATUS="...")``; values are single lines. True if the datagram was sent."""
        if self.address is None:
            return False
        lines = [f"{key}={_one_line(value)}" for key, value in fields.items()]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode("utf-8"), self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self._send({"READY": 1}, status)

    def reloading(self, status: str | None = None) -> bool:
        # MONOTONIC_USEC lets systemd match the reload with its own clock (Type=notify-reload).
        fields = {"RELOADING": 1, "MONOTONIC_USEC": time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}
        return self._send(fields, status)

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG=1)

    def stopping(self, status: str | None = None) -> bool:
        return self._send({"STOPPING": 1}, status)

    def _send(self, fields: Mapping[str, object], status: str | None) -> bool:
        if status is not None:
            fields = {**fields, "STATUS": status}
        return self.notify(**fields)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode("utf-8")
    if value.startswith("/"):
        return value
    return None  # vsock and other forms are not ours to speak


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between pings: half of ``WATCHDOG_USEC``, if the watchdog is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000 / 2


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


# Variables a forked worker must not inherit: only the supervisor speaks to systemd.
NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
