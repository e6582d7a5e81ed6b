"""Readiness and graceful shutdown of a running kproxy, in-process.

Readiness follows what kproxy can do: no keys for an issuer means not ready, keys
arriving means ready, and stopping means not ready before anything else happens.
Stopping ends streams cleanly (a watch's chunked body gets its final chunk, a tunnel
is closed) while a short request in flight still gets its answer; the order of those
events is what the tests assert, never how long they took.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import aiohttp
import pytest
import yaml

from kproxy.config import load_configuration
from kproxy.running import Proxy
from kproxy.standins.federation import LocalFederation
from tests.operations.conftest import (
    POLICIES,
    bearer,
    eventually,
    pod,
    probe_text,
)

CONFIGMAPS: Final = "/api/v1/namespaces/alpha/configmaps"
WATCH: Final = CONFIGMAPS + "?watch=true"
EXEC: Final = (
    "/api/v1/namespaces/alpha/pods/shell/exec?command=cat&stdin=true&stdout=true"
)
# Long enough that a test would time out if kproxy waited for it instead of draining.
LONG_GRACE: Final = 50


def configmap(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "alpha"},
        "data": {"k": "v"},
    }


@pytest.fixture
async def federation(tmp_path: Path) -> AsyncIterator[LocalFederation]:
    """The example federation, with a pod to exec into."""
    fed = LocalFederation(tmp_path / "federation", policy_dir=POLICIES)
    await fed.start()
    fed.apiserver.create(pod("shell", "alpha"))
    try:
        yield fed
    finally:
        await fed.stop()


@pytest.fixture
async def draining(federation: LocalFederation) -> LocalFederation:
    """The federation, its kproxy waiting ``LONG_GRACE`` seconds for requests."""
    await restart(federation, grace=LONG_GRACE)
    return federation


async def restart(
    fed: LocalFederation, *, grace: float = 2, **authentication: float
) -> Proxy:
    """Replace the federation's kproxy by one started from an edited copy of its file."""
    await fed.proxy.stop()
    settings = yaml.safe_load(fed.config_file.read_text())
    settings["serving"]["shutdownGracePeriodSeconds"] = grace
    settings["authentication"].update(authentication)
    edited = fed.config_file.with_name("edited.yaml")
    edited.write_text(yaml.safe_dump(settings))
    fed.proxy = Proxy(load_configuration(edited))
    await fed.proxy.start()
    return fed.proxy


async def readiness(proxy: Proxy) -> tuple[int, list[str]]:
    status, text = await probe_text(proxy.probe_addresses[0] + "/readyz?verbose")
    return status, text.splitlines()


async def test_not_ready_while_an_issuer_has_no_keys_then_ready_when_they_arrive(
    federation: LocalFederation, client: aiohttp.ClientSession
) -> None:
    beta = federation.issuer("beta")
    beta.fault = "down"
    proxy = await restart(federation, keyRetrySeconds=0.1)

    status, lines = await readiness(proxy)
    assert status == 500
    assert "[-]issuers failed: reason withheld" in lines
    assert "[+]apiserver ok" in lines
    assert (await probe_text(proxy.probe_addresses[0] + "/livez"))[0] == 200
    token = federation.scheduler_token("beta")
    async with client.get(
        federation.url + "/api/v1/namespaces/beta/configmaps", headers=bearer(token)
    ) as refused:
        assert refused.status == 503

    beta.fault = None

    async def ready() -> bool | None:
        return True if (await readiness(proxy))[0] == 200 else None

    await eventually(ready, what="ready once beta's keys arrived")
    async with client.get(
        federation.url + "/api/v1/namespaces/beta/configmaps", headers=bearer(token)
    ) as served:
        assert served.status == 200


class HeldRequest:
    """A short request the API server stand-in holds unanswered until ``release``."""

    def __init__(
        self, fed: LocalFederation, client: aiohttp.ClientSession, token: str
    ) -> None:
        self.fed = fed
        self.client = client
        self.token = token
        self.task: asyncio.Task[aiohttp.ClientResponse] | None = None

    async def send(self) -> asyncio.Task[aiohttp.ClientResponse]:
        faults = self.fed.apiserver.faults
        faults.path_prefix = CONFIGMAPS
        faults.hang = True
        seen = self._lists()
        self.task = asyncio.create_task(
            self.client.get(self.fed.url + CONFIGMAPS, headers=bearer(self.token))
        )

        async def arrived() -> bool | None:
            return True if self._lists() > seen else None

        await eventually(arrived, what="the short request at the API server")
        return self.task

    async def release(self) -> aiohttp.ClientResponse:
        assert self.task is not None
        self.fed.apiserver.faults.hang = False
        return await self.task

    def _lists(self) -> int:
        return sum(
            1
            for r in self.fed.apiserver.requests
            if r.path == CONFIGMAPS and "watch" not in r.query_string
        )


async def test_stopping_fails_readiness_first_and_lets_a_short_request_finish(
    draining: LocalFederation, client: aiohttp.ClientSession
) -> None:
    proxy = draining.proxy
    token = draining.scheduler_token("alpha")
    held = HeldRequest(draining, client, token)
    in_flight = await held.send()

    stopping = asyncio.create_task(proxy.stop())

    async def not_ready() -> list[str] | None:
        status, lines = await readiness(proxy)
        return lines if status == 500 else None

    lines = await eventually(not_ready, what="readiness failing")
    assert "[-]shutdown failed: reason withheld" in lines
    with pytest.raises(aiohttp.ClientConnectionError):
        await client.get(draining.url + CONFIGMAPS, headers=bearer(token))
    assert not in_flight.done()
    assert not stopping.done()

    async with await held.release() as response:
        assert response.status == 200
        assert (await response.json())["kind"] == "ConfigMapList"
    await stopping


async def test_stopping_ends_a_watch_with_a_clean_end_of_stream(
    draining: LocalFederation, client: aiohttp.ClientSession
) -> None:
    token = draining.scheduler_token("alpha")
    async with client.get(draining.url + WATCH, headers=bearer(token)) as watch:
        assert watch.status == 200
        assert watch.headers["Transfer-Encoding"] == "chunked"
        draining.apiserver.create(configmap("before-stop"))
        assert b"before-stop" in await watch.content.readline()
        # A short request in flight keeps the drain from finishing, so an end of
        # the watch seen before it is the drain's doing, not the grace period's.
        held = HeldRequest(draining, client, token)
        await held.send()
        stopping = asyncio.create_task(draining.proxy.stop())

        # Reading to the end raises ClientPayloadError if the stream was cut
        # without its final chunk.
        rest = await watch.content.read()

    assert rest == b""
    assert not stopping.done()
    async with await held.release() as response:
        assert response.status == 200
    await stopping


async def test_stopping_closes_an_exec_tunnel(
    draining: LocalFederation, client: aiohttp.ClientSession
) -> None:
    token = draining.scheduler_token("alpha")
    async with client.ws_connect(
        draining.url + EXEC, protocols=("v5.channel.k8s.io",), headers=bearer(token)
    ) as tunnel:
        await tunnel.send_bytes(b"\x00hello\n")
        assert (await tunnel.receive()).data == b"\x01hello\n"
        held = HeldRequest(draining, client, token)
        await held.send()
        stopping = asyncio.create_task(draining.proxy.stop())

        ended = await tunnel.receive()

    assert ended.type == aiohttp.WSMsgType.CLOSED
    assert not stopping.done()
    async with await held.release() as response:
        assert response.status == 200
    await stopping
