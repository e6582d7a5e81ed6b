"""Watching ``NamespaceGrant`` objects through the API server.

The watcher follows the list-then-watch pattern of Kubernetes informers: list every grant
and the collection's ``resourceVersion``, then watch from that version, applying each
``ADDED``, ``MODIFIED`` and ``DELETED`` event to its own map and publishing a fresh
``GrantIndex`` to the store within the same step. A watch that ends, an ``ERROR`` event
(``410 Gone`` when the version is too old) or a failed request starts a new list after
a backoff that doubles up to ``MAX_BACKOFF`` and resets after a successful list. The
last good grants stay in force while the API server cannot be reached: revoking a grant
needs the API server anyway, and dropping all grants on a network blip would deny
every request they allow.

The watcher talks to the API server only through ``KubernetesReader``, which the proxy
implements with kproxy's own credentials; tests use an in-memory fake.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final, Protocol

from kproxy.policy.events import NoPolicyEvents, PolicyEvents
from kproxy.policy.grants import (
    LIST_PATH,
    CompiledGrant,
    GrantError,
    GrantIndex,
    compile_grant,
)
from kproxy.policy.policyset import Guardrails

logger = logging.getLogger(__name__)

INITIAL_BACKOFF: Final = 0.5
MAX_BACKOFF: Final = 30.0


class KubernetesReader(Protocol):
    """Read access to the API server with kproxy's own credentials."""

    async def list_json(self, path: str) -> dict[str, Any]:
        """GET ``path`` and return the decoded JSON list object; raise on failure."""
        ...

    def watch_events(
        self, path: str, resource_version: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch ``path`` from ``resource_version``, yielding decoded watch events.

        The iterator ends when the server closes the watch and raises on failure.
        """
        ...


class GoneError(Exception):
    """The watch's resource version is too old; a new list is needed."""


class GrantWatcher:
    """Keeps the grants of a ``PolicyStore`` (or any sink) in step with the cluster."""

    def __init__(
        self,
        reader: KubernetesReader,
        publish: Callable[[GrantIndex], None],
        *,
        guardrails: Guardrails,
        events: PolicyEvents | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.reader = reader
        self.publish = publish
        self.guardrails = guardrails
        self.events: PolicyEvents = events or NoPolicyEvents()
        self._sleep = sleep
        self._grants: dict[tuple[str, str], CompiledGrant] = {}

    async def run(self) -> None:
        """List and watch until cancelled; failures lead to a relist after backoff."""
        backoff = INITIAL_BACKOFF
        while True:
            try:
                resource_version = await self.relist()
                backoff = INITIAL_BACKOFF
                await self.watch(resource_version)
                logger.debug("grant watch ended, listing again")
            except asyncio.CancelledError:
                raise
            except GoneError:
                logger.info("grant watch expired, listing again")
            except Exception as exc:
                logger.warning(
                    "cannot watch namespace grants, keeping the last good ones: %s", exc
                )
                self.events.grants_synced(ok=False)
                await self._sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def relist(self) -> str:
        """List every grant, replace the published set, return the list's version."""
        listing = await self.reader.list_json(LIST_PATH)
        grants: dict[tuple[str, str], CompiledGrant] = {}
        for item in listing.get("items") or ():
            grant = self._compile(item)
            if grant is not None:
                grants[grant.key] = grant
        self._grants = grants
        self.publish(GrantIndex.of(grants.values()))
        self.events.grants_synced(ok=True)
        metadata = listing.get("metadata") or {}
        return str(metadata.get("resourceVersion", ""))

    async def watch(self, resource_version: str) -> None:
        """Apply watch events until the watch ends; raise ``GoneError`` on 410."""
        async for event in self.reader.watch_events(LIST_PATH, resource_version):
            self.apply(event)

    def apply(self, event: Mapping[str, Any]) -> None:
        """Apply one watch event and publish the result."""
        kind = event.get("type")
        obj = event.get("object")
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, Mapping) else None
            if code == 410:
                raise GoneError
            raise RuntimeError(f"watch error event with code {code}")
        if kind == "BOOKMARK" or not isinstance(obj, Mapping):
            return
        key = _key(obj)
        if key is None:
            return
        if kind == "DELETED":
            self._grants.pop(key, None)
        elif kind in ("ADDED", "MODIFIED"):
            grant = self._compile(obj)
            if grant is None:
                self._grants.pop(key, None)
            else:
                self._grants[key] = grant
        else:
            return
        self.publish(GrantIndex.of(self._grants.values()))

    def _compile(self, obj: Mapping[str, Any]) -> CompiledGrant | None:
        try:
            return compile_grant(obj, self.guardrails)
        except GrantError as exc:
            key = _key(obj) or ("?", "?")
            logger.warning("namespace grant %s/%s ignored: %s", key[0], key[1], exc)
            return None


def _key(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        return None
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if isinstance(namespace, str) and isinstance(name, str):
        return namespace, name
    return None
