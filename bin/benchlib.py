"""Shared pieces of the bin/bench-* scripts: a broker and a static file server on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_broker(state: Path) -> str:
    """Starts (or finds running) the bin/kafka-local broker in ``state``; returns its bootstrap."""
    port = free_port() if not (state / "broker.pid").exists() else 0
    args = [str(ROOT / "bin" / "kafka-local"), "start", "--dir", str(state)]
    if port:
        args += ["--port", str(port), "--sasl-port", str(free_port())]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("bootstrap="):
            return line.split("=", 1)[1]
    raise SystemExit(f"kafka-local printed no bootstrap: {out}")


def find_nginx(install: bool) -> tuple[str | None, str]:
    """The nginx binary (installing Debian's nginx-light when allowed), or None and why not."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)
    if found or not install:
        return found, "" if found else "nginx not installed"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "nginx not installed and apt-get not usable here"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install_cmd = ["apt-get", "install", "-y", "-q", "nginx-light"]
    print("installing nginx-light with apt-get …", file=sys.stderr, flush=True)
    if subprocess.run(install_cmd, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        if subprocess.run(install_cmd, env=env, capture_output=True).returncode != 0:
            return None, "apt-get install nginx-light failed"
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    return found, "" if found else "nginx-light installed but no nginx binary found"


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/pdf pdf; application/octet-stream bin; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def _wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:  # any answer means the server is up
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def static_server(root: Path) -> Iterator[tuple[str, int, str]]:
    """Serves ``root`` on 127.0.0.1; yields (base URL, port, "nginx" | "python http.server")."""
    port = free_port()
    root.chmod(0o755)  # nginx's workers drop privileges; a private temp dir would answer 403
    with tempfile.TemporaryDirectory(prefix="kp-nginx-") as tmp:
        nginx, why = find_nginx(install=True)
        if nginx:
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, root=root))
            cmd, kind = [nginx, "-c", str(conf), "-p", tmp], "nginx"
        else:
            cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]
            kind = f"python http.server ({why}: the server may be the bottleneck)"
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_http(f"http://127.0.0.1:{port}/")
            yield f"http://127.0.0.1:{port}", port, kind
        finally:
            proc.terminate()
            proc.wait(10)


def restart_broker(state: Path) -> str:
    """Stops the bin/kafka-local broker of ``state`` and starts it again on the same ports; returns its bootstrap."""
    env = dict(
        line.split("=", 1) for line in (state / "kafka-local.env").read_text().splitlines() if "=" in line
    )
    script = str(ROOT / "bin" / "kafka-local")
    subprocess.run([script, "stop", "--dir", str(state)], check=True, capture_output=True)
    out = subprocess.run(
        [script, "start", "--dir", str(state), "--port", env["KAFKA_LOCAL_PORT"],
         "--sasl-port", env["KAFKA_LOCAL_SASL_PORT"]],
        check=True, capture_output=True, text=True,
    ).stdout
    return next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("bootstrap="))


def stop_broker(state: Path) -> None:
    subprocess.run([str(ROOT / "bin" / "kafka-local"), "stop", "--dir", str(state)], capture_output=True)


def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete the topics a run made (``<prefix>.*``): a broker kept between runs would otherwise
    gather thousands of partitions and run out of heap or file descriptors.

    Run by the project's Python: some benchmarks run outside its virtualenv, where there is no
    confluent-kafka. A failure is reported and the run's figures stand.
    """
    py = ROOT / ".venv" / "bin" / "python"
    proc = subprocess.run([str(py) if py.exists() else sys.executable, "-c", _DELETE_TOPICS, bootstrap, prefix],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        print(f"benchmark: topics {prefix}.* not all deleted: {proc.stderr.strip()[-500:]}", file=sys.stderr)


_DELETE_TOPICS = """
import sys
from confluent_kafka.admin import AdminClient
bootstrap, prefix = sys.argv[1:3]
admin = AdminClient({"bootstrap.servers": bootstrap})
names = [t for t in admin.list_topics(timeout=15).topics if t.startswith(prefix + ".")]
for future in (admin.delete_topics(names, operation_timeout=30).values() if names else ()):
    future.result(60)
"""
