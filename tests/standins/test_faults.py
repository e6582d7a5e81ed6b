"""Fault switches: each makes the stand-in misbehave the way a test asks."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from kproxy.standins.apiserver import ApiServer, Credentials

from .conftest import Kubectl, bearer, pod


async def test_status_code_fault_answers_with_that_status(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    apiserver.faults.status_code = 503

    async with http.get("/api/v1/pods", headers=bearer(admin)) as response:
        body = await response.json()

    assert (response.status, body["reason"]) == (503, "ServiceUnavailable")


async def test_redirect_fault_answers_302(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    apiserver.faults.redirect_to = "https://elsewhere.example/api"

    async with http.get(
        "/api", headers=bearer(admin), allow_redirects=False
    ) as response:
        location = response.headers["Location"]

    assert (response.status, location) == (302, "https://elsewhere.example/api")


async def test_hang_fault_holds_the_request_until_released(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    apiserver.faults.hang = True
    request = asyncio.create_task(http.get("/version", headers=bearer(admin)))
    for _ in range(400):
        if apiserver.requests:
            break
        await asyncio.sleep(0.01)

    assert apiserver.requests
    assert not request.done()
    apiserver.faults.hang = False
    async with await request as response:
        assert response.status == 200


async def test_faults_apply_only_under_their_path_prefix(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    apiserver.faults.status_code = 500
    apiserver.faults.path_prefix = "/apis/"

    async with http.get("/api/v1/pods", headers=bearer(admin)) as response:
        assert response.status == 200
    async with http.get(
        "/apis/kproxy.io/v1alpha1/namespacegrants", headers=bearer(admin)
    ) as response:
        assert response.status == 500


async def test_reset_watch_fault_aborts_the_stream_midway(
    apiserver: ApiServer, http: aiohttp.ClientSession, admin: Credentials
) -> None:
    apiserver.create(pod("a"))
    apiserver.create(pod("b"))
    apiserver.faults.reset_watch_after = 1
    lines: list[bytes] = []

    async def read_watch() -> None:
        async with http.get(
            "/api/v1/pods?watch=true", headers=bearer(admin)
        ) as response:
            async for line in response.content:
                lines.append(line)

    with pytest.raises(aiohttp.ClientPayloadError):
        await read_watch()

    assert [json.loads(line)["object"]["metadata"]["name"] for line in lines] == ["a"]


async def test_refused_upgrade_fails_kubectl_exec(
    apiserver: ApiServer, kubectl: Kubectl
) -> None:
    apiserver.create(pod("shell"))
    apiserver.faults.refuse_upgrades = 403

    result = await kubectl("exec", "shell", "--", "echo", "hi")

    assert result.returncode != 0
    assert result.stdout == ""
