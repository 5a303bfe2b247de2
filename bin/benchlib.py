"""Shared pieces of the bin/bench-* scripts: a broker and a static file server on loopback."""

from __future__ import annotations

import contextlib
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


def have_nginx() -> bool:
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        return True
    print("installing nginx-light (Debian) for a static file server …", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
    done = subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], capture_output=True)
    return done.returncode == 0


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
        if have_nginx():
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, root=root))
            nginx = shutil.which("nginx") or "/usr/sbin/nginx"
            cmd, kind = [nginx, "-c", str(conf), "-p", tmp], "nginx"
        else:
            cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]
            kind = "python http.server (nginx unavailable: the server may be the bottleneck)"
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_http(f"http://127.0.0.1:{port}/")
            yield f"http://127.0.0.1:{port}", port, kind
        finally:
            proc.terminate()
            proc.wait(10)
