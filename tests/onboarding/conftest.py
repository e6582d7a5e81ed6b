"""Fixtures for onboarding: the real ``kproxy`` command, a federation, a provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kproxy.standins.federation import LocalFederation
from tests.oidc.harness import oidc_node_modules, oidc_provider
from tests.onboarding.running import console_script

__all__ = ["oidc_node_modules", "oidc_provider"]

StartFederation = Callable[..., Awaitable[LocalFederation]]


@pytest.fixture(scope="session")
def kproxy_command() -> Path:
    """The ``kproxy`` console script installed with the package."""
    return console_script()


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``$XDG_CACHE_HOME`` for this test and every process it starts.

    kubectl runs ``kproxy login`` with kubectl's own environment, so the token cache
    a login by hand fills is the one the exec plugin reads later.
    """
    home = tmp_path / "cache-home"
    home.mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture
async def start_federation(tmp_path: Path) -> AsyncIterator[StartFederation]:
    """Start ``LocalFederation``s under ``tmp_path``; all are stopped afterwards."""
    started: list[LocalFederation] = []

    async def start(**options: Any) -> LocalFederation:
        options.setdefault("policy_dir", Path("policies"))
        federation = LocalFederation(tmp_path / f"federation-{len(started)}", **options)
        started.append(federation)
        await federation.start()
        return federation

    try:
        yield start
    finally:
        for federation in reversed(started):
            await federation.stop()
