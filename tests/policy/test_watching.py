"""The grant watcher against an in-memory stand-in for the API server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kproxy.policy.grants import LIST_PATH, GrantIndex
from kproxy.policy.loading import compile_guardrails
from kproxy.policy.settings import FederationSettings
from kproxy.policy.watching import GrantWatcher


def grant(
    namespace: str, name: str, university: str = "alpha", rv: str = "1"
) -> dict[str, Any]:
    return {
        "apiVersion": "kproxy.io/v1alpha1",
        "kind": "NamespaceGrant",
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": rv},
        "spec": {
            "subjects": [{"university": university}],
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        },
    }


class FakeApiServer:
    """Lists from a dict and streams queued watch events; failures on demand."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 10
        self.lists = 0
        self.fail_lists = 0
        self.watches: list[str] = []
        self.streams: asyncio.Queue[list[dict[str, Any]] | Exception] = asyncio.Queue()

    async def list_json(self, path: str) -> dict[str, Any]:
        assert path == LIST_PATH
        self.lists += 1
        if self.fail_lists:
            self.fail_lists -= 1
            raise ConnectionError("connection refused")
        return {
            "kind": "NamespaceGrantList",
            "metadata": {"resourceVersion": str(self.version)},
            "items": list(self.objects.values()),
        }

    async def watch_events(
        self, path: str, resource_version: str
    ) -> AsyncIterator[dict[str, Any]]:
        self.watches.append(resource_version)
        while True:
            batch = await self.streams.get()
            if isinstance(batch, Exception):
                raise batch
            for event in batch:
                yield event


class Published:
    def __init__(self) -> None:
        self.indexes: list[GrantIndex] = []
        self.changed = asyncio.Event()

    def __call__(self, index: GrantIndex) -> None:
        self.indexes.append(index)
        self.changed.set()

    async def until(self, predicate: Any) -> GrantIndex:
        for _ in range(1000):
            if self.indexes and predicate(self.indexes[-1]):
                return self.indexes[-1]
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), timeout=10)
        raise AssertionError("never published")


class Events:
    def __init__(self) -> None:
        self.syncs: list[bool] = []

    def policy_reload(self, university: str, *, ok: bool) -> None: ...

    def grants_synced(self, *, ok: bool) -> None:
        self.syncs.append(ok)


def names(index: GrantIndex) -> set[str]:
    return {
        f"{g.namespace}/{g.name}"
        for grants in index.by_namespace.values()
        for g in grants
    }


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def server() -> FakeApiServer:
    return FakeApiServer()


async def test_grants_are_listed_then_followed_and_relisted_on_gone(
    server: FakeApiServer, settings: FederationSettings
) -> None:
    server.objects[("team-a", "open")] = grant("team-a", "open")
    server.objects[("kube-system", "sneaky")] = grant("kube-system", "sneaky")
    published, events = Published(), Events()
    watcher = GrantWatcher(
        server,
        published,
        guardrails=compile_guardrails(settings),
        events=events,
        sleep=no_sleep,
    )
    task = asyncio.create_task(watcher.run(), name="grant-watch-test")
    try:
        first = await published.until(lambda index: True)
        assert names(first) == {"team-a/open"}
        assert events.syncs == [True]

        await server.streams.put(
            [
                {"type": "ADDED", "object": grant("team-b", "open", rv="11")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                {"type": "DELETED", "object": grant("team-a", "open", rv="13")},
            ]
        )
        after = await published.until(lambda index: names(index) == {"team-b/open"})
        assert len(after) == 1
        assert server.watches == ["10"]

        server.objects = {("team-c", "open"): grant("team-c", "open")}
        server.version = 20
        await server.streams.put(
            [{"type": "ERROR", "object": {"kind": "Status", "code": 410}}]
        )
        relisted = await published.until(lambda index: names(index) == {"team-c/open"})
        assert relisted is not None
        assert server.lists == 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_failing_api_server_keeps_the_last_grants_and_retries(
    server: FakeApiServer, settings: FederationSettings
) -> None:
    server.objects[("team-a", "open")] = grant("team-a", "open")
    published, events = Published(), Events()
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)
        await asyncio.sleep(0)

    watcher = GrantWatcher(
        server,
        published,
        guardrails=compile_guardrails(settings),
        events=events,
        sleep=record,
    )
    task = asyncio.create_task(watcher.run(), name="grant-watch-test")
    try:
        await published.until(lambda index: True)
        server.fail_lists = 3
        await server.streams.put(ConnectionError("reset"))
        server.objects[("team-b", "open")] = grant("team-b", "open")
        await published.until(
            lambda index: names(index) == {"team-a/open", "team-b/open"}
        )
        assert len(published.indexes) == 2
        assert delays == [0.5, 1.0, 2.0, 4.0]
        assert events.syncs == [True, False, False, False, False, True]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_invalid_grants_and_forbidden_subjects_are_ignored(
    settings: FederationSettings,
) -> None:
    server = FakeApiServer()
    bad = grant("team-a", "bad")
    bad["spec"]["subjects"] = [{"university": "alpha", "group": "x"}]
    gamma_only = grant("team-a", "gamma", university="gamma")
    server.objects = {
        ("team-a", "bad"): bad,
        ("team-a", "gamma"): gamma_only,
        ("team-a", "ok"): grant("team-a", "ok"),
    }
    published = Published()
    watcher = GrantWatcher(server, published, guardrails=compile_guardrails(settings))
    await watcher.relist()
    assert names(published.indexes[-1]) == {"team-a/ok"}
