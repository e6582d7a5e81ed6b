"""One benchmark run: every target in turn against one upstream, repeated, medians.

Every loop is bounded twice, by a count and by time, so a target that stops answering
makes the run fail fast instead of hang. A target that cannot start (kproxy while its
wiring is unfinished) is recorded with its error and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from bench import decisions, load, watching
from bench.federation import mint, new_issuer, write_kubeconfig, write_upstream_tls
from bench.load import Endpoint, percentile
from bench.machine import describe_machine
from bench.processes import raise_file_limit, rss_bytes, started
from bench.profiling import py_spy
from bench.targets import (
    RELAY,
    ROOT,
    KproxyOptions,
    Target,
    aiohttp_relay,
    direct,
    kproxy,
    kubectl_proxy,
)
from bench.upstream import LIST_PATH, POD_PATH

T = TypeVar("T")
LIST_CONNECTIONS: Final = 4
MANY_CONNECTIONS: Final = 32


@dataclass(frozen=True, slots=True)
class Scale:
    """How much of everything one run does; ``FULL`` is what ``make bench`` runs."""

    runs: int = 3
    seconds: float = 3.0
    requests_one: int = 1500
    requests_many: int = 6400
    events: int = 200
    watches: int = 10_000
    watch_seconds: float = 60.0
    universities: int = 100
    rules: int = 50
    calls: int = 100
    rounds: int = 5
    profile_seconds: int = 5
    kproxy_variants: tuple[KproxyOptions, ...] = (
        KproxyOptions(workers=1, loop="uvloop"),
        KproxyOptions(workers=1, loop="asyncio", idle_watches=False),
        KproxyOptions(workers=1, audit=False, idle_watches=False),
        KproxyOptions(workers=2, loop="uvloop", idle_watches=False),
    )
    relay: bool = True


FULL: Final = Scale()
QUICK: Final = Scale(
    runs=1,
    seconds=1.0,
    requests_one=50,
    requests_many=128,
    events=10,
    watches=50,
    watch_seconds=20.0,
    universities=3,
    rules=5,
    calls=5,
    rounds=2,
    profile_seconds=0,
    kproxy_variants=(KproxyOptions(),),
    relay=False,
)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def median_of(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass(slots=True)
class Figures:
    """Per-run values of every figure of one target; medians are taken on output."""

    runs: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.runs.setdefault(name, []).append(value)

    def as_json(self) -> dict[str, Any]:
        medians = {name: median_of(values) for name, values in self.runs.items()}
        return {"median": medians, "runs": self.runs, **self.extra}


def measure_target(
    target: Target, upstream: Endpoint, scale: Scale, *, profile_dir: Path | None
) -> dict[str, Any]:
    figures = Figures()
    endpoint = target.endpoint
    for _ in range(scale.runs):
        _latency(figures, endpoint, "one", 1, scale.requests_one, scale)
        _latency(
            figures, endpoint, "many", MANY_CONNECTIONS, scale.requests_many, scale
        )
        small = load.throughput(
            endpoint, POD_PATH, connections=MANY_CONNECTIONS, seconds=scale.seconds
        )
        figures.add("rps", small.requests_per_second)
        figures.add("rps_errors", small.errors)
        big = load.throughput(
            endpoint, LIST_PATH, connections=LIST_CONNECTIONS, seconds=scale.seconds
        )
        figures.add("list_bytes_per_second", big.bytes_per_second)
        figures.add("list_errors", big.errors)
        figures.extra["generator"] = small.generator
        events = run_async(
            watching.event_latencies(
                endpoint, upstream, events=scale.events, seconds=scale.watch_seconds
            )
        )
        figures.add("event_p50", percentile(events, 0.50))
        figures.add("event_p99", percentile(events, 0.99))
    if target.pids and target.idle_watches:
        figures.extra["idle_watches"] = _idle_watches(target, upstream, scale)
        if (
            profile_dir is not None
            and scale.profile_seconds
            and "kproxy" in target.name
        ):
            figures.extra["profile"] = _profile(target, scale, profile_dir)
    return figures.as_json()


def _latency(
    figures: Figures,
    endpoint: Endpoint,
    label: str,
    connections: int,
    requests: int,
    scale: Scale,
) -> None:
    samples = run_async(
        load.latencies(
            endpoint,
            POD_PATH,
            connections=connections,
            requests=requests,
            seconds=scale.seconds * 4,
        )
    )
    figures.add(f"latency_{label}_p50", percentile(samples, 0.50))
    figures.add(f"latency_{label}_p99", percentile(samples, 0.99))


def _idle_watches(target: Target, upstream: Endpoint, scale: Scale) -> dict[str, Any]:
    def weigh() -> int:
        return sum(rss_bytes(pid) for pid in target.pids)

    return run_async(
        watching.idle_watch_memory(
            target.endpoint,
            upstream,
            count=scale.watches,
            rss=weigh,
            seconds=scale.watch_seconds,
        )
    )


def _profile(target: Target, scale: Scale, profile_dir: Path) -> dict[str, Any]:
    """Sample the first kproxy process while wrk saturates it with small GETs."""
    output = profile_dir / f"{target.name.split()[0]}-{target.pids[0]}.txt"
    result: dict[str, Any] = {}
    sampler = threading.Thread(
        target=lambda: result.update(
            py_spy(target.pids[0], seconds=scale.profile_seconds, output=output)
        )
    )
    sampler.start()
    load.throughput(
        target.endpoint,
        POD_PATH,
        connections=MANY_CONNECTIONS,
        seconds=scale.profile_seconds + 1,
    )
    sampler.join(scale.profile_seconds + 90)
    return result


@contextlib.contextmanager
def upstream_server(work: Path) -> Iterator[tuple[Endpoint, Endpoint, Path]]:
    """The upstream: its plain endpoint, its TLS endpoint and the proxies' kubeconfig."""
    tls = write_upstream_tls(work)
    command = [
        sys.executable,
        "-m",
        "bench.upstream",
        "--tls-cert",
        str(tls.cert_file),
        "--tls-key",
        str(tls.key_file),
    ]
    with started(command, ready="listening", cwd=ROOT) as (_, line):
        _, plain, secure = line.split()
        kubeconfig = write_kubeconfig(
            work / "kubeconfig",
            server=f"https://127.0.0.1:{secure}",
            ca_file=tls.ca_file,
        )
        yield (
            Endpoint("127.0.0.1", int(plain), {}),
            Endpoint("127.0.0.1", int(secure), {}, tls=True),
            kubeconfig,
        )


