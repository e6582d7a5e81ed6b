"""Bounds on size, time, rate and concurrency, met through the running proxy.

Each test sets the one bound it shows low, so that reaching it takes a handful of
requests, and checks both sides: the caller over the bound gets a ``Status`` (413 or
429 with ``Retry-After``), and a caller within its own bounds is not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from kproxy.app import COMPONENTS
from kproxy.config import LimitSettings
from kproxy.errors import TooManyRequestsError
from kproxy.limiting import Bounds, Limiter
from tests.security.conftest import MODULE_LOOP, StartFederation
from tests.security.federation import (
    Federation,
    RawResponse,
    raw_exchange,
    request_bytes,
)

pytestmark = MODULE_LOOP

PODS = "/api/v1/namespaces/alpha/pods"
CONFIGMAPS = "/api/v1/namespaces/alpha/configmaps"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def status_of(
    federation: Federation, token: str, path: str = PODS
) -> tuple[int, dict[str, str], dict[str, object]]:
    async with (
        federation.session() as session,
        session.get(path, headers=bearer(token)) as response,
    ):
        return response.status, dict(response.headers), await response.json()


@contextlib.asynccontextmanager
async def open_watch(federation: Federation, token: str) -> AsyncIterator[int]:
    """Hold a watch open for the block; yield the status it was answered with."""
    async with (
        federation.session() as session,
        session.get(f"{PODS}?watch=true", headers=bearer(token)) as response,
    ):
        if response.status == 200:
            await response.content.readline()
        yield response.status


async def test_body_over_the_limit_is_refused_before_it_is_forwarded(
    federation: Federation,
) -> None:
    body = json.dumps({"data": {"big": "x" * (3 * 1024 * 1024)}}).encode()
    headers = {
        **bearer(federation.token()),
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
    }

    async with (
        federation.session() as session,
        session.post(
            CONFIGMAPS,
            data=io.BytesIO(body),
            headers=headers,
        ) as response,
    ):
        assert response.status == 413
        status = await response.json()
    assert status["reason"] == "RequestEntityTooLarge"
    assert federation.forwarded() == []


def chunked(body: bytes, *, piece: int = 64 * 1024) -> bytes:
    """``body`` framed as ``Transfer-Encoding: chunked``, ending with the last chunk."""
    framed = bytearray()
    for start in range(0, len(body), piece):
        part = body[start : start + piece]
        framed += b"%x\r\n%s\r\n" % (len(part), part)
    return bytes(framed + b"0\r\n\r\n")


def configmap(name: str, size: int) -> bytes:
    """A ConfigMap whose JSON is ``size`` bytes long."""
    shell = {"metadata": {"name": name}, "data": {"big": ""}}
    padding = size - len(json.dumps(shell).encode())
    shell["data"] = {"big": "x" * padding}
    return json.dumps(shell).encode()


def created(federation: Federation, name: str) -> list[tuple[object, ...]]:
    return [key for key in federation.apiserver.store if key[2] == name]


async def post_chunked(federation: Federation, body: bytes) -> RawResponse:
    headers = (("Content-Type", "application/json"), ("Transfer-Encoding", "chunked"))
    data = request_bytes(
        "POST", CONFIGMAPS, token=federation.token(), headers=headers, body=body
    )
    return await raw_exchange(federation, data)


async def test_chunked_body_over_the_limit_is_refused_and_never_completes_upstream(
    federation: Federation,
) -> None:
    limit = LimitSettings().max_body_bytes
    body = configmap("too-large", limit + 1024 * 1024)

    response = await post_chunked(federation, chunked(body))
    code, _, _ = await status_of(federation, federation.token())

    assert response.statuses == (413,)
    assert response.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"the request body is larger than the limit of {limit} bytes",
        "reason": "RequestEntityTooLarge",
        "code": 413,
    }
    assert created(federation, "too-large") == []
    assert code == 200


async def test_chunked_body_within_the_limit_is_forwarded_whole(
    federation: Federation,
) -> None:
    body = configmap("just-fits", LimitSettings().max_body_bytes)

    response = await post_chunked(federation, chunked(body))

    assert response.status == 201
    assert response.json()["data"] == json.loads(body)["data"]
    assert len(created(federation, "just-fits")) == 1


async def test_header_over_the_limit_is_refused(federation: Federation) -> None:
    data = request_bytes(
        "GET", PODS, token=federation.token(), headers=(("X-Pad", "x" * 20_000),)
    )

    response = await raw_exchange(federation, data)

    assert response.status in (400, 431)
    assert federation.forwarded() == []


async def test_university_over_its_rate_gets_429_with_retry_after(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation(
        limits={"requestsPerSecondPerUniversity": 0.01, "burstPerUniversity": 2}
    )
    token = federation.token("alpha")

    codes = [(await status_of(federation, token))[0] for _ in range(2)]
    code, headers, status = await status_of(federation, token)
    other, _, _ = await status_of(
        federation, federation.token("beta"), "/api/v1/namespaces/beta/pods"
    )

    assert codes == [200, 200]
    assert code == 429
    assert int(headers["Retry-After"]) >= 1
    assert status["reason"] == "TooManyRequests"
    assert status["details"] == {"retryAfterSeconds": int(headers["Retry-After"])}
    assert other == 200
    assert len(federation.forwarded()) == 3


async def test_watches_per_identity_are_bounded_and_slots_come_back(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation(limits={"maxLongRunningPerIdentity": 1})
    token = federation.token()

    async with open_watch(federation, token) as first:
        async with open_watch(federation, token) as second:
            pass
        short, _, _ = await status_of(federation, token)
    async with open_watch(federation, token) as again:
        pass

    assert (first, second, short, again) == (200, 429, 200, 200)


async def test_requests_in_flight_per_university_are_bounded(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation(limits={"maxInFlightPerUniversity": 1})

    async with open_watch(federation, federation.token("alpha")) as watching:
        alpha, _, status = await status_of(federation, federation.token("alpha"))
        beta, _, _ = await status_of(
            federation, federation.token("beta"), "/api/v1/namespaces/beta/pods"
        )

    assert (watching, alpha, beta) == (200, 429, 200)
    assert status["message"] == "too many concurrent requests for university 'alpha'"


async def test_slow_request_head_is_cut_off_by_the_idle_timeout(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation(limits={"clientIdleTimeoutSeconds": 0.5})
    host, port = federation.host_port
    reader, writer = await asyncio.open_connection(
        host, port, ssl=federation.client_tls(), server_hostname="127.0.0.1"
    )
    # Half a request head, then silence: the slow-loris pattern.
    writer.write(b"GET /api/v1/namespaces/alpha/pods HTTP/1.1\r\nHost: kproxy\r\n")
    await writer.drain()

    try:
        async with asyncio.timeout(30):
            received = await reader.read()
    finally:
        writer.close()

    assert received == b""
    assert federation.forwarded() == []


async def test_oversized_key_set_is_never_used(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation(authentication={"maxDocumentBytes": 256})

    code, headers, status = await status_of(federation, federation.token())

    assert code == 503
    assert status["reason"] == "ServiceUnavailable"
    assert "Retry-After" in headers
    assert federation.alpha.jwks_requests >= 1
    assert federation.forwarded() == []


async def test_key_set_fetch_is_bounded_in_time(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation(issuer_faults={"alpha": "slow"})

    code, _, _ = await status_of(federation, federation.token("alpha"))
    other, _, _ = await status_of(
        federation, federation.token("beta"), "/api/v1/namespaces/beta/pods"
    )

    # The start went on without alpha's keys: the fetch gave up, it did not hang.
    assert (code, other) == (503, 200)
    assert federation.alpha.discovery_requests >= 1
    assert federation.alpha.jwks_requests == 0


async def test_limit_errors_do_not_leak_slots(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation(
        limits={"maxInFlightPerIdentity": 2, "maxLongRunningPerIdentity": 1}
    )
    token = federation.token()
    answered = []
    for _ in range(5):
        async with (
            open_watch(federation, token) as first,
            open_watch(federation, token) as second,
        ):
            answered.append((first, second))

    assert answered == [(200, 429)] * 5
    assert federation._limited is not None
    limiter = federation._limited.app[COMPONENTS].current.limiter
    # The server sees the client leave a moment after it left: poll, boundedly.
    for _ in range(200):
        if set(limiter.held().values()) == {0}:
            break
        await asyncio.sleep(0.05)
    assert set(limiter.held().values()) == {0}


async def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    now = [0.0]
    limiter = Limiter(Bounds(requests_per_second=2.0, burst=3), clock=lambda: now[0])

    for _ in range(3):
        limiter.check_rate("alpha")
    with pytest.raises(TooManyRequestsError) as refused:
        limiter.check_rate("alpha")
    now[0] = 0.5
    limiter.check_rate("alpha")
    now[0] = 100.0
    for _ in range(3):
        limiter.check_rate("alpha")

    assert refused.value.retry_after == 1
    with pytest.raises(TooManyRequestsError):
        limiter.check_rate("alpha")


async def test_malformed_chunked_body_is_the_clients_fault_not_the_api_servers(
    federation: Federation,
) -> None:
    assert federation.proxy is not None
    metrics = federation.proxy.components.metrics
    failures_before = _upstream_errors(metrics.registry)
    headers = (("Content-Type", "application/json"), ("Transfer-Encoding", "chunked"))
    head = request_bytes("POST", CONFIGMAPS, token=federation.token(), headers=headers)
    first = chunked(configmap("malformed", 200 * 1024))[: 64 * 1024 + 9]

    host, port = federation.host_port
    reader, writer = await asyncio.open_connection(
        host, port, ssl=federation.client_tls(), server_hostname="127.0.0.1"
    )
    # The head and a first chunk go first, so the request is being forwarded when the
    # malformed chunk size arrives; sent at once, aiohttp's parser refuses it all.
    writer.write(head + first)
    await writer.drain()
    await asyncio.sleep(0.5)
    writer.write(b"not-hex\r\n")
    await writer.drain()
    try:
        async with asyncio.timeout(30):
            answer = await reader.read(65536)
    finally:
        writer.close()
    code, _, _ = await status_of(federation, federation.token())

    head_text, _, body = answer.partition(b"\r\n\r\n")
    assert head_text.startswith(b"HTTP/1.1 400 ")
    status = json.loads(body)
    assert status["reason"] == "BadRequest"
    assert (
        status["message"] == "the request body stopped arriving before it was complete"
    )
    assert created(federation, "malformed") == []
    assert _upstream_errors(metrics.registry) == failures_before
    assert code == 200


def _upstream_errors(registry: CollectorRegistry) -> float:
    return sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "kproxy_upstream_errors"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
