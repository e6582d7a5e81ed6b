"""Fixtures for the attack regressions: running federations, shared where read-only.

Starting a federation (three issuers, the API server stand-in, kproxy, all over TLS)
costs more than most attacks, so tests that only send requests share one per module,
on the module's event loop (each module sets ``pytestmark = MODULE_LOOP``); each such test starts with the stand-in's record and
fault switches cleared. Tests that change configuration or break things start their
own with ``start_federation``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.security.federation import Federation, Keys

StartFederation = Callable[..., Awaitable[Federation]]
MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys.generate()


async def _started(directory: Path, keys: Keys, options: dict[str, Any]) -> Federation:
    running = Federation(directory=directory, keys=keys, **options)
    try:
        await running.start()
    except BaseException:
        await running.stop()
        raise
    return running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_federation(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys
) -> AsyncIterator[Federation]:
    running = await _started(tmp_path_factory.mktemp("shared") / "f", keys, {})
    yield running
    await running.stop()


@pytest.fixture
def federation(shared_federation: Federation) -> Federation:
    """The module's federation, with nothing recorded and no fault switched on."""
    shared_federation.apiserver.clear_requests()
    shared_federation.apiserver.faults.clear()
    return shared_federation


@pytest_asyncio.fixture(loop_scope="module")
async def start_federation(
    tmp_path: Path, keys: Keys
) -> AsyncIterator[StartFederation]:
    """Start a federation of its own with options (``limits``, ``jwt_options``, ...)."""
    started: list[Federation] = []

    async def start(**options: Any) -> Federation:
        running = await _started(tmp_path / f"federation-{len(started)}", keys, options)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()
