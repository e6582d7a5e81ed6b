"""Fixtures for token authentication: a running issuer, a movable clock, a verifier."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from kproxy.auth.config import AuthenticationSettings
from kproxy.auth.verifying import TokenAuthenticator
from kproxy.standins.issuer import IssuerStandin

AUDIENCE = "https://kproxy.target.example"


class Clock:
    """Wall time that tests move by hand."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingEvents:
    """Keeps what the verifier reported, for assertions."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.cache: list[bool] = []
        self.fetches: list[tuple[str, bool]] = []

    def token_cache(self, *, hit: bool) -> None:
        self.cache.append(hit)

    def authentication_failed(self, reason: str) -> None:
        self.failures.append(reason)

    def key_fetch(self, issuer: str, *, ok: bool) -> None:
        self.fetches.append((issuer, ok))


def jwt_entry(url: str, **changes: Any) -> dict[str, Any]:
    """One ``jwt:`` entry as an operator writes it, with ``changes`` merged in."""
    entry: dict[str, Any] = {
        "issuer": {"url": url, "audiences": [AUDIENCE]},
        "claimMappings": {
            "username": {"claim": "sub", "prefix": "cluster-a:"},
            "groups": {"claim": "groups", "prefix": "cluster-a:"},
        },
    }
    for key, value in changes.items():
        if key == "issuer":
            entry["issuer"] = {**entry["issuer"], **value}
        else:
            entry[key] = value
    return entry


def settings_for(*entries: dict[str, Any], **options: Any) -> AuthenticationSettings:
    return AuthenticationSettings.model_validate({"jwt": list(entries), **options})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> RecordingEvents:
    return RecordingEvents()


@pytest.fixture
async def issuer() -> AsyncIterator[IssuerStandin]:
    standin = IssuerStandin()
    await standin.start()
    yield standin
    await standin.stop()


MakeAuthenticator = Callable[..., Awaitable[TokenAuthenticator]]


@pytest.fixture
async def make_authenticator(
    clock: Clock, events: RecordingEvents
) -> AsyncIterator[MakeAuthenticator]:
    started: list[TokenAuthenticator] = []

    async def make(
        settings: AuthenticationSettings, **kwargs: Any
    ) -> TokenAuthenticator:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("events", events)
        authenticator = TokenAuthenticator(settings, **kwargs)
        started.append(authenticator)
        await authenticator.start()
        return authenticator

    yield make
    for authenticator in started:
        await authenticator.close()
