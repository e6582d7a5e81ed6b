"""The loopback redirect receiver for the authorization code flow (RFC 8252).

A native application cannot keep a redirect URI private, so it listens on
``127.0.0.1`` at a port chosen now, and the provider sends the browser back to
``http://127.0.0.1:PORT/callback`` with the code. Three rules keep that safe:

- Only ``127.0.0.1`` is bound, never all interfaces, so no other host can deliver a
  code.
- A callback is accepted only with the ``state`` this login sent; any other request is
  refused and the receiver keeps waiting. A page in the person's browser could
  otherwise inject an attacker's code (login CSRF).
- Nothing the callback carries is logged: the code is a credential until redeemed,
  and PKCE ties it to this process only if nobody else reads it first.
"""

from __future__ import annotations

import hmac
import http.server
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from kproxy.login.errors import LoginError

CALLBACK_PATH: Final = "/callback"

_DONE_PAGE: Final = (
    b"<!DOCTYPE html><title>kproxy login</title>"
    b"<p>kproxy: you are logged in and may close this window.</p>"
)
_FAILED_PAGE: Final = (
    b"<!DOCTYPE html><title>kproxy login</title>"
    b"<p>kproxy: the login failed; see the terminal for the reason.</p>"
)


class LoopbackReceiver:
    """Waits for the one authorization response that carries the expected state."""

    def __init__(self, *, port: int = 0) -> None:
        self._expected_state = ""
        self._response: dict[str, str] | None = None
        self._received = threading.Event()
        try:
            self._server = http.server.HTTPServer(("127.0.0.1", port), self._handler())
        except OSError as exc:
            raise LoginError(f"cannot listen on 127.0.0.1:{port}: {exc}") from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="kproxy-login-loopback",
            daemon=True,
        )

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{CALLBACK_PATH}"

    def __enter__(self) -> LoopbackReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def expect(self, state: str) -> None:
        self._expected_state = state

    def wait(self, *, timeout: float) -> Mapping[str, str]:
        """The authorization response's parameters, once the right one arrives.

        Raises ``LoginError`` on timeout or when the provider answered with an error.
        """
        if not self._received.wait(timeout):
            raise LoginError(f"no login completed in the browser within {timeout:g}s")
        response = self._response or {}
        if "error" in response:
            description = response.get("error_description", "")
            raise LoginError(
                f"the provider refused the login: {response['error']}: {description}"
            )
        if not response.get("code"):
            raise LoginError("the provider's redirect carried no code")
        return response

    def _accept(self, target: str) -> bool:
        split = urlsplit(target)
        if split.path != CALLBACK_PATH or self._received.is_set():
            return False
        response = {key: values[0] for key, values in parse_qs(split.query).items()}
        state = response.get("state", "")
        if not self._expected_state or not hmac.compare_digest(
            state.encode(), self._expected_state.encode()
        ):
            return False
        self._response = response
        self._received.set()
        return "error" not in response

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        receiver = self

        class CallbackHandler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if receiver._accept(self.path):
                    self._reply(200, _DONE_PAGE)
                else:
                    self._reply(400, _FAILED_PAGE)

            def _reply(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Log nothing: the request line carries the authorization code."""

        return CallbackHandler
