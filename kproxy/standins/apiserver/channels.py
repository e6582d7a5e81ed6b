"""The WebSocket channel protocols of exec, attach and port-forward.

Read from ``staging/src/k8s.io/apimachinery/pkg/util/httpstream/wsstream/conn.go``
and ``staging/src/k8s.io/client-go/tools/remotecommand/websocket.go``: each binary
message starts with one byte naming the channel: 0 stdin, 1 stdout, 2 stderr, 3 error,
4 resize. ``v4.channel.k8s.io`` writes a ``Status`` JSON on the error channel when
the command ends (``Success``, or ``Failure`` with reason ``NonZeroExitCode`` and the
code as an ``ExitCode`` cause, as ``pkg/kubelet/cri/streaming/remotecommand/
websocket.go`` does); ``v5.channel.k8s.io`` adds channel 255, whose payload names a
stream the client has closed, which is how stdin reaches end of file.

Port-forward uses the kubelet's WebSocket form (``pkg/kubelet/cri/streaming/
portforward/websocket.go``): the ``ports`` query parameter lists ports; port number i
has data channel 2i and error channel 2i+1, and the server first sends each channel
its port as two little-endian bytes. The stand-in echoes whatever arrives on a data
channel. kubectl 1.32 instead tunnels SPDY inside a WebSocket
(``SPDY/3.1+portforward.k8s.io``); that is not spoken here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Final

from aiohttp import WSMsgType, web

from kproxy.auth.identity import UserInfo

from . import shell

logger = logging.getLogger(__name__)

STREAM_PROTOCOLS: Final = ("v5.channel.k8s.io", "v4.channel.k8s.io")
PORT_FORWARD_PROTOCOLS: Final = ("portforward.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def offered_protocols(request: web.Request) -> list[str]:
    header = request.headers.get("Sec-WebSocket-Protocol", "")
    return [part.strip() for part in header.split(",") if part.strip()]


async def serve_exec(
    ws: web.WebSocketResponse, command: list[str], user: UserInfo, *, tty: bool
) -> None:
    """Run a fake command over an open channel WebSocket, then report its status."""
    terminal = _terminal(ws, user, tty=tty)
    reader = asyncio.create_task(_read_client(ws, terminal), name="standin-exec-reader")
    try:
        status = await _run(command, terminal)
        await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
    finally:
        reader.cancel()
        await ws.close()


async def serve_attach(
    ws: web.WebSocketResponse,
    user: UserInfo,
    output: asyncio.Queue[bytes | None],
    *,
    tty: bool,
) -> None:
    """Attach to the fake main process: stdin echoed, plus log lines as they come."""
    terminal = _terminal(ws, user, tty=tty)
    reader = asyncio.create_task(
        _read_client(ws, terminal), name="standin-attach-reader"
    )
    copier = asyncio.create_task(_copy(output, terminal), name="standin-attach-copier")
    try:
        await shell.run(["cat"], terminal)
        await ws.send_bytes(bytes([ERROR]) + json.dumps(_SUCCESS).encode())
    finally:
        reader.cancel()
        copier.cancel()
        await ws.close()


async def serve_port_forward(ws: web.WebSocketResponse, ports: list[int]) -> None:
    """Announce each port on its two channels, then echo every data message."""
    for index, port in enumerate(ports):
        announcement = port.to_bytes(2, "little")
        await ws.send_bytes(bytes([2 * index]) + announcement)
        await ws.send_bytes(bytes([2 * index + 1]) + announcement)
    async for message in ws:
        if message.type != WSMsgType.BINARY or not message.data:
            continue
        channel = message.data[0]
        if channel % 2 == 0 and channel // 2 < len(ports):
            await ws.send_bytes(message.data)


_SUCCESS: Final[dict[str, Any]] = {"metadata": {}, "status": "Success"}


def _terminal(
    ws: web.WebSocketResponse, user: UserInfo, *, tty: bool
) -> shell.Terminal:
    async def stdout(data: bytes) -> None:
        await ws.send_bytes(bytes([STDOUT]) + data)

    async def stderr(data: bytes) -> None:
        # With a terminal, stderr is merged into stdout, as a TTY has one output.
        await ws.send_bytes(bytes([STDOUT if tty else STDERR]) + data)

    return shell.Terminal(
        user=user, stdout=stdout, stderr=stderr, stdin=asyncio.Queue()
    )


async def _run(command: list[str], terminal: shell.Terminal) -> dict[str, Any]:
    try:
        code = await shell.run(command, terminal)
    except shell.CommandNotFoundError as exc:
        return _runtime_failure(str(exc))
    if code == 0:
        return _SUCCESS
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: error executing command "
            f"[{' '.join(command)}], exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def _runtime_failure(executable: str) -> dict[str, Any]:
    message = (
        "failed to exec in container: failed to start exec: OCI runtime exec failed: "
        f'exec failed: unable to start container process: exec: "{executable}": '
        "executable file not found in $PATH: unknown"
    )
    return {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "code": 500,
    }


async def _read_client(ws: web.WebSocketResponse, terminal: shell.Terminal) -> None:
    """Route the client's messages: stdin data, stdin close, terminal resizes."""
    try:
        async for message in ws:
            if message.type == WSMsgType.BINARY and message.data:
                _route(message.data, terminal)
    finally:
        terminal.stdin.put_nowait(None)


def _route(data: bytes, terminal: shell.Terminal) -> None:
    channel, payload = data[0], data[1:]
    if channel == STDIN and payload:
        terminal.stdin.put_nowait(payload)
    elif channel == CLOSE and payload[:1] == bytes([STDIN]):
        terminal.stdin.put_nowait(None)
    elif channel == RESIZE:
        size = json.loads(payload)
        terminal.size = (int(size.get("Height", 0)), int(size.get("Width", 0)))


async def _copy(output: asyncio.Queue[bytes | None], terminal: shell.Terminal) -> None:
    while (chunk := await output.get()) is not None:
        await terminal.stdout(chunk)
