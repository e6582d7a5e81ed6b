"""Upgraded connections: exec, attach and port-forward as byte tunnels.

kubectl asks for these with ``Connection: Upgrade`` and ``Upgrade: SPDY/3.1`` or
``Upgrade: websocket`` (with ``Sec-WebSocket-Protocol: v5.channel.k8s.io, ...``). kproxy
opens a connection of its own to the API server for each one, outside the pool, writes
the request head with sanitized headers and impersonation, and reads the answer's head.

Only a ``101 Switching Protocols`` turns the two connections into a tunnel. Any other
answer is relayed to the client and the upstream connection is closed, never reused:
an API server that refused an upgrade may still have left the connection in a state
where the next bytes are read with the previous request's rights (the class of
CVE-2018-1002105). The client connection is closed after such an answer as well, so
bytes the client sent early are never read as a new request.

Taking over the client connection. aiohttp's server owns the socket and parses HTTP on
it; its ``WebSocketResponse`` shows the supported way to take the bytes that follow a
switch: ``request.protocol.set_parser(parser)`` routes every later ``data_received``
to ``parser.feed_data`` (and ``connection_lost`` to ``parser.feed_eof``), bytes that
arrived early included, and ``request.protocol.keep_alive(False)`` with
``response.force_close()`` makes aiohttp close the socket when the handler returns. A
``StreamResponse`` with status 101 writes the head without a body framing (1xx
answers have no body), and its payload writer then writes raw bytes with aiohttp's own
flow control. kproxy installs its parser before writing the 101: aiohttp only treats
``websocket`` as an upgrade, so for SPDY it would otherwise parse the first frames as
HTTP. The parser is duck-typed, not a ``WebSocketReader``; that is the one place this
module leans on aiohttp's internals, and a test runs both protocols through it.

Ending. Each direction is a named task; when either ends (end of stream, a reset, or
the client going away) both are cancelled together and the upstream connection is
closed. Bytes read before the end are written on first. A true half-close cannot be
carried: asyncio's TLS transports cannot send an end of stream without closing, and
aiohttp's server closes a connection when its client half-closes; SPDY and WebSocket
end their streams with frames of their own, which pass through like any other bytes.

When kproxy stops, a tunnel ends as soon as draining begins (see
``kproxy.proxy.draining``): both copies are cancelled and both connections closed, so
``kubectl exec`` returns instead of hanging until the grace period cuts it. kproxy
writes no closing frame of its own: it cannot know where the frames of a stream it
only carries begin, and a frame injected into the middle of one would corrupt it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any, Final, cast

from aiohttp import web
from multidict import CIMultiDict

from kproxy.auth.identity import UserInfo
from kproxy.errors import BadRequestError, UpstreamError
from kproxy.proxy.draining import drain_of
from kproxy.proxy.headers import (
    CONNECTION,
    UPGRADE,
    connection_tokens,
    header_lines,
    response_headers,
    upstream_headers,
)
from kproxy.proxy.upstream import (
    MAX_RESPONSE_HEADER_BYTES,
    READ_BUFFER_BYTES,
    Upstream,
    upstream_failure,
)

logger = logging.getLogger(__name__)

# The protocols kubectl speaks through an upgrade, spelled as the API server expects.
PROTOCOLS: Final = {"websocket": "websocket", "spdy/3.1": "SPDY/3.1"}

# Client bytes held while the API server is slower than the client.
CLIENT_HIGH_WATER: Final = 256 * 1024


def is_upgrade(request: web.BaseRequest) -> bool:
    """Say whether ``request`` asks to switch protocols (``Connection: Upgrade``)."""
    if UPGRADE not in request.headers:
        return False
    return "upgrade" in connection_tokens(request.headers)


async def tunnel(
    request: web.Request, upstream: Upstream, user: UserInfo
) -> web.StreamResponse:
    """Carry an upgrade request to the API server and, on 101, splice the two ends.

    Raises ``BadRequestError`` for an upgrade kproxy does not carry (an unknown
    protocol, or a request body), and ``UpstreamError`` and its subclasses when the
    API server cannot be reached or answers something that is not HTTP.
    """
    protocol = requested_protocol(request)
    headers = upstream_headers(
        request.headers,
        user,
        authorization=upstream.authorization(),
        peer=request.remote,
        upgrade=protocol,
    )
    head = _request_head(request, upstream, headers)
    reader, writer = await upstream.open_connection()
    try:
        writer.write(head)
        status, reason, answer_headers = await _read_head(reader, upstream)
        if status != 101:
            return await _relay_refusal(request, reader, status, reason, answer_headers)
        return await _splice(request, reader, writer, reason, answer_headers, protocol)
    except (OSError, asyncio.IncompleteReadError) as exc:
        host = upstream.target.server.host
        raise UpstreamError(
            f"the upgrade through the API server {host!r} failed"
        ) from exc
    finally:
        writer.close()


def requested_protocol(request: web.BaseRequest) -> str:
    """Return the protocol to ask the API server for, or refuse the request."""
    # Only the head is written upstream: a body, chunked or not, would need framing
    # and counting against maxBodyBytes of its own, and no upgrade kubectl makes
    # carries one.
    if request.body_exists:
        raise BadRequestError("an upgrade request must not have a body")
    wanted = [token.strip() for token in request.headers.get(UPGRADE, "").split(",")]
    for token in wanted:
        protocol = PROTOCOLS.get(token.lower())
        if protocol is not None:
            return protocol
    raise BadRequestError(
        f"upgrade to {request.headers.get(UPGRADE, '')!r} is not supported: "
        "only SPDY/3.1 and websocket"
    )


def _request_head(
    request: web.BaseRequest, upstream: Upstream, headers: CIMultiDict[str]
) -> bytes:
    target = upstream.url(_raw_path_qs(request))
    start = f"{request.method} {target.raw_path_qs} HTTP/1.1\r\n"
    host = f"Host: {target.raw_authority}\r\n"
    return (
        start.encode("ascii")
        + host.encode("ascii")
        + header_lines(headers.items())
        + b"\r\n"
    )


def _raw_path_qs(request: web.BaseRequest) -> str:
    url = request.rel_url
    query = url.raw_query_string
    return f"{url.raw_path}?{query}" if query else url.raw_path


async def _read_head(
    reader: asyncio.StreamReader, upstream: Upstream
) -> tuple[int, str, CIMultiDict[str]]:
    timeout = upstream.settings.response_header_timeout_seconds
    host = upstream.target.server.host or ""
    try:
        async with asyncio.timeout(timeout):
            raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise _oversized(host) from exc
    except (asyncio.IncompleteReadError, OSError, TimeoutError) as exc:
        raise upstream_failure(exc, host) from exc
    # The same bound as answers through the pool: the reader's own limit is the
    # larger buffer meant for tunnelled bytes.
    if len(raw) > MAX_RESPONSE_HEADER_BYTES:
        raise _oversized(host)
    return _parse_head(raw, host)


def _oversized(host: str) -> UpstreamError:
    return UpstreamError(f"the API server {host!r} sent an oversized response head")


def _parse_head(raw: bytes, host: str) -> tuple[int, str, CIMultiDict[str]]:
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit() or len(code) != 3:
        raise UpstreamError(f"the API server {host!r} did not answer with HTTP/1.1")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or line[0] in " \t":
            raise UpstreamError(f"the API server {host!r} sent a malformed header")
        headers.add(name, value.strip(" \t"))
    return int(code), reason, headers


async def _relay_refusal(
    request: web.Request,
    reader: asyncio.StreamReader,
    status: int,
    reason: str,
    headers: CIMultiDict[str],
) -> web.StreamResponse:
    logger.debug("the API server answered an upgrade with %d", status)
    response = web.StreamResponse(
        status=status, reason=reason, headers=response_headers(headers)
    )
    response.force_close()
    await response.prepare(request)
    try:
        async for chunk in _body(reader, headers, request.method, status):
            await response.write(chunk)
    except (
        OSError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        UpstreamError,
    ) as exc:
        # The status line is already with the client: cut the answer short.
        logger.debug("refused upgrade answer broke off: %s", type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def _body(
    reader: asyncio.StreamReader, headers: CIMultiDict[str], method: str, status: int
) -> Any:
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        async for chunk in _chunks(reader):
            yield chunk
        return
    length = headers.get("Content-Length")
    if length is not None:
        if not length.isdigit():
            raise UpstreamError("the API server sent an invalid Content-Length")
        remaining = int(length)
        while remaining:
            chunk = await reader.read(min(remaining, READ_BUFFER_BYTES))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(chunk)
            yield chunk
        return
    while chunk := await reader.read(READ_BUFFER_BYTES):
        yield chunk


async def _chunks(reader: asyncio.StreamReader) -> Any:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size_text = size_line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise UpstreamError("the API server sent a malformed chunk") from exc
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return
        yield await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise UpstreamError("the API server sent a malformed chunk")


async def _splice(
    request: web.Request,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    reason: str,
    headers: CIMultiDict[str],
    protocol: str,
) -> web.StreamResponse:
    answered = headers.get(UPGRADE, "")
    if answered.lower() != protocol.lower():
        raise UpstreamError(
            f"the API server switched to {answered!r}, not {protocol!r}"
        )
    switched = response_headers(headers)
    switched[CONNECTION] = "Upgrade"
    switched[UPGRADE] = answered
    response = web.StreamResponse(
        status=101, reason=reason or "Switching Protocols", headers=switched
    )
    response.force_close()

    client = _take_over(request)
    client_writer = await response.prepare(request)
    if client_writer is None:
        raise ConnectionResetError("the client connection ended before the switch")
    drain = drain_of(request)
    await _pump_both(
        _copy_to_client(reader, client_writer),
        _copy_to_upstream(client, writer),
        drained=drain.begun() if drain is not None else None,
    )
    return response


def _take_over(request: web.Request) -> ClientStream:
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client went away before the switch")
    client = ClientStream(transport)
    # set_parser is typed for aiohttp's WebSocketReader; it only calls feed_data
    # and feed_eof, which ClientStream provides (see the module text).
    request.protocol.set_parser(cast(Any, client))
    request.protocol.keep_alive(False)
    return client


async def _pump_both(*copies: Any, drained: asyncio.Future[None] | None) -> None:
    names = ("kproxy-tunnel-upstream-to-client", "kproxy-tunnel-client-to-upstream")
    tasks = [
        asyncio.create_task(copy, name=name)
        for copy, name in zip(copies, names, strict=True)
    ]
    waited: list[asyncio.Future[Any]] = [*tasks]
    if drained is not None:
        waited.append(drained)
    try:
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(
            result, (asyncio.CancelledError, OSError)
        ):
            logger.error("a tunnel copy failed", exc_info=result)


async def _copy_to_client(reader: asyncio.StreamReader, client_writer: Any) -> None:
    while chunk := await reader.read(READ_BUFFER_BYTES):
        await client_writer.write(chunk)


async def _copy_to_upstream(client: ClientStream, writer: asyncio.StreamWriter) -> None:
    while chunk := await client.read():
        writer.write(chunk)
        await writer.drain()


class ClientStream:
    """The client's bytes after the switch, handed over by aiohttp's protocol.

    aiohttp calls ``feed_data`` from ``data_received`` and ``feed_eof`` from
    ``connection_lost``. Reading from the socket pauses while more than
    ``CLIENT_HIGH_WATER`` bytes wait for the API server, and resumes once they have
    been taken, so a fast client cannot fill kproxy's memory.
    """

    __slots__ = ("_chunks", "_eof", "_paused", "_size", "_transport", "_waiter")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.ReadTransport, transport)
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)
            self._wake()
            if self._size > CLIENT_HIGH_WATER and not self._paused:
                self._paused = True
                with contextlib.suppress(RuntimeError, NotImplementedError):
                    self._transport.pause_reading()
        return False, b""

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    async def read(self) -> bytes:
        """Return the next bytes from the client, or ``b""`` once it has gone."""
        while not self._chunks:
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks.clear()
        self._size = 0
        if self._paused:
            self._paused = False
            with contextlib.suppress(RuntimeError, NotImplementedError):
                self._transport.resume_reading()
        return chunk

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
