"""Watches: newline-delimited JSON events, streamed and flushed one by one.

As ``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/watch.go`` and the watch
cache (``.../pkg/storage/cacher/cacher.go``, ``watch_cache.go``) do:

- without ``resourceVersion`` or with ``0`` the watch starts with a synthetic
  ``ADDED`` for every current object; from a version N it replays what changed after
  N; a version older than the kept history gets a 200 response whose only event is
  an ``ERROR`` carrying a ``410 Expired`` ``Status`` (``newErrWatcher``), which is how
  client-go's reflector learns it must relist;
- ``allowWatchBookmarks=true`` adds ``BOOKMARK`` events holding only the current
  version; ``sendInitialEvents=true`` ends the initial events with a bookmark
  annotated ``k8s.io/initial-events-end``;
- ``timeoutSeconds`` ends the stream cleanly; label and field selectors filter.
- with ``Accept: ...;as=Table`` each event's object is a ``Table`` of one row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import resources, selectors, statuses, tables
from .catalog import ResourceType
from .faults import Faults
from .routing import Target
from .store import Object, Store, WatchEvent

_INITIAL_EVENTS_END = "k8s.io/initial-events-end"


async def watch(
    store: Store,
    request: web.Request,
    target: Target,
    *,
    faults: Faults,
    bookmark_interval: float,
) -> web.StreamResponse:
    """Serve one watch until its timeout, the client leaving or a fault."""
    resource = target.resource
    assert resource is not None  # noqa: S101
    subscription = store.subscribe(resource, resources.scope(resource, target))
    try:
        since = store.resource_version
        initial = _initial_events(store, request, target)
        response = await _start(request)
        writer = _Writer(response, request, resource, faults)
        deadline = _timeout(request.query.get("timeoutSeconds"))
        with contextlib.suppress(TimeoutError, ConnectionError, _ResetError):
            async with asyncio.timeout(deadline):
                await _stream(
                    writer,
                    _Start(initial, since, bookmark_interval),
                    subscription.queue,
                    store,
                    request,
                    target,
                )
        return response
    finally:
        store.unsubscribe(subscription)


class _ResetError(Exception):
    """The reset fault aborted the connection."""


class _Writer:
    def __init__(
        self,
        response: web.StreamResponse,
        request: web.Request,
        resource: ResourceType,
        faults: Faults,
    ) -> None:
        self._response = response
        self._request = request
        self._resource = resource
        self._faults = faults
        self._sent = 0
        self._table = tables.wants_table(request.headers.get("Accept", ""))

    async def send(self, event_type: str, obj: Object) -> None:
        limit = self._faults.reset_watch_after
        if (
            limit is not None
            and self._sent >= limit
            and self._faults.applies_to(self._request.path)
        ):
            if self._request.transport is not None:
                self._request.transport.abort()
            raise _ResetError
        if self._table and event_type in ("ADDED", "MODIFIED", "DELETED"):
            obj = tables.table(
                self._resource,
                [obj],
                version=self._table,
                resource_version=obj["metadata"]["resourceVersion"],
                include_object=self._request.query.get("includeObject", "Metadata"),
                with_columns=self._sent == 0,
            )
        line = json.dumps({"type": event_type, "object": obj}) + "\n"
        await self._response.write(line.encode())
        self._sent += 1

    async def bookmark(self, version: int, *, initial_end: bool = False) -> None:
        metadata: dict[str, Any] = {"resourceVersion": str(version)}
        if initial_end:
            metadata["annotations"] = {_INITIAL_EVENTS_END: "true"}
        bookmark = {
            "kind": self._resource.kind,
            "apiVersion": self._resource.api_version,
            "metadata": metadata,
        }
        await self.send("BOOKMARK", bookmark)


def _initial_events(
    store: Store, request: web.Request, target: Target
) -> list[tuple[str, Object]]:
    version = request.query.get("resourceVersion", "")
    send_initial = request.query.get("sendInitialEvents") == "true"
    if not version or version == "0" or send_initial:
        return [("ADDED", obj) for obj in resources.select(store, request, target)]
    try:
        events = store.events_since(int(version))
    except ValueError as exc:
        raise statuses.bad_request(
            f'resourceVersion: Invalid value: "{version}"'
        ) from exc
    except statuses.ApiError as exc:
        return [("ERROR", dict(exc.status))]
    return [(e.type, e.object) for e in events if _selected(e, request, target)]


def _selected(event: WatchEvent, request: web.Request, target: Target) -> bool:
    if event.resource != target.resource:
        return False
    namespace = resources.scope(event.resource, target)
    if namespace and event.object["metadata"].get("namespace") != namespace:
        return False
    labels = selectors.label_selector(request.query.get("labelSelector", ""))
    fields = selectors.field_selector(
        request.query.get("fieldSelector", ""), event.resource.field_labels
    )
    return labels(event.object) and fields(event.object)


async def _start(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


def _timeout(text: str | None) -> float | None:
    if not text:
        return None
    return max(float(text), 0.0)


@dataclass(frozen=True, slots=True)
class _Start:
    """Where a watch starts: the events to send first and the version they reach."""

    initial: list[tuple[str, Object]]
    since: int
    bookmark_interval: float


async def _stream(
    writer: _Writer,
    start: _Start,
    queue: asyncio.Queue[WatchEvent],
    store: Store,
    request: web.Request,
    target: Target,
) -> None:
    last_version = start.since
    for event_type, obj in start.initial:
        await writer.send(event_type, obj)
        if event_type == "ERROR":
            return
    bookmarks = request.query.get("allowWatchBookmarks") == "true"
    if bookmarks and request.query.get("sendInitialEvents") == "true":
        await writer.bookmark(last_version, initial_end=True)
    async for event in _live(queue, start.bookmark_interval if bookmarks else None):
        if event is None:
            await writer.bookmark(store.resource_version)
        elif event.resource_version > last_version and _selected(
            event, request, target
        ):
            await writer.send(event.type, event.object)


async def _live(
    queue: asyncio.Queue[WatchEvent], bookmark_interval: float | None
) -> AsyncIterator[WatchEvent | None]:
    """Yield events as they come, and ``None`` whenever a bookmark is due."""
    while True:
        try:
            event = await asyncio.wait_for(queue.get(), bookmark_interval)
        except TimeoutError:
            yield None
            continue
        yield event
