"""``python -m bench.soak``: a bounded load test on loopback that stops by itself.

A ``LocalFederation`` (issuers, the API server stand-in, kproxy, all over TLS) runs in
this process, and a few workers drive it for ``--seconds`` with a mix of what a
federation's clients do: short lists and config-map writes, watches that open and
close, exec tunnels, requests for another university's namespace, and bad tokens.

It reports requests served by kind and status, the errors kproxy itself produced
(any 5xx, any answer a kind never expects, any transport failure; the target is
none), and memory, open file descriptors and asyncio tasks after the warm-up and at
the end (the target is flat). Everything runs in one process, so memory and
descriptors include the stand-ins and the load generator; they are held steady (one
client session per worker) so that growth points at kproxy.

With ``--trace-memory`` it also says where Python's own heap grew between the end of
the warm-up and the end of the run (``tracemalloc``, by source line), which tells live
objects apart from memory the allocator keeps. Tracing slows the run several times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import ssl
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from kproxy.standins.federation import LocalFederation

ROOT: Final = Path(__file__).resolve().parent.parent
NAMESPACE: Final = "beta"
POD: Final = "soak-worker"
EXPECTED: Final = {
    "list": {200},
    "write": {201, 200},
    "watch": {200},
    "exec": {101},
    "forbidden": {403},
    "bad-token": {401},
}


@dataclass
class Tally:
    """What the workers saw, by kind and by status."""

    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    limited: int = 0

    def record(self, kind: str, status: int) -> None:
        self.answers[(kind, status)] += 1
        if status == 429:
            self.limited += 1
        elif status not in EXPECTED[kind]:
            self.failures[f"{kind} answered {status}"] += 1

    @property
    def served(self) -> int:
        return sum(self.answers.values())


def process_state() -> dict[str, int]:
    """Resident memory (KiB), open descriptors and asyncio tasks of this process."""
    rss = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return {
        "rss_kib": rss,
        "open_fds": len(os.listdir("/proc/self/fd")),
        "tasks": len(asyncio.all_tasks()),
    }


class Worker:
    """One client: a session of its own, picking a kind of request at random."""

    def __init__(self, federation: LocalFederation, tally: Tally, seed: int) -> None:
        self.federation = federation
        self.tally = tally
        self.random = random.Random(seed)
        self.token = federation.scheduler_token("beta")
        tls = ssl.create_default_context(cafile=str(federation.ca_file))
        self.session = aiohttp.ClientSession(
            federation.url, connector=aiohttp.TCPConnector(ssl=tls, limit=4)
        )
        self.kinds: list[tuple[Callable[[], Awaitable[int]], str, int]] = [
            (self.list_pods, "list", 40),
            (self.write_config_map, "write", 15),
            (self.watch, "watch", 10),
            (self.exec, "exec", 10),
            (self.forbidden, "forbidden", 10),
            (self.bad_token, "bad-token", 15),
        ]

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    async def run(self, deadline: float) -> None:
        weights = [weight for _, _, weight in self.kinds]
        while time.monotonic() < deadline:
            ((step, kind, _),) = self.random.choices(self.kinds, weights)
            try:
                self.tally.record(kind, await step())
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.tally.failures[f"{kind}: {type(exc).__name__}"] += 1

    async def close(self) -> None:
        await self.session.close()

    async def list_pods(self) -> int:
        path = f"/api/v1/namespaces/{NAMESPACE}/pods?limit=50"
        async with self.session.get(path, headers=self.headers()) as response:
            await response.read()
            return response.status

    async def write_config_map(self) -> int:
        name = f"soak-{self.random.getrandbits(48):012x}"
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
        path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
        async with self.session.post(
            path, json=body, headers=self.headers()
        ) as created:
            await created.read()
        async with self.session.delete(
            f"{path}/{name}", headers=self.headers()
        ) as gone:
            await gone.read()
        return created.status

    async def watch(self) -> int:
        path = f"/api/v1/namespaces/{NAMESPACE}/configmaps?watch=true"
        async with self.session.get(path, headers=self.headers()) as response:
            if response.status == 200:
                # Stay for a moment, then leave without waiting for the end.
                with _suppress_timeout():
                    async with asyncio.timeout(self.random.uniform(0.05, 1.0)):
                        async for _ in response.content:
                            pass
            return response.status

    async def exec(self) -> int:
        path = (
            f"/api/v1/namespaces/{NAMESPACE}/pods/{POD}/exec"
            "?command=echo&command=soak&stdout=true"
        )
        try:
            async with self.session.ws_connect(
                path, headers=self.headers(), protocols=("v5.channel.k8s.io",)
            ) as ws:
                async for _ in ws:
                    pass
                return 101
        except aiohttp.WSServerHandshakeError as refused:
            # Any answer but 101 (a 429, say) is classified by its status.
            return refused.status

    async def forbidden(self) -> int:
        async with self.session.get(
            "/api/v1/namespaces/alpha/secrets", headers=self.headers()
        ) as response:
            await response.read()
            return response.status

    async def bad_token(self) -> int:
        forged = self.token.rsplit(".", 1)[0] + "." + "A" * 342
        token = self.random.choice([forged, "not-a-token", self.token[:-10]])
        async with self.session.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods", headers=self.headers(token)
        ) as response:
            await response.read()
            return response.status


class _suppress_timeout:  # noqa: N801 - used as a statement, like contextlib's
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, value: object, traceback: object) -> bool:
        return kind is TimeoutError


async def soak(
    seconds: float, workers: int, warmup: float, *, trace_memory: bool = False
) -> dict[str, Any]:
    if trace_memory:
        tracemalloc.start()
    try:
        with tempfile.TemporaryDirectory(prefix="kproxy-soak-") as directory:
            federation = LocalFederation(
                workdir=Path(directory), policy_dir=ROOT / "policies"
            )
            await federation.start()
            try:
                return await _drive(federation, seconds, workers, warmup)
            finally:
                await federation.stop()
    finally:
        if trace_memory:
            tracemalloc.stop()


async def _drive(
    federation: LocalFederation, seconds: float, workers: int, warmup: float
) -> dict[str, Any]:
    federation.apiserver.create(_pod())
    tally = Tally()
    unhandled: Counter[str] = Counter()
    asyncio.get_running_loop().set_exception_handler(
        lambda _, context: unhandled.update([_describe(context)])
    )
    # The stand-in records every request for tests; a soak must not count that.
    forgetting = asyncio.create_task(_forget(federation), name="soak-forget")
    clients = [Worker(federation, tally, seed) for seed in range(workers)]
    started = time.monotonic()
    try:
        await asyncio.gather(*(c.run(started + warmup) for c in clients))
        heap_at_start = _heap()
        at_start = process_state()
        served_at_start = tally.served
        measured = time.monotonic()
        samples = asyncio.create_task(_sample(measured + seconds), name="soak-sample")
        await asyncio.gather(*(c.run(measured + seconds) for c in clients))
        ended = time.monotonic()
        rss_samples = await samples
        heap_growth = _growth(heap_at_start, _heap())
    finally:
        forgetting.cancel()
        for client in clients:
            await client.close()
    await asyncio.sleep(1.0)
    at_end = process_state()
    return {
        "seconds": round(ended - measured, 1),
        "workers": workers,
        "served": tally.served - served_at_start,
        "served_with_warmup": tally.served,
        "rate_per_second": round((tally.served - served_at_start) / (ended - measured)),
        "answers": {f"{k} {s}": n for (k, s), n in sorted(tally.answers.items())},
        "limited_429": tally.limited,
        "kproxy_errors": dict(tally.failures),
        "unhandled_task_exceptions": dict(unhandled),
        "start": at_start,
        "end": at_end,
        "rss_kib_every_30s": rss_samples,
        **heap_growth,
    }


def _heap() -> tracemalloc.Snapshot | None:
    if not tracemalloc.is_tracing():
        return None
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )


def _growth(
    before: tracemalloc.Snapshot | None, after: tracemalloc.Snapshot | None
) -> dict[str, Any]:
    """Python's heap growth over the measured run: in total, and its largest lines."""
    if before is None or after is None:
        return {}
    lines = after.compare_to(before, "lineno")
    return {
        "python_heap_growth_kib": round(sum(s.size_diff for s in lines) / 1024, 1),
        "python_heap_growth_by_line": [
            f"{s.traceback[0].filename}:{s.traceback[0].lineno} "
            f"{s.size_diff / 1024:+.1f} KiB in {s.count_diff:+d} blocks"
            for s in lines[:12]
        ],
    }


async def _forget(federation: LocalFederation) -> None:
    while True:
        federation.apiserver.clear_requests()
        await asyncio.sleep(1.0)


async def _sample(deadline: float) -> list[int]:
    samples = [process_state()["rss_kib"]]
    while time.monotonic() + 30 <= deadline:
        await asyncio.sleep(30)
        samples.append(process_state()["rss_kib"])
    return samples


def _describe(context: dict[str, Any]) -> str:
    exception = context.get("exception")
    task = context.get("future")
    name = task.get_name() if isinstance(task, asyncio.Task) else "loop"
    return f"{name}: {type(exception).__name__ if exception else context['message']}"


def _pod() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": POD, "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--output", type=Path, help="also write the result as JSON")
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="report where Python's heap grew (tracemalloc; several times slower)",
    )
    args = parser.parse_args(argv)
    result = asyncio.run(
        soak(args.seconds, args.workers, args.warmup, trace_memory=args.trace_memory)
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")
    clean = not result["kproxy_errors"] and not result["unhandled_task_exceptions"]
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
