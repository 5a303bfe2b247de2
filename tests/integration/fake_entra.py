"""A loopback Entra ID (Azure AD) for msal: tenant discovery and the v2.0 token endpoint over TLS.

msal insists on an https authority, so the server presents a certificate from the shared test
CA; point ``REQUESTS_CA_BUNDLE`` at ``ca_path``. Every token request's form is recorded, and
:func:`decode_jwt` opens the client assertions msal signs.
"""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

from tests.integration.httpfaults import TestCA

TokenReply = Callable[[dict[str, str]], tuple[int, dict]]


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def decode_jwt(token: str) -> tuple[dict, dict, bytes, bytes]:
    """(header, claims, signing input, signature) of a compact JWS, without verifying it."""
    header, claims, signature = token.split(".")
    return (
        json.loads(_b64url_decode(header)),
        json.loads(_b64url_decode(claims)),
        f"{header}.{claims}".encode("ascii"),
        _b64url_decode(signature),
    )


class FakeEntra:
    """``https://127.0.0.1:PORT/<tenant>``: answers openid-configuration and token POSTs."""

    def __init__(self, directory: Path) -> None:
        self.tls = TestCA.create(directory)
        self.ca_path = self.tls.ca_path
        self.token_posts: list[dict[str, str]] = []
        self.reply: TokenReply = lambda form: (200, {"access_token": "entra-token", "expires_in": 3599})
        self._lock = threading.Lock()
        entra = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: dict) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                tenant = self.path.split("/")[1]
                if self.path.endswith("/v2.0/.well-known/openid-configuration"):
                    base = f"{entra.url}/{tenant}"
                    self._send(200, {
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "issuer": f"{base}/v2.0",
                    })  # fmt: skip
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                form["_path"] = self.path
                with entra._lock:
                    entra.token_posts.append(form)
                status, body = entra.reply(form)
                self._send(status, body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.tls.cert_path, self.tls.key_path)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def token_endpoint(self, tenant: str) -> str:
        return f"{self.url}/{tenant}/oauth2/v2.0/token"

    def posts(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self.token_posts)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
