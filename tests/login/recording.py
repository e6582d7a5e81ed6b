"""A tiny TLS server standing in for kproxy: it records the Authorization header.

It answers ``GET /version`` as the API server does, which is all ``kubectl get --raw
/version`` needs, and keeps the path and Authorization header of every request for the
test to compare with the token the provider issued.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from tests.oidc.tls import ServingCertificate

VERSION: Final = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "platform": "linux/amd64",
}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    requests: list[tuple[str, str]]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Authorization", "")))
        body = json.dumps(VERSION if self.path == "/version" else {}).encode()
        self.send_response(200 if self.path == "/version" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads what it needs from ``requests``."""


@contextmanager
def recording_server(certificate: ServingCertificate) -> Iterator[_Server]:
    """Serve on an ephemeral loopback port until the block ends."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate.cert_file, certificate.key_file)
    server = _Server(("127.0.0.1", 0), _Handler)
    server.requests = []
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="recording-server")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
