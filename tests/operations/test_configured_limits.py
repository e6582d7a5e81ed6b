"""The ``limits:`` section of the configuration file governs the running proxy."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp

from kproxy.standins.federation import LocalFederation

from .conftest import POLICIES


async def test_the_configured_rate_limit_answers_429_with_retry_after(
    tmp_path: Path,
) -> None:
    federation = LocalFederation(
        tmp_path / "federation",
        policy_dir=POLICIES,
        extra_settings={
            "limits": {"requestsPerSecondPerUniversity": 0.01, "burstPerUniversity": 1}
        },
    )
    await federation.start()
    try:
        token = federation.scheduler_token("alpha")
        context = ssl.create_default_context(cafile=str(federation.ca_file))
        url = federation.url + "/api/v1/namespaces/alpha/pods"
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as session:
            async with session.get(url, headers=headers, ssl=context) as first:
                first_status = first.status
            async with session.get(url, headers=headers, ssl=context) as second:
                refused = await second.json()
                retry_after = second.headers.get("Retry-After")
    finally:
        await federation.stop()

    assert first_status == 200
    assert refused["code"] == 429
    assert refused["reason"] == "TooManyRequests"
    assert retry_after is not None
    assert int(retry_after) >= 1
