"""Probe endpoints over HTTP, answered as kube-apiserver answers them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from kproxy.observe.metrics import Metrics
from kproxy.observe.probes import ReadinessCheck, ShutdownCheck, build_probe_app

ClientFactory = Callable[..., Awaitable[TestClient]]


async def passing() -> str | None:
    return None


async def no_keys() -> str | None:
    return "no keys for issuer https://idp.alpha.edu"


async def raising() -> str | None:
    raise ConnectionRefusedError("connection refused by 10.96.0.1:443")


@pytest.fixture
def probes(aiohttp_client: ClientFactory) -> Callable[..., Awaitable[TestClient]]:
    async def start(
        checks: Mapping[str, ReadinessCheck],
        *,
        metrics: Metrics | None = None,
        **kw: float,
    ) -> TestClient:
        app = build_probe_app(checks=checks, metrics=metrics or Metrics(), **kw)
        return await aiohttp_client(app)

    return start


async def test_livez_answers_while_the_loop_runs(probes) -> None:
    client = await probes({"apiserver": raising})

    response = await client.get("/livez")

    assert response.status == 200
    assert await response.text() == "ok"


async def test_readyz_is_ok_when_every_check_passes(probes) -> None:
    client = await probes({"config": passing, "keys": passing})

    for path in ("/readyz", "/healthz"):
        response = await client.get(path)
        assert response.status == 200
        assert await response.text() == "ok"


async def test_verbose_readyz_lists_each_check(probes) -> None:
    client = await probes({"config": passing, "keys": passing})

    response = await client.get("/readyz?verbose")

    assert response.status == 200
    assert await response.text() == "[+]config ok\n[+]keys ok\nreadyz check passed\n"


async def test_a_failing_check_fails_readiness_and_its_reason_is_withheld(
    probes, caplog: pytest.LogCaptureFixture
) -> None:
    client = await probes({"config": passing, "keys": no_keys, "apiserver": raising})

    with caplog.at_level(logging.WARNING, logger="kproxy.observe.probes"):
        response = await client.get("/readyz")

    assert response.status == 500
    assert await response.text() == (
        "[+]config ok\n"
        "[-]keys failed: reason withheld\n"
        "[-]apiserver failed: reason withheld\n"
        "readyz check failed\n"
    )
    assert "no keys for issuer https://idp.alpha.edu" in caplog.text
    assert "connection refused by 10.96.0.1:443" in caplog.text


async def test_a_failure_is_logged_when_it_starts_not_on_every_probe(
    probes, caplog: pytest.LogCaptureFixture
) -> None:
    client = await probes({"keys": no_keys})

    with caplog.at_level(logging.WARNING, logger="kproxy.observe.probes"):
        for _ in range(3):
            assert (await client.get("/healthz")).status == 500

    assert caplog.text.count("no keys for issuer") == 1


async def test_a_check_that_hangs_fails_after_the_timeout(probes) -> None:
    never = asyncio.Event()

    async def hanging() -> str | None:
        await never.wait()
        return None

    client = await probes({"apiserver": hanging}, timeout=0.05)

    response = await client.get("/readyz?verbose")

    assert response.status == 500
    assert "[-]apiserver failed" in await response.text()


async def test_one_check_can_be_asked_for_or_excluded(probes) -> None:
    client = await probes({"config": passing, "keys": no_keys})

    assert (await client.get("/readyz/config")).status == 200
    assert (await client.get("/readyz/keys")).status == 500
    assert (await client.get("/readyz/nothing")).status == 404
    assert (await client.get("/readyz?exclude=keys")).status == 200


async def test_the_shutdown_check_fails_readiness_once_termination_begins(
    probes,
) -> None:
    shutdown = ShutdownCheck()
    client = await probes({"shutdown": shutdown})
    assert (await client.get("/readyz")).status == 200

    shutdown.begin()

    assert (await client.get("/readyz")).status == 500
    assert (await client.get("/livez")).status == 200


async def test_metrics_are_served_in_the_prometheus_text_format(probes) -> None:
    metrics = Metrics()
    metrics.watch_opened()
    client = await probes({}, metrics=metrics)

    response = await client.get("/metrics")

    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    families = {
        family.name: family
        for family in text_string_to_metric_families(await response.text())
    }
    assert families["kproxy_open_watches"].samples[0].value == 1
