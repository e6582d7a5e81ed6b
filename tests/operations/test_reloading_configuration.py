"""Editing the configuration file changes what the running proxy decides, no restart."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

import kproxy.running
from kproxy.standins.federation import LocalFederation

from .conftest import POLICIES

PODS = "/api/v1/namespaces/alpha/pods"


@pytest.fixture
async def federation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[LocalFederation]:
    monkeypatch.setattr(kproxy.running, "CONFIG_POLL_SECONDS", 0.05)
    fed = LocalFederation(tmp_path / "federation", policy_dir=POLICIES)
    await fed.start()
    try:
        yield fed
    finally:
        await fed.stop()


def edit(federation: LocalFederation, change: dict[str, Any]) -> None:
    path = federation.config_file
    settings = yaml.safe_load(path.read_text())
    for section, values in change.items():
        settings[section] = {**settings.get(section, {}), **values}
    # Written beside and renamed over, as a ConfigMap update lands.
    staged = path.with_suffix(".new")
    staged.write_text(yaml.safe_dump(settings, sort_keys=False))
    staged.replace(path)


async def get(federation: LocalFederation, token: str) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(federation.ca_file))
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(federation.url + PODS, headers=headers, ssl=context) as response,
    ):
        return response.status, await response.json()


async def statuses_until(
    federation: LocalFederation, token: str, wanted: int
) -> list[int]:
    seen: list[int] = []
    for _ in range(200):
        status, _ = await get(federation, token)
        seen.append(status)
        if status == wanted:
            return seen
        await asyncio.sleep(0.05)
    return seen


async def test_a_new_rate_limit_applies_without_a_restart(
    federation: LocalFederation,
) -> None:
    token = federation.scheduler_token("alpha")
    before = federation.proxy.components
    assert (await get(federation, token))[0] == 200

    edit(
        federation,
        {"limits": {"requestsPerSecondPerUniversity": 0.01, "burstPerUniversity": 1}},
    )
    seen = await statuses_until(federation, token, 429)

    assert seen[-1] == 429
    assert federation.proxy.components is not before
    # The process-wide parts are kept across the reload.
    assert federation.proxy.components.upstream is before.upstream
    assert federation.proxy.components.metrics is before.metrics


async def test_impersonation_settings_apply_to_new_requests(
    federation: LocalFederation,
) -> None:
    token = federation.scheduler_token("alpha")
    edit(federation, {"impersonation": {"provenance": False}})

    assert await federation.proxy.reload()
    assert (await get(federation, token))[0] == 200
    sent = [r for r in federation.apiserver.requests if r.path == PODS][-1]

    assert sent.header_values("Impersonate-User") == [
        "alpha:admiralty:multicluster-scheduler"
    ]
    assert not [
        name
        for name, _ in sent.headers
        if name.lower().startswith("impersonate-extra-")
    ]


async def test_a_broken_edit_keeps_the_running_configuration(
    federation: LocalFederation, caplog: pytest.LogCaptureFixture
) -> None:
    token = federation.scheduler_token("alpha")
    text = federation.config_file.read_text()
    federation.config_file.write_text(text + "limits:\n  burstPerUniversity: many\n")

    with caplog.at_level(logging.WARNING, logger="kproxy.running"):
        applied = await federation.proxy.reload()

    assert applied is False
    assert "configuration not reloaded, keeping the running one" in caplog.text
    assert f"{federation.config_file}:" in caplog.text
    assert "limits.burstPerUniversity" in caplog.text
    assert (await get(federation, token))[0] == 200


async def test_a_restart_only_change_is_reported_and_left_alone(
    federation: LocalFederation, caplog: pytest.LogCaptureFixture
) -> None:
    token = federation.scheduler_token("alpha")
    edit(federation, {"serving": {"shutdownGracePeriodSeconds": 7}})

    with caplog.at_level(logging.WARNING, logger="kproxy.running"):
        assert await federation.proxy.reload()

    assert "configuration section 'serving' changed" in caplog.text
    assert federation.proxy.grace_period == 2
    assert (await get(federation, token))[0] == 200


async def test_an_issuer_removed_from_the_file_is_no_longer_trusted(
    federation: LocalFederation,
) -> None:
    beta = federation.scheduler_token("beta")
    settings = yaml.safe_load(federation.config_file.read_text())
    beta_url = federation.issuer("beta").url
    settings["authentication"]["jwt"] = [
        entry
        for entry in settings["authentication"]["jwt"]
        if entry["issuer"]["url"] != beta_url
    ]
    federation.config_file.write_text(yaml.safe_dump(settings, sort_keys=False))

    assert await federation.proxy.reload()
    status, body = await get(federation, beta)

    assert status == 401
    assert body["reason"] == "Unauthorized"
