"""Fixtures for running kproxy as an operator does: a whole federation on loopback.

The federation is ``LocalFederation``: issuers, the API server stand-in and the real
``Proxy`` reading a real configuration file, all over TLS. Tests here look at kproxy
from the outside, through its probe port, its logs, its audit file and its listener.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
import pytest

from kproxy.standins.federation import LocalFederation

ROOT: Final = Path(__file__).resolve().parents[2]
POLICIES: Final = ROOT / "policies"
# Bounded polling: long enough for a loaded 2-core machine, never a timed assertion.
WAIT_SECONDS: Final = 20.0

T = TypeVar("T")


@pytest.fixture
async def federation(tmp_path: Path) -> AsyncIterator[LocalFederation]:
    fed = LocalFederation(tmp_path / "federation", policy_dir=POLICIES)
    await fed.start()
    try:
        yield fed
    finally:
        await fed.stop()


@pytest.fixture
async def client(federation: LocalFederation) -> AsyncIterator[aiohttp.ClientSession]:
    """A client trusting the federation's CA, one connection per request."""
    connector = aiohttp.TCPConnector(ssl=trusting(federation.ca_file), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


def trusting(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    what: str,
    seconds: float = WAIT_SECONDS,
) -> T:
    """Poll ``probe`` until it returns something other than ``None``."""
    try:
        async with asyncio.timeout(seconds):
            # Polling is the point: the state is read from outside the process.
            while (result := await probe()) is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None
    return result


async def probe_text(url: str) -> tuple[int, str]:
    """GET a probe endpoint on its own short-lived session."""
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def pod(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }
