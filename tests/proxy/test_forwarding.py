"""Forwarding over real TLS: methods, raw paths, bodies, streams and failures."""

from __future__ import annotations

import asyncio
import gc
import gzip
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from yarl import URL

from kproxy.proxy.draining import install_drain
from kproxy.proxy.forwarding import _copy_until_drained
from kproxy.proxy.upstream import Upstream
from tests.proxy.conftest import Pki, Proxy, Seen, ServeProxy, ServeUpstream


@pytest.fixture
async def client(pki: Pki) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=pki.client_context())
    async with aiohttp.ClientSession(
        connector=connector, auto_decompress=False
    ) as session:
        yield session


def echo_routes(app: web.Application, seen: Seen) -> None:
    async def echo(request: web.Request) -> web.Response:
        seen.requests.append(request)
        seen.bodies.append(await request.read())
        seen.peers.append(
            request.transport.get_extra_info("peername") if request.transport else None
        )
        return web.Response(
            body=b"answer to " + request.method.encode(),
            headers={"X-Upstream": "yes", "Audit-Id": "1234"},
            content_type="text/plain",
        )

    app.router.add_route("*", "/{path:.*}", echo)


async def proxied_echo(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
) -> tuple[Proxy, Seen]:
    served = await serve_upstream(echo_routes)
    proxy = await serve_proxy(open_upstream(served.url))
    return proxy, served.seen


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_method_reaches_the_api_server_with_its_body(
    method: str,
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    proxy, seen = await proxied_echo(serve_upstream, open_upstream, serve_proxy)
    body = b'{"metadata":{"labels":{"a":"b"}}}' if method != "GET" else b""

    async with client.request(
        method, proxy.url + "/api/v1/pods", data=body
    ) as response:
        answer = await response.read()

    assert response.status == 200
    assert answer == b"answer to " + method.encode()
    assert response.headers["X-Upstream"] == "yes"
    assert seen.last.method == method
    assert seen.bodies[-1] == body


async def test_head_is_relayed_without_a_body(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    proxy, seen = await proxied_echo(serve_upstream, open_upstream, serve_proxy)

    async with client.head(proxy.url + "/version") as response:
        assert await response.read() == b""

    assert response.status == 200
    assert seen.last.method == "HEAD"


RAW_TARGETS = [
    "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb%2Ctier%21%3Dcache&limit=500",
    "/api/v1/namespaces/default/configmaps?continue=eyJ2IjoibWV0YS5rOHMuaW8vdjEifQ%3D%3D",
    "/api/v1/namespaces/a%2Fb/pods",
    "/api/v1/namespaces/%2e%2e/secrets",
    "/api/v1/namespaces/x/pods/..",
    "/apis/example.com/v1/things/name%20with%20space;param",
    "/api/v1/watch/pods?watch=1&resourceVersion=0&fieldSelector=metadata.name%3D%3Dx",
    "/openapi/v3/apis/apps/v1?hash=ABC&a=&b",
    "//double//slashes/",
]


@pytest.mark.parametrize("target", RAW_TARGETS)
async def test_raw_path_and_query_pass_byte_for_byte(
    target: str,
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    proxy, seen = await proxied_echo(serve_upstream, open_upstream, serve_proxy)

    async with client.get(URL(proxy.url + target, encoded=True)) as response:
        await response.read()

    assert response.status == 200
    assert seen.last.raw_path == target


async def test_api_server_sees_kproxys_credential_and_impersonation_only(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    proxy, seen = await proxied_echo(serve_upstream, open_upstream, serve_proxy)
    hostile = {
        "Authorization": "Bearer client-token",
        "Impersonate-User": "system:admin",
        "Impersonate_Group": "system:masters",
        "X-Forwarded-For": "10.1.1.1",
        "Connection": "Impersonate-User",
    }

    async with client.get(proxy.url + "/api", headers=hostile) as response:
        await response.read()

    headers = seen.last.headers
    assert headers.getall("Authorization") == ["Bearer kproxy-static-token"]
    assert headers.getall("Impersonate-User") == ["alice@uni.example"]
    assert headers.getall("Impersonate-Group") == ["uni:staff"]
    assert "Impersonate_Group" not in headers
    assert headers.getall("X-Forwarded-For") == ["127.0.0.1"]


async def test_compressed_answer_is_relayed_without_decoding(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    payload = gzip.compress(b'{"kind":"PodList","items":[]}' * 100)

    def routes(app: web.Application, seen: Seen) -> None:
        async def gzipped(request: web.Request) -> web.Response:
            seen.requests.append(request)
            return web.Response(
                body=payload,
                headers={
                    "Content-Encoding": "gzip",
                    "Content-Type": "application/json",
                },
            )

        app.router.add_get("/api/v1/pods", gzipped)

    served = await serve_upstream(routes)
    proxy = await serve_proxy(open_upstream(served.url))

    async with client.get(
        proxy.url + "/api/v1/pods", headers={"Accept-Encoding": "gzip"}
    ) as response:
        body = await response.read()

    assert response.headers["Content-Encoding"] == "gzip"
    assert body == payload
    assert served.seen.last.headers["Accept-Encoding"] == "gzip"


async def test_aiohttp_adds_no_default_headers_of_its_own(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    pki: Pki,
) -> None:
    proxy, seen = await proxied_echo(serve_upstream, open_upstream, serve_proxy)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        URL(proxy.url).port,
        ssl=pki.client_context(),
        server_hostname="localhost",
    )
    writer.write(b"GET /version HTTP/1.1\r\nHost: kproxy\r\nConnection: close\r\n\r\n")
    await reader.read()
    writer.close()

    assert "User-Agent" not in seen.last.headers
    assert "Accept-Encoding" not in seen.last.headers
    assert "Accept" not in seen.last.headers


async def test_keep_alive_connections_to_the_api_server_are_reused(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    proxy, seen = await proxied_echo(serve_upstream, open_upstream, serve_proxy)

    for _ in range(5):
        async with client.get(proxy.url + "/api") as response:
            await response.read()

    assert len(set(seen.peers)) == 1


async def test_watch_events_arrive_one_by_one_before_the_stream_ends(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    received = [asyncio.Event() for _ in range(3)]

    def routes(app: web.Application, seen: Seen) -> None:
        async def watch(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            for index, event in enumerate(received):
                await response.write(b'{"type":"ADDED","object":{"n":%d}}\n' % index)
                # The next event is written only once the client has this one.
                await event.wait()
            await response.write_eof()
            return response

        app.router.add_get("/api/v1/pods", watch)

    served = await serve_upstream(routes)
    proxy = await serve_proxy(open_upstream(served.url))

    lines = []
    async with client.get(proxy.url + "/api/v1/pods?watch=true") as response:
        async for line in response.content:
            lines.append(line)
            received[len(lines) - 1].set()

    assert lines == [b'{"type":"ADDED","object":{"n":%d}}\n' % n for n in range(3)]


async def test_a_client_that_leaves_releases_the_upstream_connection(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    upstream_ended = asyncio.Event()

    def routes(app: web.Application, seen: Seen) -> None:
        async def idle_watch(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b'{"type":"BOOKMARK"}\n')
            try:
                await asyncio.Future()  # an idle watch: nothing more to say
            finally:
                upstream_ended.set()
            return response

        app.router.add_get("/api/v1/pods", idle_watch)

    served = await serve_upstream(routes)
    proxy = await serve_proxy(open_upstream(served.url))

    response = await client.get(proxy.url + "/api/v1/pods?watch=true")
    assert await response.content.readline() == b'{"type":"BOOKMARK"}\n'
    response.close()

    await upstream_ended.wait()


async def test_refused_connection_is_a_503_status(
    serve_proxy: ServeProxy,
    open_upstream: Callable[..., Upstream],
    client: aiohttp.ClientSession,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = await serve_proxy(open_upstream(f"https://127.0.0.1:{port}"))

    async with client.get(proxy.url + "/api") as response:
        status = await response.json()

    assert response.status == 503
    assert status["kind"] == "Status"
    assert status["reason"] == "ServiceUnavailable"
    assert "127.0.0.1" in status["message"]


async def test_reset_before_the_answer_is_a_502_status(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    def routes(app: web.Application, seen: Seen) -> None:
        async def reset(request: web.Request) -> web.Response:
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError

        app.router.add_get("/api", reset)

    served = await serve_upstream(routes)
    proxy = await serve_proxy(open_upstream(served.url))

    async with client.get(proxy.url + "/api") as response:
        status = await response.json()

    assert response.status == 502
    assert status["kind"] == "Status"


async def test_an_api_server_that_never_answers_is_a_504_status(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    def routes(app: web.Application, seen: Seen) -> None:
        async def hang(request: web.Request) -> web.Response:
            await asyncio.Future()
            raise AssertionError("unreachable")

        app.router.add_get("/api", hang)

    served = await serve_upstream(routes)
    proxy = await serve_proxy(
        open_upstream(served.url, responseHeaderTimeoutSeconds=0.2)
    )

    async with client.get(proxy.url + "/api") as response:
        status = await response.json()

    assert response.status == 504
    assert status["reason"] == "Timeout"


async def test_server_errors_are_relayed_as_they_are(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    body = b'{"kind":"Status","status":"Failure","reason":"InternalError","code":500}'

    def routes(app: web.Application, seen: Seen) -> None:
        async def failing(request: web.Request) -> web.Response:
            return web.Response(status=500, body=body, content_type="application/json")

        app.router.add_get("/api", failing)

    served = await serve_upstream(routes)
    proxy = await serve_proxy(open_upstream(served.url))

    async with client.get(proxy.url + "/api") as response:
        assert await response.read() == body
    assert response.status == 500


async def test_redirects_are_relayed_and_never_followed(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    def routes(app: web.Application, seen: Seen) -> None:
        async def moved(request: web.Request) -> web.Response:
            raise web.HTTPFound("/elsewhere")

        async def elsewhere(request: web.Request) -> web.Response:
            seen.requests.append(request)
            return web.Response(text="followed")

        app.router.add_get("/api", moved)
        app.router.add_get("/elsewhere", elsewhere)

    served = await serve_upstream(routes)
    proxy = await serve_proxy(open_upstream(served.url))

    async with client.get(proxy.url + "/api", allow_redirects=False) as response:
        await response.read()

    assert response.status == 302
    assert response.headers["Location"] == "/elsewhere"
    assert served.seen.requests == []


async def test_an_api_server_dying_mid_stream_truncates_the_client_stream(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    def routes(app: web.Application, seen: Seen) -> None:
        async def dying(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b'{"type":"ADDED"}\n')
            assert request.transport is not None
            request.transport.abort()
            return response

        app.router.add_get("/api/v1/pods", dying)

    served = await serve_upstream(routes)
    proxy = await serve_proxy(open_upstream(served.url))

    async with client.get(proxy.url + "/api/v1/pods?watch=1") as response:
        assert await response.content.readline() == b'{"type":"ADDED"}\n'
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()

    # The proxy is still serving after the broken stream.
    async with client.get(proxy.url + "/api/v1/pods?watch=1") as again:
        assert again.status == 200
        await again.content.readline()


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


LARGE_BYTES = 320 * 1024 * 1024
# A gibibyte answer, ten times the memory growth allowed below: a forwarder that kept
# any fixed share of it would fail.
GIB = 1024 * 1024 * 1024
PIECE = b"x" * (256 * 1024)


async def test_a_large_answer_streams_with_flat_memory(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    def routes(app: web.Application, seen: Seen) -> None:
        async def large(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(GIB // len(PIECE)):
                await response.write(PIECE)
            await response.write_eof()
            return response

        app.router.add_get("/api/v1/namespaces/ns/pods/p/log", large)

    served = await serve_upstream(routes)
    proxy = await serve_proxy(open_upstream(served.url))
    before = rss_bytes()
    peak = before
    total = 0

    async with client.get(proxy.url + "/api/v1/namespaces/ns/pods/p/log") as response:
        async for chunk in response.content.iter_any():
            total += len(chunk)
            peak = max(peak, rss_bytes())

    assert total == GIB
    assert peak - before < 96 * 1024 * 1024


async def test_a_large_request_body_streams_with_flat_memory(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    peak = [0]

    def routes(app: web.Application, seen: Seen) -> None:
        async def count(request: web.Request) -> web.Response:
            total = 0
            async for chunk in request.content.iter_any():
                total += len(chunk)
                peak[0] = max(peak[0], rss_bytes())
            return web.Response(text=str(total))

        app.router.add_put("/upload", count)

    served = await serve_upstream(routes)
    proxy = await serve_proxy(open_upstream(served.url), max_body_bytes=LARGE_BYTES)
    before = rss_bytes()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(LARGE_BYTES // 2 // len(PIECE)):
            yield PIECE

    async with client.put(proxy.url + "/upload", data=body()) as response:
        counted = int(await response.text())

    assert counted == LARGE_BYTES // 2
    assert peak[0] - before < 96 * 1024 * 1024


BODY_LIMIT = 64 * 1024


def chunked(body: bytes, *, piece: int = 4000) -> AsyncIterator[bytes]:
    """``body`` as an aiohttp client sends an async iterable: chunked, no length."""

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(body), piece):
            yield body[start : start + piece]

    return pieces()


@dataclass
class Upload:
    """How much of a body an upstream read, and whether it read all of it."""

    expected: int
    received: int = 0
    complete: bool = False
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)


def upload_routes(upload: Upload) -> Callable[[web.Application, Seen], None]:
    def routes(app: web.Application, seen: Seen) -> None:
        async def receive(request: web.Request) -> web.Response:
            seen.peers.append(_peer(request))
            try:
                async for chunk in request.content.iter_any():
                    upload.received += len(chunk)
                    if upload.received >= upload.expected:
                        upload.reached.set()
                upload.complete = True
            finally:
                upload.ended.set()
            return web.Response(status=201)

        async def peer(request: web.Request) -> web.Response:
            seen.peers.append(_peer(request))
            return web.Response(text="ok")

        app.router.add_post("/upload", receive)
        app.router.add_get("/api", peer)

    return routes


def _peer(request: web.Request) -> object:
    return request.transport.get_extra_info("peername") if request.transport else None


@pytest.mark.parametrize("size", [1, BODY_LIMIT - 1, BODY_LIMIT])
async def test_a_chunked_body_within_the_limit_passes_byte_for_byte(
    size: int,
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    served = await serve_upstream(echo_routes)
    proxy = await serve_proxy(open_upstream(served.url), max_body_bytes=BODY_LIMIT)
    body = os.urandom(size)

    async with client.post(proxy.url + "/upload", data=chunked(body)) as response:
        await response.read()

    assert response.status == 200
    assert served.seen.bodies == [body]
    assert served.seen.last.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in served.seen.last.headers


async def test_a_chunked_body_over_the_limit_is_413_and_cut_off_upstream(
    serve_upstream: ServeUpstream,
    open_upstream: Callable[..., Upstream],
    serve_proxy: ServeProxy,
    client: aiohttp.ClientSession,
) -> None:
    upload = Upload(expected=BODY_LIMIT)
    served = await serve_upstream(upload_routes(upload))
    proxy = await serve_proxy(open_upstream(served.url), max_body_bytes=BODY_LIMIT)

    async def over_the_limit() -> AsyncIterator[bytes]:
        async for piece in chunked(os.urandom(BODY_LIMIT)):
            yield piece
        # The limit's worth is with the API server; one byte more passes it.
        await upload.reached.wait()
        yield b"x"

    async with client.get(proxy.url + "/api") as pooled:
        await pooled.read()
    async with client.post(proxy.url + "/upload", data=over_the_limit()) as response:
        status = await response.json()
    await upload.ended.wait()
    async with client.get(proxy.url + "/api") as after:
        await after.read()

    assert response.status == 413
    assert status["reason"] == "RequestEntityTooLarge"
    assert status["code"] == 413
    assert status["message"] == (
        f"the request body is larger than the limit of {BODY_LIMIT} bytes"
    )
    assert (upload.received, upload.complete) == (BODY_LIMIT, False)
    assert after.status == 200
    # The connection that carried the cut-off body was closed, not pooled again.
    _, cut_off, fresh = served.seen.peers
    assert fresh != cut_off


class _StreamingAnswer:
    """A watch's answer: one event, then nothing until the test ends."""

    content_length = None

    def __init__(self) -> None:
        self.content = self

    async def iter_any(self) -> AsyncIterator[bytes]:
        yield b'{"type":"ADDED"}\n'
        await asyncio.Event().wait()


class _LeavingClient:
    """A client whose connection breaks during a write, as its handler is cancelled."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()

    async def write(self, chunk: bytes) -> None:
        self.writing.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise aiohttp.ClientConnectionResetError("closing transport") from None


async def test_a_stream_whose_client_leaves_mid_write_leaves_no_unread_error() -> None:
    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    app = web.Application()
    install_drain(app)
    request = make_mocked_request("GET", "/api/v1/pods?watch=true", app=app)
    client = _LeavingClient()

    handler = asyncio.create_task(
        _copy_until_drained(request, _StreamingAnswer(), client)
    )
    await client.writing.wait()
    # aiohttp cancels the handler when the client leaves, and may again while the
    # handler waits for the copy to end.
    handler.cancel()
    await asyncio.sleep(0)
    handler.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handler
    del handler
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()

    assert [c["message"] for c in reported] == []
