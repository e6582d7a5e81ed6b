"""Failures around kproxy, each met through the running proxy and then cleared.

For every fault the same three things are checked: the client gets a clear ``Status``
(or, for a stream already under way, a cut stream); kproxy keeps no task and no file
descriptor it did not have before; and once the fault clears, the same request works
again without restarting anything.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import yaml

from tests.security.conftest import MODULE_LOOP, StartFederation
from tests.security.federation import Federation, Relay, pod, policy

pytestmark = MODULE_LOOP

PODS = "/api/v1/namespaces/alpha/pods"


def resources() -> tuple[int, int]:
    """Tasks on this loop and file descriptors open in this process."""
    return len(asyncio.all_tasks()), len(os.listdir("/proc/self/fd"))


async def assert_settled(baseline: tuple[int, int]) -> None:
    """Wait, boundedly, for tasks and descriptors to fall back to ``baseline``."""
    tasks, fds = resources()
    for _ in range(200):
        if tasks <= baseline[0] and fds <= baseline[1]:
            return
        await asyncio.sleep(0.05)
        tasks, fds = resources()
    assert tasks <= baseline[0], "tasks were left behind"
    assert fds <= baseline[1], "file descriptors were left open"


async def get(
    federation: Federation, token: str | None = None, path: str = PODS
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token or federation.token()}"}
    async with (
        federation.session() as session,
        session.get(path, headers=headers) as response,
    ):
        body = await response.json(content_type=None)
        return response.status, body


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(300):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never held")


async def recovered(federation: Federation) -> bool:
    return (await get(federation))[0] == 200


async def test_api_server_refusing_connections_is_503_then_recovers(
    start_federation: StartFederation,
) -> None:
    relay = Relay()
    federation = await start_federation(relay=relay)
    assert (await get(federation))[0] == 200
    baseline = resources()

    await relay.refuse()
    refused, status = await get(federation)
    await relay.accept()
    await eventually(lambda: recovered(federation))

    assert refused == 503
    assert status["reason"] == "ServiceUnavailable"
    await assert_settled(baseline)


async def test_api_server_with_a_foreign_certificate_is_502_then_recovers(
    start_federation: StartFederation,
) -> None:
    relay = Relay()
    federation = await start_federation(relay=relay)
    assert (await get(federation))[0] == 200
    baseline = resources()

    # The issuer's certificate is valid for 127.0.0.1 but signed by another CA.
    relay.target = federation.alpha.url
    await relay.refuse()
    await relay.accept()
    mismatched, status = await get(federation)
    relay.target = federation.apiserver.url
    await eventually(lambda: recovered(federation))

    assert mismatched == 502
    assert "TLS" in status["message"]
    await assert_settled(baseline)


async def test_hanging_api_server_is_504_then_recovers(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation(upstream={"responseHeaderTimeoutSeconds": 0.5})
    assert (await get(federation))[0] == 200
    baseline = resources()

    federation.apiserver.faults.hang = True
    hung, status = await get(federation)
    federation.apiserver.faults.hang = False
    await eventually(lambda: recovered(federation))

    assert hung == 504
    assert status["reason"] == "Timeout"
    await assert_settled(baseline)


@pytest.mark.parametrize("code", [500, 503])
async def test_api_server_errors_reach_the_client_as_its_status(
    federation: Federation, code: int
) -> None:
    assert await recovered(federation)
    baseline = resources()
    federation.apiserver.faults.status_code = code

    failed, status = await get(federation)
    federation.apiserver.faults.clear()

    assert failed == code
    assert status["kind"] == "Status"
    assert await recovered(federation)
    await assert_settled(baseline)


async def test_watch_reset_midway_cuts_the_stream_and_nothing_else(
    federation: Federation,
) -> None:
    assert await recovered(federation)
    baseline = resources()
    federation.apiserver.faults.reset_watch_after = 1
    headers = {"Authorization": f"Bearer {federation.token()}"}
    lines: list[bytes] = []

    async with (
        federation.session() as session,
        session.get(f"{PODS}?watch=true", headers=headers) as response,
    ):
        lines.append(await response.content.readline())
        # The stand-in cuts the connection when it would send the next event.
        federation.apiserver.create(pod("alpha", "second"))
        with pytest.raises(aiohttp.ClientPayloadError):
            await _read_lines(response, lines)
    federation.apiserver.faults.clear()

    assert len(lines) == 1
    assert await recovered(federation)
    await assert_settled(baseline)


async def _read_lines(response: aiohttp.ClientResponse, lines: list[bytes]) -> None:
    async for line in response.content:
        lines.append(line)


@pytest.mark.parametrize("fault", ["down", "garbage"])
async def test_issuer_failing_at_start_gives_503_then_recovers(
    start_federation: StartFederation, fault: Any
) -> None:
    federation = await start_federation(issuer_faults={"alpha": fault})
    beta = (federation.token("beta"), "/api/v1/namespaces/beta/pods")
    assert (await get(federation, *beta))[0] == 200
    baseline = resources()

    failed, status = await get(federation)
    federation.alpha.fault = None
    await eventually(lambda: recovered(federation))

    assert failed == 503
    assert status["reason"] == "ServiceUnavailable"
    await assert_settled(baseline)


async def test_issuer_rotating_its_keys_is_followed(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation(authentication={"unknownKeyRefreshSeconds": 0})
    assert (await get(federation))[0] == 200

    federation.alpha.rotate()
    rotated, _ = await get(federation)

    assert rotated == 200
    assert federation.forwarded()[-1].user is not None


async def test_issuer_down_after_start_keeps_the_last_good_keys(
    federation: Federation,
) -> None:
    federation.alpha.fault = "down"

    answered, _ = await get(federation)
    federation.alpha.fault = None

    assert answered == 200


async def test_policy_file_corrupted_while_running_keeps_the_last_good_policy(
    start_federation: StartFederation,
) -> None:
    federation = await start_federation()
    policy_file = federation.directory / "policies" / "alpha.yaml"
    assert await recovered(federation)
    baseline = resources()

    policy_file.write_text("rules: [: this is not yaml\n\0")
    await asyncio.sleep(0)
    kept = [(await get(federation))[0] for _ in range(3)]
    # A corrected file that no longer allows pods takes effect: reload still works.
    narrowed = policy("alpha")
    narrowed["rules"][0]["resources"].remove("pods")
    policy_file.write_text(yaml.safe_dump(narrowed))

    async def forbidden() -> bool:
        return (await get(federation))[0] == 403

    await eventually(forbidden)

    assert kept == [200, 200, 200]
    await assert_settled(baseline)