def run(scale: Scale, *, command: str, profile: bool = True) -> dict[str, Any]:
    """Measure every target and the in-process steps; the results as JSON data."""
    started_at = time.time()
    file_limit = raise_file_limit()
    results: dict[str, Any] = {
        "command": command,
        "machine": describe_machine(),
        "file_limit": file_limit,
        "scale": asdict(scale),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        "targets": {},
    }
    results["decisions"] = decisions.run(
        universities=scale.universities,
        rules=scale.rules,
        calls=scale.calls,
        rounds=scale.rounds,
    )
    with tempfile.TemporaryDirectory(prefix="kproxy-bench-") as directory:
        work = Path(directory)
        with upstream_server(work) as (upstream, upstream_tls, kubeconfig):
            results["upstream_tls"] = _upstream_tls(upstream_tls, scale)
            issuer = new_issuer()
            token = mint(issuer, universities=scale.universities)
            factories: list[
                tuple[str, Callable[[], AbstractContextManager[Target]]]
            ] = [
                ("direct", lambda: direct(upstream)),
                ("kubectl proxy", lambda: kubectl_proxy(kubeconfig)),
            ]
            for options in scale.kproxy_variants:
                factories.append(
                    (
                        options.name,
                        lambda options=options: kproxy(  # type: ignore[misc]
                            work / f"kproxy-{options.workers}-{options.loop}",
                            kubeconfig=kubeconfig,
                            issuer=issuer,
                            token=token,
                            universities=scale.universities,
                            rules=scale.rules,
                            options=options,
                        ),
                    )
                )
            if scale.relay:
                factories.append(
                    (
                        RELAY,
                        lambda: aiohttp_relay(
                            work / "relay", kubeconfig=kubeconfig, issuer=issuer
                        ),
                    )
                )
            profile_dir = ROOT / "bench" / "results" if profile else None
            if profile_dir is not None:
                profile_dir.mkdir(parents=True, exist_ok=True)
            for name, factory in factories:
                _measure_one(results, name, factory, upstream, scale, profile_dir)
    results["seconds"] = time.time() - started_at
    return results


def _measure_one(
    results: dict[str, Any],
    name: str,
    factory: Callable[[], AbstractContextManager[Target]],
    upstream: Endpoint,
    scale: Scale,
    profile_dir: Path | None,
) -> None:
    try:
        with factory() as target:
            print(f"measuring {name}", flush=True)
            measured = measure_target(target, upstream, scale, profile_dir=profile_dir)
            results["targets"][name] = measured
    except Exception as exc:  # a target that fails is reported, not fatal
        print(f"{name} failed: {exc}", flush=True)
        # The last lines of a failed start say why; the whole trace is in the JSON.
        detail = "".join(traceback.format_exception_only(exc)).strip()
        results["targets"][name] = {
            "error": detail.splitlines()[-1][:500],
            "detail": detail[-4000:],
        }


def _upstream_tls(endpoint: Endpoint, scale: Scale) -> dict[str, float]:
    """The upstream's TLS port alone, the ceiling for both proxies."""
    small = [
        load.throughput(
            endpoint, POD_PATH, connections=MANY_CONNECTIONS, seconds=scale.seconds
        ).requests_per_second
        for _ in range(scale.runs)
    ]
    big = [
        load.throughput(
            endpoint, LIST_PATH, connections=LIST_CONNECTIONS, seconds=scale.seconds
        ).bytes_per_second
        for _ in range(scale.runs)
    ]
    return {"rps": median_of(small), "list_bytes_per_second": median_of(big)}
