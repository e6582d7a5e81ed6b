"""Watches through a proxy: the memory of many idle ones, the latency of one event.

Idle watches are what a federation holds most of: every informer of every source
cluster keeps one open per resource. They are opened on raw asyncio streams in bounded
batches, and counted where they arrive (the upstream's ``/bench/watches``), so the
memory figure is taken only once every watch really crosses the proxy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from bench.client import Connection
from bench.load import Endpoint
from bench.upstream import EMIT_PATH, WATCH_PATH, WATCHES_PATH

OPEN_BATCH: Final = 250


async def open_watches(target: Endpoint, count: int) -> list[Connection]:
    """Open ``count`` watches through ``target``, ``OPEN_BATCH`` at a time."""
    head = target.head(WATCH_PATH)
    watches: list[Connection] = []
    for start in range(0, count, OPEN_BATCH):
        batch = await asyncio.gather(
            *(
                Connection.open(target.host, target.port)
                for _ in range(min(OPEN_BATCH, count - start))
            )
        )
        for connection in batch:
            connection.writer.write(head)
        watches.extend(batch)
    return watches


async def open_count(upstream: Endpoint) -> int:
    connection = await Connection.open(upstream.host, upstream.port)
    try:
        connection.writer.write(upstream.head(WATCHES_PATH))
        _, length = await connection.read_head()
        assert isinstance(length, int)
        return int(await connection.reader.readexactly(length))
    finally:
        await connection.close()


async def wait_for_watches(upstream: Endpoint, count: int, *, seconds: float) -> int:
    """Poll the upstream until ``count`` watches are open or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    seen = await open_count(upstream)
    while seen < count and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        seen = await open_count(upstream)
    return seen


async def idle_watch_memory(
    target: Endpoint,
    upstream: Endpoint,
    *,
    count: int,
    rss: Callable[[], int],
    seconds: float,
) -> dict[str, float]:
    """RSS of the proxy before and while holding ``count`` idle watches."""
    before = rss()
    watches = await open_watches(target, count)
    try:
        reached = await wait_for_watches(upstream, count, seconds=seconds)
        await asyncio.sleep(1.0)  # let buffers settle before reading memory
        held = rss()
    finally:
        await asyncio.gather(*(watch.close() for watch in watches))
    await wait_for_watches_to_end(upstream, seconds=seconds)
    return {
        "watches": count,
        "reached_upstream": reached,
        "rss_before_bytes": before,
        "rss_bytes": held,
        "bytes_per_watch": (held - before) / max(reached, 1),
    }


async def wait_for_watches_to_end(upstream: Endpoint, *, seconds: float) -> None:
    # The count lives in another process: polling it is the only way to know.
    deadline = time.monotonic() + seconds
    while await open_count(upstream) > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)


async def event_latencies(
    target: Endpoint, upstream: Endpoint, *, events: int, seconds: float
) -> list[float]:
    """Time from asking the upstream to emit until the event arrives via ``target``.

    The same measure taken directly against the upstream is the floor; what a proxy
    adds is the difference.
    """
    watch = await Connection.open(target.host, target.port)
    control = await Connection.open(upstream.host, upstream.port)
    emit = upstream.head(EMIT_PATH)
    samples: list[float] = []
    try:
        watch.writer.write(target.head(WATCH_PATH))
        status, _ = await watch.read_head()
        if status != 200:
            raise RuntimeError(f"watch answered {status}")
        await wait_for_watches(upstream, 1, seconds=seconds)
        deadline = time.monotonic() + seconds
        while len(samples) < events and time.monotonic() < deadline:
            arrival = asyncio.ensure_future(watch.read_line())
            started = time.perf_counter()
            await control.get(emit)
            await arrival
            samples.append(time.perf_counter() - started)
    finally:
        await watch.close()
        await control.close()
    await wait_for_watches_to_end(upstream, seconds=seconds)
    return sorted(samples)
