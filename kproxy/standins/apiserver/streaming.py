"""Pod subresources that stream: ``log``, ``exec``, ``attach`` and ``portforward``.

The API server proxies these to the kubelet; here the stand-in is both. Logs follow
``pkg/registry/core/pod/rest/log.go`` for the choice of container (the only one, or
the ``container`` parameter, else a 400 listing them) and ``tailLines`` and
``limitBytes``. Upgrades follow ``staging/src/k8s.io/apimachinery/pkg/util/
httpstream/wsstream``: a WebSocket GET naming a channel subprotocol. A SPDY upgrade
(a POST with ``Upgrade: SPDY/3.1``) is refused with a 400: the stand-in does not speak
SPDY, which a WebSocket client never needs.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from kproxy.auth.identity import UserInfo

from . import channels, statuses
from .faults import Faults
from .podlogs import PodLogs
from .routing import Target
from .store import Object, Store


async def serve(
    request: web.Request,
    target: Target,
    *,
    store: Store,
    logs: PodLogs,
    faults: Faults,
    user: UserInfo,
) -> web.StreamResponse:
    """Serve ``pods/log``, ``pods/exec``, ``pods/attach`` or ``pods/portforward``."""
    assert target.resource is not None  # noqa: S101
    pod = store.get(target.resource, target.namespace, target.name)
    if target.subresource == "log":
        return await _log(request, pod, logs)
    if faults.refuse_upgrades is not None and faults.applies_to(request.path):
        raise statuses.server_error(faults.refuse_upgrades, "upgrade refused by fault")
    if target.subresource != "portforward":
        container_of(pod, request.query.get("container", ""))
    command = _command(request) if target.subresource == "exec" else []
    ws = await _upgrade(request, target.subresource)
    if target.subresource == "exec":
        await channels.serve_exec(ws, command, user, tty=_flag(request, "tty"))
    elif target.subresource == "attach":
        await _attach(ws, request, pod, logs, user)
    else:
        await channels.serve_port_forward(ws, _ports(request))
    return ws


def container_of(pod: Object, requested: str) -> str:
    """Pick the container a log or exec is about, as the pod REST storage does."""
    names = [str(c.get("name", "")) for c in pod.get("spec", {}).get("containers", [])]
    name = pod["metadata"]["name"]
    if requested:
        if requested not in names:
            raise statuses.bad_request(
                f"container {requested} is not valid for pod {name}"
            )
        return requested
    if len(names) == 1:
        return names[0]
    raise statuses.bad_request(
        f"a container name must be specified for pod {name}, "
        f"choose one of: [{' '.join(names)}]"
    )


async def _log(request: web.Request, pod: Object, logs: PodLogs) -> web.StreamResponse:
    key = _log_key(pod, request.query.get("container", ""))
    text, position = logs.snapshot(key)
    text = _tail(text, request.query.get("tailLines"))
    limit = int(request.query.get("limitBytes", "0") or 0)
    if limit:
        text = text[:limit]
    if not _flag(request, "follow"):
        return web.Response(text=text, content_type="text/plain")
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await response.write(text.encode())
        async for chunk in logs.follow(key, position):
            await response.write(chunk.encode())
    return response


def _log_key(pod: Object, container: str) -> tuple[str, str, str]:
    metadata = pod["metadata"]
    return (metadata["namespace"], metadata["name"], container_of(pod, container))


def _tail(text: str, tail_lines: str | None) -> str:
    if tail_lines is None:
        return text
    lines = text.splitlines(keepends=True)
    count = int(tail_lines)
    return "".join(lines[-count:]) if count > 0 else ""


async def _upgrade(request: web.Request, subresource: str) -> web.WebSocketResponse:
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise statuses.bad_request(
            "Upgrade request required"
            if "Upgrade" not in request.headers
            else "the API server stand-in only upgrades to WebSocket, not SPDY"
        )
    supported = (
        channels.PORT_FORWARD_PROTOCOLS
        if subresource == "portforward"
        else channels.STREAM_PROTOCOLS
    )
    offered = channels.offered_protocols(request)
    if not any(protocol in supported for protocol in offered):
        raise statuses.bad_request(
            f"unable to upgrade: no supported subprotocol among {offered}"
        )
    ws = web.WebSocketResponse(protocols=supported, autoping=True)
    await ws.prepare(request)
    return ws


async def _attach(
    ws: web.WebSocketResponse,
    request: web.Request,
    pod: Object,
    logs: PodLogs,
    user: UserInfo,
) -> None:
    key = _log_key(pod, request.query.get("container", ""))
    output: asyncio.Queue[bytes | None] = asyncio.Queue()
    _, position = logs.snapshot(key)

    async def follow() -> None:
        async for chunk in logs.follow(key, position):
            output.put_nowait(chunk.encode())
        output.put_nowait(None)

    follower = asyncio.create_task(follow(), name="standin-attach-logs")
    try:
        await channels.serve_attach(ws, user, output, tty=_flag(request, "tty"))
    finally:
        follower.cancel()


def _command(request: web.Request) -> list[str]:
    command = request.query.getall("command", [])
    if not command:
        raise statuses.bad_request("you must specify at least 1 command")
    return list(command)


def _ports(request: web.Request) -> list[int]:
    ports: list[int] = []
    for value in request.query.getall("ports", []):
        ports += [int(port) for port in value.split(",") if port.strip()]
    if not ports:
        raise statuses.bad_request("at least one port must be specified")
    return ports


def _flag(request: web.Request, name: str) -> bool:
    value: Any = request.query.get(name, "false")
    return str(value).lower() in ("true", "1")
