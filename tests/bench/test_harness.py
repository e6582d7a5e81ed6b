"""The benchmark harness itself, on a tiny scale, so that ``make bench`` cannot rot.

Nothing here times anything against a bound: it checks that each measuring piece
produces figures of the right shape from a real upstream, and that the report renders
them with a verdict for every target of the brief.
"""

from __future__ import annotations

import math
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from bench import decisions, load, measuring, report, watching
from bench.federation import new_issuer
from bench.load import Endpoint
from bench.processes import started
from bench.profiling import summarise_collapsed
from bench.targets import ROOT, Target, aiohttp_relay
from bench.upstream import LIST_PATH, POD_PATH, pod_list

TINY = measuring.Scale(
    runs=1,
    seconds=1.0,
    requests_one=20,
    requests_many=40,
    events=5,
    watches=30,
    watch_seconds=10.0,
    universities=2,
    rules=3,
    calls=2,
    rounds=1,
    profile_seconds=0,
    kproxy_variants=(),
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[Endpoint]:
    command = [sys.executable, "-m", "bench.upstream", "--list-bytes", "65536"]
    with started(command, ready="listening", cwd=ROOT) as (_, line):
        yield Endpoint("127.0.0.1", int(line.split()[1]), {})


def test_pod_list_has_the_size_asked_for() -> None:
    assert len(pod_list(200_000)) == 200_000


async def test_latencies_are_one_sample_per_request(upstream: Endpoint) -> None:
    samples = await load.latencies(
        upstream, POD_PATH, connections=4, requests=40, seconds=10
    )
    assert len(samples) == 40
    assert samples == sorted(samples)
    assert samples[0] > 0


def test_throughput_counts_bytes_of_the_list(upstream: Endpoint) -> None:
    measured = load.throughput(upstream, LIST_PATH, connections=2, seconds=1)
    assert measured.errors == 0
    assert measured.requests_per_second > 0
    # Every answer is the 64 KiB list plus headers. wrk prints both rates rounded
    # (transfer to two decimals of a unit), so allow a few percent under.
    assert measured.bytes_per_second >= 0.97 * measured.requests_per_second * 65536


async def test_idle_watches_reach_the_upstream_and_are_closed(
    upstream: Endpoint,
) -> None:
    measured = await watching.idle_watch_memory(
        upstream, upstream, count=30, rss=lambda: 1000, seconds=10
    )
    assert measured["reached_upstream"] == 30
    assert await watching.open_count(upstream) == 0


async def test_each_emitted_event_arrives(upstream: Endpoint) -> None:
    samples = await watching.event_latencies(upstream, upstream, events=5, seconds=10)
    assert len(samples) == 5


def test_a_measured_target_renders_with_every_verdict(
    upstream: Endpoint, tmp_path: Path
) -> None:
    figures = measuring.measure_target(
        Target("direct", upstream, ()), upstream, TINY, profile_dir=None
    )
    assert figures["median"]["rps"] > 0
    assert (
        figures["median"]["latency_many_p99"] >= figures["median"]["latency_many_p50"]
    )
    # The same figures stand in for the peer and for kproxy: the report must compare
    # them and give each target of the brief a verdict.
    kproxy = {
        **figures,
        "idle_watches": {
            "watches": 30,
            "reached_upstream": 30,
            "rss_before_bytes": 1,
            "rss_bytes": 2 * 2**20,
            "bytes_per_watch": 1.0,
        },
    }
    results = {
        "command": "test",
        "started": "now",
        "seconds": 1.0,
        "scale": asdict(TINY),
        "machine": {
            "cpu": "x",
            "cpus": 2,
            "memory_bytes": 2**30,
            "kernel": "k",
            "python": "3",
            "aiohttp": "3",
            "uvloop": "0",
            "kubectl": "k",
            "wrk": "w",
        },
        "targets": {
            "direct": figures,
            "kubectl proxy": figures,
            "kproxy (1 worker)": kproxy,
        },
        "decisions": {
            "universities": 2,
            "rules_per_university": 3,
            "decided_by": "r",
            "authenticate_cold_seconds": 1e-4,
            "authenticate_cached_seconds": 1e-6,
            "parse_request_seconds": 1e-6,
            "decide_seconds": 1e-6,
            "decide_first_seconds": 1e-5,
            "cached_request_seconds": 2e-6,
        },
    }
    verdicts = {row["goal"]: row["verdict"] for row in report.checks(results)}
    assert len(verdicts) == 5
    assert verdicts["30 idle watches within 1 GiB"] == "pass"
    assert verdicts["cached authentication + policy within 20 µs"] == "pass"
    # matplotlib is installed by the benchmark only, so plots are left out here.
    page = report.write(results, docs=tmp_path, with_plots=False)
    assert "| GET requests/s, 32 connections |" in page.read_text()


def test_the_steps_are_timed_with_and_without_the_rule_index() -> None:
    # decisions.run raises if the policies without their index decide otherwise.
    timed = decisions.run(universities=3, rules=4, calls=2, rounds=1)

    assert timed["decided_by"].endswith("rules[3] (pods)")
    seconds = {key: value for key, value in timed.items() if key.endswith("_seconds")}
    assert set(seconds) >= {"decide_seconds", "decide_unindexed_seconds"}
    assert all(value > 0 for value in seconds.values())


def test_the_relay_answers_as_the_upstream_does(tmp_path: Path) -> None:
    with (
        measuring.upstream_server(tmp_path) as (plain, _, kubeconfig),
        aiohttp_relay(
            tmp_path / "relay", kubeconfig=kubeconfig, issuer=new_issuer()
        ) as relay,
    ):
        direct = _get(plain, POD_PATH)
        relayed = _get(relay.endpoint, POD_PATH)

    assert relay.name == "aiohttp relay"
    assert relayed == direct
    assert b'"kind":"Pod"' in relayed


def _get(endpoint: Endpoint, path: str) -> bytes:
    url = f"http://{endpoint.host}:{endpoint.port}{path}"
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        body: bytes = answer.read()
    return body


def test_wrk_summary_is_read() -> None:
    output = (
        "  1000 requests in 1.00s, 2.00MB read\n"
        "  Socket errors: connect 0, read 2, write 0, timeout 1\n"
        "  Non-2xx or 3xx responses: 4\n"
        "Requests/sec:   1000.50\nTransfer/sec:      2.00MB\n"
    )
    measured = load.parse_wrk(output)
    assert measured.requests_per_second == 1000.5
    assert measured.bytes_per_second == 2 * 1024**2
    assert measured.errors == 7


def test_collapsed_stacks_are_summarised_by_share() -> None:
    text = (
        "main (a.py:1);handle (kproxy/app.py:9);decide (kproxy/policy/x.py:3) 3\n"
        "main (a.py:1);handle (kproxy/app.py:9) 1\n"
    )
    summary = summarise_collapsed(text, top=5)
    assert summary["samples"] == 4
    assert summary["own"][0] == ("decide (kproxy/policy/x.py)", 0.75)
    assert ("handle (kproxy/app.py)", 1.0) in summary["inclusive"]


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert load.percentile(values, 0.5) == 50.0
    assert load.percentile(values, 0.99) == 99.0
    assert math.isnan(load.percentile([], 0.5))
