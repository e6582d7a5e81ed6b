"""Fixtures for the attack regressions: one running federation per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.security.federation import Federation, Keys

StartFederation = Callable[..., Awaitable[Federation]]


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys.generate()


@pytest.fixture
async def start_federation(
    tmp_path: Path, keys: Keys
) -> AsyncIterator[StartFederation]:
    """Start a federation with options (``limits``, ``authentication``, ``mappings``)."""
    started: list[Federation] = []

    async def start(**options: Any) -> Federation:
        directory = tmp_path / f"federation-{len(started)}"
        directory.mkdir()
        running = Federation(directory=directory, keys=keys, **options)
        started.append(running)
        await running.start()
        return running

    try:
        yield start
    finally:
        for running in started:
            await running.stop()


@pytest.fixture
async def federation(start_federation: StartFederation) -> Federation:
    return await start_federation()
