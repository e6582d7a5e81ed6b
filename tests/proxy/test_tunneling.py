"""Upgrade tunnels: 101 then bytes both ways; anything else closes the upstream."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from kproxy.proxy.upstream import Upstream
from tests.proxy.conftest import Pki, Proxy, Seen, ServeProxy, ServeUpstream

EXEC_PATH = (
    "/api/v1/namespaces/ns/pods/p/exec?command=sh&stdin=true&stdout=true&tty=true"
)


@dataclass
class RawUpstream:
    """A TLS server speaking raw HTTP/1.1, to control the upgrade answer exactly."""

    url: str
    heads: list[CIMultiDict[str]] = field(default_factory=list)
    request_lines: list[str] = field(default_factory=list)
    closed_by_peer: asyncio.Event = field(default_factory=asyncio.Event)
    connections: int = 0


Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_upstream(
    pki: Pki,
) -> AsyncIterator[Callable[[Reply], Awaitable[RawUpstream]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> RawUpstream:
        state = RawUpstream(url="")

        async def serve(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            state.connections += 1
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            lines = head.split("\r\n")
            state.request_lines.append(lines[0])
            headers: CIMultiDict[str] = CIMultiDict()
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers.add(name, value.strip())
            state.heads.append(headers)
            try:
                await reply(reader, writer)
                # Whatever the reply, wait for the peer: EOF means kproxy closed it.
                while await reader.read(65536):
                    pass
            except (ConnectionError, ssl.SSLError):
                pass
            state.closed_by_peer.set()
            writer.close()

        server = await asyncio.start_server(
            serve, "127.0.0.1", 0, ssl=pki.server_context()
        )
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        state.url = f"https://127.0.0.1:{port}"
        return state

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def spdy_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
        b"hello from the kubelet"
    )
    while data := await reader.read(65536):
        writer.write(data.upper())
        await writer.drain()


async def open_client(
    proxy: Proxy, pki: Pki
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(
        "127.0.0.1",
        URL(proxy.url).port,
        ssl=pki.client_context(),
        server_hostname="localhost",
    )


def upgrade_request(protocol: str, *, extra: str = "") -> bytes:
    return (
        f"POST {EXEC_PATH} HTTP/1.1\r\nHost: kproxy\r\n"
        f"Connection: Upgrade\r\nUpgrade: {protocol}\r\n"
        "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
        "Authorization: Bearer client-token\r\nImpersonate-User: system:admin\r\n"
        f"{extra}\r\n"
    ).encode()


async def read_head(reader: asyncio.StreamReader) -> tuple[str, CIMultiDict[str]]:
    lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.add(name, value.strip())
    return lines[0], headers


async def until_no_tunnel_tasks() -> None:
    """Poll, boundedly, until both copy tasks of every tunnel are gone."""
    for _ in range(2000):
        names = [task.get_name() for task in asyncio.all_tasks()]
        if not any(name.startswith("kproxy-tunnel-") for name in names):
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"tunnel tasks left behind: {names}")


def dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return out
        out += data[:size]
        data = data[size + 2 :]


async def test_spdy_upgrade_becomes_a_tunnel_carrying_bytes_both_ways(
    raw_upstream: Callable[[Reply], Awaitable[RawUpstream]],
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    pki: Pki,
) -> None:
    upstream = await raw_upstream(spdy_echo)
    proxy = await serve_proxy(open_upstream(upstream.url))
    reader, writer = await open_client(proxy, pki)

    writer.write(upgrade_request("SPDY/3.1"))
    status, headers = await read_head(reader)
    assert status.startswith("HTTP/1.1 101")
    assert headers["Upgrade"] == "SPDY/3.1"
    assert headers["X-Stream-Protocol-Version"] == "v4.channel.k8s.io"
    assert await reader.readexactly(22) == b"hello from the kubelet"

    for message in (b"ls -l\n", b"GET / HTTP/1.1\r\n\r\n", b"\x00\x01binary\xff"):
        writer.write(message)
        assert await reader.readexactly(len(message)) == message.upper()

    writer.close()
    await upstream.closed_by_peer.wait()
    await until_no_tunnel_tasks()
    seen = upstream.heads[0]
    assert upstream.request_lines[0] == f"POST {EXEC_PATH} HTTP/1.1"
    assert seen.getall("Authorization") == ["Bearer kproxy-static-token"]
    assert seen.getall("Impersonate-User") == ["alice@uni.example"]
    assert seen.getall("Connection") == ["Upgrade"]
    assert seen.getall("Upgrade") == ["SPDY/3.1"]
    assert seen["Host"] == URL(upstream.url).raw_authority


async def test_an_api_server_ending_the_tunnel_ends_the_client_connection(
    raw_upstream: Callable[[Reply], Awaitable[RawUpstream]],
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    pki: Pki,
) -> None:
    async def say_goodbye(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\nexit status 0"
        )
        await writer.drain()
        writer.close()

    upstream = await raw_upstream(say_goodbye)
    proxy = await serve_proxy(open_upstream(upstream.url))
    reader, writer = await open_client(proxy, pki)

    writer.write(upgrade_request("SPDY/3.1"))
    status, _ = await read_head(reader)

    assert status.startswith("HTTP/1.1 101")
    assert await reader.read() == b"exit status 0"
    writer.close()


FORBIDDEN = b'{"kind":"Status","status":"Failure","code":403}'
REFUSALS = {
    "content-length": (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(FORBIDDEN), FORBIDDEN),
        b"403",
        FORBIDDEN,
    ),
    "chunked": (
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"400",
        b"hello world",
    ),
}


@pytest.mark.parametrize("kind", list(REFUSALS))
async def test_a_refused_upgrade_is_relayed_and_its_connection_closed(
    kind: str,
    raw_upstream: Callable[[Reply], Awaitable[RawUpstream]],
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    pki: Pki,
) -> None:
    answer, code, body = REFUSALS[kind]

    async def refuse(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(answer)
        await writer.drain()

    upstream = await raw_upstream(refuse)
    proxy = await serve_proxy(open_upstream(upstream.url))
    reader, writer = await open_client(proxy, pki)

    writer.write(upgrade_request("SPDY/3.1"))
    status, headers = await read_head(reader)
    relayed = await reader.read()

    assert status.split(" ")[1] == code.decode()
    assert headers.get("Connection") == "close"
    if headers.get("Transfer-Encoding") == "chunked":
        relayed = dechunk(relayed)
    assert relayed == body
    # kproxy closed the API server connection instead of keeping it for reuse.
    await upstream.closed_by_peer.wait()
    assert upstream.connections == 1
    writer.close()


async def test_unknown_upgrade_protocols_are_refused_before_any_connection(
    raw_upstream: Callable[[Reply], Awaitable[RawUpstream]],
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    pki: Pki,
) -> None:
    upstream = await raw_upstream(spdy_echo)
    proxy = await serve_proxy(open_upstream(upstream.url))
    reader, writer = await open_client(proxy, pki)

    writer.write(upgrade_request("h2c"))
    status, _ = await read_head(reader)

    assert status.startswith("HTTP/1.1 400")
    assert upstream.connections == 0
    writer.close()


async def test_websocket_exec_tunnel_carries_frames_both_ways(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    pki: Pki,
) -> None:
    def routes(app: web.Application, seen: Seen) -> None:
        async def exec_ws(request: web.Request) -> web.WebSocketResponse:
            seen.requests.append(request)
            ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io",))
            await ws.prepare(request)
            await ws.send_bytes(b"\x01ready")
            async for message in ws:
                await ws.send_bytes(b"\x01" + message.data[1:].upper())
            return ws

        app.router.add_get("/api/v1/namespaces/ns/pods/p/exec", exec_ws)

    served = await serve_upstream(routes)
    proxy = await serve_proxy(open_upstream(served.url))
    connector = aiohttp.TCPConnector(ssl=pki.client_context())

    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.ws_connect(
            proxy.url + EXEC_PATH,
            protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"),
            headers={"Authorization": "Bearer client-token"},
        ) as ws,
    ):
        assert ws.protocol == "v5.channel.k8s.io"
        assert (await ws.receive_bytes()) == b"\x01ready"
        await ws.send_bytes(b"\x00echo hi")
        assert (await ws.receive_bytes()) == b"\x01ECHO HI"

    seen = served.seen.last.headers
    assert seen.getall("Authorization") == ["Bearer kproxy-static-token"]
    assert seen.getall("Impersonate-User") == ["alice@uni.example"]
    assert seen["Sec-WebSocket-Protocol"] == "v5.channel.k8s.io,v4.channel.k8s.io"


async def test_a_large_tunnel_transfer_arrives_whole(
    raw_upstream: Callable[[Reply], Awaitable[RawUpstream]],
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    pki: Pki,
) -> None:
    size = 32 * 1024 * 1024
    counted = asyncio.get_running_loop().create_future()

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
        )
        total = 0
        while total < size:
            total += len(await reader.read(1 << 18))
        counted.set_result(total)
        writer.write(b"done")

    upstream = await raw_upstream(count)
    proxy = await serve_proxy(open_upstream(upstream.url))
    reader, writer = await open_client(proxy, pki)
    writer.write(upgrade_request("SPDY/3.1"))
    await read_head(reader)

    piece = b"p" * (1 << 18)
    for _ in range(size // len(piece)):
        writer.write(piece)
        await writer.drain()

    assert await reader.readexactly(4) == b"done"
    assert await counted == size
    writer.close()


async def test_an_oversized_upgrade_answer_head_is_a_502_status(
    raw_upstream: Callable[[Reply], Awaitable[RawUpstream]],
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    pki: Pki,
) -> None:
    # Above the 64 KiB bound on answer heads, below the tunnel's 256 KiB buffer.
    padding = b"X-Padding: " + b"p" * (100 * 1024) + b"\r\n"

    async def bloated(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n" + padding + b"\r\n"
        )
        await writer.drain()

    upstream = await raw_upstream(bloated)
    proxy = await serve_proxy(open_upstream(upstream.url))
    reader, writer = await open_client(proxy, pki)

    writer.write(upgrade_request("SPDY/3.1"))
    status, headers = await read_head(reader)
    body = await reader.readexactly(int(headers["Content-Length"]))

    assert status.split(" ")[1] == "502"
    assert b"oversized response head" in body
    writer.close()
